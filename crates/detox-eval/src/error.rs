//! Errors of the benchmark harness.

use std::path::PathBuf;

/// Everything that can go wrong during a benchmark run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A results file holds a malformed record that is not the trace of an interrupted write.
    #[error("{}: line {line} is not a valid record ({reason}); the file is damaged, not merely interrupted", path.display())]
    CorruptRecord {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parse error.
        reason: String,
    },
    /// A results file holds the same record twice: damage a resumed run must not paper over (which copy would
    /// count?).
    #[error(
        "{}: record {id} appears on line {first} and again on line {second}; the file is damaged (keep one of them)",
        path.display()
    )]
    DuplicateRecord {
        /// The file.
        path: PathBuf,
        /// The record id.
        id: String,
        /// 1-based line of the first copy.
        first: usize,
        /// 1-based line of the second copy.
        second: usize,
    },
    /// A value could not be serialised.
    #[error("cannot serialise {what}: {reason}")]
    Serialize {
        /// What was being written.
        what: String,
        /// The serialiser's message.
        reason: String,
    },
    /// An existing run directory belongs to a different configuration.
    #[error("{}: the existing run was made with different settings ({field}: {existing} vs {requested}); use a new output directory", path.display())]
    ManifestMismatch {
        /// The manifest file.
        path: PathBuf,
        /// The differing setting.
        field: String,
        /// Its value in the existing run.
        existing: String,
        /// Its value now.
        requested: String,
    },
    /// Another process is writing the directory (or it could not be locked).
    #[error(transparent)]
    Locked(#[from] detox_io::LockError),
    /// The model runtime failed.
    #[error(transparent)]
    Runtime(#[from] detox_runtime::Error),
    /// The editor failed.
    #[error(transparent)]
    Edit(#[from] detox_edit::EditError),
    /// A dataset or submission file could not be read, validated or written.
    #[error(transparent)]
    Dataset(#[from] safeedit::SafeEditError),
    /// The judge failed.
    #[error(transparent)]
    Metrics(#[from] detox_metrics::MetricsError),
    /// A Slurm command (sbatch, squeue, scancel) could not run or refused.
    #[error("`{command}` failed: {reason}")]
    Slurm {
        /// The command line.
        command: String,
        /// Its message.
        reason: String,
    },
    /// A protocol name no preset has.
    #[error("unknown protocol `{name}` (known: {known})")]
    UnknownProtocol {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A setting's value cannot be used.
    #[error("{setting}: {reason}")]
    InvalidSetting {
        /// The setting (as a flag or field name).
        setting: String,
        /// Why not.
        reason: String,
    },
    /// A judge failed on some responses of a run: which ones, and why.
    #[error("judging {what}: {source}")]
    Judging {
        /// The responses: a record and its side of the edit, or the records of a re-judge's call.
        what: String,
        /// What went wrong.
        source: Box<EvalError>,
    },
    /// A guard or rubric judge wrote text its format cannot read as safe or unsafe.
    #[error("the judge {judge} wrote a verdict it cannot read for exchange {index}: {text:?}")]
    UnreadableVerdict {
        /// The judge.
        judge: String,
        /// The exchange's index in the call.
        index: usize,
        /// What the judge wrote.
        text: String,
    },
    /// A re-judge's verdicts were given to responses that have changed since (the run's records were rewritten).
    #[error("{}: the verdicts for record {id} were given to responses that are no longer the run's; remove the file and re-judge", path.display())]
    StaleJudgement {
        /// The verdict file.
        path: std::path::PathBuf,
        /// The record.
        id: String,
    },
    /// Two judges of one run have the same name, so their verdicts could not be told apart.
    #[error("two judges of the run are named `{name}`; give each judge of a run a different model or options")]
    DuplicateJudge {
        /// The name.
        name: String,
    },
    /// A judge specification no judge answers to.
    #[error("unknown judge `{spec}` (expected `phrase`, `classifier:<dir>` or `<guard>:<dir>[,key=value...]` with a guard of {guards})")]
    UnknownJudge {
        /// The specification given.
        spec: String,
        /// The guard kinds known.
        guards: String,
    },
    /// A Slurm option would make a job script Slurm misreads or refuses, or a plan differs from the one its
    /// started shards were made with.
    #[error("{reason}")]
    SlurmPlan {
        /// What is wrong, naming the option.
        reason: String,
    },
    /// The selection names a record twice.
    #[error("record id {id} appears twice in the selection")]
    DuplicateCase {
        /// The record id.
        id: String,
    },
    /// A run directory or a shard holds a record outside the selection.
    #[error("{} holds record {id}, which is not in this selection", path.display())]
    StrayRecord {
        /// The records file or shard directory.
        path: PathBuf,
        /// The record id.
        id: String,
    },
    /// A sequential editor was asked to edit several records at once.
    #[error(
        "{method} edits sequentially (each edit builds on the previous one), so its records cannot be processed \
         {records} at a time: use one record at a time"
    )]
    SequentialBatch {
        /// The method.
        method: String,
        /// Records per batch asked for.
        records: usize,
    },
    /// A component returned another number of results than it was given items.
    #[error("the {component} returned {got} {what} for {expected} {given}")]
    CountMismatch {
        /// `judge` or `editor`.
        component: &'static str,
        /// What it returned (`verdicts`, `outcomes`).
        what: &'static str,
        /// How many it returned.
        got: usize,
        /// How many it should have returned.
        expected: usize,
        /// What it was given (`responses`, `records`).
        given: &'static str,
    },
    /// Records batched together need one shape of inputs, or one kind of edit.
    #[error("{reason}")]
    Batching {
        /// What cannot be batched.
        reason: String,
    },
    /// An evaluation input encodes to no tokens.
    #[error("the input {input:?} encodes to no tokens")]
    EmptyInput {
        /// The input.
        input: String,
    },
    /// The tokenizer has no end-of-sequence token, so generation could not stop.
    #[error("the tokenizer names no EOS token; generation could not stop")]
    NoEosToken,
    /// A method that edits per record was asked for the NLPCC track, whose records lack what its edit needs.
    #[error(
        "{method} edits each record with its safe and unsafe generations, which NLPCC records do not have; answer \
         the NLPCC inputs with one of {allowed}"
    )]
    NotRecordIndependent {
        /// The method.
        method: String,
        /// The methods that can, comma-separated.
        allowed: String,
    },
    /// A file read back differs from what was written.
    #[error("{}: the {what} read back differs from the records written", path.display())]
    ReadBackMismatch {
        /// The file.
        path: PathBuf,
        /// What the file is.
        what: &'static str,
    },
    /// Shard directories that cannot be merged.
    #[error("{reason}")]
    Shards {
        /// Why, naming the directories or records.
        reason: String,
    },
    /// A run directory's general baseline belongs to other general sets.
    #[error("{} holds the baseline of other general sets; use a new output directory", path.display())]
    BaselineMismatch {
        /// The baseline file.
        path: PathBuf,
    },
    /// A general set asks for more items than its file holds, or for a file that was not given.
    #[error("{reason}")]
    GeneralSets {
        /// What is missing, naming the set.
        reason: String,
    },
    /// More records per batch than the GPU's free memory holds.
    #[error(
        "{records} records per batch need about {need_gib:.1} GiB but {free_gib:.1} GiB of the GPU is free (at most \
         {fits} records fit)"
    )]
    BatchTooLarge {
        /// Records asked for.
        records: usize,
        /// Memory they need, GiB.
        need_gib: f64,
        /// Free memory, GiB.
        free_gib: f64,
        /// Records that fit.
        fits: usize,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;

/// Wraps a libtorch error with what was being done.
pub(crate) fn torch(context: &'static str) -> impl FnOnce(tch::TchError) -> EvalError {
    move |source| {
        EvalError::Runtime(detox_runtime::Error::Torch { context: context.into(), source })
    }
}
