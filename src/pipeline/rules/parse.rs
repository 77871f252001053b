//! Reading rules: a rule file's lines, or the pipeline's inline `lines`, into a [`RuleSet`].
//! Every error names the file and line (`check-config` prints it as it is).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::{
    AddressPattern, Condition, ContentList, HeaderSetting, Origin, PolicyKey, Rule, RuleError, RuleSet, Setting,
};
use crate::pipeline::policy::{Action, Policy, Score};

impl RuleSet {
    /// Read rules from `text` (a rule file, or the pipeline's inline `lines`), numbering them
    /// from `first_line`; `dir` resolves `<FILE` lists. `stages` are the pipeline's enabled
    /// stages, `policy` its policy (a rule may not use `discard` unless it allows it).
    pub fn parse_into(
        &mut self,
        text: &str,
        file: &Path,
        first_line: usize,
        dir: &Path,
        stages: &[&str],
        policy: &Policy,
    ) -> Result<(), RuleError> {
        for (i, line) in text.lines().enumerate() {
            let origin = Origin { file: file.to_path_buf(), line: first_line + i };
            let fail = |reason: String| RuleError { origin: origin.clone(), reason };
            let body = strip_comment(line).trim();
            if body.is_empty() {
                continue;
            }
            let words = split_words(body).map_err(fail)?;
            let Some(arrow) = words.iter().position(|w| w == "=>") else {
                return Err(fail("a rule is `CONDITIONS => SETTINGS`: no `=>`".into()));
            };
            let (conds, sets) = (&words[..arrow], &words[arrow + 1..]);
            if conds.is_empty() {
                return Err(fail("no condition before `=>` (write `all` for every message)".into()));
            }
            if sets.is_empty() {
                return Err(fail("no setting after `=>`".into()));
            }
            let conditions = conds.iter().map(|w| condition(w, dir)).collect::<Result<Vec<_>, _>>().map_err(fail)?;
            let settings =
                sets.iter().map(|w| setting(w, dir, stages, policy)).collect::<Result<Vec<_>, _>>().map_err(fail)?;
            self.rules.push(Rule { origin, text: body.to_string(), conditions, settings });
        }
        Ok(())
    }
}

/// A line without its `#` comment (a `#` inside double quotes is text).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Words separated by whitespace; a double-quoted part (with `\"` and `\\`) may hold spaces and
/// is taken without its quotes.
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => cur.push(e),
                            _ => return Err("in quotes, `\\` may only escape `\"` or `\\`".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unclosed `\"`".into()),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// The patterns of a condition's value: the value itself, or the lines of the `<FILE` it names.
fn patterns(value: &str, dir: &Path) -> Result<Vec<String>, String> {
    let Some(name) = value.strip_prefix('<').filter(|n| !n.is_empty() && *n != ">") else {
        return Ok(vec![value.to_string()]);
    };
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("list {}: {e}", path.display()))?;
    let list: Vec<String> =
        text.lines().map(|l| strip_comment(l).trim().to_string()).filter(|l| !l.is_empty()).collect();
    if list.is_empty() {
        return Err(format!("list {} holds no pattern", path.display()));
    }
    Ok(list)
}

fn condition(word: &str, dir: &Path) -> Result<Condition, String> {
    if word == "all" {
        return Ok(Condition::All);
    }
    let Some((key, value)) = word.split_once('=') else {
        return Err(format!("{word:?}: a condition is `all` or KEY=VALUE"));
    };
    if value.is_empty() {
        return Err(format!("{key}= needs a value"));
    }
    let addresses = |v: &str| -> Result<Vec<AddressPattern>, String> {
        patterns(v, dir)?.iter().map(|p| AddressPattern::parse(p)).collect()
    };
    Ok(match key {
        "from" => Condition::Sender(addresses(value)?),
        "to" => Condition::Recipient(addresses(value)?),
        "client" => Condition::Client(
            patterns(value, dir)?
                .iter()
                .map(|p| {
                    p.parse::<IpNet>()
                        .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("client={p}: not an IP address or CIDR"))
                })
                .collect::<Result<_, _>>()?,
        ),
        "auth" => {
            Condition::Auth(patterns(value, dir)?.into_iter().map(|p| p.to_ascii_lowercase().into_bytes()).collect())
        }
        "local" => Condition::Local(yes_no(value).ok_or_else(|| format!("local={value}: yes or no"))?),
        _ => match key.strip_prefix("header.") {
            Some(name) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':') => {
                Condition::Header { name: name.to_ascii_lowercase(), pattern: value.to_ascii_lowercase().into_bytes() }
            }
            _ => {
                return Err(format!(
                    "unknown condition {key:?}; the conditions are all, from, to, client, auth, local, header.NAME"
                ))
            }
        },
    })
}

pub(super) fn yes_no(v: &str) -> Option<bool> {
    match v {
        "yes" | "on" | "true" => Some(true),
        "no" | "off" | "false" => Some(false),
        _ => None,
    }
}

fn setting(word: &str, dir: &Path, stages: &[&str], policy: &Policy) -> Result<Setting, String> {
    let Some((key, value)) = word.split_once('=') else {
        return Err(format!("{word:?}: a setting is KEY=VALUE"));
    };
    if key.starts_with("headers.") {
        return HeaderSetting::parse(key, value).map(Setting::Headers);
    }
    if let Some(name) = key.strip_prefix("content.") {
        let list = ContentList::ALL.into_iter().find(|l| l.name() == name).ok_or_else(|| {
            let names: Vec<&str> = ContentList::ALL.iter().map(|l| l.name()).collect();
            format!("content.{name}: the content lists a rule may change are {}", names.join(", "))
        })?;
        if !stages.contains(&"content") {
            return Err(format!("{key}: the content stage is not enabled in this pipeline"));
        }
        // Comma-separated, or one a line in a `<FILE`.
        let words: Vec<String> =
            if value.starts_with('<') { patterns(value, dir)? } else { value.split(',').map(str::to_string).collect() };
        let entries = words.iter().map(|w| list.entry(w)).collect::<Result<BTreeSet<_>, _>>()?;
        return Ok(Setting::ContentList { list, entries });
    }
    if let Some(name) = key.strip_prefix("stage.") {
        if !stages.contains(&name) {
            return Err(format!(
                "stage.{name}: not a stage this pipeline runs (enabled: {}); a rule turns an enabled stage off or on",
                stages.join(", ")
            ));
        }
        let on = yes_no(value).ok_or_else(|| format!("{key}={value}: on or off"))?;
        return Ok(Setting::Stage { name: name.to_string(), on });
    }
    if key == "policy.high_spam_score" {
        return value
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(|n| Setting::HighSpamScore(Score(n)))
            .ok_or_else(|| format!("{key}={value}: a number"));
    }
    if let Some(name) = key.strip_prefix("policy.") {
        let key = PolicyKey::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| {
            let names: Vec<&str> = PolicyKey::ALL.iter().map(|k| k.name()).collect();
            format!("policy.{name}: the keys a rule may set are {}", names.join(", "))
        })?;
        let action: Action = serde_json::from_value(serde_json::Value::String(value.to_string()))
            .map_err(|_| format!("{value:?} is not an action (deliver, defer, hold, discard, quarantine)"))?;
        let mut p = policy.clone();
        *key.slot(&mut p) = action;
        p.check().map_err(|e| format!("policy.{name}={value}: {e}"))?;
        return Ok(Setting::Policy { key, action });
    }
    match key {
        "notify.sender" | "notify.recipients" => Ok(Setting::Notify {
            sender: key == "notify.sender",
            on: yes_no(value).ok_or_else(|| format!("{key}={value}: on or off"))?,
        }),
        "subject_tag" => Ok(Setting::SubjectTag(value.to_string())),
        "max_message_bytes" => value
            .parse()
            .ok()
            .filter(|&n: &u64| n > 0)
            .map(Setting::MaxMessageBytes)
            .ok_or_else(|| format!("max_message_bytes={value}: a number of bytes above 0")),
        _ => Err(format!(
            "unknown setting {key:?}; the settings are stage.NAME, policy.KEY, subject_tag, max_message_bytes, \
             notify.sender, notify.recipients, headers.NAME, content.LIST"
        )),
    }
}
