// Test binaries and examples find libtorch through an rpath, so no LD_LIBRARY_PATH is needed.
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
