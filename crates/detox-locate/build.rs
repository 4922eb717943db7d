// Tests and examples find libtorch through an rpath, so they start without LD_LIBRARY_PATH.
fn main() {
    detox_build::link_libtorch_rpath();
}
