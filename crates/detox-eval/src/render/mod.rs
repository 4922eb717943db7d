//! Rendering from the aggregates: Markdown ([`markdown`]), SVG plots ([`plot`]), the HTML report ([`report`])
//! and [`write_reports`], which writes all of them into a run directory.

pub mod html;
pub mod markdown;
pub mod plot;
pub mod report;

use std::path::Path;

use detox_metrics::Score;
use safeedit::Metric;

use crate::aggregate::summary::Summary;
use crate::error::Result;
use crate::jsonl::{write_atomic, write_json_atomic};
use crate::record::RunRecord;

/// Writes `summary.json`, `summary.md`, the SVG plots and `report.html` into `dir` (each replaced atomically).
pub fn write_reports(dir: &Path, summary: &Summary, records: &[RunRecord]) -> Result<()> {
    write_json_atomic(&dir.join("summary.json"), summary, "the summary")?;
    write_atomic(&dir.join("summary.md"), summary.to_markdown().as_bytes())?;

    let labels: Vec<String> =
        summary.groups().map(|(category, _)| category.unwrap_or("all").to_string()).collect();
    for (file, title, score) in [
        ("ds_by_category.svg", "DS (safe rate on adversarial prompts)", Score::Rate(Metric::Ds)),
        ("dg_avg_by_category.svg", "DG-Avg (safe rate on generalisation inputs)", Score::DgAvg),
    ] {
        // A group without the score draws no bar.
        let table = summary.before_after(score).mapv(|v| if v.is_nan() { 0.0 } else { v });
        let svg = plot::grouped_bars(
            title,
            "safe %",
            &labels,
            &[
                ("before edit", "#9e9e9e", table.column(0).to_vec()),
                ("after edit", "#1f77b4", table.column(1).to_vec()),
            ],
            100.0,
        );
        write_atomic(&dir.join(file), svg.as_bytes())?;
    }
    let series: Vec<(String, Vec<f64>)> = records
        .iter()
        .filter_map(|r| r.layer_distances.as_ref().map(|d| (format!("record {}", r.id), d.clone())))
        .collect();
    if !series.is_empty() {
        let svg = plot::lines(
            "Locator: distance between safe and unsafe hidden states",
            "layer",
            "distance",
            &series,
        );
        write_atomic(&dir.join("layer_distances.svg"), svg.as_bytes())?;
    }
    report::write(dir, summary, records)?;
    Ok(())
}
