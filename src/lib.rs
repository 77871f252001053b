//! spoolsift: scan the messages Exim hands over (its `queuefile` transport, or an incoming Exim's
//! spool), then re-queue them into Exim safely, or quarantine, hold or defer them.
//!
//! The modules in the order a message meets them:
//!
//! - [`spool`]: Exim's spool format: ids, the `-H` file read and written byte for byte, the `-D`
//!   file, headers, paths, locks. Knows nothing of the rest.
//! - [`intake`]: where pairs come from: the queuefile directory or an incoming spool, archives
//!   and captures for offline runs.
//! - [`pipeline`]: one message's path: the pipeline definition, its [`stages`] built and run, the
//!   rules that give each recipient its settings, the policy that turns the results into an
//!   action per group of recipients, and the headers that say so.
//! - [`engine`]: the batch engine around that path: claim pairs under a journal, scan a batch in
//!   parallel, commit what the policy decided, recover after a crash.
//! - [`requeue`]: writing a message back into an Exim spool (the safe re-queue procedure), and the
//!   delivery kick.
//! - [`sinks`]: the quarantine store and the notices. [`state`]: the journal, dedupe store and
//!   verdict database beside them.
//! - [`cli`]: the `spoolsift` command, one file per subcommand; [`metrics`], [`logging`] and
//!   [`output`] for what the daemon says; [`outside`] for the clock and the services' answers;
//!   [`dns`] for the ARC and DKIM key lookups.

pub mod cli;
pub mod dns;
pub mod engine;
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
