//! Model Surgery artefacts on disk: the probe, the selected rows and the record of the fit.
//!
//! Layout of an artefact directory ([`SurgeryFit`], kind `surgery`, besides [`crate::HEADER_FILE`]):
//! - `surgery.safetensors`: `probe.weight` (`[2, hidden]` fp32), `probe.bias` (`[2]` fp32), `rows` (`[n, 2]`
//!   int64: layer, row, best first) and `scores` (`[n]` fp32: each row's negated cosine);
//! - `surgery.json`: [`SurgeryInfo`].

use std::path::Path;

use detox_runtime::SafetensorsFiles;
use tch::{Device, Kind, Tensor};

use super::fit::{SurgeryFit, SurgeryInfo};
use super::probe::Probe;
use super::select::SelectedRow;
use crate::artefact::Artefact;
use crate::error::{torch, EditError, Result};
use crate::train::checkpoint::{read_json, write_json};

/// The tensors of an artefact.
pub const SURGERY_TENSORS_FILE: &str = "surgery.safetensors";
/// The description of an artefact.
pub const SURGERY_INFO_FILE: &str = "surgery.json";

/// A Model Surgery fit is saved as an artefact of kind `surgery`.
impl Artefact for SurgeryFit {
    const KIND: &'static str = "surgery";

    /// Writes the tensors, then the description.
    fn write_files(&self, dir: &Path) -> Result<()> {
        let fit = self;
        let e =
            |r: std::result::Result<Tensor, tch::TchError>| r.map_err(torch("saving the surgery"));
        let pairs: Vec<i64> =
            fit.rows.iter().flat_map(|r| [r.layer as i64, r.row as i64]).collect();
        let scores: Vec<f32> = fit.rows.iter().map(|r| r.score).collect();
        let tensors = vec![
            ("probe.weight".to_string(), e(fit.probe.weight.f_to_kind(Kind::Float))?),
            ("probe.bias".to_string(), e(fit.probe.bias.f_to_kind(Kind::Float))?),
            ("rows".to_string(), e(Tensor::from_slice(&pairs).f_view([fit.rows.len() as i64, 2]))?),
            ("scores".to_string(), Tensor::from_slice(&scores)),
        ];
        detox_runtime::weights::save_safetensors(&dir.join(SURGERY_TENSORS_FILE), &tensors)?;
        write_json(&dir.join(SURGERY_INFO_FILE), &fit.info)
    }

    /// Reads the description and the tensors, checking that they agree with each other; the probe goes to
    /// `device`, the rows stay plain numbers.
    fn read_files(dir: &Path, device: Device) -> Result<Self> {
        let info: SurgeryInfo =
            read_json(&dir.join(SURGERY_INFO_FILE), "a Model Surgery description")?;
        let path = dir.join(SURGERY_TENSORS_FILE);
        let bad = |reason: String| EditError::Artefact { path: path.clone(), reason };
        let files = SafetensorsFiles::open_files(std::slice::from_ref(&path))?;
        let load = |name: &str, kind: Kind| files.load(name, Device::Cpu, Some(kind));
        let weight = files.load("probe.weight", device, Some(Kind::Float))?;
        let bias = files.load("probe.bias", device, Some(Kind::Float))?;
        let rows = load("rows", Kind::Int64)?;
        let scores = load("scores", Kind::Float)?;
        let hidden = info.hidden_size as i64;
        if weight.size() != [2, hidden] || bias.size() != [2] {
            return Err(bad(format!(
            "`probe.weight` {:?} and `probe.bias` {:?} do not fit a 2-class probe on {hidden} features",
            weight.size(),
            bias.size()
        )));
        }
        let n = info.config.rows.unwrap_or(0) as i64;
        if rows.size() != [n, 2] || scores.size() != [n] {
            return Err(bad(format!(
                "`rows` {:?} and `scores` {:?} do not hold the {n} rows {SURGERY_INFO_FILE} names",
                rows.size(),
                scores.size()
            )));
        }
        let pairs = Vec::<i64>::try_from(rows.f_view([-1]).map_err(torch("reading rows"))?)
            .map_err(torch("reading rows"))?;
        let scores = Vec::<f32>::try_from(scores).map_err(torch("reading scores"))?;
        let mut selected = Vec::with_capacity(scores.len());
        let mut seen = std::collections::HashSet::new();
        for (pair, score) in pairs.chunks(2).zip(scores) {
            let (layer, row) = (pair[0], pair[1]);
            if layer < 0
                || row < 0
                || layer as usize >= info.num_layers
                || row as usize >= info.intermediate_size
            {
                return Err(bad(format!(
                    "`rows` names layer {layer} row {row}, outside a model of {} layers of {} rows",
                    info.num_layers, info.intermediate_size
                )));
            }
            if !seen.insert((layer, row)) {
                return Err(bad(format!("`rows` names layer {layer} row {row} twice")));
            }
            selected.push(SelectedRow { layer: layer as usize, row: row as usize, score });
        }
        if selected.is_empty() {
            return Err(bad("`rows` is empty: the fit selected no row to shift".into()));
        }
        Ok(SurgeryFit { probe: Probe { weight, bias }, rows: selected, info })
    }
}
