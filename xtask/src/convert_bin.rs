//! `cargo xtask convert-bin <dir>`: turns a pickled `pytorch_model.bin` into `model.safetensors` once, so the
//! libraries never read pickles.
//!
//! Unpickling is left to PyTorch itself (`torch.load(..., weights_only=True)`, which refuses arbitrary code),
//! run by `python3`; the result is written next to the checkpoint under a temporary name, checked, and only
//! then renamed to `model.safetensors`, so an interrupted conversion never leaves a half-written checkpoint
//! under the real name.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Exit status of the snippet when `torch` or `safetensors` cannot be imported.
const MISSING_MODULE_EXIT: i32 = 3;
/// Exit status of the snippet when the pickle is not a flat mapping of names to tensors.
const NOT_A_STATE_DICT_EXIT: i32 = 4;

/// Loads the pickle with PyTorch's safe loader and saves every tensor (contiguous, unshared: safetensors
/// refuses tensors that share storage, as tied weights do) under its own name. Prints the tensor count.
const SNIPPET: &str = r#"
import sys
try:
    import torch
    from safetensors.torch import save_file
except ImportError as error:
    sys.stderr.write(f"{error}\n")
    sys.exit(3)
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]
if not isinstance(state, dict) or not all(
    isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
):
    sys.stderr.write("the pickle is not a mapping of tensor names to tensors\n")
    sys.exit(4)
tensors = {name: t.detach().contiguous().clone() for name, t in state.items()}
save_file(tensors, sys.argv[2], metadata={"format": "pt"})
print(len(tensors))
"#;

/// The files one conversion reads and writes.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The pickled checkpoint.
    pub source: PathBuf,
    /// The temporary output, in the same directory so the final rename is atomic.
    pub partial: PathBuf,
    /// The final `model.safetensors`.
    pub target: PathBuf,
}

/// Decides what to convert in `dir`, refusing to overwrite an existing `model.safetensors` unless `force`.
pub fn plan(dir: &Path, force: bool) -> Result<Plan> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let source = dir.join("pytorch_model.bin");
    if !source.is_file() {
        if dir.join("pytorch_model.bin.index.json").is_file() {
            bail!(
                "{} holds a sharded pickle checkpoint (pytorch_model.bin.index.json); only a single \
                 pytorch_model.bin is converted",
                dir.display()
            );
        }
        bail!("{} has no pytorch_model.bin to convert", dir.display());
    }
    let target = dir.join("model.safetensors");
    if target.exists() && !force {
        bail!("{} already exists; pass --force to replace it", target.display());
    }
    Ok(Plan { source, partial: dir.join(".model.safetensors.partial"), target })
}

/// Converts `dir/pytorch_model.bin` into `dir/model.safetensors` with `python`.
pub fn run(dir: &Path, force: bool, python: &str) -> Result<()> {
    let plan = plan(dir, force)?;
    let converted = convert(&plan, python);
    if converted.is_err() {
        // Leave nothing half-written behind; the original error is what matters.
        let _ = std::fs::remove_file(&plan.partial);
    }
    let count = converted?;
    std::fs::rename(&plan.partial, &plan.target).with_context(|| {
        format!("renaming {} to {}", plan.partial.display(), plan.target.display())
    })?;
    println!("wrote {} ({count} tensors)", plan.target.display());
    Ok(())
}

fn convert(plan: &Plan, python: &str) -> Result<usize> {
    let output =
        Command::new(python).arg("-c").arg(SNIPPET).arg(&plan.source).arg(&plan.partial).output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "`{python}` was not found: converting a pickle needs Python 3 with torch and safetensors \
             (pip install torch safetensors), or name another interpreter with --python"
        ),
        Err(e) => return Err(e).with_context(|| format!("starting `{python}`")),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(failure(output.status.code(), stderr.trim(), python, &plan.source));
    }
    let reported: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .context("the conversion did not report how many tensors it wrote")?;
    let stored = safetensors_tensor_count(&plan.partial)?;
    if stored != reported {
        bail!("{} holds {stored} tensors, the pickle had {reported}", plan.partial.display());
    }
    Ok(stored)
}

/// Explains a failed conversion by the snippet's exit status.
fn failure(code: Option<i32>, stderr: &str, python: &str, source: &Path) -> anyhow::Error {
    match code {
        Some(MISSING_MODULE_EXIT) => anyhow::anyhow!(
            "`{python}` lacks a module the conversion needs ({stderr}); install them with \
             `pip install torch safetensors`"
        ),
        Some(NOT_A_STATE_DICT_EXIT) => {
            anyhow::anyhow!("{}: {stderr}", source.display())
        }
        Some(code) => {
            anyhow::anyhow!("converting {} failed (exit status {code}): {stderr}", source.display())
        }
        None => anyhow::anyhow!("converting {} was killed by a signal", source.display()),
    }
}

/// The number of tensors in a safetensors file, from its header, after checking the header's framing (an
/// 8-byte little-endian length, then that many bytes of JSON object, within the file).
pub fn safetensors_tensor_count(path: &Path) -> Result<usize> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let file_len = file.metadata()?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .with_context(|| format!("{}: shorter than a safetensors header", path.display()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len.saturating_add(8) > file_len {
        bail!("{}: header length {header_len} runs past the end of the file", path.display());
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)?;
    let header = String::from_utf8(header)
        .with_context(|| format!("{}: header is not UTF-8", path.display()))?;
    let trimmed = header.trim_end();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        bail!("{}: header is not a JSON object", path.display());
    }
    // Every tensor entry, and nothing else, carries `data_offsets`.
    Ok(header.matches("\"data_offsets\"").count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safetensors_bytes(header: &str, data: usize) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data));
        bytes
    }

    #[test]
    fn plan_needs_a_pickle_and_protects_an_existing_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let err = plan(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("no pytorch_model.bin"), "{err}");

        std::fs::write(dir.path().join("pytorch_model.bin"), b"x").unwrap();
        let p = plan(dir.path(), false).unwrap();
        assert_eq!(p.target, dir.path().join("model.safetensors"));
        assert_eq!(p.partial.parent(), Some(dir.path()));

        std::fs::write(dir.path().join("model.safetensors"), b"x").unwrap();
        let err = plan(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        assert!(plan(dir.path(), true).is_ok());
    }

    #[test]
    fn plan_names_sharded_pickles_as_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pytorch_model.bin.index.json"), b"{}").unwrap();
        let err = plan(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("sharded"), "{err}");
    }

    #[test]
    fn a_missing_interpreter_is_a_clear_error_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pytorch_model.bin"), b"x").unwrap();
        let err = run(dir.path(), false, "/nonexistent/python3").unwrap_err().to_string();
        assert!(err.contains("was not found") && err.contains("pip install torch"), "{err}");
        assert!(!dir.path().join("model.safetensors").exists());
        assert!(!dir.path().join(".model.safetensors.partial").exists());
    }

    #[test]
    fn failures_are_explained_by_exit_status() {
        let src = Path::new("m/pytorch_model.bin");
        let missing = failure(Some(MISSING_MODULE_EXIT), "No module named 'torch'", "python3", src);
        assert!(missing.to_string().contains("pip install torch safetensors"), "{missing}");
        let shape = failure(Some(NOT_A_STATE_DICT_EXIT), "not a mapping", "python3", src);
        assert!(shape.to_string().contains("m/pytorch_model.bin: not a mapping"), "{shape}");
        let other = failure(Some(1), "Traceback", "python3", src);
        assert!(other.to_string().contains("exit status 1"), "{other}");
    }

    #[test]
    fn tensor_count_reads_the_header_and_rejects_bad_framing() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.safetensors");
        let header = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        std::fs::write(&good, safetensors_bytes(header, 12)).unwrap();
        assert_eq!(safetensors_tensor_count(&good).unwrap(), 2);

        let truncated = dir.path().join("truncated.safetensors");
        let mut bytes = safetensors_bytes(header, 12);
        bytes.truncate(20);
        std::fs::write(&truncated, bytes).unwrap();
        assert!(safetensors_tensor_count(&truncated).is_err());

        let not_json = dir.path().join("not_json.safetensors");
        std::fs::write(&not_json, safetensors_bytes("[1, 2]", 0)).unwrap();
        assert!(safetensors_tensor_count(&not_json).is_err());
    }
}
