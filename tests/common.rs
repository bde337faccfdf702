//! Shared helpers of the CLI tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A fresh, empty scratch directory unique to this process and `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mixforge-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The package folder as cargo gives it to the running test (not as it was when compiled: a
/// binary reused from another checkout sharing the target dir would point there).
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Shards of the demo corpus (the demo recipe), built once per test process.
pub fn demo_shards() -> &'static Path {
    static SHARDS: OnceLock<PathBuf> = OnceLock::new();
    SHARDS.get_or_init(|| {
        let run = scratch("demo-corpus");
        let out = Command::new(env!("CARGO_BIN_EXE_mixforge"))
            .args(["corpus", "run", "recipes/demo.toml", "--out", run.to_str().unwrap()])
            .current_dir(manifest_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "corpus run failed:\n{}", String::from_utf8_lossy(&out.stderr));
        run.join("shards")
    })
}

/// Runs the `mixforge` binary under test from the package folder.
pub fn mixforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mixforge")).args(args).current_dir(manifest_dir()).output().unwrap()
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Starts `mixforge args`, waits (at most `secs`) until `ready()`, then kills it with SIGKILL:
/// a run interrupted mid-way, for resume tests.
pub fn kill_when(args: &[String], secs: u64, ready: impl Fn() -> bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixforge"))
        .args(args)
        .current_dir(manifest_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "mixforge {args:?} never got there");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
