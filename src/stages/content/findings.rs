//! The content scanner's findings: one per rule a part breaks, and a scan's list of them, turned
//! into the stage's result (the verdict first, then each finding's details).

use super::eicar;
use super::printable;
use super::structure::Breach;
use super::MAX_LISTED;
use crate::stages::{StageResult, Verdict};

pub(super) struct Finding {
    pub(super) part: String,
    pub(super) filename: Option<String>,
    pub(super) verdict: Verdict,
    pub(super) extra: Vec<(String, String)>,
}

impl Finding {
    pub(super) fn virus(part: &str, filename: Option<&str>) -> Finding {
        Finding {
            part: part.into(),
            filename: filename.map(printable),
            verdict: Verdict::Infected { name: eicar::NAME.into() },
            extra: Vec::new(),
        }
    }

    pub(super) fn blocked(part: &str, filename: Option<&str>, rule: impl Into<String>) -> Finding {
        Finding {
            part: part.into(),
            filename: filename.map(printable),
            verdict: Verdict::Blocked { rule: rule.into() },
            extra: Vec::new(),
        }
    }

    /// A structure limit crossed; `found` is the count when it is known (0 otherwise: the census
    /// stops at the first part over the limit).
    pub(super) fn breach(breach: Breach, found: usize) -> Finding {
        let mut f = Finding::blocked("message", None, breach.rule());
        if found > 0 {
            f.extra.push(("found".into(), found.to_string()));
        }
        f.extra.push(("limit".into(), breach.limit().to_string()));
        f
    }

    /// An archive limit crossed: what was found against the limit.
    pub(super) fn limited(mut self, found: u64, limit: u64) -> Finding {
        self.extra.push(("found".into(), found.to_string()));
        self.extra.push(("limit".into(), limit.to_string()));
        self
    }

    pub(super) fn sized(mut self, size: u64, limit: u64) -> Finding {
        self.extra.push(("size".into(), size.to_string()));
        self.extra.push(("limit".into(), limit.to_string()));
        self
    }

    pub(super) fn is_virus(&self) -> bool {
        matches!(self.verdict, Verdict::Infected { .. })
    }
}

/// What a scan found so far.
#[derive(Default)]
pub(super) struct Scan {
    pub(super) findings: Vec<Finding>,
    pub(super) unlisted: usize,
    pub(super) parts: usize,
    /// Notes and errors, after the findings.
    pub(super) details: Vec<(String, String)>,
}

impl Scan {
    pub(super) fn add(&mut self, f: Finding) {
        let same_kind = self.findings.iter().filter(|g| g.is_virus() == f.is_virus()).count();
        if same_kind < MAX_LISTED {
            self.findings.push(f);
        } else {
            self.unlisted += 1;
        }
    }

    pub(super) fn note(&mut self, text: String) {
        if self.details.len() < MAX_LISTED {
            self.details.push(("note".into(), text));
        }
    }

    pub(super) fn infected(&self) -> bool {
        self.findings.iter().any(Finding::is_virus)
    }

    pub(super) fn into_result(self) -> StageResult {
        let Scan { mut findings, unlisted, parts, details } = self;
        // Stable: viruses first, so the verdict's own finding leads the details.
        findings.sort_by_key(|f| !f.is_virus());
        let verdict = findings.first().map_or(Verdict::Clean, |f| f.verdict.clone());
        let mut r = StageResult::new(verdict);
        for f in findings {
            r = r.detail("part", f.part);
            if let Some(name) = f.filename {
                r = r.detail("filename", name);
            }
            r = match f.verdict {
                Verdict::Infected { name } => r.detail("virus", name),
                Verdict::Blocked { rule } => r.detail("rule", rule),
                _ => r,
            };
            r.details.extend(f.extra);
        }
        if unlisted > 0 {
            r = r.detail("unlisted_findings", unlisted.to_string());
        }
        if parts > 0 {
            r = r.detail("parts", parts.to_string());
        }
        r.details.extend(details);
        r
    }
}
