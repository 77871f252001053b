//! Annotation (header injection): after the checks and the policy, write what they found into the
//! message's headers, through the spool header API. Not a stage: it runs once the parallel stages
//! are done and the policy has decided, and it is the only step that changes the message.

use serde::Deserialize;

use super::policy::{Action, Decision};
use super::run::StageOutcome;
use crate::spool::headers::sanitize;
use crate::spool::{HeaderError, Position, Removal, SpoolHeader};
use crate::stages::{authres, Verdict, VerdictClass};

/// What headers to add. Templates may use `{verdict}`, `{action}`, `{virus}`, `{version}`,
/// `{stages}` and `{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectConfig {
    /// Header with the overall result; empty for none. Incoming copies of it are removed, since a
    /// sender could forge it.
    pub status_header: String,
    pub status_template: String,
    /// Header naming the malware found, added only when some was; empty for none.
    pub virus_header: String,
    /// Add our Authentication-Results (RFC 8601) with every stage's `method=result` clauses.
    pub authentication_results: bool,
    /// Remove incoming Authentication-Results that claim our authserv-id (RFC 8601 §5).
    pub remove_forged_results: bool,
    /// Prefix for the Subject of messages a stage calls spam (e.g. `[SPAM]`); empty for none.
    pub spam_subject_tag: String,
    /// Extra headers, each `{ name = "...", value = "template" }`.
    pub add: Vec<ExtraHeader>,
    /// Longest value we write; longer ones are cut (at a character boundary).
    pub max_value_bytes: usize,
    /// A rule turned the status header off for this copy (its forgeries are still removed).
    #[serde(skip)]
    pub omit_status: bool,
    /// A rule turned the virus header off for this copy.
    #[serde(skip)]
    pub omit_virus: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraHeader {
    pub name: String,
    pub value: String,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            status_header: "X-Spoolsift-Status".into(),
            status_template: "{verdict} ({stages}) spoolsift {version}".into(),
            virus_header: "X-Spoolsift-Virus".into(),
            authentication_results: true,
            remove_forged_results: true,
            spam_subject_tag: String::new(),
            add: Vec::new(),
            max_value_bytes: 900,
            omit_status: false,
            omit_virus: false,
        }
    }
}

/// Whether an incoming Authentication-Results value is to be removed as a forgery of ours: it
/// claims our authserv-id (read by the grammar, see [`authres`]), or no authserv-id can be read
/// at all. Such an unreadable field is not valid (RFC 8601 §2.2), and a reader downstream may
/// still find our name in it; RFC 8601 §5 allows removing every incoming field.
pub fn forges_ours(value: &[u8], authserv_id: &str) -> bool {
    authres::claim(value).map_or(true, |c| c.is(authserv_id))
}

/// A recipient's changes to `[headers]`, from the rules (`headers.status=off`,
/// `headers.add="X-Route: sales"`); `None` keeps the pipeline's setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderChanges {
    /// Add the status header (a forged incoming one is still removed).
    pub status: Option<bool>,
    /// Add the virus header when malware was found.
    pub virus: Option<bool>,
    pub authentication_results: Option<bool>,
    /// One more header, after the pipeline's own `add`.
    pub add: Option<ExtraHeader>,
}

impl HeaderChanges {
    pub fn is_empty(&self) -> bool {
        *self == HeaderChanges::default()
    }
}

/// The values a template can use.
struct Fields {
    verdict: String,
    action: String,
    virus: String,
    version: String,
    stages: String,
    id: String,
}

impl Fields {
    fn expand(&self, template: &str) -> String {
        template
            .replace("{verdict}", &self.verdict)
            .replace("{action}", &self.action)
            .replace("{virus}", &self.virus)
            .replace("{version}", &self.version)
            .replace("{stages}", &self.stages)
            .replace("{id}", &self.id)
    }
}

impl InjectConfig {
    /// These settings for one copy: with the spam subject `tag` and the header `changes` its
    /// recipients' rules made.
    pub fn for_copy(&self, tag: Option<&str>, changes: &HeaderChanges) -> InjectConfig {
        let mut out = self.clone();
        if let Some(tag) = tag {
            out.spam_subject_tag = tag.to_string();
        }
        if let Some(on) = changes.status {
            out.omit_status = !on;
        }
        if let Some(on) = changes.virus {
            out.omit_virus = !on;
        }
        if let Some(on) = changes.authentication_results {
            out.authentication_results = on;
        }
        out.add.extend(changes.add.iter().cloned());
        out
    }

    /// Our `method=result` clauses for this message (RFC 8601), as our Authentication-Results
    /// and our ARC-Authentication-Results carry them: from the stages' answers, never from the
    /// message's own fields.
    pub fn results_of(&self, outcomes: &[StageOutcome]) -> Vec<String> {
        outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .flat_map(|r| r.auth_results.iter())
            .map(|c| sanitize(c, self.max_value_bytes))
            .collect()
    }

    /// Apply to a message's header: remove forgeries of our headers, add ours.
    pub fn apply(
        &self,
        h: &mut SpoolHeader,
        authserv_id: &str,
        outcomes: &[StageOutcome],
        decision: &Decision,
    ) -> Result<(), HeaderError> {
        let results: Vec<_> = outcomes.iter().filter_map(|o| o.result.as_ref().ok()).collect();
        let viruses: Vec<&str> = results
            .iter()
            .filter_map(|r| match &r.verdict {
                Verdict::Infected { name } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let overall = results
            .iter()
            .map(|r| &r.verdict)
            .find(|v| !matches!(v, Verdict::Clean | Verdict::Neutral | Verdict::AuthPass))
            .map_or_else(
                || {
                    if decision.action == Action::Deliver {
                        VerdictClass::Clean.name().to_string()
                    } else {
                        decision.action.name().to_string()
                    }
                },
                Verdict::to_string,
            );
        let stages = outcomes
            .iter()
            .map(|o| match &o.result {
                Ok(r) => format!("{}={}", o.stage, r.verdict.class().name()),
                Err(_) => format!("{}={}", o.stage, VerdictClass::Error.name()),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let fields = Fields {
            verdict: overall,
            action: decision.action.name().to_string(),
            virus: viruses.join(", "),
            version: env!("CARGO_PKG_VERSION").to_string(),
            stages,
            id: h.id.to_string(),
        };
        let clean = |s: &str| sanitize(s, self.max_value_bytes);

        if self.remove_forged_results {
            h.headers.remove_where(
                |l| l.is_named(b"Authentication-Results") && forges_ours(&l.value(), authserv_id),
                Removal::MarkDeleted,
            );
        }
        for name in [&self.status_header, &self.virus_header] {
            if !name.is_empty() {
                h.headers.remove(name.as_bytes(), Removal::MarkDeleted);
            }
        }
        if self.authentication_results {
            let clauses = self.results_of(outcomes);
            let body = if clauses.is_empty() { "none".to_string() } else { clauses.join("; ") };
            let value = format!("{authserv_id}; {body}");
            h.headers.add(b"Authentication-Results", value.as_bytes(), Position::Top)?;
        }
        // A stage's headers (X-Spam-Status, X-DCC-...) are ours for this message: copies that
        // came with it are the sender's word, which a recipient's filter must not read as ours.
        for r in &results {
            for (name, _) in &r.headers {
                h.headers.remove(name.as_bytes(), Removal::MarkDeleted);
            }
        }
        for r in &results {
            for (name, value) in &r.headers {
                h.headers.add(name.as_bytes(), clean(value).as_bytes(), Position::Bottom)?;
            }
        }
        if !self.status_header.is_empty() && !self.omit_status {
            h.headers.add(
                self.status_header.as_bytes(),
                clean(&fields.expand(&self.status_template)).as_bytes(),
                Position::Bottom,
            )?;
        }
        if !self.virus_header.is_empty() && !self.omit_virus && !viruses.is_empty() {
            h.headers.add(self.virus_header.as_bytes(), clean(&fields.virus).as_bytes(), Position::Bottom)?;
        }
        for extra in &self.add {
            h.headers.add(extra.name.as_bytes(), clean(&fields.expand(&extra.value)).as_bytes(), Position::Bottom)?;
        }
        let spam = results.iter().any(|r| r.verdict == Verdict::Spam);
        if spam && !self.spam_subject_tag.is_empty() {
            let subject = h.headers.get(b"subject").next().map(|l| l.value()).unwrap_or_default();
            let subject = String::from_utf8_lossy(&subject).into_owned();
            if !subject.starts_with(&self.spam_subject_tag) {
                let tagged = format!("{} {subject}", self.spam_subject_tag);
                h.headers.replace(b"Subject", clean(&tagged).as_bytes())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::StageResult;

    #[test]
    fn incoming_copies_of_a_stages_headers_are_removed() {
        let mut h = SpoolHeader::parse(
            b"1xXORz-0000000058C-2p8L-H\nroot 0 0\n<a@b.example>\n1795895471 0\nXX\n1\nc@d.example\n\n\
              027  X-Spam-Status: No, score=0\n014  Subject: test\n",
            None,
        )
        .unwrap();
        let mut r = StageResult::new(Verdict::Spam);
        r.headers.push(("X-Spam-Status".into(), "Yes, score=20.0".into()));
        let outcomes = [StageOutcome { stage: "spamd".into(), result: Ok(r), elapsed: std::time::Duration::ZERO }];
        let decision = Decision { action: Action::Deliver, reasons: Vec::new() };
        InjectConfig::default().apply(&mut h, "mx.example", &outcomes, &decision).unwrap();
        let live: Vec<String> = h
            .headers
            .live()
            .map(|l| String::from_utf8_lossy(l.text()).into_owned())
            .filter(|t| t.starts_with("X-Spam"))
            .collect();
        assert_eq!(live, ["X-Spam-Status: Yes, score=20.0\n"]);
    }

    #[test]
    fn forgeries_of_our_authserv_id() {
        let ours = "mx.example.net";
        for v in [
            "mx.example.net; arc=pass",
            "(outer (inner) comment) mx.example.net; arc=pass",
            "\"mx.example.net\"; arc=pass",
            "mx.example.net.; arc=pass",
            "MX.example.net 1; arc=pass",
            "mx.example.net garbage; arc=pass",
            "(unterminated mx.example.net; arc=pass",
            "",
        ] {
            assert!(forges_ours(v.as_bytes(), ours), "{v:?}");
        }
        for v in ["mx.example.org; arc=pass", "(mx.example.net) other.example; arc=pass", "\"mx.example.net.x\"; none"]
        {
            assert!(!forges_ours(v.as_bytes(), ours), "{v:?}");
        }
    }
}
