//! `cargo xtask test`: the project's whole check, the one command CI runs.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths::workspace_root;

/// Set-up if needed, then fmt, clippy, tests and docs, each with warnings denied. Stops at the first failure.
pub fn run_all() -> Result<()> {
    crate::libtorch::ensure(false)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let steps: [(&str, &[&str], &[(&str, &str)]); 4] = [
        ("format", &["fmt", "--all", "--", "--check"], &[]),
        ("lint", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[]),
        ("test", &["test", "--workspace"], &[]),
        ("docs", &["doc", "--workspace", "--no-deps"], &[("RUSTDOCFLAGS", "-D warnings")]),
    ];
    for (label, args, envs) in steps {
        println!("==> {label}: cargo {}", args.join(" "));
        let status = Command::new(&cargo)
            .args(args)
            .envs(envs.iter().copied())
            .current_dir(workspace_root())
            .status()
            .with_context(|| format!("running cargo {}", args.join(" ")))?;
        if !status.success() {
            bail!("{label} failed: `cargo {}` exited with {status}", args.join(" "));
        }
    }
    println!("==> all checks passed");
    Ok(())
}
