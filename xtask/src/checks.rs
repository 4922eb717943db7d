//! `cargo xtask test`: the project's whole check, the one command CI runs.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::paths::workspace_root;

/// One cargo invocation of the check, with the environment it needs.
struct Step {
    label: &'static str,
    args: Vec<String>,
    /// Variables to set (`Some`) or remove (`None`).
    env: Vec<(&'static str, Option<String>)>,
    /// Text the command's standard output must contain.
    expect: Option<&'static str>,
}

impl Step {
    fn new(label: &'static str, args: &[&str]) -> Self {
        Self {
            label,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            expect: None,
        }
    }

    fn env(mut self, key: &'static str, value: Option<&str>) -> Self {
        self.env.push((key, value.map(str::to_owned)));
        self
    }
}

/// A crate the workspace publishes, as `cargo metadata` describes it.
#[derive(Debug, PartialEq, Eq)]
struct Library {
    name: String,
    /// Whether it has the `doc-only` feature (it links libtorch otherwise).
    doc_only: bool,
}

/// The workspace's publishable library crates: members with a `lib` target and no `publish = false`.
fn libraries(metadata: &Value) -> Result<Vec<Library>> {
    let members =
        metadata["workspace_members"].as_array().context("cargo metadata: workspace_members")?;
    let packages = metadata["packages"].as_array().context("cargo metadata: packages")?;
    let mut found = Vec::new();
    for package in packages.iter().filter(|p| members.contains(&p["id"])) {
        let unpublished =
            package["publish"].as_array().is_some_and(|registries| registries.is_empty());
        let has_lib = package["targets"].as_array().is_some_and(|targets| {
            targets
                .iter()
                .any(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "lib")))
        });
        if has_lib && !unpublished {
            let name = package["name"].as_str().context("cargo metadata: package name")?;
            found.push(Library {
                name: name.to_owned(),
                doc_only: package["features"].get("doc-only").is_some(),
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

fn workspace_libraries(cargo: &str) -> Result<Vec<Library>> {
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata exited with {}", output.status);
    }
    libraries(&serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?)
}

/// The environment of a build with no libtorch anywhere: a libtorch-linking crate must then build only with
/// `doc-only`. Its own target folder keeps the main build's artefacts (and torch-sys's C++) untouched.
fn without_libtorch(step: Step) -> Step {
    let target = workspace_root().join("target/no-libtorch");
    step.env("LIBTORCH", Some("/nonexistent/libtorch"))
        .env("LIBTORCH_LIB", None)
        .env("LIBTORCH_USE_PYTORCH", None)
        .env("CARGO_TARGET_DIR", Some(&target.display().to_string()))
}

/// `-p` for each library, then `--features` naming each `doc-only` feature.
fn library_args(libraries: &[Library]) -> Vec<String> {
    let mut args: Vec<String> =
        libraries.iter().flat_map(|l| ["-p".to_owned(), l.name.clone()]).collect();
    let features: Vec<String> =
        libraries.iter().filter(|l| l.doc_only).map(|l| format!("{}/doc-only", l.name)).collect();
    if !features.is_empty() {
        args.extend(["--features".to_owned(), features.join(",")]);
    }
    args
}

fn steps(libraries: &[Library]) -> Vec<Step> {
    let mut docs_offline =
        without_libtorch(Step::new("docs without libtorch", &["doc", "--no-deps"]))
            .env("RUSTDOCFLAGS", Some("-D warnings"));
    docs_offline.args.extend(library_args(libraries));
    // Verification builds every package from its .crate alone, which is what catches a file missing from an
    // `include` list; with `doc-only` it needs no libtorch and no C++ build.
    let mut package = without_libtorch(Step::new("package", &["package", "--allow-dirty"]));
    package.args.extend(library_args(libraries));
    let mut downstream =
        Step::new("downstream crate", &["run", "--quiet", "-p", "detox-downstream"])
            .env("LD_LIBRARY_PATH", None);
    downstream.expect = Some("weights restored bit-exactly");
    vec![
        Step::new("format", &["fmt", "--all", "--", "--check"]),
        Step::new("lint", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        Step::new("test", &["test", "--workspace"]),
        Step::new("docs", &["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", Some("-D warnings")),
        downstream,
        docs_offline,
        package,
    ]
}

fn run_step(cargo: &str, step: &Step) -> Result<()> {
    let command_line = format!("cargo {}", step.args.join(" "));
    println!("==> {}: {command_line}", step.label);
    let mut command = Command::new(cargo);
    command.args(&step.args).current_dir(workspace_root());
    for (key, value) in &step.env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let (status, stdout) = if step.expect.is_some() {
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {command_line}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        print!("{stdout}");
        (output.status, stdout)
    } else {
        (command.status().with_context(|| format!("running {command_line}"))?, String::new())
    };
    if !status.success() {
        bail!("{} failed: `{command_line}` exited with {status}", step.label);
    }
    if let Some(expected) = step.expect {
        if !stdout.contains(expected) {
            bail!("{} failed: `{command_line}` did not print {expected:?}", step.label);
        }
    }
    Ok(())
}

/// Removes the sources Cargo unpacked from earlier `cargo package` runs of our crates. Verifying several packages
/// goes through a local registry of the new `.crate` files, whose sources Cargo unpacks under
/// `$CARGO_HOME/registry/src/-<hash>/NAME-VERSION` and reuses while that folder exists: a crate changed since, at
/// the same version, would otherwise be verified against its old sources. Only such local registries (their
/// folder names start with `-`) are touched, and only our crates' folders in them.
fn forget_unpacked_packages(libraries: &[Library]) -> Result<()> {
    let home = match std::env::var_os("CARGO_HOME") {
        Some(home) => std::path::PathBuf::from(home),
        None => match std::env::var_os("HOME") {
            Some(home) => std::path::Path::new(&home).join(".cargo"),
            None => return Ok(()),
        },
    };
    let Ok(registries) = std::fs::read_dir(home.join("registry/src")) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        let Ok(unpacked) = std::fs::read_dir(registry.path()) else { continue };
        for entry in unpacked.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = libraries.iter().any(|l| {
                name.strip_prefix(&l.name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
            });
            if ours {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

/// Removes what earlier verifications compiled of our crates in the packaging target folder. Cargo takes a
/// registry crate's sources as fixed for its version, so a crate verified before at the same version would be
/// linked from its old build; the third-party dependencies' builds stay.
fn forget_package_builds(libraries: &[Library]) -> Result<()> {
    let debug = workspace_root().join("target/no-libtorch/debug");
    for folder in [debug.join(".fingerprint"), debug.join("build"), debug.join("deps")] {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = libraries.iter().any(|l| {
                let crate_name = l.name.replace('-', "_");
                [format!("{}-", l.name), format!("{crate_name}-"), format!("lib{crate_name}-")]
                    .iter()
                    .any(|prefix| name.starts_with(prefix.as_str()))
            });
            if ours {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.with_context(|| format!("removing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Set-up if needed (libtorch, SmolLM2, Debian's chromium, slurm-wlm and munge), then fmt, clippy, tests, docs, the downstream crate, docs and packages without libtorch,
/// each with warnings denied. Stops at the first failure.
pub fn run_all() -> Result<()> {
    crate::libtorch::ensure(false)?;
    // The runtime's integration tests load the real embedded model.
    crate::smollm2::ensure()?;
    // The report's test renders it in headless Chromium.
    crate::chromium::ensure()?;
    // The Slurm test runs the sharded benchmark on a single-node cluster of this machine.
    crate::slurm::ensure()?;
    // Fluency tests and the harness use NLTK's English Punkt model.
    crate::general_data::ensure_punkt()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let libraries = workspace_libraries(&cargo)?;
    for step in steps(&libraries) {
        if step.label == "package" {
            forget_unpacked_packages(&libraries)?;
            forget_package_builds(&libraries)?;
        }
        run_step(&cargo, &step)?;
    }
    println!("==> all checks passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_workspace_publishes_its_library_crates_only() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let found = workspace_libraries(&cargo).unwrap();
        let names: Vec<&str> = found.iter().map(|l| l.name.as_str()).collect();
        for library in ["safeedit", "detox-build", "detox-runtime", "detox-edit", "detox-eval"] {
            assert!(names.contains(&library), "{library} in {names:?}");
        }
        for program in ["xtask", "detox-examples", "detox-downstream"] {
            assert!(!names.contains(&program), "{program} in {names:?}");
        }
        assert!(found.iter().any(|l| l.name == "detox-runtime" && l.doc_only));
    }

    #[test]
    fn libraries_are_the_published_lib_members() {
        let metadata = serde_json::json!({
            "workspace_members": ["a", "b", "c", "d"],
            "packages": [
                {"id": "a", "name": "tool", "publish": [], "features": {},
                 "targets": [{"kind": ["lib"]}]},
                {"id": "b", "name": "runtime", "publish": null, "features": {"doc-only": ["tch/doc-only"]},
                 "targets": [{"kind": ["lib"]}, {"kind": ["custom-build"]}]},
                {"id": "c", "name": "dataset", "publish": null, "features": {},
                 "targets": [{"kind": ["lib"]}]},
                {"id": "d", "name": "app", "publish": null, "features": {},
                 "targets": [{"kind": ["bin"]}]},
                {"id": "e", "name": "dependency", "publish": null, "features": {},
                 "targets": [{"kind": ["lib"]}]}
            ]
        });
        let found = libraries(&metadata).unwrap();
        assert_eq!(
            found,
            [
                Library { name: "dataset".into(), doc_only: false },
                Library { name: "runtime".into(), doc_only: true }
            ]
        );
        assert_eq!(
            library_args(&found),
            ["-p", "dataset", "-p", "runtime", "--features", "runtime/doc-only"]
        );
    }
}
