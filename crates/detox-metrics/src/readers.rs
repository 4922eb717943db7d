//! Readers for the third-party evaluation sets the metrics use. Each takes a path; the project never vendors
//! the data. Every error names the file, the line (or record) and the field.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{MetricsError, Result};

fn open(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path)
        .map_err(|source| MetricsError::Io { path: path.to_path_buf(), source })
}

fn format_err(path: &Path, line: usize, reason: impl Into<String>) -> MetricsError {
    MetricsError::Format { path: path.to_path_buf(), line, reason: reason.into() }
}

/// Parses a JSON-lines file, handing each object to `row`.
fn jsonl<T>(
    path: &Path,
    mut row: impl FnMut(&serde_json::Map<String, Value>, usize) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for (i, line) in BufReader::new(open(path)?).lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|source| MetricsError::Io { path: path.to_path_buf(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| format_err(path, number, format!("not JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| format_err(path, number, "not a JSON object"))?;
        out.push(row(obj, number)?);
    }
    Ok(out)
}

fn text_field(
    path: &Path,
    line: usize,
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format_err(path, line, format!("field `{key}` is not a string"))),
        None => Err(format_err(path, line, format!("field `{key}` is missing"))),
    }
}

/// One XSum article with its reference summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XsumItem {
    /// Article id.
    pub id: String,
    /// The article.
    pub document: String,
    /// The one-sentence reference summary.
    pub summary: String,
}

/// Reads XSum JSON lines (`id`, `document`, `summary`).
pub fn read_xsum(path: impl AsRef<Path>) -> Result<Vec<XsumItem>> {
    let path = path.as_ref();
    jsonl(path, |o, n| {
        Ok(XsumItem {
            id: match o.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(v)) => v.to_string(),
                _ => return Err(format_err(path, n, "field `id` is missing or not a string")),
            },
            document: text_field(path, n, o, "document")?,
            summary: text_field(path, n, o, "summary")?,
        })
    })
}

/// One closed-book question with its accepted answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaItem {
    /// The question.
    pub question: String,
    /// Accepted answers.
    pub answers: Vec<String>,
}

/// Reads NQ-open JSON lines (`question`, `answer` as a list of strings).
pub fn read_nq_open(path: impl AsRef<Path>) -> Result<Vec<QaItem>> {
    let path = path.as_ref();
    jsonl(path, |o, n| {
        let answers = match o.get("answer") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format_err(path, n, "field `answer` holds a non-string"))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(Value::String(s)) => vec![s.clone()],
            _ => return Err(format_err(path, n, "field `answer` is missing or not a list")),
        };
        if answers.is_empty() {
            return Err(format_err(path, n, "field `answer` is empty"));
        }
        Ok(QaItem { question: text_field(path, n, o, "question")?, answers })
    })
}

/// Reads a CSV file with a header, returning the header and the rows (fields may hold quoted newlines).
pub fn read_csv(path: impl AsRef<Path>) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let path = path.as_ref();
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(open(path)?);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format_err(path, 1, format!("bad header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line() as usize).unwrap_or(i + 2);
            format_err(path, line, e.to_string())
        })?;
        rows.push(record.iter().map(str::to_string).collect());
    }
    Ok((header, rows))
}

fn column(path: &Path, header: &[String], name: &str) -> Result<usize> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| format_err(path, 1, format!("no `{name}` column")))
}

/// An XSTest prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XsTestPrompt {
    /// Prompt id.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// Prompt type (e.g. `homonyms`, `contrast_homonyms`).
    pub kind: String,
    /// `safe` or `unsafe`.
    pub label: String,
}

/// Reads `xstest_prompts.csv` (`id, prompt, type, label, ...`).
pub fn read_xstest_prompts(path: impl AsRef<Path>) -> Result<Vec<XsTestPrompt>> {
    let path = path.as_ref();
    let (header, rows) = read_csv(path)?;
    let (id, prompt, kind, label) = (
        column(path, &header, "id")?,
        column(path, &header, "prompt")?,
        column(path, &header, "type")?,
        column(path, &header, "label")?,
    );
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let label = r[label].clone();
            if label != "safe" && label != "unsafe" {
                return Err(format_err(
                    path,
                    i + 2,
                    format!("field `label` is {label:?}, expected safe or unsafe"),
                ));
            }
            Ok(XsTestPrompt {
                id: r[id].clone(),
                prompt: r[prompt].clone(),
                kind: r[kind].clone(),
                label,
            })
        })
        .collect()
}

/// What the human annotators said about an XSTest completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HumanLabel {
    /// `1_full_compliance`
    FullCompliance,
    /// `2_full_refusal`
    FullRefusal,
    /// `3_partial_refusal`
    PartialRefusal,
}

impl HumanLabel {
    /// Whether the annotators saw a (full or partial) refusal.
    pub fn is_refusal(self) -> bool {
        self != HumanLabel::FullCompliance
    }
}

/// A model completion of an XSTest prompt with its human label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XsTestCompletion {
    /// Prompt id.
    pub id: String,
    /// Prompt type; types starting with `contrast_` are the unsafe prompts.
    pub kind: String,
    /// The prompt.
    pub prompt: String,
    /// The model's completion.
    pub completion: String,
    /// The final human label.
    pub label: HumanLabel,
}

impl XsTestCompletion {
    /// Whether the prompt is one of XSTest's unsafe contrast prompts.
    pub fn prompt_is_unsafe(&self) -> bool {
        self.kind.starts_with("contrast_")
    }
}

/// Reads an XSTest model-completions file (`id, type, prompt, completion, ..., final_label`).
pub fn read_xstest_completions(path: impl AsRef<Path>) -> Result<Vec<XsTestCompletion>> {
    let path = path.as_ref();
    let (header, rows) = read_csv(path)?;
    let cols =
        ["id", "type", "prompt", "completion", "final_label"].map(|c| column(path, &header, c));
    let [id, kind, prompt, completion, label] = cols;
    let (id, kind, prompt, completion, label) = (id?, kind?, prompt?, completion?, label?);
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let human = match r[label].as_str() {
                "1_full_compliance" => HumanLabel::FullCompliance,
                "2_full_refusal" => HumanLabel::FullRefusal,
                "3_partial_refusal" => HumanLabel::PartialRefusal,
                other => {
                    return Err(format_err(
                        path,
                        i + 2,
                        format!("field `final_label` is {other:?}"),
                    ))
                }
            };
            Ok(XsTestCompletion {
                id: r[id].clone(),
                kind: r[kind].clone(),
                prompt: r[prompt].clone(),
                completion: r[completion].clone(),
                label: human,
            })
        })
        .collect()
}

/// Reads the harmful-prompt sets: a CSV with the prompt in `column` (AdvBench `goal`, HarmBench `Behavior`,
/// JailbreakBench `Goal`, StrongREJECT `forbidden_prompt`).
pub fn read_prompt_csv(path: impl AsRef<Path>, column_name: &str) -> Result<Vec<String>> {
    let path = path.as_ref();
    let (header, rows) = read_csv(path)?;
    let c = column(path, &header, column_name)?;
    Ok(rows.into_iter().map(|mut r| std::mem::take(&mut r[c])).collect())
}

/// Reads a header-less one-column prompt CSV (AdvBench's `transfer_expriment_behaviors.csv`): the first field
/// of every record; an empty field is an error naming its line.
pub fn read_headerless_prompt_csv(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(open(path)?);
    let mut prompts = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line() as usize).unwrap_or(i + 1);
            format_err(path, line, e.to_string())
        })?;
        let line = record.position().map(|p| p.line() as usize).unwrap_or(i + 1);
        match record.get(0) {
            Some(prompt) if !prompt.trim().is_empty() => prompts.push(prompt.to_string()),
            _ => return Err(format_err(path, line, "the prompt (first field) is empty")),
        }
    }
    Ok(prompts)
}

/// Reads JSON prompt lists: a list of strings (TDC 2023) or of objects with an `instruction` field (the
/// refusal-direction harmful and harmless splits).
pub fn read_prompt_json(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|source| MetricsError::Io { path: path.to_path_buf(), source })?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format_err(path, e.line(), e.to_string()))?;
    let items = value.as_array().ok_or_else(|| format_err(path, 1, "expected a JSON list"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Object(o) => o
                .get("instruction")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format_err(path, i + 1, "record has no string `instruction`")),
            _ => Err(format_err(path, i + 1, "entry is neither a string nor an object")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_each_format_and_names_bad_lines() {
        let d = tempfile::tempdir().unwrap();
        let x = write(&d, "x.jsonl", "{\"id\":\"1\",\"document\":\"D\",\"summary\":\"S\"}\n\n{\"id\":2,\"document\":\"E\",\"summary\":\"T\"}\n");
        assert_eq!(read_xsum(&x).unwrap()[1].id, "2");
        let bad = write(&d, "bad.jsonl", "{\"id\":\"1\",\"document\":\"D\",\"summary\":\"S\"}\n{\"id\":\"2\",\"document\":\"D\"}\n");
        let e = read_xsum(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl: line 2") && e.contains("summary"), "{e}");
        let q = write(&d, "q.jsonl", "{\"question\":\"who?\",\"answer\":[\"me\",\"you\"]}\n");
        assert_eq!(read_nq_open(&q).unwrap()[0].answers, ["me", "you"]);
        let c = write(&d, "c.csv", "id,type,prompt,completion,annotation_1,annotation_2,agreement,final_label\nv2-1,contrast_homonyms,p,\"multi\nline, quoted\",a,b,True,2_full_refusal\n");
        let rows = read_xstest_completions(&c).unwrap();
        assert_eq!(rows[0].completion, "multi\nline, quoted");
        assert!(rows[0].label.is_refusal() && rows[0].prompt_is_unsafe());
        let c2 = write(&d, "c2.csv", "id,type,prompt,completion,final_label\n1,t,p,c,9_other\n");
        assert!(read_xstest_completions(&c2).unwrap_err().to_string().contains("final_label"));
        let p = write(&d, "p.csv", "goal,target\nDo a thing,Sure\n");
        assert_eq!(read_prompt_csv(&p, "goal").unwrap(), ["Do a thing"]);
        assert!(read_prompt_csv(&p, "Behavior").unwrap_err().to_string().contains("Behavior"));
        let h = write(&d, "h.csv", "Do one thing\n\"Do, quoted\"\n");
        assert_eq!(read_headerless_prompt_csv(&h).unwrap(), ["Do one thing", "Do, quoted"]);
        let h2 = write(&d, "h2.csv", "Fine\n\"\"\nAlso fine\n");
        let e = read_headerless_prompt_csv(&h2).unwrap_err().to_string();
        assert!(e.contains("h2.csv: line 2") && e.contains("first field"), "{e}");
        let j = write(&d, "j.json", "[{\"instruction\":\"a\",\"category\":\"x\"},\"b\"]");
        assert_eq!(read_prompt_json(&j).unwrap(), ["a", "b"]);
        let xp = write(
            &d,
            "xs.csv",
            "id,prompt,type,label,focus,note\n1,How?,homonyms,safe,kill,violence\n",
        );
        assert_eq!(read_xstest_prompts(&xp).unwrap()[0].label, "safe");
    }
}
