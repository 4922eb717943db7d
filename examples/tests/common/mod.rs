//! Running the example executables from the tests: the ones `cargo test -p detox-examples` builds next to the
//! test executable (`target/<profile>/examples/<name>`). Running one test alone (`--test arguments`) does not
//! rebuild them, so build them first then (`cargo build -p detox-examples --examples`).
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

/// The path of example `name`.
pub fn example(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>
    let profile_dir =
        exe.parent().and_then(|deps| deps.parent()).context("test executable path")?;
    let path = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    ensure!(
        path.is_file(),
        "{} is missing: build the examples first (`cargo test -p detox-examples` builds them)",
        path.display()
    );
    Ok(path)
}

/// Runs example `name` with `args`, expecting it to stop by itself within a minute (a refusal comes before any
/// model is loaded); one still running then is killed and `still_running` is the error. Stdout is discarded.
pub fn run_expecting_refusal(name: &str, args: &[&str], still_running: &str) -> Result<Output> {
    let shown = format!("{name} {}", args.join(" "));
    let mut child = Command::new(example(name)?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {name}"))?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("`{shown}` {still_running}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}
