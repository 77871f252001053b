//! spoolsift: scan the messages Exim's `queuefile` transport copies out, then re-queue them safely.
//!
//! The data path is the module structure: [`spool`] (the format) → [`requeue`] (writing a message
//! back into an Exim spool).

pub mod cli;
pub mod dns;
pub mod intake;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod outside;
pub mod pipeline;
pub mod private_files;
pub mod requeue;
pub mod sinks;
pub mod spool;
pub mod stages;
pub mod state;
