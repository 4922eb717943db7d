//! `cargo xtask bench`: the protocol benchmark. Builds and runs the `protocol_bench` example (a model of the
//! chosen shape with random weights, built on the device, never carried), runs the transformers peer
//! (`examples/bench/hf_protocol_peer.py`) on the same shape and device in the same session, and prints a table of
//! ratios against the peer and against the floor derived from the device's measured ceilings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::paths::workspace_root;

/// Settings of a benchmark run.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Model shape: `llama2-7b` or `tiny`.
    #[arg(long, default_value = "llama2-7b")]
    pub shape: String,
    /// `cuda`, `cuda:N` or `cpu`.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// `bf16`, `f16` or `f32`.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// New tokens per response (forced).
    #[arg(long, default_value_t = 600)]
    pub new: usize,
    /// Generation batch sizes, comma-separated.
    #[arg(long, default_value = "5,64")]
    pub gen_batches: String,
    /// Records of the split the estimate is for.
    #[arg(long, default_value_t = 1350)]
    pub records: usize,
    /// The layer both sides edit (default: each program's middle layer, the same on both sides).
    #[arg(long)]
    pub layer: Option<usize>,
    /// Skip the Python peer.
    #[arg(long)]
    pub no_peer: bool,
    /// The Python interpreter for the peer.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Where the raw figures and the table are written.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
}

/// One figure printed by either side.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// `detox` or `transformers`.
    pub implementation: String,
    /// What was measured (`edit_s`, `generate_s`, ...).
    pub what: String,
    /// The value.
    pub value: f64,
    /// Everything else on the line.
    pub extra: serde_json::Map<String, Value>,
}

/// The figures in `output`: every line that is a JSON object with `impl`, `what` and a numeric `value`.
pub fn parse_figures(output: &str) -> Vec<Figure> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .filter_map(|v| {
            let mut map = v.as_object()?.clone();
            let implementation = map.remove("impl")?.as_str()?.to_string();
            let what = map.remove("what")?.as_str()?.to_string();
            let value = map.remove("value")?.as_f64()?;
            Some(Figure { implementation, what, value, extra: map })
        })
        .collect()
}

/// One line of the table.
struct Row {
    name: String,
    ours: Option<f64>,
    peer: Option<f64>,
    floor: Option<f64>,
}

impl Row {
    fn new(name: String, ours: Option<f64>, peer: Option<f64>, floor: Option<f64>) -> Self {
        Self { name, ours, peer, floor }
    }
}

fn key(f: &Figure) -> String {
    match f.extra.get("batch").and_then(Value::as_u64) {
        Some(b) if f.what == "generate_s" => format!("generate_s@{b}"),
        _ => f.what.clone(),
    }
}

/// The Markdown table: each detox figure next to the peer's and the floor, with ratios.
pub fn render_table(figures: &[Figure]) -> String {
    let by = |implementation: &str| -> BTreeMap<String, &Figure> {
        figures.iter().filter(|f| f.implementation == implementation).map(|f| (key(f), f)).collect()
    };
    let (ours, peer) = (by("detox"), by("transformers"));
    let value = |m: &BTreeMap<String, &Figure>, k: &str| m.get(k).map(|f| f.value);
    let params = value(&ours, "build_model_s")
        .and_then(|_| ours["build_model_s"].extra.get("params").and_then(Value::as_f64));
    let bytes_per =
        match ours.values().next().and_then(|f| f.extra.get("dtype")).and_then(Value::as_str) {
            Some("float32") => 4.0,
            _ => 2.0,
        };
    let bandwidth = value(&peer, "ceiling_memory_tbps").map(|t| t * 1e12);
    let flops = value(&peer, "ceiling_bf16_matmul_tflops").map(|t| t * 1e12);
    // A decode step reads every weight once; nothing faster is possible at these batch sizes.
    let step_floor = match (params, bandwidth) {
        (Some(p), Some(bw)) => Some(p * bytes_per / bw),
        _ => None,
    };

    let mut rows: Vec<Row> = Vec::new();
    rows.push(Row::new(
        "locate (s)".into(),
        value(&ours, "locate_s"),
        value(&peer, "locate_s"),
        None,
    ));
    let steps =
        ours.get("edit_s").and_then(|f| f.extra.get("steps")).and_then(Value::as_u64).unwrap_or(10);
    let seq =
        ours.get("edit_s").and_then(|f| f.extra.get("seq")).and_then(Value::as_f64).unwrap_or(0.0);
    // Forward passes alone over the edit and constraint inputs: a strict lower bound for an edit.
    let edit_floor = match (params, flops) {
        (Some(p), Some(fl)) => Some(steps as f64 * 2.0 * p * (seq + 60.0) / fl),
        _ => None,
    };
    rows.push(Row::new(
        format!("edit, {steps} steps (s)"),
        value(&ours, "edit_s"),
        value(&peer, "edit_s"),
        edit_floor,
    ));
    if let Some(f) = ours.get("edit_whole_model_s") {
        rows.push(Row::new(
            format!("edit, {steps} steps, whole model each step (s)"),
            Some(f.value),
            value(&peer, "edit_s"),
            edit_floor,
        ));
    }
    if let Some(f) = ours.get("edit_batch_per_record_s") {
        let b = f.extra.get("batch").and_then(Value::as_u64).unwrap_or(0);
        rows.push(Row::new(
            format!("edit per record, {b} records batched (s)"),
            Some(f.value),
            value(&peer, "edit_s"),
            edit_floor,
        ));
    }
    for (key, name) in [
        ("sft_step_s", "SFT step, LoRA, batch 4 (s)"),
        ("dpo_step_s", "DPO step, LoRA, batch 4 pairs (s)"),
        ("mend_train_step_s", "MEND meta-training step (s)"),
        ("mend_edit_s", "MEND edit (s)"),
        ("edit_peak_over_weights_gib", "edit memory over the weights, reserved (GiB)"),
    ] {
        if let Some(f) = ours.get(key) {
            rows.push(Row::new(name.into(), Some(f.value), value(&peer, key), None));
        }
    }
    let mut generation: Vec<(u64, &String, &&Figure)> = ours
        .iter()
        .filter_map(|(k, f)| Some((k.strip_prefix("generate_s@")?.parse().ok()?, k, f)))
        .collect();
    generation.sort_by_key(|(batch, _, _)| *batch);
    for (batch, k, f) in generation {
        let ms = |f: &Figure| f.extra.get("ms_per_step").and_then(Value::as_f64);
        rows.push(Row::new(
            format!("decode step, batch {batch} (ms)"),
            ms(f),
            peer.get(k).and_then(|p| ms(p)),
            step_floor.map(|s| s * 1e3),
        ));
    }
    if let Some(f) = ours.get("protocol_estimate_s") {
        let records = f.extra.get("records").and_then(Value::as_u64).unwrap_or(0);
        let new = f.extra.get("new_tokens").and_then(Value::as_f64).unwrap_or(0.0);
        let floor = match (step_floor, edit_floor) {
            (Some(step), Some(edit)) => {
                Some(((records * 10).div_ceil(64)) as f64 * new * step + records as f64 * edit)
            }
            _ => None,
        };
        rows.push(Row::new(
            format!("whole split, {records} records (min)"),
            Some(f.value / 60.0),
            value(&peer, "protocol_sequential_estimate_s").map(|s| s / 60.0),
            floor.map(|s| s / 60.0),
        ));
    }

    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.2}x", b / a),
        _ => "-".to_string(),
    };
    let mut table = String::from(
        "| figure | detox | transformers | peer / detox | floor | detox / floor |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for Row { name, ours, peer, floor } in rows {
        table.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            fmt(ours),
            fmt(peer),
            ratio(ours, peer),
            fmt(floor),
            ratio(floor, ours),
        ));
    }
    table
}

/// Where an edit's time goes: detox's phases (a synchronised run), the arithmetic of a step counted from the
/// shapes for detox's path and for the whole-model path the peer runs, and each side's achieved rate against the
/// matrix-multiply throughput it measured in the same session. Empty when the figures are missing.
pub fn render_profile(figures: &[Figure]) -> String {
    let find = |implementation: &str, what: &str| {
        figures.iter().find(|f| f.implementation == implementation && f.what == what)
    };
    let (Some(profile), Some(flop)) =
        (find("detox", "edit_profile_s"), find("detox", "edit_step_gflop"))
    else {
        return String::new();
    };
    let part = |f: &Figure, key: &str| f.extra.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    let steps = part(profile, "steps").max(1.0);
    let mut out = String::from(
        "| phase of the edit | seconds | share | GFLOP per step |\n|---|---:|---:|---:|\n",
    );
    for (key, name, counted) in [
        ("prefix", "once per edit: the states below the edited tensor", false),
        ("forward", "forward through the layers", true),
        ("logits", "output projection at the scored positions, log-softmax, losses", true),
        ("backward", "backward", true),
        ("optimizer", "Adam, casts, loss read-back", false),
    ] {
        let seconds = part(profile, key);
        let share = if profile.value > 0.0 { 100.0 * seconds / profile.value } else { 0.0 };
        let gflop = if counted { format!("{:.3}", part(flop, key)) } else { "-".into() };
        out.push_str(&format!("| {name} | {seconds:.4} | {share:.1} % | {gflop} |\n"));
    }
    out.push_str(&format!(
        "| total ({steps} steps) | {:.4} | 100 % | {:.3} |\n",
        profile.value, flop.value
    ));
    let whole = find("detox", "edit_step_gflop_whole_model").map(|f| f.value);
    let rate = |implementation: &str, gflop: Option<f64>| -> Option<String> {
        let edit = find(implementation, "edit_s")?.value;
        let ceiling = find(implementation, "matmul_tflops")?.value;
        let achieved = steps * gflop? / edit / 1e3;
        Some(format!(
            "{implementation}: {achieved:.3} TFLOP/s against a measured matrix-multiply throughput of \
             {ceiling:.3} TFLOP/s ({:.0} %)",
            100.0 * achieved / ceiling
        ))
    };
    out.push_str(&format!(
        "\nArithmetic per step: {:.3} GFLOP on detox's path, {} GFLOP for the whole model with logits everywhere \
         (the peer's computation).\n",
        flop.value,
        whole.map_or_else(|| "-".into(), |w| format!("{w:.3}"))
    ));
    for line in [rate("detox", Some(flop.value)), rate("transformers", whole)].into_iter().flatten()
    {
        out.push_str(&format!("- {line}\n"));
    }
    out
}

/// Runs `command`, echoing its output; the figures it printed before any failure are kept either way.
fn run_capturing(command: &mut Command, what: &str) -> (String, Result<()>) {
    let output = match command.stderr(Stdio::inherit()).output() {
        Ok(output) => output,
        Err(e) => {
            return (String::new(), Err(anyhow::Error::new(e).context(format!("starting {what}"))))
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    eprint!("{stdout}");
    let status = if output.status.success() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{what} failed ({})", output.status))
    };
    (stdout, status)
}

/// Runs the benchmark and prints the table.
pub fn run(args: &BenchArgs) -> Result<()> {
    crate::libtorch::ensure(false)?;
    let root = workspace_root();
    let built = crate::artifacts::release_examples(&["protocol_bench"])?;
    let common = |command: &mut Command| {
        command
            .args(["--shape", &args.shape, "--device", &args.device, "--dtype", &args.dtype])
            .args(["--new", &args.new.to_string(), "--gen-batches", &args.gen_batches])
            .args(["--records", &args.records.to_string()])
            .current_dir(&root);
        if let Some(layer) = args.layer {
            command.args(["--layer", &layer.to_string()]);
        }
    };
    let mut ours = Command::new(built.get("protocol_bench")?);
    common(&mut ours);
    let (mut output, ours_status) = run_capturing(&mut ours, "the protocol_bench example");
    ours_status?;
    // A failing peer must not lose detox's figures: they are written with the table, and the failure is
    // reported (and fails the command) afterwards.
    let mut peer_status = Ok(());
    if !args.no_peer {
        let mut peer = Command::new(&args.python);
        peer.arg(root.join("examples/bench/hf_protocol_peer.py"));
        common(&mut peer);
        if args.device.starts_with("cuda") {
            peer.arg("--ceilings");
        }
        let (peer_output, status) = run_capturing(&mut peer, "the transformers peer");
        output.push_str(&peer_output);
        peer_status = status;
    }
    let figures = parse_figures(&output);
    let mut table = render_table(&figures);
    let profile = render_profile(&figures);
    if !profile.is_empty() {
        table.push_str(&format!("\n{profile}"));
    }
    if let Err(e) = &peer_status {
        table.push_str(&format!("\nThe peer's figures are incomplete: {e:#}.\n"));
    }
    let out = root.join(&args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let stem = format!("{}-{}-{}", args.shape, args.device.replace(':', ""), args.dtype);
    std::fs::write(out.join(format!("{stem}.jsonl")), &output)?;
    std::fs::write(out.join(format!("{stem}.md")), &table)?;
    println!("\n{table}");
    println!("Raw figures and the table: {}", out.join(&stem).display());
    peer_status
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = r#"compiling...
{"impl":"detox","what":"build_model_s","value":1.0,"params":1000000000,"dtype":"bfloat16"}
{"impl":"detox","what":"locate_s","value":0.02}
{"impl":"detox","what":"edit_s","value":0.5,"steps":10,"seq":540}
{"impl":"detox","what":"edit_batch_per_record_s","value":0.25,"batch":8}
{"impl":"detox","what":"generate_s","value":3.0,"batch":5,"ms_per_step":5.0}
{"impl":"detox","what":"protocol_estimate_s","value":1200.0,"records":1350,"new_tokens":600}
{"impl": "transformers", "what": "ceiling_memory_tbps", "value": 2.0}
{"impl": "transformers", "what": "ceiling_bf16_matmul_tflops", "value": 600.0}
{"impl": "transformers", "what": "locate_s", "value": 0.04}
{"impl": "transformers", "what": "edit_s", "value": 1.0, "steps": 10}
{"impl": "transformers", "what": "generate_s", "value": 30.0, "batch": 5, "ms_per_step": 50.0}
{"impl": "transformers", "what": "protocol_sequential_estimate_s", "value": 36000.0}
"#;

    #[test]
    fn the_profile_gives_shares_and_rates() {
        let lines = r#"{"impl":"detox","what":"edit_s","value":0.5,"steps":10}
{"impl":"detox","what":"edit_profile_s","value":0.5,"prefix":0.05,"forward":0.2,"logits":0.05,"backward":0.15,"optimizer":0.05,"steps":10}
{"impl":"detox","what":"edit_step_gflop","value":20.0,"forward":8.0,"logits":2.0,"backward":10.0}
{"impl":"detox","what":"edit_step_gflop_whole_model","value":40.0}
{"impl":"detox","what":"matmul_tflops","value":1.0}
{"impl":"transformers","what":"edit_s","value":1.0,"steps":10}
{"impl":"transformers","what":"matmul_tflops","value":0.8}
"#;
        let profile = render_profile(&parse_figures(lines));
        assert!(
            profile.contains("| forward through the layers | 0.2000 | 40.0 % | 8.000 |"),
            "{profile}"
        );
        assert!(profile.contains("| total (10 steps) | 0.5000 | 100 % | 20.000 |"), "{profile}");
        // detox: 10 steps x 20 GFLOP in 0.5 s = 0.4 TFLOP/s of 1.0; the peer: 10 x 40 GFLOP in 1 s of 0.8.
        assert!(profile.contains("detox: 0.400 TFLOP/s against a measured matrix-multiply throughput of 1.000 TFLOP/s (40 %)"), "{profile}");
        assert!(profile.contains("transformers: 0.400 TFLOP/s against a measured matrix-multiply throughput of 0.800 TFLOP/s (50 %)"), "{profile}");
        assert!(render_profile(&parse_figures(OUTPUT)).is_empty());
    }

    #[test]
    fn parses_only_figure_lines() {
        let figures = parse_figures(OUTPUT);
        assert_eq!(figures.len(), 12);
        assert_eq!(figures[4].what, "generate_s");
        assert_eq!(figures[4].extra["batch"], 5);
    }

    #[test]
    fn table_holds_ratios_and_floors() {
        let table = render_table(&parse_figures(OUTPUT));
        // Decode: 50 ms against 5 ms is 10x; the floor is 1e9 params * 2 bytes / 2e12 B/s = 1 ms.
        assert!(
            table.contains(
                "| decode step, batch 5 (ms) | 5.000 | 50.000 | 10.00x | 1.000 | 5.00x |"
            ),
            "{table}"
        );
        assert!(table.contains("| locate (s) | 0.020 | 0.040 | 2.00x | - | - |"), "{table}");
        // Edit floor: 10 steps * 2 * 1e9 * 600 tokens / 6e14 = 0.02 s.
        assert!(
            table.contains("| edit, 10 steps (s) | 0.500 | 1.000 | 2.00x | 0.020 | 25.00x |"),
            "{table}"
        );
        // Whole split: 20 min against 600 min.
        assert!(
            table.contains("| whole split, 1350 records (min) | 20.000 | 600.000 | 30.00x |"),
            "{table}"
        );
    }
}
