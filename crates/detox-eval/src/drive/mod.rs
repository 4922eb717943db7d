//! The drivers: generation ([`respond`]), judges ([`judges`]), the general sets answered ([`general`]), a run
//! ([`harness`]), batch sizing ([`sizing`]), merging shards ([`merge`]), the NLPCC submission ([`nlpcc`]) and
//! the sharded run on Slurm ([`slurm`]), and judging a finished run again ([`rejudge`]).

pub mod general;
pub mod harness;
pub mod judges;
pub mod merge;
pub mod nlpcc;
pub mod rejudge;
pub mod respond;
pub mod sizing;
pub mod slurm;
