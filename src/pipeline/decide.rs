//! From the stages' outcomes to a decision for each recipient, and recipients who come to the
//! same thing grouped: one group is one copy of the message (a re-queue, a quarantine entry...).
//!
//! Without rules every recipient gets the pipeline's policy, so there is one group. With rules,
//! each recipient gets its own settings (`rules.rs`): its policy, the stages that count for it,
//! its subject tag, its size limit.

use super::config::PipelineConfig;
use super::policy::{Action, Decision};
use super::rules::{MessageFacts, Origin, RecipientSettings};
use super::run::StageOutcome;

/// Whom to tell, as the rules left it for these recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tell {
    pub recipients: bool,
    pub sender: bool,
}

/// The recipients who get the same outcome, and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientGroup {
    pub recipients: Vec<Vec<u8>>,
    pub decision: Decision,
    /// The spam subject tag for this copy, when a rule set one.
    pub subject_tag: Option<String>,
    /// The rules that decided a setting for these recipients, once each.
    pub rules: Vec<Origin>,
    /// Who is sent a notice if this copy is quarantined or held.
    pub tell: Tell,
}

/// One recipient's settings and decision (what `spoolsift explain` prints).
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientDecision {
    pub recipient: Vec<u8>,
    pub settings: RecipientSettings,
    pub decision: Decision,
}

/// The stages worth running for `owed`: every stage some recipient has on.
pub fn stage_wanted(settings: &[RecipientSettings], stage: &str) -> bool {
    settings.is_empty() || settings.iter().any(|s| !s.stages_off.contains(stage))
}

/// Each owed recipient's settings under the pipeline's rules; none without rules (every
/// recipient then has the pipeline's own).
pub fn settings_for(
    cfg: &PipelineConfig,
    facts: impl FnOnce() -> MessageFacts,
    owed: &[Vec<u8>],
) -> Vec<RecipientSettings> {
    if cfg.ruleset.is_empty() {
        return Vec::new();
    }
    let facts = facts();
    owed.iter().map(|r| cfg.ruleset.for_recipient(&cfg.policy, &facts, r)).collect()
}

/// The groups of `owed` (see [`settings_for`]): one without rules, decided by the pipeline's
/// policy.
pub fn groups(
    cfg: &PipelineConfig,
    owed: &[Vec<u8>],
    settings: Vec<RecipientSettings>,
    outcomes: &[StageOutcome],
    size: u64,
) -> Vec<RecipientGroup> {
    let tell = Tell { recipients: cfg.notify.recipients, sender: cfg.notify.sender };
    if settings.is_empty() {
        let decision = cfg.policy.decide(outcomes);
        return vec![RecipientGroup {
            recipients: owed.to_vec(),
            decision,
            subject_tag: None,
            rules: Vec::new(),
            tell,
        }];
    }
    group(per_recipient(owed, settings, outcomes, size), tell)
}

/// Decide each recipient: its policy over the outcomes of the stages it has on, and its size
/// limit against the message's `size`.
pub fn per_recipient(
    owed: &[Vec<u8>],
    settings: Vec<RecipientSettings>,
    outcomes: &[StageOutcome],
    size: u64,
) -> Vec<RecipientDecision> {
    owed.iter()
        .zip(settings)
        .map(|(r, settings)| {
            let mut decision = if settings.stages_off.is_empty() {
                settings.policy.decide(outcomes)
            } else {
                let counted: Vec<StageOutcome> =
                    outcomes.iter().filter(|o| !settings.stages_off.contains(&o.stage)).cloned().collect();
                settings.policy.decide(&counted)
            };
            if let Some(limit) = settings.max_message_bytes.filter(|&l| size > l) {
                decision.action = decision.action.max(settings.policy.blocked);
                decision.reasons.push(format!("rules: blocked (message size {size} over max_message_bytes {limit})"));
            }
            RecipientDecision { recipient: r.clone(), settings, decision }
        })
        .collect()
}

/// Recipients grouped by what they come to (the action, its reasons, the subject tag and who is
/// told), in the order their first recipient is owed; `tell` is `[notify]`'s default.
pub fn group(decisions: Vec<RecipientDecision>, default: Tell) -> Vec<RecipientGroup> {
    let mut groups: Vec<RecipientGroup> = Vec::new();
    for d in decisions {
        let rules = d.settings.deciding_rules();
        let tag = d.settings.subject_tag;
        let tell = Tell {
            recipients: d.settings.notify_recipients.unwrap_or(default.recipients),
            sender: d.settings.notify_sender.unwrap_or(default.sender),
        };
        match groups.iter_mut().find(|g| g.decision == d.decision && g.subject_tag == tag && g.tell == tell) {
            Some(g) => {
                g.recipients.push(d.recipient);
                for r in rules {
                    if !g.rules.contains(&r) {
                        g.rules.push(r);
                    }
                }
            }
            None => groups.push(RecipientGroup {
                recipients: vec![d.recipient],
                decision: d.decision,
                subject_tag: tag,
                rules,
                tell,
            }),
        }
    }
    groups
}

/// One group for every recipient, with the most severe action any of them came to and every
/// reason: what a message gets when its groups cannot be given copies of their own.
pub fn merged(groups: Vec<RecipientGroup>) -> Option<RecipientGroup> {
    groups.into_iter().reduce(|mut a, b| {
        a.recipients.extend(b.recipients);
        if b.decision.action > a.decision.action {
            a.subject_tag = b.subject_tag;
        }
        a.tell.recipients |= b.tell.recipients;
        a.tell.sender |= b.tell.sender;
        a.decision.action = a.decision.action.max(b.decision.action);
        for r in b.decision.reasons {
            if !a.decision.reasons.contains(&r) {
                a.decision.reasons.push(r);
            }
        }
        for r in b.rules {
            if !a.rules.contains(&r) {
                a.rules.push(r);
            }
        }
        a
    })
}

/// A deferral held too long is held instead.
pub fn hold_if_deferred_too_long(decision: &mut Decision, deferred_for: u64, max_age: u64) {
    if decision.action == Action::Defer && deferred_for >= max_age {
        decision.action = Action::Hold;
        decision.reasons.push("deferred longer than defer.max_age_secs".into());
    }
}
