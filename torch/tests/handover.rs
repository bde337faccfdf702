//! `mixforge-torch` run directly: it takes every command, the torch-free ones through the
//! same library code as `mixforge`. (Hand-over from `mixforge` is tested in the root package.)

use std::process::Command;

fn torch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mixforge-torch")).args(args).output().unwrap()
}

#[test]
fn doctor_reports_the_linked_libtorch() {
    let out = torch(&["doctor"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2.11"), "doctor names libtorch 2.11:\n{stdout}");
}

#[test]
fn torch_free_commands_run_here_too() {
    let out = torch(&["model", "params", "--preset", "tiny"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("parameters: "));
    let out = torch(&["mix", "propose", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--aggregate"));
}
