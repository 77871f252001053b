//! From the stages' outcomes to a decision for each recipient, and recipients who come to the
//! same thing grouped: one group is one copy of the message (a re-queue, a quarantine entry...).
//!
//! Without rules every recipient gets the pipeline's policy, so there is one group. With rules,
//! each recipient gets its own settings (`src/pipeline/rules/mod.rs`): its policy, the stages that count for it,
//! its subject tag, its size limit, its changes to the content scanner's lists.

use std::collections::BTreeSet;

use super::annotate::HeaderChanges;
use super::config::PipelineConfig;
use super::policy::{Action, Decision};
use super::rules::{MessageFacts, Origin, RecipientSettings};
use super::run::{run_stages_where, run_with_list_changes, StageOutcome};
use crate::outside::Clock;
use crate::spool::MessageView;
use crate::stages::{ListChanges, Stage};

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
    /// The rules' changes to `[headers]` for this copy.
    pub headers: HeaderChanges,
    /// The rules that decided a setting for these recipients, once each.
    pub rules: Vec<Origin>,
    /// Who is sent a notice if this copy is quarantined or held.
    pub tell: Tell,
    /// The changes to the stages' lists its outcomes were checked with (its first recipient's;
    /// recipients whose changes made a difference came to different decisions).
    pub lists: ListChanges,
}

/// One recipient's settings and decision (what `spoolsift explain` prints).
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientDecision {
    pub recipient: Vec<u8>,
    pub settings: RecipientSettings,
    pub decision: Decision,
}

/// A message's stage outcomes, and those of the stages checked again for recipients whose rules
/// change the stages' lists ([`list_changes`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcomes {
    pub all: Vec<StageOutcome>,
    pub with_lists: Vec<(ListChanges, Vec<StageOutcome>)>,
}

impl Outcomes {
    /// Outcomes without list changes for any recipient.
    pub fn plain(all: Vec<StageOutcome>) -> Outcomes {
        Outcomes { all, with_lists: Vec::new() }
    }

    /// What counts for a recipient with `changes`: the outcomes, with those of the stages checked
    /// again with its changes in their place.
    pub fn for_lists(&self, changes: &ListChanges) -> Vec<StageOutcome> {
        let again = self.with_lists.iter().find(|(c, _)| c == changes).map(|(_, o)| o.as_slice()).unwrap_or(&[]);
        self.all.iter().map(|o| again.iter().find(|a| a.stage == o.stage).unwrap_or(o)).cloned().collect()
    }
}

/// The distinct changes the recipients' rules make to the stages' lists, each once.
pub fn list_changes(settings: &[RecipientSettings]) -> Vec<ListChanges> {
    let set: BTreeSet<&ListChanges> = settings.iter().map(|s| &s.content_lists).filter(|c| !c.is_empty()).collect();
    set.into_iter().cloned().collect()
}

/// Run the stages some recipient has on, and those with lists again for each distinct change
/// the recipients' rules make to them.
pub fn run_for(
    stages: &[Box<dyn Stage>],
    settings: &[RecipientSettings],
    view: &MessageView<'_>,
    clock: Clock,
) -> Outcomes {
    let all = run_stages_where(stages, |s| stage_wanted(settings, s), view, clock);
    let with_lists = run_with_list_changes(stages, |s| stage_wanted(settings, s), list_changes(settings), view, clock);
    Outcomes { all, with_lists }
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
    outcomes: &Outcomes,
    size: u64,
) -> Vec<RecipientGroup> {
    let tell = Tell { recipients: cfg.notify.recipients, sender: cfg.notify.sender };
    if settings.is_empty() {
        let decision = cfg.policy.decide(&outcomes.all);
        return vec![RecipientGroup {
            recipients: owed.to_vec(),
            decision,
            subject_tag: None,
            headers: HeaderChanges::default(),
            rules: Vec::new(),
            tell,
            lists: ListChanges::default(),
        }];
    }
    group(per_recipient(owed, settings, outcomes, size), tell)
}

/// Decide each recipient: its policy over the outcomes of the stages it has on (checked with its
/// own lists where it has them), and its size limit against the message's `size`.
pub fn per_recipient(
    owed: &[Vec<u8>],
    settings: Vec<RecipientSettings>,
    outcomes: &Outcomes,
    size: u64,
) -> Vec<RecipientDecision> {
    owed.iter()
        .zip(settings)
        .map(|(r, settings)| {
            let own;
            let mine: &[StageOutcome] = if settings.content_lists.is_empty() {
                &outcomes.all
            } else {
                own = outcomes.for_lists(&settings.content_lists);
                &own
            };
            let mut decision = if settings.stages_off.is_empty() {
                settings.policy.decide(mine)
            } else {
                let counted: Vec<StageOutcome> =
                    mine.iter().filter(|o| !settings.stages_off.contains(&o.stage)).cloned().collect();
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

/// Recipients grouped by what they come to (the action, its reasons, the subject tag, the header
/// changes and who is told), in the order their first recipient is owed; `tell` is `[notify]`'s default.
pub fn group(decisions: Vec<RecipientDecision>, default: Tell) -> Vec<RecipientGroup> {
    let mut groups: Vec<RecipientGroup> = Vec::new();
    for d in decisions {
        let rules = d.settings.deciding_rules();
        let tag = d.settings.subject_tag;
        let tell = Tell {
            recipients: d.settings.notify_recipients.unwrap_or(default.recipients),
            sender: d.settings.notify_sender.unwrap_or(default.sender),
        };
        let headers = d.settings.headers;
        match groups
            .iter_mut()
            .find(|g| g.decision == d.decision && g.subject_tag == tag && g.headers == headers && g.tell == tell)
        {
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
                headers,
                rules,
                tell,
                lists: d.settings.content_lists,
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
