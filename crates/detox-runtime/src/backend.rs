//! libtorch start-up: loading the CUDA backend and reporting what the process can use.
//!
//! Rust links with `--as-needed`, which drops `libtorch_cuda.so` from the executable because no symbol of it is
//! referenced directly; libtorch then reports CUDA as unavailable even on a GPU machine. [`init`] opens the
//! library once with `RTLD_GLOBAL` so its CUDA kernels register themselves. On a machine without CUDA the load
//! fails harmlessly and everything runs on the CPU, so one binary serves both.

use std::ffi::{c_char, c_int, c_void, CStr};

use std::sync::OnceLock;

use tch::{Cuda, Device};

use crate::dynlib;

/// The outcome of [`init`], computed once per process.
static CUDA_BACKEND_LOADED: OnceLock<bool> = OnceLock::new();

/// Loads the CUDA backend of libtorch if the machine has it. Idempotent and cheap after the first call.
///
/// Call it before any CUDA query (`tch::Cuda::is_available`, `Device::cuda_if_available`). Returns whether
/// `libtorch_cuda.so` was loaded; `false` is the normal answer on a CPU-only machine.
pub fn init() -> bool {
    *CUDA_BACKEND_LOADED.get_or_init(|| dlopen_global("libtorch_cuda.so").is_some())
}

/// The device a caller gets when it names none: the first CUDA device when one is usable, else the CPU.
pub fn default_device() -> Device {
    init();
    Device::cuda_if_available()
}

/// The version of the libtorch this process runs on (e.g. `2.11.0`), read from the `build-version` file next to
/// the loaded library's folder; `None` when libtorch was not loaded from such a folder.
pub fn libtorch_version() -> Option<String> {
    let lib = loaded_library_dir("libtorch_cpu.so")?;
    let text =
        std::fs::read_to_string(std::path::Path::new(&lib).parent()?.join("build-version")).ok()?;
    // The file may carry a local build tag (`2.11.0+cpu`); manifests record the release.
    Some(text.trim().split('+').next().unwrap_or_default().to_string()).filter(|v| !v.is_empty())
}

/// One CUDA device as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// CUDA ordinal.
    pub index: usize,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`; `None` when the driver library could not be queried.
    pub name: Option<String>,
    /// Total device memory in bytes, when the driver could be queried.
    pub total_memory_bytes: Option<u64>,
}

/// What the libtorch backend offers this process; printed by `cargo xtask doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendReport {
    /// Whether `libtorch_cuda.so` was loaded by [`init`].
    pub cuda_backend_loaded: bool,
    /// Whether libtorch sees at least one usable CUDA device.
    pub cuda_available: bool,
    /// Whether cuDNN is usable.
    pub cudnn_available: bool,
    /// The CUDA devices, empty on a CPU-only machine.
    pub gpus: Vec<GpuInfo>,
    /// Intra-op CPU threads libtorch uses.
    pub cpu_threads: usize,
    /// Directory the libtorch library was loaded from, if it could be determined.
    pub libtorch_dir: Option<String>,
}

impl BackendReport {
    /// Probes the backend (calling [`init`] first).
    pub fn probe() -> Self {
        let cuda_backend_loaded = init();
        let cuda_available = Cuda::is_available();
        let device_count = if cuda_available { Cuda::device_count().max(0) as usize } else { 0 };
        let gpus = (0..device_count)
            .map(|index| {
                let (name, total_memory_bytes) = driver::describe(index);
                GpuInfo { index, name, total_memory_bytes }
            })
            .collect();
        Self {
            cuda_backend_loaded,
            cuda_available,
            cudnn_available: cuda_available && Cuda::cudnn_is_available(),
            gpus,
            cpu_threads: tch::get_num_threads().max(0) as usize,
            libtorch_dir: loaded_library_dir("libtorch_cpu.so"),
        }
    }
}

impl std::fmt::Display for BackendReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        writeln!(
            f,
            "libtorch loaded from : {}",
            self.libtorch_dir.as_deref().unwrap_or("(unknown)")
        )?;
        writeln!(f, "CUDA backend loaded  : {}", yes_no(self.cuda_backend_loaded))?;
        writeln!(f, "CUDA available       : {}", yes_no(self.cuda_available))?;
        writeln!(f, "cuDNN available      : {}", yes_no(self.cudnn_available))?;
        writeln!(f, "CUDA devices         : {}", self.gpus.len())?;
        for gpu in &self.gpus {
            let name = gpu.name.as_deref().unwrap_or("(name unavailable)");
            match gpu.total_memory_bytes {
                Some(bytes) => writeln!(
                    f,
                    "  cuda:{} {name}, {:.1} GiB",
                    gpu.index,
                    bytes as f64 / (1u64 << 30) as f64
                )?,
                None => writeln!(f, "  cuda:{} {name}", gpu.index)?,
            }
        }
        write!(f, "CPU threads          : {}", self.cpu_threads)
    }
}

fn dlopen_global(library: &str) -> Option<*mut c_void> {
    dynlib::open(library, libc::RTLD_NOW | libc::RTLD_GLOBAL)
}

/// The directory of an already loaded shared library.
fn loaded_library_dir(library: &str) -> Option<String> {
    let path = dynlib::loaded_library(|name| name == library)?;
    path.parent().map(|dir| dir.display().to_string())
}

/// Device names come from the CUDA driver API (`libcuda.so.1`), which libtorch does not expose.
mod driver {
    use super::*;
    use crate::dynlib::symbol;

    type CuInit = unsafe extern "C" fn(flags: u32) -> c_int;
    type CuDeviceGet = unsafe extern "C" fn(device: *mut c_int, ordinal: c_int) -> c_int;
    type CuDeviceGetName =
        unsafe extern "C" fn(name: *mut c_char, len: c_int, device: c_int) -> c_int;
    type CuDeviceTotalMem = unsafe extern "C" fn(bytes: *mut usize, device: c_int) -> c_int;

    const CUDA_SUCCESS: c_int = 0;

    pub(super) fn describe(index: usize) -> (Option<String>, Option<u64>) {
        let Some(handle) = dlopen_global("libcuda.so.1") else { return (None, None) };
        let (Some(cu_init), Some(cu_device_get)) =
            (symbol::<CuInit>(handle, "cuInit"), symbol::<CuDeviceGet>(handle, "cuDeviceGet"))
        else {
            return (None, None);
        };
        let mut device: c_int = 0;
        // SAFETY: documented driver API calls with valid out-pointers.
        let ready = unsafe {
            cu_init(0) == CUDA_SUCCESS && cu_device_get(&mut device, index as c_int) == CUDA_SUCCESS
        };
        if !ready {
            return (None, None);
        }
        let name = symbol::<CuDeviceGetName>(handle, "cuDeviceGetName").and_then(|get_name| {
            let mut buffer = [0 as c_char; 256];
            // SAFETY: the buffer length is passed, so the driver writes at most 256 bytes, NUL included.
            let status = unsafe { get_name(buffer.as_mut_ptr(), buffer.len() as c_int, device) };
            // SAFETY: on success the driver wrote a NUL-terminated string into the buffer.
            (status == CUDA_SUCCESS)
                .then(|| unsafe { CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().into_owned())
        });
        let memory =
            symbol::<CuDeviceTotalMem>(handle, "cuDeviceTotalMem_v2").and_then(|total_mem| {
                let mut bytes: usize = 0;
                // SAFETY: valid out-pointer.
                (unsafe { total_mem(&mut bytes, device) } == CUDA_SUCCESS).then_some(bytes as u64)
            });
        (name, memory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn init_is_idempotent_and_the_cpu_keeps_working() {
        let first = init();
        assert_eq!(first, init(), "a second init must report the same outcome");
        let device = default_device();
        if !Cuda::is_available() {
            assert_eq!(device, Device::Cpu, "without CUDA the default device must be the CPU");
        }
        let x = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
        let y = x.matmul(&x.transpose(0, 1));
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), vec![5.0, 14.0, 14.0, 50.0]);
    }

    #[test]
    fn report_is_consistent_with_libtorch() {
        let report = BackendReport::probe();
        assert_eq!(report.cuda_available, Cuda::is_available());
        assert_eq!(
            report.gpus.len(),
            if report.cuda_available { Cuda::device_count() as usize } else { 0 }
        );
        assert!(report.cpu_threads >= 1);
        let dir = report.libtorch_dir.clone().expect("libtorch_cpu.so is loaded in a tch process");
        assert!(
            std::path::Path::new(&dir).join("libtorch_cpu.so").exists(),
            "{dir} lacks libtorch_cpu.so"
        );
        assert!(report.to_string().contains("CUDA available"));
    }
}
