//! Headless Chromium (Debian's `chromium` package): installed for the report's browser test, and used to take a
//! screenshot of a run's `report.html`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::headless::HEADLESS_FLAGS;

/// Where Debian's package installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Makes sure Chromium is installed: installs Debian's `chromium` with apt-get when it is missing and this runs as
/// root, and fails saying what to do otherwise.
pub fn ensure() -> Result<PathBuf> {
    crate::debian::ensure_packages(
        &["chromium"],
        &[CHROMIUM],
        "the report test renders report.html in headless Chromium",
    )?;
    Ok(PathBuf::from(CHROMIUM))
}

/// Writes a PNG of the top `width` x `height` pixels of `run_dir`'s `report.html` to `out`.
pub fn report_screenshot(run_dir: &Path, out: &Path, width: u32, height: u32) -> Result<()> {
    let report = run_dir.join("report.html");
    let report = report
        .canonicalize()
        .with_context(|| format!("{}: no report (is this a run directory?)", report.display()))?;
    let chromium = ensure()?;
    let out = std::path::absolute(out)?;
    let profile = std::env::temp_dir().join(format!("detox-chromium-{}", std::process::id()));
    let output = Command::new(&chromium)
        .args(HEADLESS_FLAGS)
        .arg("--hide-scrollbars")
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("file://{}", report.display()))
        .output()
        .with_context(|| format!("running {}", chromium.display()));
    // The profile is this run's own; a failure to remove it loses nothing.
    let _ = std::fs::remove_dir_all(&profile);
    let output = output?;
    if !output.status.success() || !out.is_file() {
        bail!(
            "Chromium could not take the screenshot ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    println!("{}", out.display());
    Ok(())
}
