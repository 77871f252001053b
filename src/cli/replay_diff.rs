//! `replay --expect`: compare two replay outputs message by message (matched by original id):
//! the action and its reasons, the recipients handed on, and the `-H` header lines with their
//! flags (`[F]` From:, `[*]` deleted, `[ ]` none), of the re-queued copy or, for a quarantined
//! message, of the quarantined pair. The result is a unified diff per message that differs;
//! empty when the outputs agree.

use crate::pipeline::Action;
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::replay::ACTIONS;
use crate::sinks::quarantine::QuarantineStore;
use crate::spool::SpoolHeader;

/// Each message's comparable lines, by original id.
fn describe(dir: &Path) -> Result<BTreeMap<String, Vec<String>>, String> {
    let path = dir.join(ACTIONS);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let entries: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let quarantined =
        QuarantineStore::new(&dir.join("quarantine")).list().map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &entries {
        let id = e["id"].as_str().ok_or_else(|| format!("{}: an entry without an id", path.display()))?;
        let action = e["action"].as_str().unwrap_or("?");
        let lines = out.entry(id.to_string()).or_default();
        lines.push(format!("action: {action}"));
        lines.extend(
            e["reasons"].as_array().into_iter().flatten().map(|r| format!("reason: {}", r.as_str().unwrap_or("?"))),
        );
        lines.extend(
            e["recipients"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("recipient: {}", r.as_str().unwrap_or("?"))),
        );
        // Read back by the enum's own names ("rejected" and "nothing-owed" are no action).
        let parsed = serde_json::from_value::<crate::pipeline::Action>(e["action"].clone()).ok();
        let header_file = match (parsed, e["target_id"].as_str()) {
            (Some(Action::Deliver | Action::Hold), Some(target)) => Some(dir.join("input").join(format!("{target}-H"))),
            (Some(Action::Quarantine), _) => quarantined.iter().find(|q| q.id.as_str() == id).map(|q| q.header_path()),
            _ => None,
        };
        if let Some(p) = header_file {
            let h = SpoolHeader::read(&p).map_err(|e| e.to_string())?;
            for line in h.headers.all() {
                let text = String::from_utf8_lossy(line.text());
                let text = text.strip_suffix('\n').unwrap_or(&text).replace('\n', "\\n");
                lines.push(format!("header [{}] {text}", char::from(line.flag().byte())));
            }
        }
    }
    Ok(out)
}

/// The differences between the expected output and this one, as unified diffs per message.
pub fn compare(expected: &Path, actual: &Path) -> Result<String, String> {
    let (want, got) = (describe(expected)?, describe(actual)?);
    let mut ids: Vec<&String> = want.keys().chain(got.keys()).collect();
    ids.sort();
    ids.dedup();
    let mut out = String::new();
    for id in ids {
        let text = |m: &BTreeMap<String, Vec<String>>| {
            m.get(id).map(|lines| lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap_or_default()
        };
        let (a, b) = (text(&want), text(&got));
        if a == b {
            continue;
        }
        let diff = similar::TextDiff::from_lines(&a, &b);
        let unified = diff
            .unified_diff()
            .context_radius(2)
            .header(&format!("expected {id}"), &format!("replayed {id}"))
            .to_string();
        out.push_str(&unified);
    }
    Ok(out)
}
