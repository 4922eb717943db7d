//! Checkpoints of training runs: named fp32 tensors with their Adam moments, and a JSON state naming them.
//!
//! The tensors go to `checkpoint-{step}.safetensors`, then `checkpoint.json` is replaced atomically to point at
//! them, then the previous tensors are removed: an interruption at any moment leaves a complete checkpoint.

use std::path::Path;

use detox_runtime::SafetensorsFiles;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::adam::Adam;
use crate::error::{torch, EditError, Result};

const STATE_FILE: &str = "checkpoint.json";

#[derive(Debug, Serialize, Deserialize)]
struct State {
    fingerprint: String,
    step: usize,
    adam_step: i32,
    tensors: String,
    history: Value,
    extra: Value,
}

/// What a resumed run continues from.
#[derive(Debug)]
pub(crate) struct Resumed {
    /// Steps already done.
    pub step: usize,
    /// The run's per-step records.
    pub history: Value,
    /// Whatever else the run saved (e.g. DPO's reference log-probabilities).
    pub extra: Value,
}

/// Saves `tensors` (by name, each with the Adam state at the same position of `adams`) and the run's state.
pub(crate) fn save(
    dir: &Path,
    fingerprint: &str,
    step: usize,
    history: Value,
    extra: Value,
    tensors: &[(String, &Tensor)],
    adams: &[Adam],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| EditError::Io { path: dir.into(), source })?;
    let file = format!("checkpoint-{step}.safetensors");
    let mut out = Vec::with_capacity(3 * tensors.len());
    for ((name, t), adam) in tensors.iter().zip(adams) {
        let (_, m, v) = adam.state();
        out.push((format!("{name}.exp_avg"), m.shallow_clone()));
        out.push((format!("{name}.exp_avg_sq"), v.shallow_clone()));
        out.push((name.clone(), t.detach()));
    }
    detox_runtime::weights::save_safetensors(&dir.join(&file), &out)?;
    let previous = read_state(dir)?.map(|s| s.tensors);
    let state = State {
        fingerprint: fingerprint.to_string(),
        step,
        adam_step: adams.first().map_or(0, |a| a.state().0),
        tensors: file.clone(),
        history,
        extra,
    };
    write_json(&dir.join(STATE_FILE), &state)?;
    if let Some(old) = previous.filter(|old| *old != file) {
        // Best effort: a leftover file is harmless, the state no longer names it.
        let _ = std::fs::remove_file(dir.join(old));
    }
    Ok(())
}

/// Loads the checkpoint in `dir` into `tensors` and `adams`, when there is one; a checkpoint of another run
/// (another fingerprint) is an error rather than silently ignored or overwritten.
pub(crate) fn load(
    dir: &Path,
    fingerprint: &str,
    tensors: Vec<(String, &mut Tensor)>,
    adams: &mut [Adam],
) -> Result<Option<Resumed>> {
    let Some(state) = read_state(dir)? else { return Ok(None) };
    if state.fingerprint != fingerprint {
        return Err(EditError::Artefact {
            path: dir.join(STATE_FILE),
            reason: "the checkpoint was written for another configuration or other training data; use a \
                     fresh checkpoint directory"
                .into(),
        });
    }
    let path = dir.join(&state.tensors);
    let files = SafetensorsFiles::open_files(std::slice::from_ref(&path))?;
    let fetch = |key: &str, like: &Tensor| -> Result<Tensor> {
        if !files.contains(key) {
            return Err(EditError::Artefact {
                path: path.to_path_buf(),
                reason: format!("tensor `{key}` is missing"),
            });
        }
        let t = files.load(key, Device::Cpu, Some(Kind::Float))?;
        if t.size() != like.size() {
            return Err(EditError::ShapeMismatch {
                what: format!("{}: tensor `{key}`", path.display()),
                expected: format!("{:?}", like.size()),
                got: t.size(),
            });
        }
        Ok(t)
    };
    for ((name, t), adam) in tensors.into_iter().zip(adams.iter_mut()) {
        let value = fetch(&name, t)?;
        {
            let _guard = tch::no_grad_guard();
            t.f_copy_(&value).map_err(torch("loading a checkpointed tensor"))?;
        }
        let m = fetch(&format!("{name}.exp_avg"), t)?;
        let v = fetch(&format!("{name}.exp_avg_sq"), t)?;
        adam.load_state(state.adam_step, m, v)?;
    }
    Ok(Some(Resumed { step: state.step, history: state.history, extra: state.extra }))
}

fn read_state(dir: &Path) -> Result<Option<State>> {
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    read_json(&path, "a training checkpoint").map(Some)
}

/// Writes `bytes` to `path` durably (see [`detox_io::write_atomic`]), with the editors' error type.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    detox_io::write_atomic(path, bytes)
        .map_err(|e| EditError::Io { path: e.path, source: e.source })
}

/// Writes `value` as pretty JSON to `path`, durably: the description file of an artefact.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| EditError::State(format!("serialising {}: {e}", path.display())))?;
    write_atomic(path, &json)
}

/// Reads the JSON description at `path`; `what` names what it should be ("a ProFS description") in the error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let bytes =
        std::fs::read(path).map_err(|source| EditError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| EditError::Artefact {
        path: path.to_path_buf(),
        reason: format!("not {what}: {e}"),
    })
}

/// An FNV-1a 64 hash of token-id sequences, to tell training data apart in fingerprints.
pub(crate) fn hash_ids<'a>(parts: impl IntoIterator<Item = &'a [i64]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |v: i64| {
        for byte in v.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for part in parts {
        feed(part.len() as i64);
        part.iter().copied().for_each(&mut feed);
    }
    hash
}
