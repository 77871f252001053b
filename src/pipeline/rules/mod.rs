//! Rules: settings that depend on the sender, the recipient, the client, authentication or a
//! header, in the spirit of MailScanner's rulesets and rspamd's settings.
//!
//! A rule is one line: conditions, `=>`, settings.
//!
//! ```text
//! # sender allow-list: their spam is delivered (tagged), not quarantined
//! from=<trusted-senders.list            => policy.spam=deliver
//! to=*@sales.example                    => policy.spam=deliver subject_tag="[SPAM?]"
//! client=192.0.2.0/24                   => stage.clamav=off
//! to=small.example                      => max_message_bytes=1000000
//! header.X-Mailer="*BulkMailer*"        => policy.spam=quarantine
//! ```
//!
//! Every condition of a line must hold (`all` holds always). Rules are read in order, and for
//! each setting the first rule that matches and sets it wins, so specific rules go first and
//! defaults last. Rules are evaluated per recipient: `to=` tests the recipient being decided,
//! every other condition the message. A condition's value `<FILE` reads its patterns from FILE
//! (one a line, `#` comments; any one may match), relative to the file the rule is in.
//!
//! Conditions: `from=` (envelope sender; `<>` is the null sender), `to=` (a recipient), each an
//! address, a domain (`example.com`: that domain only), `*@domain` or a glob (`*`, `?`), without
//! regard to case; `client=` an IP address or CIDR (`-host_address`); `auth=` a glob on the
//! authenticated id (`-auth_id`; `auth=*` is any authenticated sender); `local=yes|no` (local
//! submission: no `-host_address`); `header.NAME=GLOB` (any field of that name, unfolded).
//!
//! Settings: `stage.NAME=on|off`; `policy.KEY=ACTION` for any key of `[policy]` but
//! `allow_discard`; `policy.high_spam_score=N`; `subject_tag="TEXT"` (the spam subject tag); `max_message_bytes=N` (a larger
//! message is blocked for that recipient, and `policy.blocked` applies); `notify.sender=on|off`
//! and `notify.recipients=on|off` (notices of a quarantined or held message, `[notify]`);
//! `headers.status=on|off`, `headers.virus=on|off`, `headers.authentication_results=on|off` and
//! `headers.add="Name: template"` (the `[headers]` of the recipient's copy);
//! `content.block_extensions=`, `content.allow_extensions=`, `content.block_types=` and
//! `content.allow_types=` (comma-separated, or `<FILE`), which add to or take from the content
//! scanner's lists for the recipient: the message is checked again with its lists for it.
//!
//! ```text
//! to=*@design.example                   => content.allow_extensions=iso,img
//! to=finance.example                    => content.block_extensions=docm,xlsm
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::annotate::{ExtraHeader, HeaderChanges};
use super::policy::{Action, Policy, Score};
use crate::spool::SpoolHeader;
use crate::stages::ListChanges;

mod parse;
use parse::yes_no;

/// Where a rule was written: `FILE:LINE`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A rule that cannot be used: its file, line and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct RuleError {
    pub origin: Origin,
    pub reason: String,
}

/// A `[policy]` key a rule may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyKey {
    Clean,
    Infected,
    Blocked,
    Spam,
    HighSpam,
    AuthFail,
    TemporaryFailure,
    PermanentFailure,
}

impl PolicyKey {
    const ALL: [PolicyKey; 8] = [
        PolicyKey::Clean,
        PolicyKey::Infected,
        PolicyKey::Blocked,
        PolicyKey::Spam,
        PolicyKey::HighSpam,
        PolicyKey::AuthFail,
        PolicyKey::TemporaryFailure,
        PolicyKey::PermanentFailure,
    ];

    /// Its name in `[policy]`.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKey::Clean => "clean",
            PolicyKey::Infected => "infected",
            PolicyKey::Blocked => "blocked",
            PolicyKey::Spam => "spam",
            PolicyKey::HighSpam => "high_spam",
            PolicyKey::AuthFail => "auth_fail",
            PolicyKey::TemporaryFailure => "temporary_failure",
            PolicyKey::PermanentFailure => "permanent_failure",
        }
    }

    fn slot(self, p: &mut Policy) -> &mut Action {
        match self {
            PolicyKey::Clean => &mut p.clean,
            PolicyKey::Infected => &mut p.infected,
            PolicyKey::Blocked => &mut p.blocked,
            PolicyKey::Spam => &mut p.spam,
            PolicyKey::HighSpam => &mut p.high_spam,
            PolicyKey::AuthFail => &mut p.auth_fail,
            PolicyKey::TemporaryFailure => &mut p.temporary_failure,
            PolicyKey::PermanentFailure => &mut p.permanent_failure,
        }
    }
}

/// What a rule sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Stage {
        name: String,
        on: bool,
    },
    Policy {
        key: PolicyKey,
        action: Action,
    },
    SubjectTag(String),
    /// `policy.high_spam_score`: where high spam starts for the recipient.
    HighSpamScore(Score),
    MaxMessageBytes(u64),
    /// Whether the sender (`notify.sender`) or the recipients (`notify.recipients`) of a
    /// quarantined or held message are sent a notice (`[notify]`).
    Notify {
        sender: bool,
        on: bool,
    },
    /// A change to `[headers]` for the recipient's copy (`headers.status=off`, `headers.add=...`).
    Headers(HeaderSetting),
    /// A change to the content scanner's lists for the recipient (`content.block_extensions=...`).
    ContentList {
        list: ContentList,
        entries: BTreeSet<String>,
    },
}

/// The `[headers]` settings a rule may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSetting {
    Status(bool),
    Virus(bool),
    AuthenticationResults(bool),
    Add(ExtraHeader),
}

impl HeaderSetting {
    fn name(&self) -> &'static str {
        match self {
            HeaderSetting::Status(_) => "headers.status",
            HeaderSetting::Virus(_) => "headers.virus",
            HeaderSetting::AuthenticationResults(_) => "headers.authentication_results",
            HeaderSetting::Add(_) => "headers.add",
        }
    }

    fn apply(&self, c: &mut HeaderChanges) {
        match self {
            HeaderSetting::Status(on) => c.status = Some(*on),
            HeaderSetting::Virus(on) => c.virus = Some(*on),
            HeaderSetting::AuthenticationResults(on) => c.authentication_results = Some(*on),
            HeaderSetting::Add(h) => c.add = Some(h.clone()),
        }
    }

    fn parse(key: &str, value: &str) -> Result<HeaderSetting, String> {
        let on = || yes_no(value).ok_or_else(|| format!("{key}={value}: on or off"));
        Ok(match key {
            "headers.status" => HeaderSetting::Status(on()?),
            "headers.virus" => HeaderSetting::Virus(on()?),
            "headers.authentication_results" => HeaderSetting::AuthenticationResults(on()?),
            "headers.add" => {
                let bad = || format!("headers.add={value:?}: a header is \"Name: value\" (the value a template)");
                let (name, template) = value.split_once(':').ok_or_else(bad)?;
                let name_ok = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b));
                if !name_ok || template.chars().any(char::is_control) {
                    return Err(bad());
                }
                HeaderSetting::Add(ExtraHeader { name: name.to_string(), value: template.trim_start().to_string() })
            }
            _ => {
                return Err(format!(
                    "{key}: the header settings a rule may change are headers.status, headers.virus, \
                     headers.authentication_results, headers.add"
                ))
            }
        })
    }
}

/// The content scanner's lists a rule may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContentList {
    BlockExtensions,
    AllowExtensions,
    BlockTypes,
    AllowTypes,
}

impl ContentList {
    const ALL: [ContentList; 4] =
        [ContentList::BlockExtensions, ContentList::AllowExtensions, ContentList::BlockTypes, ContentList::AllowTypes];

    /// Its name after `content.`.
    pub fn name(self) -> &'static str {
        match self {
            ContentList::BlockExtensions => "block_extensions",
            ContentList::AllowExtensions => "allow_extensions",
            ContentList::BlockTypes => "block_types",
            ContentList::AllowTypes => "allow_types",
        }
    }

    fn slot(self, c: &mut ListChanges) -> &mut BTreeSet<String> {
        match self {
            ContentList::BlockExtensions => &mut c.block_extensions,
            ContentList::AllowExtensions => &mut c.allow_extensions,
            ContentList::BlockTypes => &mut c.block_types,
            ContentList::AllowTypes => &mut c.allow_types,
        }
    }

    /// An entry as the scanner compares it: an extension lowercase without its dot, a type
    /// `type/subtype` lowercase.
    fn entry(self, word: &str) -> Result<String, String> {
        let w = word.trim();
        match self {
            ContentList::BlockExtensions | ContentList::AllowExtensions => {
                let e = w.trim_start_matches('.').to_ascii_lowercase();
                if e.is_empty() || e.contains(['.', '/', '*']) || e.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(format!("{w:?}: an extension is one word without dots (exe, docm)"));
                }
                Ok(e)
            }
            ContentList::BlockTypes | ContentList::AllowTypes => {
                let t = w.to_ascii_lowercase();
                match t.split_once('/') {
                    Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains('/') && t.is_ascii() => Ok(t),
                    _ => Err(format!("{w:?}: a content type is type/subtype (application/zip)")),
                }
            }
        }
    }
}

impl Setting {
    /// The setting's name: two settings of the same name are the same setting, and the first
    /// matching rule's wins.
    pub fn name(&self) -> String {
        match self {
            Setting::Stage { name, .. } => format!("stage.{name}"),
            Setting::Policy { key, .. } => format!("policy.{}", key.name()),
            Setting::SubjectTag(_) => "subject_tag".into(),
            Setting::HighSpamScore(_) => "policy.high_spam_score".into(),
            Setting::MaxMessageBytes(_) => "max_message_bytes".into(),
            Setting::Notify { sender: true, .. } => "notify.sender".into(),
            Setting::Notify { sender: false, .. } => "notify.recipients".into(),
            Setting::ContentList { list, .. } => format!("content.{}", list.name()),
            Setting::Headers(h) => h.name().into(),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Stage { name, on } => write!(f, "stage.{name}={}", if *on { "on" } else { "off" }),
            Setting::Policy { key, action } => write!(f, "policy.{}={}", key.name(), action.name()),
            Setting::SubjectTag(t) => write!(f, "subject_tag={t:?}"),
            Setting::HighSpamScore(n) => write!(f, "policy.high_spam_score={}", n.0),
            Setting::MaxMessageBytes(n) => write!(f, "max_message_bytes={n}"),
            Setting::Notify { on, .. } => write!(f, "{}={}", self.name(), if *on { "on" } else { "off" }),
            Setting::Headers(HeaderSetting::Add(h)) => {
                write!(f, "headers.add={:?}", format!("{}: {}", h.name, h.value))
            }
            Setting::Headers(
                h @ (HeaderSetting::Status(on) | HeaderSetting::Virus(on) | HeaderSetting::AuthenticationResults(on)),
            ) => write!(f, "{}={}", h.name(), if *on { "on" } else { "off" }),
            Setting::ContentList { entries, .. } => {
                write!(f, "{}={}", self.name(), entries.iter().map(String::as_str).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// An address pattern: a whole address or a glob on it (with an `@`), or a domain (without).
#[derive(Debug, Clone, PartialEq, Eq)]
enum AddressPattern {
    Address(Vec<u8>),
    Domain(Vec<u8>),
    Null,
}

impl AddressPattern {
    fn parse(s: &str) -> Result<AddressPattern, String> {
        let s = s.trim();
        if s == "<>" {
            return Ok(AddressPattern::Null);
        }
        if s.is_empty() || s.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(format!("{s:?} is not an address, a domain or a glob"));
        }
        let lower = s.to_ascii_lowercase().into_bytes();
        Ok(if lower.contains(&b'@') { AddressPattern::Address(lower) } else { AddressPattern::Domain(lower) })
    }

    fn matches(&self, address: &[u8]) -> bool {
        let address = address.to_ascii_lowercase();
        match self {
            AddressPattern::Null => address.is_empty(),
            AddressPattern::Address(p) => !address.is_empty() && glob(p, &address),
            AddressPattern::Domain(p) => match address.iter().rposition(|&b| b == b'@') {
                Some(at) => glob(p, &address[at + 1..]),
                None => false,
            },
        }
    }
}

/// `*` (any run of bytes) and `?` (one byte) on bytes, exact otherwise. Written here: the globs
/// rules need are these two on an address or a header, where globset's path separators and
/// character classes would only be surprises.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    All,
    Sender(Vec<AddressPattern>),
    Recipient(Vec<AddressPattern>),
    Client(Vec<IpNet>),
    Auth(Vec<Vec<u8>>),
    Local(bool),
    Header { name: String, pattern: Vec<u8> },
}

/// What rules test of a message, taken from its `-H`.
#[derive(Debug, Clone)]
pub struct MessageFacts {
    pub sender: Vec<u8>,
    pub client: Option<IpAddr>,
    pub auth_id: Option<Vec<u8>>,
    /// Every header field as `(lower-case name, unfolded value)`.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl MessageFacts {
    pub fn of(h: &SpoolHeader) -> MessageFacts {
        MessageFacts {
            sender: h.sender.clone(),
            client: h.client_ip(),
            auth_id: h.options.value("auth_id").map(<[u8]>::to_vec),
            headers: h
                .headers
                .live()
                .map(|l| (String::from_utf8_lossy(l.name()).to_ascii_lowercase(), unfold(&l.value())))
                .collect(),
        }
    }
}

/// A header value on one line: each line break with the whitespace after it becomes that
/// whitespace (RFC 5322 §2.2.3), and the ends are trimmed.
fn unfold(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for &b in v {
        if b != b'\r' && b != b'\n' {
            out.push(b);
        }
    }
    out.trim_ascii().to_vec()
}

impl Condition {
    fn holds(&self, m: &MessageFacts, recipient: &[u8]) -> bool {
        match self {
            Condition::All => true,
            Condition::Sender(ps) => ps.iter().any(|p| p.matches(&m.sender)),
            Condition::Recipient(ps) => ps.iter().any(|p| p.matches(recipient)),
            Condition::Client(nets) => m.client.is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            Condition::Auth(ps) => {
                m.auth_id.as_ref().is_some_and(|a| ps.iter().any(|p| glob(p, &a.to_ascii_lowercase())))
            }
            Condition::Local(want) => m.client.is_none() == *want,
            Condition::Header { name, pattern } => {
                m.headers.iter().any(|(n, v)| n == name && glob(pattern, &v.to_ascii_lowercase()))
            }
        }
    }
}

/// One rule: where it was written, what it tests and what it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub origin: Origin,
    /// The line as written, for `explain`.
    pub text: String,
    conditions: Vec<Condition>,
    pub settings: Vec<Setting>,
}

impl Rule {
    pub fn matches(&self, m: &MessageFacts, recipient: &[u8]) -> bool {
        self.conditions.iter().all(|c| c.holds(m, recipient))
    }
}

/// The settings for one recipient: the pipeline's, with the rules' on top.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientSettings {
    pub policy: Policy,
    pub stages_off: BTreeSet<String>,
    /// `None`: the pipeline's `[headers] spam_subject_tag`.
    pub subject_tag: Option<String>,
    pub max_message_bytes: Option<u64>,
    /// `None`: as `[notify]` says.
    pub notify_sender: Option<bool>,
    pub notify_recipients: Option<bool>,
    /// The recipient's changes to the content scanner's lists (empty: the pipeline's lists).
    pub content_lists: ListChanges,
    /// The recipient's changes to `[headers]` for its copy.
    pub headers: HeaderChanges,
    /// Every rule that matched, in order.
    pub matched: Vec<Origin>,
    /// Each setting a rule decided, and the rule that did.
    pub decided: Vec<(Setting, Origin)>,
}

impl RecipientSettings {
    /// The rules that decided a setting, once each, in order: what the log line names.
    pub fn deciding_rules(&self) -> Vec<Origin> {
        let set: BTreeSet<&Origin> = self.decided.iter().map(|(_, o)| o).collect();
        set.into_iter().cloned().collect()
    }
}

/// The ordered rules of a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The settings for `recipient` of the message `m`, starting from `policy`.
    pub fn for_recipient(&self, policy: &Policy, m: &MessageFacts, recipient: &[u8]) -> RecipientSettings {
        let mut out = RecipientSettings {
            policy: policy.clone(),
            stages_off: BTreeSet::new(),
            subject_tag: None,
            max_message_bytes: None,
            notify_sender: None,
            notify_recipients: None,
            content_lists: ListChanges::default(),
            headers: HeaderChanges::default(),
            matched: Vec::new(),
            decided: Vec::new(),
        };
        let mut taken: BTreeSet<String> = BTreeSet::new();
        for rule in self.rules.iter().filter(|r| r.matches(m, recipient)) {
            out.matched.push(rule.origin.clone());
            for s in &rule.settings {
                if !taken.insert(s.name()) {
                    continue;
                }
                match s {
                    Setting::Stage { name, on } => {
                        if !on {
                            out.stages_off.insert(name.clone());
                        }
                    }
                    Setting::Policy { key, action } => *key.slot(&mut out.policy) = *action,
                    Setting::SubjectTag(t) => out.subject_tag = Some(t.clone()),
                    Setting::HighSpamScore(n) => out.policy.high_spam_score = *n,
                    Setting::MaxMessageBytes(n) => out.max_message_bytes = Some(*n),
                    Setting::Notify { sender: true, on } => out.notify_sender = Some(*on),
                    Setting::Notify { sender: false, on } => out.notify_recipients = Some(*on),
                    Setting::ContentList { list, entries } => *list.slot(&mut out.content_lists) = entries.clone(),
                    Setting::Headers(h) => h.apply(&mut out.headers),
                }
                out.decided.push((s.clone(), rule.origin.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn set(text: &str) -> Result<RuleSet, RuleError> {
        let mut r = RuleSet::default();
        r.parse_into(text, Path::new("t.rules"), 1, Path::new("."), &["clamav", "content"], &Policy::default())?;
        Ok(r)
    }

    fn facts(sender: &str, client: Option<&str>) -> MessageFacts {
        MessageFacts {
            sender: sender.as_bytes().to_vec(),
            client: client.map(|c| c.parse().unwrap()),
            auth_id: None,
            headers: vec![("x-mailer".into(), b"BulkMailer 2.0".to_vec())],
        }
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*@example.com", "bob@example.com", true),
            ("*@example.com", "bob@example.com.evil", false),
            ("b?b@*", "bob@x", true),
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*bulk*", "x-bulk-y", true),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn first_match_wins_per_setting_and_to_is_per_recipient() {
        let r = set("# sales takes its spam tagged\n\
                     to=*@Sales.example => policy.spam=deliver subject_tag=\"[SPAM #1]\"\n\
                     client=192.0.2.0/24 => stage.clamav=off policy.spam=hold\n\
                     all => policy.spam=quarantine\n")
        .unwrap();
        let m = facts("alice@x.example", Some("192.0.2.7"));
        let sales = r.for_recipient(&Policy::default(), &m, b"bob@sales.example");
        assert_eq!(sales.policy.spam, Action::Deliver);
        assert_eq!(sales.subject_tag.as_deref(), Some("[SPAM #1]"));
        assert!(sales.stages_off.contains("clamav"));
        assert_eq!(sales.matched.iter().map(|o| o.line).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(sales.deciding_rules().iter().map(|o| o.line).collect::<Vec<_>>(), [2, 3]);
        let other = r.for_recipient(&Policy::default(), &m, b"carol@other.example");
        assert_eq!(other.policy.spam, Action::Hold);
        let outside = r.for_recipient(&Policy::default(), &facts("a@x", Some("198.51.100.1")), b"carol@other.example");
        assert_eq!(outside.policy.spam, Action::Quarantine);
        assert!(outside.stages_off.is_empty());
    }

    #[test]
    fn high_spam_per_recipient() {
        let r = set("to=lists.example => policy.high_spam_score=30 policy.high_spam=hold
")
        .unwrap();
        let m = facts("alice@x.example", None);
        let lists = r.for_recipient(&Policy::default(), &m, b"l@lists.example");
        assert_eq!((lists.policy.high_spam_score.0, lists.policy.high_spam), (30.0, Action::Hold));
        let other = r.for_recipient(&Policy::default(), &m, b"bob@other.example");
        assert_eq!((other.policy.high_spam_score.0, other.policy.high_spam), (15.0, Action::Quarantine));
        let err = set("all => policy.high_spam_score=lots\n").unwrap_err();
        assert_eq!(err.reason, "policy.high_spam_score=lots: a number");
    }

    #[test]
    fn conditions() {
        let r = set("from=<> => policy.clean=hold\n\
                     from=example.org => policy.infected=hold\n\
                     local=yes => policy.spam=hold\n\
                     header.X-Mailer=\"*bulkmailer*\" => max_message_bytes=10\n")
        .unwrap();
        let p = Policy::default();
        assert_eq!(r.for_recipient(&p, &facts("", Some("192.0.2.1")), b"b@x").policy.clean, Action::Hold);
        assert_eq!(
            r.for_recipient(&p, &facts("a@EXAMPLE.org", Some("192.0.2.1")), b"b@x").policy.infected,
            Action::Hold
        );
        assert_eq!(
            r.for_recipient(&p, &facts("a@sub.example.org", Some("192.0.2.1")), b"b@x").policy.infected,
            p.infected
        );
        assert_eq!(r.for_recipient(&p, &facts("a@y", None), b"b@x").policy.spam, Action::Hold);
        assert_eq!(r.for_recipient(&p, &facts("a@y", Some("192.0.2.1")), b"b@x").max_message_bytes, Some(10));
    }

    #[test]
    fn bad_lines_name_file_line_and_reason() {
        for (text, want) in [
            ("\n\nfrom=a@b policy.spam=deliver", "t.rules:3: a rule is `CONDITIONS => SETTINGS`: no `=>`"),
            ("to=x => stage.dcc=off", "t.rules:1: stage.dcc: not a stage this pipeline runs (enabled: clamav, content); a rule turns an enabled stage off or on"),
            ("all => policy.spam=drop", "t.rules:1: \"drop\" is not an action (deliver, defer, hold, discard, quarantine)"),
            ("all => policy.infected=discard", "t.rules:1: policy.infected=discard: policy uses `discard` but `allow_discard = true` is not set"),
            ("all => policy.temporary_failure=deliver", "t.rules:1: policy.temporary_failure=deliver: a stage failure may not lead to `deliver`: that would deliver mail unscanned"),
            ("client=300.1.1.1 => policy.spam=hold", "t.rules:1: client=300.1.1.1: not an IP address or CIDR"),
            ("subject=x => policy.spam=hold", "t.rules:1: unknown condition \"subject\"; the conditions are all, from, to, client, auth, local, header.NAME"),
            ("all => subject_tag=\"open", "t.rules:1: unclosed `\"`"),
            ("from=<missing.list => policy.spam=hold", "t.rules:1: list ./missing.list: No such file or directory (os error 2)"),
        ] {
            assert_eq!(set(text).unwrap_err().to_string(), want, "{text}");
        }
    }
}
