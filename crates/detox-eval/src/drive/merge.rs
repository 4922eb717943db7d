//! Merging the run directories of shards (`--shard i/n` runs spread over processes or hosts) into one run, after
//! checking that they belong together and that together they cover every record exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::aggregate::cost::CostSummary;
use crate::aggregate::summary::Summary;
use crate::drive::general;
use crate::error::{EvalError, Result};
use crate::jsonl::{write_atomic, write_json_atomic, JsonlLog};
use crate::record::manifest::RunManifest;
use crate::record::{judgements, RunRecord};
use crate::render::write_reports;
use crate::settings::general::GeneralConfig;

fn read_manifest(dir: &Path) -> Result<RunManifest> {
    RunManifest::read(&dir.join("manifest.json"))
}

/// Merges shard run directories into `out`, ordered like `expected_ids` (the ids of the whole selection).
///
/// Fails, naming the directories, when manifests differ in anything but the selection, when a record appears in
/// two shards, or when records are missing (listing them).
pub fn merge_shards(shards: &[PathBuf], expected_ids: &[String], out: &Path) -> Result<Summary> {
    let first = shards
        .first()
        .ok_or_else(|| EvalError::Shards { reason: "no shard directories given".into() })?;
    // The merged directory has one writer, and a shard still being written is not merged half-done.
    let _out_lock = detox_io::DirLock::acquire(out)?;
    let mut shard_locks = Vec::with_capacity(shards.len());
    let mut manifest = read_manifest(first)?;
    let mut by_id: BTreeMap<String, (RunRecord, PathBuf)> = BTreeMap::new();
    for dir in shards {
        let m = read_manifest(dir)?;
        // A shard named twice is reported below as records appearing twice, not as locked by this process.
        if !shard_locks.iter().any(|l: &detox_io::DirLock| l.dir() == dir) {
            shard_locks.push(detox_io::DirLock::acquire(dir)?);
        }
        let mut comparable = m.clone();
        comparable.selection = manifest.selection.clone();
        comparable.device = manifest.device.clone();
        comparable.model_path = manifest.model_path.clone();
        comparable.dataset_path = manifest.dataset_path.clone();
        comparable.general_paths = manifest.general_paths.clone();
        if comparable != manifest {
            return Err(EvalError::Shards {
                reason: format!(
                    "{} was made with different settings than {}",
                    dir.display(),
                    first.display()
                ),
            });
        }
        let log = JsonlLog::<RunRecord>::open_unique(dir.join("records.jsonl"), |r| &r.id)?;
        for r in log.records() {
            if let Some((_, other)) = by_id.get(&r.id) {
                return Err(EvalError::Shards {
                    reason: format!(
                        "record {} appears in both {} and {}",
                        r.id,
                        other.display(),
                        dir.display()
                    ),
                });
            }
            by_id.insert(r.id.clone(), (r.clone(), dir.clone()));
        }
    }
    let missing: Vec<&str> =
        expected_ids.iter().filter(|id| !by_id.contains_key(*id)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(EvalError::Shards {
            reason: format!(
                "{} record(s) missing from the shards: {}",
                missing.len(),
                missing.join(", ")
            ),
        });
    }
    if let Some(extra) = by_id.keys().find(|id| !expected_ids.contains(id)) {
        return Err(EvalError::Shards {
            reason: format!("record {extra} is not part of the selection"),
        });
    }
    let records: Vec<RunRecord> = expected_ids.iter().map(|id| by_id[id].0.clone()).collect();
    let mut lines = String::new();
    for r in &records {
        lines.push_str(&serde_json::to_string(r).map_err(|e| EvalError::Serialize {
            what: "a run record".into(),
            reason: e.to_string(),
        })?);
        lines.push('\n');
    }
    write_atomic(&out.join("records.jsonl"), lines.as_bytes())?;
    manifest.selection = format!("merged from {} shards", shards.len());
    write_json_atomic(&out.join("manifest.json"), &manifest, "the manifest")?;
    // Every shard's baseline is the same unedited model on the same sets; the first one's is kept.
    if manifest.general.is_some() && first.join(general::BASELINE_FILE).exists() {
        std::fs::copy(first.join(general::BASELINE_FILE), out.join(general::BASELINE_FILE))
            .map_err(|source| EvalError::Io { path: out.join(general::BASELINE_FILE), source })?;
    }
    let mut records = records;
    let summary = summarize_run(out, &manifest, &mut records)?;
    write_reports(out, &summary, &records)?;
    Ok(summary)
}

/// The summary of the run in `dir` from its manifest and `records` (in selection order), with the verdicts of
/// judges added by re-judges joined to the records and the general sets' cost when the run measured it.
pub fn summarize_run(
    dir: &Path,
    manifest: &RunManifest,
    records: &mut [RunRecord],
) -> Result<Summary> {
    let mut judges = manifest.judges();
    judges.extend(judgements::attach(dir, records)?);
    let mut summary = Summary::from_records(&manifest.method, &judges, records)
        .with_fluency_splitter(manifest.fluency_splitter.split(' ').next().unwrap_or("rules"))
        .with_protocol(
            manifest.protocol["name"].as_str().unwrap_or_default(),
            manifest.decoding["max_input_tokens"].as_u64().map(|n| n as usize),
        );
    if let (Some(general), Some(baseline)) = (&manifest.general, general::read_baseline(dir)?) {
        let config: GeneralConfig =
            serde_json::from_value(general["config"].clone()).map_err(|e| {
                EvalError::CorruptRecord {
                    path: dir.join("manifest.json"),
                    line: 0,
                    reason: format!("field `general.config`: {e}"),
                }
            })?;
        summary = summary.with_cost(CostSummary::from_records(&config, &baseline, records));
    }
    Ok(summary)
}
