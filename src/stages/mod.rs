//! Stages: the checks run on each message. One file per stage, all behind [`Stage`].
//!
//! A stage sees a read-only [`MessageView`] (envelope, headers, body access) and returns a
//! [`StageResult`] or a [`StageError`]. It knows nothing of the file system or of the spool's
//! layout, so the same stage serves the live daemon, offline scans and replays.

use std::collections::BTreeSet;
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

impl Verdict {
    /// Its kind, as metrics label it and our status header names it.
    pub fn class(&self) -> VerdictClass {
        match self {
            Verdict::Clean => VerdictClass::Clean,
            Verdict::Infected { .. } => VerdictClass::Infected,
            Verdict::Blocked { .. } => VerdictClass::Blocked,
            Verdict::Spam => VerdictClass::Spam,
            Verdict::Neutral => VerdictClass::Neutral,
            Verdict::AuthFail => VerdictClass::Fail,
            Verdict::AuthPass => VerdictClass::Pass,
        }
    }
}

/// A verdict in words, for logs, headers and reports: `infected (Eicar-Test-Signature)`.
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Clean => f.write_str("clean"),
            Verdict::Infected { name } => write!(f, "infected ({name})"),
            Verdict::Blocked { rule } => write!(f, "blocked ({rule})"),
            Verdict::Spam => f.write_str("spam"),
            Verdict::Neutral => f.write_str("neutral"),
            Verdict::AuthFail => f.write_str("auth fail"),
            Verdict::AuthPass => f.write_str("auth pass"),
        }
    }
}

/// What kind of answer a stage gave, without its particulars: a verdict's kind, or `Error` when
/// the stage could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VerdictClass {
    Clean,
    Infected,
    Blocked,
    Spam,
    Neutral,
    Pass,
    Fail,
    Error,
}

impl VerdictClass {
    /// The word for it in metrics labels and our status header.
    pub fn name(self) -> &'static str {
        match self {
            VerdictClass::Clean => "clean",
            VerdictClass::Infected => "infected",
            VerdictClass::Blocked => "blocked",
            VerdictClass::Spam => "spam",
            VerdictClass::Neutral => "neutral",
            VerdictClass::Pass => "pass",
            VerdictClass::Fail => "fail",
            VerdictClass::Error => "error",
        }
    }
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
    /// The stage panicked on this message: a bug, met again on every scan of it, so each one
    /// counts against the message's processing attempts (`[defer] processing_attempts`); the
    /// policy treats it as a temporary failure meanwhile. Only the scan runner makes this.
    #[error("temporary failure: stage {0} panicked")]
    Panicked(String),
}

/// A replay lacks the answer a stage needs: it cannot tell, so the message is not decided.
impl From<crate::outside::MissingAnswer> for StageError {
    fn from(m: crate::outside::MissingAnswer) -> StageError {
        StageError::Temporary(format!("replay: {m}"))
    }
}

/// One recipient's changes to a stage's lists, from the rules (`content.block_extensions=...`):
/// what it blocks beyond the stage's own lists, and what of them it lets through. Entries are as
/// the stage normalises them (extensions lowercase without the dot, types `type/subtype`
/// lowercase).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListChanges {
    pub block_extensions: BTreeSet<String>,
    pub allow_extensions: BTreeSet<String>,
    pub block_types: BTreeSet<String>,
    pub allow_types: BTreeSet<String>,
}

impl ListChanges {
    pub fn is_empty(&self) -> bool {
        self.block_extensions.is_empty()
            && self.allow_extensions.is_empty()
            && self.block_types.is_empty()
            && self.allow_types.is_empty()
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

    /// This stage with a recipient's `changes` to its lists, for the recipients whose rules change
    /// them (the message is checked again with it for them); `None` for a stage without lists.
    fn with_list_changes(&self, _changes: &ListChanges) -> Option<Box<dyn Stage>> {
        None
    }
}

pub mod arc;
pub mod authres;
pub mod clamav;
pub mod content;
pub mod dcc;
pub mod dkim;
pub mod net;
pub mod rspamd;
pub mod spam_score;
pub mod spamd;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_in_words_and_classes() {
        for (v, text, class) in [
            (Verdict::Clean, "clean", "clean"),
            (Verdict::Infected { name: "Eicar-Test-Signature".into() }, "infected (Eicar-Test-Signature)", "infected"),
            (Verdict::Blocked { rule: "sha256".into() }, "blocked (sha256)", "blocked"),
            (Verdict::Spam, "spam", "spam"),
            (Verdict::Neutral, "neutral", "neutral"),
            (Verdict::AuthPass, "auth pass", "pass"),
            (Verdict::AuthFail, "auth fail", "fail"),
        ] {
            assert_eq!((v.to_string().as_str(), v.class().name()), (text, class));
        }
        assert_eq!(VerdictClass::Error.name(), "error");
    }
}
