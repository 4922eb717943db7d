//! `report.html`: one self-contained page per run that people can read, written next to `summary.json` by
//! [`crate::render::write_reports`] (so every run, resumed run and shard merge has one).
//!
//! The page holds a line on what was run, the summary tables, the plots inlined as SVG, the run's settings and
//! manifest, and every record
//! with its prompts and its responses before and after the edit side by side: judged labels coloured, flagged
//! responses marked, records filterable by unsafety category and outcome with a few lines of plain JavaScript.
//! Nothing is fetched: no scripts, fonts, styles or images from elsewhere, and a Content-Security-Policy that
//! forbids every network request, so the file can be mailed or archived and opened offline. Every text taken
//! from the run is escaped ([`crate::render::html::escape`]); prompts and responses, which are harmful by design, stay in the
//! file but are collapsed (`<details>`) until opened.
//!
//! # Outcomes
//!
//! Each response pair (one evaluation input before and after the edit) has an [`Outcome`]: `fixed` (not safe
//! before, safe after), `still unsafe`, `newly unsafe` (safe before, not after) or `unchanged safe`. Only
//! [`detox_metrics::Label::Safe`] counts as safe: an empty response (SafeEdit's 0.5) is not a fix. A record's
//! outcome is the worst of its pairs, in the order newly unsafe, still unsafe, fixed, unchanged safe.
//!
//! # Adding to the report
//!
//! The page is the concatenation of [`SECTIONS`], each a function `fn(&ReportInputs) -> String` that returns
//! one `<section>` (or nothing, when it has nothing to show). To add a section (general performance,
//! over-refusal, ...), write its function in a module of its own under `render/report/` with the tables built by
//! [`crate::render::html::table`], and add it to [`SECTIONS`] where it should appear; values it needs that the summary or the
//! records hold arrive through [`ReportInputs`]. To mark responses (e.g. degeneration), extend
//! [`flags::response_flags`]: every flag it returns is drawn next to the response, and a record with any flagged
//! response can be filtered (`flagged`). With several judges, each response shows every judge's verdict and
//! the records and pairs the judges disagree on can be filtered (`judges disagree`). Plots written into the run directory as `*.svg` before the report is
//! built are inlined in file-name order.

mod cost;
pub mod flags;
mod judges;
pub mod outcome;
mod page;
mod records;
mod sections;

use std::path::{Path, PathBuf};

use crate::aggregate::summary::Summary;
use crate::error::{EvalError, Result};
use crate::jsonl::write_atomic;
use crate::record::manifest::RunManifest;
use crate::record::RunRecord;

pub use outcome::Outcome;

/// The file name of the report in a run directory.
pub const REPORT_FILE: &str = "report.html";

/// Everything a section may show.
#[derive(Debug, Clone, Copy)]
pub struct ReportInputs<'a> {
    /// What produced the run.
    pub manifest: &'a RunManifest,
    /// The run's aggregated scores.
    pub summary: &'a Summary,
    /// Every record, in selection order.
    pub records: &'a [RunRecord],
    /// The run's plots: `(file name, SVG text)`, in file-name order.
    pub plots: &'a [(String, String)],
}

/// One part of the page.
pub type Section = fn(&ReportInputs<'_>) -> String;

/// The page's sections, in order.
pub const SECTIONS: &[Section] = &[
    sections::overview,
    sections::summary_tables,
    judges::judges,
    cost::general,
    cost::degeneration,
    sections::plots,
    sections::settings,
    records::records,
];

/// The whole page for `inputs`.
pub fn render(inputs: &ReportInputs<'_>) -> String {
    let body: String = SECTIONS.iter().map(|section| section(inputs)).collect();
    page::page(&format!("{} on SafeEdit", inputs.summary.method), &body)
}

/// Writes `report.html` into the run directory `dir` (replaced atomically), reading the manifest and the SVG
/// plots the directory holds; returns the report's path.
///
/// # Errors
///
/// [`EvalError::Io`] when the directory's manifest or plots cannot be read or the report cannot be written,
/// [`EvalError::CorruptRecord`] when the manifest is not one.
pub fn write(dir: &Path, summary: &Summary, records: &[RunRecord]) -> Result<PathBuf> {
    let manifest = RunManifest::read(&dir.join("manifest.json"))?;
    let plots = read_plots(dir)?;
    let html = render(&ReportInputs { manifest: &manifest, summary, records, plots: &plots });
    let path = dir.join(REPORT_FILE);
    write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

fn read_plots(dir: &Path) -> Result<Vec<(String, String)>> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvalError::Io { path, source }
    };
    let mut plots = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_some_and(|e| e == "svg") {
            let name =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            plots.push((name, std::fs::read_to_string(&path).map_err(io(&path))?));
        }
    }
    plots.sort();
    Ok(plots)
}
