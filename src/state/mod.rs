//! spoolsift's own durable state, in LMDB (through heed): the journal of messages in flight and the
//! dedupe store of recipients already handed back to Exim.
//!
//! LMDB commits are atomic and fsynced, so one write transaction per batch is the group commit
//! that makes a batch's progress durable at once.

pub mod journal;
mod system_lmdb;
pub mod verdicts;

pub use journal::{open_env, ClaimRecord, ClaimState, StateDb, StateError};
