// Build scripts talk to cargo on stdout.
#![allow(clippy::print_stdout)]
//! Build script shared by the packages that link libtorch (`train` and the `mixforge` binary).
//!
//! torch-sys finds libtorch (from the PyPI `torch` wheel, `LIBTORCH_USE_PYTORCH=1`) and
//! exports its folder as `DEP_TCH_LIBTORCH_LIB`. Link arguments don't reach dependents, so
//! every package with executables repeats two of them:
//! - an rpath to that folder, so binaries and tests run without `LD_LIBRARY_PATH`;
//! - `libtorch_cuda` under `--no-as-needed`: nothing references its symbols directly, so the
//!   linker would drop it and CUDA would silently be unavailable.

fn main() {
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
