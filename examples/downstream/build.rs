// The binary finds libtorch through an rpath, so it starts without LD_LIBRARY_PATH.
fn main() {
    detox_build::link_libtorch_rpath();
}
