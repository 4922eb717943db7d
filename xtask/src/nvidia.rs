//! Whether this machine has an NVIDIA driver, asked without libtorch (xtask builds without it).

use std::process::Command;

/// A description of the installed NVIDIA driver (`nvidia-smi reports driver 580.65.06`), or `None` when
/// neither `nvidia-smi` answers nor `/proc/driver/nvidia` exists.
pub fn driver() -> Option<String> {
    let smi = Command::new("nvidia-smi")
        .args(["--query-gpu=driver_version", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().next().map(|line| line.trim().to_owned()))
        .filter(|version| !version.is_empty());
    if let Some(version) = smi {
        return Some(format!("nvidia-smi reports driver {version}"));
    }
    let proc_version = std::fs::read_to_string("/proc/driver/nvidia/version").ok();
    match proc_version {
        Some(text) => Some(format!(
            "/proc/driver/nvidia/version: {}",
            text.lines().next().unwrap_or("").trim()
        )),
        None => std::path::Path::new("/proc/driver/nvidia")
            .exists()
            .then(|| "/proc/driver/nvidia exists".to_owned()),
    }
}
