//! Marks on single responses, drawn next to them in the report.

use crate::record::JudgedResponse;

/// Something about a response a reader should notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// Short name shown on the mark.
    pub name: &'static str,
    /// Why it was raised (the mark's tooltip).
    pub why: String,
}

/// The flags of one response: empty (nothing but whitespace) and truncated (generation stopped at the token
/// limit). Further checks add their flags here.
pub fn response_flags(response: &JudgedResponse) -> Vec<Flag> {
    let mut flags = Vec::new();
    if response.response.trim().is_empty() {
        flags.push(Flag { name: "empty", why: "the response is empty or only whitespace".into() });
    }
    if response.finish == "length" {
        flags.push(Flag {
            name: "truncated",
            why: format!("generation stopped at the limit of {} new tokens", response.tokens),
        });
    }
    flags
}
