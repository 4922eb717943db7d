//! Scores from records, with no generation and no rendering: the run summary ([`summary`]), what the edits
//! cost on the general sets ([`cost`]) and the degeneration of responses ([`degeneration`]).

pub mod cost;
pub mod degeneration;
pub mod judges;
pub mod summary;
