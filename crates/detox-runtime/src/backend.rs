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

/// The outcome of [`init`], computed once per process: the `dlerror()` text when the load failed.
static CUDA_BACKEND: OnceLock<Result<(), String>> = OnceLock::new();

/// Loads the CUDA backend of libtorch if the machine has it. Idempotent and cheap after the first call.
///
/// Call it before any CUDA query (`tch::Cuda::is_available`, `Device::cuda_if_available`). Returns whether
/// `libtorch_cuda.so` was loaded; `false` is the normal answer on a CPU-only machine.
pub fn init() -> bool {
    load_cuda_backend().is_ok()
}

/// Why `libtorch_cuda.so` could not be loaded, as the dynamic loader said it (`dlerror()`); `None` when it was.
pub fn cuda_backend_error() -> Option<String> {
    load_cuda_backend().as_ref().err().cloned()
}

fn load_cuda_backend() -> &'static Result<(), String> {
    CUDA_BACKEND.get_or_init(|| match dlopen_global("libtorch_cuda.so") {
        Some(_) => Ok(()),
        None => Err(last_dl_error()),
    })
}

/// The loader's message for the last failed `dlopen` on this thread.
fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call on this thread,
    // which is copied at once.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        "the dynamic loader gave no reason".to_owned()
    } else {
        // SAFETY: non-null, NUL-terminated (see above).
        unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
    }
}

/// Waits until every queued operation on every GPU has finished when `device` is a GPU (a no-op on the CPU,
/// which computes synchronously): what a timing of GPU work needs before it reads the clock. Every GPU, not only
/// `device`: a model placed over several GPUs queues its work on all of them.
pub fn synchronize(device: Device) {
    if device.is_cuda() {
        for index in 0..Cuda::device_count() {
            Cuda::synchronize(index);
        }
    }
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

/// Why a CPU-only libtorch cannot use a GPU, and what to do about it.
pub(crate) const CPU_ONLY: &str =
    "this libtorch is a CPU-only build: run `cargo xtask setup --cuda`, or point \
                                   LIBTORCH at a CUDA build of libtorch 2.11.0";

/// One CUDA device as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GpuInfo {
    /// CUDA ordinal.
    pub index: usize,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`; `None` when the driver library could not be queried.
    pub name: Option<String>,
    /// Total device memory in bytes, when the driver could be queried.
    pub total_memory_bytes: Option<u64>,
    /// Compute capability (major, minor), when the driver could be queried.
    pub compute_capability: Option<(u32, u32)>,
}

impl GpuInfo {
    /// Whether the GPU computes in bfloat16 natively (compute capability 8.0, Ampere, or newer); `None` when the
    /// capability is unknown.
    pub fn bf16_supported(&self) -> Option<bool> {
        self.compute_capability.map(|(major, _)| major >= 8)
    }
}

/// Which libtorch build the process loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibtorchBuild {
    /// No `libtorch_cuda.so` next to `libtorch_cpu.so`: CUDA can never be used.
    CpuOnly,
    /// A CUDA build (`libtorch_cuda.so` is present); the CUDA major version of its runtime when known.
    Cuda(Option<u32>),
    /// libtorch's folder could not be determined.
    Unknown,
}

impl std::fmt::Display for LibtorchBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LibtorchBuild::CpuOnly => write!(f, "CPU-only"),
            LibtorchBuild::Cuda(Some(major)) => write!(f, "CUDA {major}"),
            LibtorchBuild::Cuda(None) => write!(f, "CUDA"),
            LibtorchBuild::Unknown => write!(f, "unknown"),
        }
    }
}

/// What the libtorch backend offers this process; printed by `cargo xtask doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Which build that directory holds.
    pub build: LibtorchBuild,
    /// The `dlerror()` text of a failed `libtorch_cuda.so` load.
    pub cuda_backend_error: Option<String>,
    /// The NVIDIA driver's version (e.g. `580.65.06`), from NVML, when a driver is installed.
    pub driver_version: Option<String>,
    /// The newest CUDA version the driver supports (e.g. `13.0`), when a driver is installed.
    pub driver_cuda_version: Option<String>,
}

impl BackendReport {
    /// Probes the backend (calling [`init`] first).
    pub fn probe() -> Self {
        let cuda_backend_loaded = init();
        let cuda_available = Cuda::is_available();
        let device_count = if cuda_available { Cuda::device_count().max(0) as usize } else { 0 };
        let gpus = (0..device_count)
            .map(|index| {
                let (name, total_memory_bytes, compute_capability) = driver::describe(index);
                GpuInfo { index, name, total_memory_bytes, compute_capability }
            })
            .collect();
        let libtorch_dir = loaded_library_dir("libtorch_cpu.so");
        let build = match &libtorch_dir {
            None => LibtorchBuild::Unknown,
            Some(dir) => {
                let dir = std::path::Path::new(dir);
                if dir.join("libtorch_cuda.so").exists() {
                    LibtorchBuild::Cuda(cudart_major(dir))
                } else {
                    LibtorchBuild::CpuOnly
                }
            }
        };
        Self {
            build,
            cuda_backend_error: cuda_backend_error(),
            driver_version: driver::version(),
            driver_cuda_version: driver::cuda_version(),
            cuda_backend_loaded,
            cuda_available,
            cudnn_available: cuda_available && Cuda::cudnn_is_available(),
            gpus,
            cpu_threads: tch::get_num_threads().max(0) as usize,
            libtorch_dir,
        }
    }

    /// Why this process cannot compute on a GPU, or `None` when it can.
    pub fn cuda_off_reason(&self) -> Option<String> {
        if self.cuda_available {
            return None;
        }
        Some(match (&self.build, &self.cuda_backend_error) {
            (LibtorchBuild::CpuOnly, _) => CPU_ONLY.to_owned(),
            (_, Some(error)) => format!("libtorch_cuda.so did not load: {error}"),
            _ if self.driver_cuda_version.is_none() => {
                "libtorch has CUDA, but no NVIDIA driver is installed (libcuda.so.1 is not found)".to_owned()
            }
            _ => "libtorch has CUDA and the driver is installed, but no GPU is visible (check `nvidia-smi` and \
                  CUDA_VISIBLE_DEVICES)"
                .to_owned(),
        })
    }
}

/// The CUDA major version of the runtime library in a libtorch folder (`libcudart.so.13` -> 13, also the
/// hashed `libcudart-<hash>.so.13` of libtorch archives).
fn cudart_major(dir: &std::path::Path) -> Option<u32> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        is_cudart(&name).then(|| name.rsplit_once(".so.")?.1.split('.').next()?.parse().ok())?
    })
}

/// Whether a library file name is the CUDA runtime: `libcudart.so*`, or `libcudart-<hash>.so*` as libtorch
/// archives name their bundled copy.
pub(crate) fn is_cudart(name: &str) -> bool {
    name.strip_prefix("libcudart").is_some_and(|rest| {
        rest.starts_with(".so")
            || rest.strip_prefix('-').is_some_and(|rest| {
                rest.split_once(".so").is_some_and(|(hash, _)| {
                    !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_alphanumeric())
                })
            })
    })
}

impl std::fmt::Display for BackendReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        writeln!(
            f,
            "libtorch loaded from : {}",
            self.libtorch_dir.as_deref().unwrap_or("(unknown)")
        )?;
        writeln!(f, "libtorch build       : {}", self.build)?;
        writeln!(f, "CUDA backend loaded  : {}", yes_no(self.cuda_backend_loaded))?;
        if let Some(error) = &self.cuda_backend_error {
            writeln!(f, "  dlopen error       : {error}")?;
        }
        match (&self.driver_version, &self.driver_cuda_version) {
            (None, None) => writeln!(f, "NVIDIA driver        : none")?,
            (version, cuda) => writeln!(
                f,
                "NVIDIA driver        : {} (supports CUDA {})",
                version.as_deref().unwrap_or("version unknown"),
                cuda.as_deref().unwrap_or("?")
            )?,
        }
        writeln!(f, "CUDA available       : {}", yes_no(self.cuda_available))?;
        if let Some(reason) = self.cuda_off_reason() {
            writeln!(f, "  why CUDA is off    : {reason}")?;
        }
        writeln!(f, "cuDNN available      : {}", yes_no(self.cudnn_available))?;
        writeln!(f, "CUDA devices         : {}", self.gpus.len())?;
        for gpu in &self.gpus {
            let name = gpu.name.as_deref().unwrap_or("(name unavailable)");
            let memory = gpu
                .total_memory_bytes
                .map(|bytes| format!(", {:.1} GiB", bytes as f64 / (1u64 << 30) as f64))
                .unwrap_or_default();
            let capability = gpu
                .compute_capability
                .map(|(major, minor)| format!(", compute {major}.{minor}"))
                .unwrap_or_default();
            let bf16 = match gpu.bf16_supported() {
                Some(true) => ", bf16 supported",
                Some(false) => ", bf16 not native (compute < 8.0)",
                None => ", bf16 unknown",
            };
            writeln!(f, "  cuda:{} {name}{memory}{capability}{bf16}", gpu.index)?;
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
    type CuDeviceGetAttribute =
        unsafe extern "C" fn(value: *mut c_int, attribute: c_int, device: c_int) -> c_int;
    type CuDriverGetVersion = unsafe extern "C" fn(version: *mut c_int) -> c_int;
    type NvmlInit = unsafe extern "C" fn() -> c_int;
    type NvmlSystemGetDriverVersion = unsafe extern "C" fn(version: *mut c_char, len: u32) -> c_int;

    const CUDA_SUCCESS: c_int = 0;
    const NVML_SUCCESS: c_int = 0;
    const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
    const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;

    /// The newest CUDA version the installed driver supports, e.g. `13.0`.
    pub(super) fn cuda_version() -> Option<String> {
        let handle = dlopen_global("libcuda.so.1")?;
        let get_version = symbol::<CuDriverGetVersion>(handle, "cuDriverGetVersion")?;
        let mut version: c_int = 0;
        // SAFETY: valid out-pointer; cuDriverGetVersion needs no cuInit.
        (unsafe { get_version(&mut version) } == CUDA_SUCCESS)
            .then(|| format!("{}.{}", version / 1000, version % 1000 / 10))
    }

    /// The driver's own version string, e.g. `580.65.06`, from NVML (`libnvidia-ml.so.1`, part of the driver).
    pub(super) fn version() -> Option<String> {
        let handle = dlopen_global("libnvidia-ml.so.1")?;
        let init = symbol::<NvmlInit>(handle, "nvmlInit_v2")?;
        let get = symbol::<NvmlSystemGetDriverVersion>(handle, "nvmlSystemGetDriverVersion")?;
        let mut buffer = [0 as c_char; 96];
        // SAFETY: documented NVML calls; the buffer length is passed, so NVML writes at most 96 bytes.
        let ok = unsafe {
            init() == NVML_SUCCESS && get(buffer.as_mut_ptr(), buffer.len() as u32) == NVML_SUCCESS
        };
        // SAFETY: on success NVML wrote a NUL-terminated string into the buffer.
        ok.then(|| unsafe { CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().into_owned())
    }

    pub(super) fn describe(index: usize) -> (Option<String>, Option<u64>, Option<(u32, u32)>) {
        let Some(handle) = dlopen_global("libcuda.so.1") else { return (None, None, None) };
        let (Some(cu_init), Some(cu_device_get)) =
            (symbol::<CuInit>(handle, "cuInit"), symbol::<CuDeviceGet>(handle, "cuDeviceGet"))
        else {
            return (None, None, None);
        };
        let mut device: c_int = 0;
        // SAFETY: documented driver API calls with valid out-pointers.
        let ready = unsafe {
            cu_init(0) == CUDA_SUCCESS && cu_device_get(&mut device, index as c_int) == CUDA_SUCCESS
        };
        if !ready {
            return (None, None, None);
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
        let capability =
            symbol::<CuDeviceGetAttribute>(handle, "cuDeviceGetAttribute").and_then(|get| {
                let (mut major, mut minor): (c_int, c_int) = (0, 0);
                // SAFETY: valid out-pointers and documented attribute numbers.
                let ok = unsafe {
                    get(&mut major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)
                        == CUDA_SUCCESS
                        && get(&mut minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)
                            == CUDA_SUCCESS
                };
                ok.then_some((major.max(0) as u32, minor.max(0) as u32))
            });
        (name, memory, capability)
    }
}

/// The matrix-multiply throughput of `device` in `kind`, in floating-point operations per second: the best of
/// `reps` products of two `n × n` matrices (after one warm-up), each counted as `2 n³` operations. This is the
/// ceiling a benchmark compares a step's arithmetic with.
pub fn matmul_throughput(
    device: Device,
    kind: tch::Kind,
    n: i64,
    reps: usize,
) -> crate::Result<f64> {
    use crate::error::TorchContext;
    let a = tch::Tensor::f_randn([n, n], (kind, device)).ctx("matmul operand")?;
    let b = tch::Tensor::f_randn([n, n], (kind, device)).ctx("matmul operand")?;
    let _ = a.f_matmul(&b).ctx("matmul")?;
    synchronize(device);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let started = std::time::Instant::now();
        let _ = a.f_matmul(&b).ctx("matmul")?;
        synchronize(device);
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best)
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
        assert_eq!(report.cuda_backend_loaded, report.cuda_backend_error.is_none());
        assert_eq!(report.cuda_off_reason().is_none(), report.cuda_available);
        let has_cuda_lib = std::path::Path::new(&dir).join("libtorch_cuda.so").exists();
        assert_eq!(
            matches!(report.build, LibtorchBuild::Cuda(_)),
            has_cuda_lib,
            "{:?}",
            report.build
        );
        if !has_cuda_lib {
            assert_eq!(report.build, LibtorchBuild::CpuOnly);
            let reason = report.cuda_off_reason().unwrap();
            assert!(reason.contains("cargo xtask setup --cuda"), "{reason}");
            let error = report
                .cuda_backend_error
                .clone()
                .expect("a CPU-only libtorch cannot load libtorch_cuda");
            assert!(
                error.contains("libtorch_cuda.so"),
                "the dlerror text names the library: {error}"
            );
        }
    }

    #[test]
    fn the_cuda_runtime_is_recognised_under_both_names() {
        for name in [
            "libcudart.so",
            "libcudart.so.13",
            "libcudart.so.13.0.96",
            "libcudart-d0da41ae.so.11.0",
        ] {
            assert!(is_cudart(name), "{name}");
        }
        for name in ["libcudart_static.a", "libcudart-.so.13", "libcudnn.so.9", "libcudart-ab.c.so"]
        {
            assert!(!is_cudart(name), "{name}");
        }
    }

    #[test]
    fn bf16_support_follows_the_compute_capability() {
        let gpu = |compute_capability| GpuInfo {
            index: 0,
            name: None,
            total_memory_bytes: None,
            compute_capability,
        };
        assert_eq!(gpu(Some((9, 0))).bf16_supported(), Some(true));
        assert_eq!(gpu(Some((8, 0))).bf16_supported(), Some(true));
        assert_eq!(gpu(Some((7, 5))).bf16_supported(), Some(false));
        assert_eq!(gpu(None).bf16_supported(), None);
    }
}
