//! From the stages' results to one action. Fail closed: a message some stage could not check is
//! never delivered as if it had been checked.

use serde::{Deserialize, Serialize};

use super::run::StageOutcome;
use crate::stages::{StageError, Verdict};

/// What happens to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Re-queue into Exim's spool for delivery.
    Deliver,
    /// Back to the intake, tried again with exponential backoff; held after a maximum age.
    Defer,
    /// Re-queue frozen, so that it shows in `exim -bp` for an admin.
    Hold,
    /// Remove it. Only when the pipeline says `allow_discard = true`; always logged.
    Discard,
    /// Into the quarantine store with its verdicts; `spoolsift quarantine release` re-queues it.
    Quarantine,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Deliver => "deliver",
            Action::Defer => "defer",
            Action::Hold => "hold",
            Action::Discard => "discard",
            Action::Quarantine => "quarantine",
        }
    }
}

/// Which action each kind of result leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub clean: Action,
    pub infected: Action,
    pub blocked: Action,
    pub spam: Action,
    /// Spam scored at or over `high_spam_score` by a stage that scores (spamd, rspamd).
    pub high_spam: Action,
    /// The score from which spam is high spam (SpamAssassin's and rspamd's scale: their spam
    /// thresholds are 5 and 15 by default).
    pub high_spam_score: Score,
    /// An authentication check failed (ARC `fail`): usually still delivered, with the result in
    /// our Authentication-Results for the recipient's filters.
    pub auth_fail: Action,
    /// A stage could not answer now (service down, timeout).
    pub temporary_failure: Action,
    /// A stage can never answer for this message (e.g. too big for the scanner).
    pub permanent_failure: Action,
    /// `discard` destroys mail: it must be asked for explicitly.
    pub allow_discard: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            clean: Action::Deliver,
            infected: Action::Quarantine,
            blocked: Action::Quarantine,
            spam: Action::Deliver,
            high_spam: Action::Quarantine,
            high_spam_score: Score(15.0),
            auth_fail: Action::Deliver,
            temporary_failure: Action::Defer,
            permanent_failure: Action::Hold,
            allow_discard: false,
        }
    }
}

/// A spam score in a configuration: a finite number, so that it compares equal to itself.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Score(pub f64);

impl Eq for Score {}

/// The action for a message and the results that led to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub action: Action,
    /// `stage: what` for each result that asked for more than delivery.
    pub reasons: Vec<String>,
}

impl Policy {
    /// Refuse a policy that would discard mail without the explicit opt-in, or that would deliver a
    /// message a stage could not check.
    pub fn check(&self) -> Result<(), String> {
        let uses_discard = [
            self.clean,
            self.infected,
            self.blocked,
            self.spam,
            self.high_spam,
            self.auth_fail,
            self.temporary_failure,
            self.permanent_failure,
        ]
        .contains(&Action::Discard);
        if uses_discard && !self.allow_discard {
            return Err("policy uses `discard` but `allow_discard = true` is not set".into());
        }
        if !self.high_spam_score.0.is_finite() {
            return Err("high_spam_score must be a number".into());
        }
        if self.temporary_failure == Action::Deliver || self.permanent_failure == Action::Deliver {
            return Err("a stage failure may not lead to `deliver`: that would deliver mail unscanned".into());
        }
        Ok(())
    }

    fn for_verdict(&self, v: &Verdict) -> Action {
        match v {
            Verdict::Clean | Verdict::Neutral | Verdict::AuthPass => self.clean,
            Verdict::Infected { .. } => self.infected,
            Verdict::Blocked { .. } => self.blocked,
            Verdict::Spam => self.spam,
            Verdict::AuthFail => self.auth_fail,
        }
    }

    /// The most severe action any outcome asks for (quarantine > discard > hold > defer > deliver),
    /// so a found virus is quarantined even if another stage failed, and a failed stage keeps an
    /// otherwise clean message from delivery.
    pub fn decide(&self, outcomes: &[StageOutcome]) -> Decision {
        let mut action = Action::Deliver;
        let mut reasons = Vec::new();
        for o in outcomes {
            let (a, why) = match &o.result {
                Ok(r) if r.verdict == Verdict::Spam && r.score.is_some_and(|s| s >= self.high_spam_score.0) => {
                    let score = r.score.unwrap_or_default();
                    (self.high_spam, format!("high spam (score {score}, high_spam_score {})", self.high_spam_score.0))
                }
                Ok(r) if r.verdict == Verdict::Spam && r.score.is_some() => {
                    (self.spam, format!("spam (score {})", r.score.unwrap_or_default()))
                }
                Ok(r) => (self.for_verdict(&r.verdict), r.verdict.to_string()),
                Err(e @ (StageError::Temporary(_) | StageError::Panicked(_))) => {
                    (self.temporary_failure, e.to_string())
                }
                Err(e @ StageError::Permanent(_)) => (self.permanent_failure, e.to_string()),
            };
            if a != Action::Deliver {
                reasons.push(format!("{}: {why}", o.stage));
            }
            action = action.max(a);
        }
        Decision { action, reasons }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::StageResult;
    use std::time::Duration;

    fn out(stage: &str, r: Result<StageResult, StageError>) -> StageOutcome {
        StageOutcome { stage: stage.into(), result: r, elapsed: Duration::ZERO }
    }

    #[test]
    fn most_severe_wins_and_failures_never_deliver() {
        let p = Policy::default();
        let clean = out("content", Ok(StageResult::clean()));
        let temp = out("clamav", Err(StageError::Temporary("connection refused".into())));
        let virus = out("clamav", Ok(StageResult::new(Verdict::Infected { name: "Eicar".into() })));
        assert_eq!(p.decide(std::slice::from_ref(&clean)).action, Action::Deliver);
        let d = p.decide(&[clean.clone(), temp.clone()]);
        assert_eq!(d.action, Action::Defer);
        assert_eq!(d.reasons, ["clamav: temporary failure: connection refused"]);
        assert_eq!(p.decide(&[temp, virus, clean]).action, Action::Quarantine);
        assert_eq!(p.decide(&[]).action, Action::Deliver);
    }

    #[test]
    fn high_spam_by_score() {
        let p = Policy::default();
        let scored = |score: f64, verdict: Verdict| {
            let mut r = StageResult::new(verdict);
            r.score = Some(score);
            out("spamd", Ok(r))
        };
        let d = p.decide(&[scored(1002.7, Verdict::Spam)]);
        assert_eq!(
            (d.action, d.reasons),
            (Action::Quarantine, vec!["spamd: high spam (score 1002.7, high_spam_score 15)".to_string()])
        );
        let d = p.decide(&[scored(7.5, Verdict::Spam)]);
        assert_eq!((d.action, d.reasons), (Action::Deliver, vec![]));
        let tag = Policy { spam: Action::Hold, ..Policy::default() };
        assert_eq!(tag.decide(&[scored(7.5, Verdict::Spam)]).reasons, ["spamd: spam (score 7.5)"]);
        // A high score without a spam verdict is the stage's call: not spam.
        assert_eq!(p.decide(&[scored(30.0, Verdict::Clean)]).action, Action::Deliver);
        assert!(Policy { high_spam_score: Score(f64::NAN), ..Policy::default() }.check().is_err());
    }

    #[test]
    fn discard_needs_opt_in_and_failures_cannot_deliver() {
        let mut p = Policy { infected: Action::Discard, ..Policy::default() };
        assert!(p.check().is_err());
        p.allow_discard = true;
        assert!(p.check().is_ok());
        assert!(Policy { temporary_failure: Action::Deliver, ..Policy::default() }.check().is_err());
    }
}
