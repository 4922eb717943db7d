//! `cargo xtask test`: the project's whole check, the one command CI runs.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths::workspace_root;

/// One cargo invocation of the check, with the environment it needs.
struct Step {
    label: &'static str,
    args: &'static [&'static str],
    env: Option<(&'static str, &'static str)>,
}

const STEPS: &[Step] = &[
    Step { label: "format", args: &["fmt", "--all", "--", "--check"], env: None },
    Step {
        label: "lint",
        args: &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        env: None,
    },
    Step { label: "test", args: &["test", "--workspace"], env: None },
    Step {
        label: "docs",
        args: &["doc", "--workspace", "--no-deps"],
        env: Some(("RUSTDOCFLAGS", "-D warnings")),
    },
];

/// Set-up if needed, then fmt, clippy, tests and docs, each with warnings denied. Stops at the first failure.
pub fn run_all() -> Result<()> {
    crate::libtorch::ensure(false)?;
    // The runtime's integration tests load the real embedded model.
    crate::smollm2::ensure()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    for step in STEPS {
        let command_line = format!("cargo {}", step.args.join(" "));
        println!("==> {}: {command_line}", step.label);
        let mut command = Command::new(&cargo);
        command.args(step.args).current_dir(workspace_root());
        if let Some((key, value)) = step.env {
            command.env(key, value);
        }
        let status = command.status().with_context(|| format!("running {command_line}"))?;
        if !status.success() {
            bail!("{} failed: `{command_line}` exited with {status}", step.label);
        }
    }
    println!("==> all checks passed");
    Ok(())
}
