//! Stages: the checks run on each message. One file per stage, all behind [`Stage`].
//!
//! A stage sees a read-only [`MessageView`] (envelope, headers, body access) and returns a
//! [`StageResult`] or a [`StageError`]. It knows nothing of the file system or of the spool's
//! layout, so the same stage serves the live daemon, offline scans and replays.

use std::time::Duration;

use crate::spool::MessageView;

/// What a stage concluded about a message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing found.
    Clean,
    /// Malware (the signature or rule name).
    Infected { name: String },
    /// Blocked by a content rule (attachment name or type, size limit, hash blocklist).
    Blocked { rule: String },
    /// Bulk or spam by the stage's own measure.
    Spam,
    /// The check does not apply or says nothing either way (e.g. ARC `none`).
    Neutral,
    /// An authentication check failed (e.g. ARC `fail`); the reason is in the result's details.
    AuthFail,
    /// An authentication check passed.
    AuthPass,
}

/// A stage's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageResult {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// A score, where the stage has one.
    pub score: Option<f64>,
    /// Headers the stage wants added (name, value); the header stage sanitises and folds them.
    pub headers: Vec<(String, String)>,
    /// `method=result` clauses for our Authentication-Results header (RFC 8601), e.g.
    /// `arc=pass (i=2) header.oldest-pass=1`.
    pub auth_results: Vec<String>,
    /// Fields for the per-message log line and reports.
    pub details: Vec<(String, String)>,
}

impl StageResult {
    pub fn new(verdict: Verdict) -> StageResult {
        StageResult { verdict, score: None, headers: Vec::new(), auth_results: Vec::new(), details: Vec::new() }
    }

    pub fn clean() -> StageResult {
        StageResult::new(Verdict::Clean)
    }

    pub fn detail(mut self, key: &str, value: impl Into<String>) -> StageResult {
        self.details.push((key.to_string(), value.into()));
        self
    }
}

/// Why a stage could not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub enum StageError {
    /// Try again later (service down, timeout): the policy's defer applies. Never "clean".
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// The message cannot be checked by this stage at all (e.g. above a size limit it cannot
    /// stream): the policy decides.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// A replay lacks the answer a stage needs: it cannot tell, so the message is not decided.
impl From<crate::outside::MissingAnswer> for StageError {
    fn from(m: crate::outside::MissingAnswer) -> StageError {
        StageError::Temporary(format!("replay: {m}"))
    }
}

/// The stage interface: small on purpose.
pub trait Stage: Send + Sync {
    /// A short stable name used in configuration, logs and reports (`clamav`, `dcc`, `arc`...).
    fn name(&self) -> &str;

    /// Check one message. May block on I/O; the executor runs independent stages in parallel.
    fn check(&self, message: &MessageView<'_>) -> Result<StageResult, StageError>;

    /// How long a check may take before the executor treats it as a temporary failure.
    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }

    /// How many checks of this stage can usefully wait on its service at once (its bound on
    /// connections). The engine scans at least this many messages at a time, so the service is
    /// kept as busy as the stage allows; a stage that only computes keeps the default.
    fn parallelism(&self) -> usize {
        1
    }
}

pub mod arc;
pub mod authres;
pub mod clamav;
pub mod content;
pub mod dcc;
pub mod net;
