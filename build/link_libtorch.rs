// Build scripts talk to cargo on stdout.
#![allow(clippy::print_stdout)]
//! Build script shared by the packages that link libtorch (`train` and `mixforge-torch`) and
//! the root package, whose executable links none but whose tests do (dev-dependencies).
//!
//! torch-sys finds libtorch (from the PyPI `torch` wheel, `LIBTORCH_USE_PYTORCH=1`) and
//! exports its folder as `DEP_TCH_LIBTORCH_LIB`. Link arguments don't reach dependents, so
//! every package with executables repeats two of them:
//! - an rpath to that folder, so binaries and tests run without `LD_LIBRARY_PATH`;
//! - `libtorch_cuda` under `--no-as-needed`: nothing references its symbols directly, so the
//!   linker would drop it and CUDA would silently be unavailable.

fn main() {
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("mixforge") {
        if let Some(lib) = libtorch_lib_for_tests() {
            println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{lib}");
        }
        return;
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:rustc-env=MIXFORGE_LIBTORCH_LIB=");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // `mixforge doctor` reads the version of the libtorch it was linked against from here.
    println!("cargo:rustc-env=MIXFORGE_LIBTORCH_LIB={lib}");
    let cuda = std::path::Path::new(&lib).join("libtorch_cuda.so");
    if cuda.exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg={}", cuda.display());
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// Build scripts never see dev-dependencies' metadata, so for the root package's tests this
/// finds libtorch's folder as torch-sys does: `$LIBTORCH/lib`, or the `torch` of the Python on
/// `PATH` when `LIBTORCH_USE_PYTORCH` is set (scripts/env.sh sets it).
fn libtorch_lib_for_tests() -> Option<String> {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    if let Ok(root) = std::env::var("LIBTORCH") {
        return Some(format!("{root}/lib"));
    }
    std::env::var_os("LIBTORCH_USE_PYTORCH")?;
    let script = "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))";
    let out = std::process::Command::new("python3").args(["-c", script]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
