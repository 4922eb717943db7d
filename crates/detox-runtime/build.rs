// Tests find libtorch through an rpath, so they start without LD_LIBRARY_PATH. Dependents' build scripts
// receive the folder as DEP_DETOX_RUNTIME_LIBTORCH_LIB (the `links` key), so they need no torch-sys of their own.
fn main() {
    if let Some(dir) = detox_build::link_libtorch_rpath() {
        println!("cargo::metadata=libtorch_lib={}", dir.display());
    }
}
