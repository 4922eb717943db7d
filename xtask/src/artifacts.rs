//! Where cargo put the programs it built.
//!
//! The target folder moves with `CARGO_TARGET_DIR`, `build.target-dir` in a cargo configuration, `--target`
//! and the profile; rather than rebuilding that logic, the commands that run a program they just built ask
//! cargo for `--message-format=json-render-diagnostics` and read the `executable` of each `compiler-artifact`
//! message, which is the file cargo wrote (or found fresh) whatever decided its folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::paths::workspace_root;

/// The executables of one cargo build, by target name.
#[derive(Debug, Default)]
pub struct Executables(BTreeMap<String, PathBuf>);

impl Executables {
    /// Reads cargo's JSON messages (one per line): every `compiler-artifact` with an `executable` adds it under
    /// its target's name. Other lines (build-script output, diagnostics, anything not JSON) are ignored.
    pub fn from_messages(stdout: &str) -> Self {
        let mut found = BTreeMap::new();
        for line in stdout.lines() {
            let Ok(message) = serde_json::from_str::<Value>(line) else { continue };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            let (Some(executable), Some(name)) =
                (message["executable"].as_str(), message["target"]["name"].as_str())
            else {
                continue;
            };
            found.insert(name.to_owned(), PathBuf::from(executable));
        }
        Self(found)
    }

    /// The executable of target `name`, or an error saying cargo reported none.
    pub fn get(&self, name: &str) -> Result<&Path> {
        self.0.get(name).map(PathBuf::as_path).with_context(|| {
            format!(
                "cargo reported no executable for `{name}` (it reported: {})",
                if self.0.is_empty() {
                    "none".to_owned()
                } else {
                    self.0.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )
        })
    }
}

/// Runs a cargo build command (`cargo build ...` or `cargo test --no-run ...`) with JSON messages on stdout and
/// returns the executables it reports; diagnostics and progress still reach the terminal on stderr.
pub fn build(command: &mut Command, what: &str) -> Result<Executables> {
    let output = command
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("building {what}"))?;
    if !output.status.success() {
        bail!("building {what} failed ({})", output.status);
    }
    Ok(Executables::from_messages(&String::from_utf8_lossy(&output.stdout)))
}

/// Builds the release examples `names` of `detox-examples` and returns their executables.
pub fn release_examples(names: &[&str]) -> Result<Executables> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.args(["build", "--release", "-p", "detox-examples"]).current_dir(workspace_root());
    for name in names {
        command.args(["--example", name]);
    }
    let built = build(&mut command, &format!("the example(s) {}", names.join(", ")))?;
    for name in names {
        built.get(name)?;
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as cargo 1.8x writes them (trimmed to the fields read), from a build with `CARGO_TARGET_DIR`
    /// pointing outside the workspace.
    const MESSAGES: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/detox-io#0.1.0","target":{"kind":["lib"],"crate_types":["lib"],"name":"detox_io","src_path":"/w/crates/detox-io/src/lib.rs"},"filenames":["/elsewhere/release/deps/libdetox_io-1.rlib"],"executable":null,"fresh":true}
{"reason":"build-script-executed","package_id":"path+file:///w/examples#0.1.0","linked_libs":[],"linked_paths":[],"cfgs":[],"env":[],"out_dir":"/elsewhere/release/build/x/out"}
   Compiling something that is not JSON
{"reason":"compiler-message","package_id":"path+file:///w/examples#0.1.0","target":{"kind":["example"],"name":"safeedit_eval"},"message":{"rendered":"warning: unused"}}
{"reason":"compiler-artifact","package_id":"path+file:///w/examples#0.1.0","target":{"kind":["example"],"crate_types":["bin"],"name":"safeedit_eval","src_path":"/w/examples/safeedit_eval/main.rs"},"filenames":["/elsewhere/release/examples/safeedit_eval"],"executable":"/elsewhere/release/examples/safeedit_eval","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/examples#0.1.0","target":{"kind":["example"],"crate_types":["bin"],"name":"protocol_bench","src_path":"/w/examples/protocol_bench/main.rs"},"filenames":["/elsewhere/release/examples/protocol_bench"],"executable":"/elsewhere/release/examples/protocol_bench","fresh":true}
{"reason":"build-finished","success":true}
"#;

    #[test]
    fn executables_come_from_the_artifact_messages() {
        let built = Executables::from_messages(MESSAGES);
        assert_eq!(
            built.get("safeedit_eval").unwrap(),
            Path::new("/elsewhere/release/examples/safeedit_eval")
        );
        assert_eq!(
            built.get("protocol_bench").unwrap(),
            Path::new("/elsewhere/release/examples/protocol_bench")
        );
        // A library has no executable; diagnostics and other messages add nothing.
        assert_eq!(built.0.len(), 2);
        let message = format!("{:#}", built.get("train_baseline").unwrap_err());
        assert!(
            message.contains("train_baseline") && message.contains("protocol_bench"),
            "{message}"
        );
    }

    /// A real cargo run with `CARGO_TARGET_DIR` elsewhere: the executable is found there, not under
    /// `target/`. A throwaway crate keeps it quick and independent of libtorch.
    #[test]
    fn a_build_with_its_target_folder_elsewhere_is_found_there() {
        let work = tempfile::tempdir().unwrap();
        let krate = work.path().join("probe");
        std::fs::create_dir_all(krate.join("examples")).unwrap();
        std::fs::write(
            krate.join("Cargo.toml"),
            "[package]\nname = \"probe\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .unwrap();
        std::fs::create_dir_all(krate.join("src")).unwrap();
        std::fs::write(krate.join("src/lib.rs"), "").unwrap();
        std::fs::write(krate.join("examples/hello.rs"), "fn main() {}\n").unwrap();
        let target = work.path().join("elsewhere");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = Command::new(cargo);
        command
            .args(["build", "--offline", "--example", "hello"])
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", &target);
        let built = build(&mut command, "the probe example").unwrap();
        let hello = built.get("hello").unwrap();
        assert!(hello.starts_with(&target), "{}", hello.display());
        assert!(hello.is_file(), "{}", hello.display());
    }
}
