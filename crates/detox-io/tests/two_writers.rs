//! Two processes on one directory: the second is refused, naming the directory and the holder's pid, while the
//! first runs; a holder killed with SIGKILL leaves no lock behind.
//!
//! The executable runs itself as the competing processes: `hold DIR` locks and waits on stdin, `try DIR` locks
//! once and exits 0, or prints the error and exits 1.
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{ensure, Context, Result};
use detox_io::DirLock;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("hold") => {
            let _lock = DirLock::acquire(Path::new(&args[2])).expect("the first process locks");
            println!("locked");
            let _ = std::io::stdout().flush();
            // Hold until killed (or until the parent closes stdin).
            let _ = std::io::stdin().read_line(&mut String::new());
            ExitCode::SUCCESS
        }
        Some("try") => match DirLock::acquire(Path::new(&args[2])) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        // `cargo test` passes libtest options such as `--nocapture`; `--list` asks what tests there are.
        Some("--list") => {
            println!("two_writers: test");
            ExitCode::SUCCESS
        }
        _ => match second_writer_refused_and_killed_holder_leaves_no_lock() {
            Ok(()) => {
                println!("test two_writers ... ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("test two_writers ... FAILED: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn second_writer_refused_and_killed_holder_leaves_no_lock() -> Result<()> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let run_dir = dir.path().join("run");
    let mut holder = Command::new(&exe)
        .arg("hold")
        .arg(&run_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the first process")?;
    let mut line = String::new();
    BufReader::new(holder.stdout.take().context("the first process's stdout")?)
        .read_line(&mut line)?;
    ensure!(line.trim() == "locked", "the first process did not lock: {line:?}");

    let second = Command::new(&exe).arg("try").arg(&run_dir).output()?;
    let message = String::from_utf8_lossy(&second.stderr);
    ensure!(!second.status.success(), "the second process was not refused");
    ensure!(
        message.contains(&run_dir.display().to_string()),
        "the refusal does not name the directory: {message}"
    );
    ensure!(
        message.contains(&format!("pid {}", holder.id())),
        "the refusal does not name the holder's pid {}: {message}",
        holder.id()
    );

    // SIGKILL: no destructor runs, only the operating system can release the lock.
    holder.kill()?;
    holder.wait()?;
    let third = Command::new(&exe).arg("try").arg(&run_dir).output()?;
    ensure!(
        third.status.success(),
        "a killed holder left a stale lock: {}",
        String::from_utf8_lossy(&third.stderr)
    );
    Ok(())
}
