//! Prints what the libtorch backend offers this process: where libtorch was loaded from, CUDA and cuDNN
//! availability, the GPUs and the CPU thread count. `cargo xtask doctor` runs it after its own checks.
use detox_runtime::backend::BackendReport;

fn main() {
    println!("{}", BackendReport::probe());
}
