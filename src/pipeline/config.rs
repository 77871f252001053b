//! Pipeline definitions (`pipelines/*.toml`): which stages run, with what settings, and what the
//! policy does with their results. A bad file is refused with its path, line and reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::policy::Policy;
use super::rules::{RuleError, RuleSet};
use crate::pipeline::annotate::InjectConfig;

/// The pipeline compiled into the binary: what runs when no `--pipeline` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../pipelines/embedded.toml");

/// A pipeline definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    /// The file it was read from, and its text, for errors found after parsing.
    #[serde(skip)]
    pub source: PathBuf,
    #[serde(skip)]
    text: String,
    /// Our authserv-id for Authentication-Results (RFC 8601): the host name of this ADMD's
    /// verifier.
    #[serde(default = "default_authserv_id")]
    pub authserv_id: String,
    /// One table per stage, in the order they are listed; each stage reads its own settings.
    #[serde(default)]
    pub stages: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub headers: InjectConfig,
    /// Where the daemon takes messages from (needed by `watch` only).
    pub intake: Option<IntakeConfig>,
    /// Where the daemon re-queues them (needed by `watch` and `quarantine release`).
    pub requeue: Option<RequeueConfig>,
    /// The verdict database for Exim's `lmdb` lookup (optional).
    pub verdicts: Option<VerdictsConfig>,
    /// Prometheus metrics (optional).
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub defer: DeferConfig,
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// `[notify]`: notices of quarantined and held messages (see `src/sinks/notify.rs`).
    #[serde(default)]
    pub notify: NotifyConfig,
    /// `[rules]`: where the rules are (see `src/pipeline/rules/mod.rs`).
    #[serde(default)]
    pub rules: RulesConfig,
    /// The rules read from `rules`, in order: the files' first, then the inline lines.
    #[serde(skip)]
    pub ruleset: RuleSet,
}

/// `[rules]`: rule files (relative to this pipeline file), and rules written inline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub files: Vec<PathBuf>,
    pub lines: Vec<String>,
}

/// `[notify]`: who is sent a notice of a quarantined or held message (`src/sinks/notify.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The postmaster's address: a notice for every quarantined message, with its key. Empty: none.
    pub postmaster: String,
    /// Tell each recipient of a quarantined or held message (rules: `notify.recipients=on|off`).
    pub recipients: bool,
    /// Tell the envelope sender (rules: `notify.sender=on|off`). Off: backscatter.
    pub sender: bool,
    /// The notices' `From:`; by default `MAILER-DAEMON@` our authserv-id.
    pub from: String,
    /// Notices to one address in an hour, at most; the rest are not sent (and logged).
    pub per_address_per_hour: u32,
    /// Subject and body; `{id}`, `{sender}`, `{recipients}`, `{subject}`, `{action}`,
    /// `{reasons}`, `{key}` are replaced.
    pub subject: String,
    pub template: String,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            postmaster: String::new(),
            recipients: false,
            sender: false,
            from: String::new(),
            per_address_per_hour: 10,
            subject: "Message {action}: {subject}".into(),
            template: "A message was not delivered as it was sent: it was {action}.\n\n\
                       Message id: {id}\nFrom: {sender}\nTo: {recipients}\nSubject: {subject}\n\
                       Why: {reasons}\nQuarantine key: {key}\n\n\
                       Ask your postmaster if you need it.\n"
                .into(),
        }
    }
}

/// `[quarantine]`: how long entries are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Entries older than this many days are deleted by the daemon (once a minute) and by
    /// `spoolsift quarantine expire`; 0 keeps them until deleted by hand.
    pub keep_days: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig { keep_days: 30 }
    }
}

/// `[intake]`: where messages come from (exactly one of the two) and spoolsift's own directories.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// The queuefile transport's `directory`. Keep it on the spool's file system (link mode).
    pub queuefile_directory: Option<PathBuf>,
    /// Or: the spool directory of a stock Exim instance running with `queue_only` (for Exims
    /// built without queuefile). Messages are taken out of its `input/` under Exim's own lock.
    pub incoming_spool_directory: Option<PathBuf>,
    /// spoolsift's own directory (same file system as the queuefile directory): `work/`,
    /// `quarantine/`, `rejected/`, `state/` live here.
    pub work_directory: PathBuf,
    /// `-D` files without `-H` older than this are moved to `rejected/`.
    #[serde(default = "default_orphan_age")]
    pub orphan_age_secs: u64,
    /// Full rescans of the directory, the safety net under inotify (events can be lost).
    #[serde(default = "default_rescan_ms")]
    pub rescan_interval_ms: u64,
    /// A `-H` larger than this is moved aside unread (the pair goes to `rejected/`).
    #[serde(default = "default_max_header_file")]
    pub max_header_file_bytes: u64,
    /// Exim's user: a `-H` of any other owner is moved aside (only Exim writes envelopes), and a
    /// `-D` of any other owner, or with another mode than 0640 or extra links, is copied into a
    /// file of the spool's owner before the scan. By default the owner of the target spool's
    /// `input/`.
    #[serde(default)]
    pub trusted_uid: Option<u32>,
}

/// `[requeue]`: the Exim spool messages go back into.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueConfig {
    pub spool_directory: PathBuf,
    /// The Exim command, with any `-C` it needs: `["/usr/sbin/exim4"]`.
    pub exim_command: Vec<String>,
    /// `split_spool_directory` of the target Exim; asked with `exim -bP` when absent.
    pub split_spool_directory: Option<bool>,
    /// The ACL variable that stops the scan router from matching again.
    #[serde(default = "default_marker")]
    pub marker: String,
    /// Who runs `exim -Mc` on re-queued messages: `"helper"` (`spoolsift kick`, outside the
    /// daemon's sandbox), `"inline"` (the daemon itself) or `"off"` (Exim's queue runner).
    #[serde(default = "default_kick")]
    pub kick: crate::requeue::KickMode,
    #[serde(default = "default_kick_batch")]
    pub kick_batch: usize,
    /// How long recipients already handed back are remembered (above Exim's retry horizon).
    #[serde(default = "default_retention")]
    pub dedupe_retention_secs: u64,
}

/// `[verdicts]`: where each message's verdict goes for Exim to look up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictsConfig {
    /// The file: LMDB (`${lookup{$message_exim_id}lmdb{THIS}}`, `THIS-lock` beside it) or SQLite.
    pub database: PathBuf,
    /// `"lmdb"` (the default) or `"sqlite"`, whichever lookup the Exim has.
    #[serde(default)]
    pub format: crate::state::verdicts::VerdictFormat,
    #[serde(default = "default_retention")]
    pub retention_secs: u64,
}

/// `[metrics]`: Prometheus text exposition on an HTTP port and/or in a file for node_exporter's
/// textfile collector (at least one of the two).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `127.0.0.1:9465`: `GET /metrics` is answered there.
    pub listen: Option<std::net::SocketAddr>,
    /// A non-loopback `listen` address is refused unless this is set.
    #[serde(default)]
    pub allow_remote: bool,
    /// `/var/lib/node_exporter/spoolsift.prom`: rewritten (temporary file, rename) after each batch.
    pub textfile: Option<PathBuf>,
}

impl MetricsConfig {
    /// Why this section cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.listen.is_none() && self.textfile.is_none() {
            return Err("[metrics] needs listen or textfile".into());
        }
        match self.listen {
            Some(a) if !a.ip().is_loopback() && !self.allow_remote => Err(format!(
                "[metrics] listen = \"{a}\" is not a loopback address; set allow_remote = true to allow it"
            )),
            _ => Ok(()),
        }
    }
}

/// `[batch]`: how many messages are scanned and committed together (one journal transaction and
/// one directory sync per batch).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub max_messages: usize,
    pub max_bytes: u64,
    pub max_wait_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_messages: 64, max_bytes: 64 << 20, max_wait_ms: 50 }
    }
}

/// `[defer]`: retrying messages a stage could not check now.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeferConfig {
    pub initial_secs: u64,
    pub max_interval_secs: u64,
    /// After this age a still-deferred message is held instead (frozen in Exim's queue).
    pub max_age_secs: u64,
    /// Scans of one message that may crash (a stage panics, or the daemon stops during it)
    /// before it is quarantined with "processing attempts exceeded" (MailScanner's "Processing
    /// Attempts"), so that one message cannot stop the mail flow.
    pub processing_attempts: u32,
}

impl Default for DeferConfig {
    fn default() -> Self {
        DeferConfig { initial_secs: 60, max_interval_secs: 3600, max_age_secs: 2 * 86400, processing_attempts: 6 }
    }
}

impl DeferConfig {
    /// Seconds to wait before attempt `n` (1-based): doubling from `initial_secs`, capped.
    pub fn backoff(&self, attempt: u32) -> u64 {
        let doubled = self.initial_secs.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
        doubled.min(self.max_interval_secs)
    }
}

fn default_orphan_age() -> u64 {
    900
}
fn default_rescan_ms() -> u64 {
    1000
}
fn default_max_header_file() -> u64 {
    crate::spool::header_file::MAX_HEADER_FILE
}
fn default_marker() -> String {
    "acl_m_scanned".into()
}
fn default_kick() -> crate::requeue::KickMode {
    crate::requeue::KickMode::Helper
}
fn default_kick_batch() -> usize {
    30
}
/// How long recipients handed back, and verdicts, are remembered by default (above Exim's
/// retry horizon).
pub fn default_retention() -> u64 {
    7 * 86400
}

fn default_authserv_id() -> String {
    "spoolsift.localhost".into()
}

/// A pipeline definition that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {reason}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub reason: String,
}

impl ConfigError {
    pub fn new(file: &Path, line: Option<usize>, reason: impl Into<String>) -> ConfigError {
        ConfigError { file: file.to_path_buf(), line, reason: reason.into() }
    }
}

impl PipelineConfig {
    /// Parse a definition; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<PipelineConfig, ConfigError> {
        let mut cfg: PipelineConfig = toml::from_str(text)
            .map_err(|e| ConfigError::new(file, e.span().map(|s| line_at(text, s.start)), e.message()))?;
        cfg.source = file.to_path_buf();
        cfg.text = text.to_string();
        cfg.policy.check().map_err(|r| cfg.error_at(&["policy"], r))?;
        if let Some(i) = &cfg.intake {
            if i.queuefile_directory.is_some() == i.incoming_spool_directory.is_some() {
                return Err(cfg.error_at(
                    &["intake"],
                    "[intake] needs exactly one of queuefile_directory and incoming_spool_directory",
                ));
            }
        }
        if let Some(m) = &cfg.metrics {
            m.check().map_err(|r| cfg.error_at(&["metrics"], r))?;
        }
        // Written unquoted into our fields and compared with what readers parse back: an RFC 2045
        // token (RFC 8601 §2.2), or what we write would not be read as ours.
        if cfg.authserv_id.is_empty()
            || !cfg.authserv_id.bytes().all(|b| b > 0x20 && b < 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&b))
        {
            return Err(cfg.error_at(
                &["authserv_id"],
                "authserv_id must be one token (RFC 2045: no space, control or ()<>@,;:\\\"/[]?= character)",
            ));
        }
        cfg.check_layout(false)?;
        for (name, table) in &cfg.stages {
            if !super::build::STAGES.contains(&name.as_str()) {
                return Err(cfg.error_at(
                    &["stages", name],
                    format!("unknown stage [stages.{name}]; the stages are {}", super::build::STAGES.join(", ")),
                ));
            }
            // A typo'd boolean must not turn a check on or off: only `true` and `false` are read.
            if table.get("enabled").is_some_and(|v| !v.is_bool()) {
                return Err(cfg.error_at(
                    &["stages", name, "enabled"],
                    format!("[stages.{name}] enabled must be true or false (a TOML boolean, unquoted)"),
                ));
            }
        }
        cfg.ruleset = cfg.read_rules()?;
        Ok(cfg)
    }

    /// The rules `[rules]` names, checked against this pipeline's stages and policy. Read when
    /// the pipeline is (at start, on SIGHUP, by `check-config`): a bad line is an error then.
    fn read_rules(&self) -> Result<RuleSet, ConfigError> {
        let dir = self.source.parent().unwrap_or(Path::new("."));
        let enabled: Vec<&str> =
            self.stages.iter().filter(|(_, t)| PipelineConfig::stage_enabled(t)).map(|(n, _)| n.as_str()).collect();
        let fail = |e: RuleError| ConfigError::new(&e.origin.file, Some(e.origin.line), e.reason);
        let mut set = RuleSet::default();
        for f in &self.rules.files {
            let path = dir.join(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| self.error_at(&["rules", "files"], format!("rule file {}: {e}", path.display())))?;
            let list_dir = path.parent().unwrap_or(dir).to_path_buf();
            set.parse_into(&text, &path, 1, &list_dir, &enabled, &self.policy).map_err(fail)?;
        }
        let line = key_line(&self.text, &["rules", "lines"]).unwrap_or(1);
        for l in &self.rules.lines {
            if l.contains('\n') {
                return Err(self.error_at(&["rules", "lines"], "one rule per string in [rules] lines"));
            }
            set.parse_into(l, &self.source, line, dir, &enabled, &self.policy).map_err(fail)?;
        }
        Ok(set)
    }

    /// What is legal but probably not meant: each a sentence for the admin.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.stages.values().any(PipelineConfig::stage_enabled) {
            out.push(format!(
                "{}: pipeline {:?} has no enabled stage: every message is delivered unchecked",
                self.source.display(),
                self.name
            ));
        }
        out
    }

    pub fn load(path: &Path) -> Result<PipelineConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, None, e.to_string()))?;
        PipelineConfig::parse(&text, path)
    }

    /// The embedded default.
    pub fn embedded() -> PipelineConfig {
        PipelineConfig::parse(EMBEDDED_DEFAULT, Path::new("<embedded pipeline>"))
            .expect("the embedded pipeline is valid")
    }

    /// An error about the key at `path` (e.g. `["stages", "clamav", "servers"]`), pointing at the
    /// line where that key is written, or at the deepest of its tables that is written.
    pub fn error_at(&self, path: &[&str], reason: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.source, key_line(&self.text, path), reason)
    }

    /// Where the key at `path` is set, for a message about its value: `exim_command in
    /// /etc/spoolsift/default.toml:12`, or `exim_command (not set in FILE: the default)`.
    pub fn origin(&self, path: &[&str]) -> String {
        let key = path.last().copied().unwrap_or_default();
        match key_line(&self.text, path) {
            Some(line) if lookup_path_exists(&self.text, path) => format!("{key} in {}:{line}", self.source.display()),
            _ => format!("{key} not set in {}: the default", self.source.display()),
        }
    }

    /// An error a stage's constructor found in its settings, pointing at the key it names (the
    /// first key of that stage's table written in `reason` as a word), or else at the table.
    pub fn stage_error(&self, name: &str, reason: &str) -> ConfigError {
        let named = self
            .stages
            .get(name)
            .and_then(|t| t.keys().filter_map(|k| word_at(reason, k).map(|at| (at, k))).min().map(|(_, k)| k.as_str()));
        let path: Vec<&str> = ["stages", name].into_iter().chain(named).collect();
        self.error_at(&path, format!("[stages.{name}]: {reason}"))
    }

    /// Whether a stage table is switched on (`enabled` defaults to true; [`PipelineConfig::parse`]
    /// refuses any value that is not a boolean).
    pub fn stage_enabled(table: &toml::Table) -> bool {
        table.get("enabled").and_then(toml::Value::as_bool).unwrap_or(true)
    }

    /// The settings of stage `name` as its own configuration type (without `enabled`). Read from
    /// the text, so that an error points at the line of the offending key or value.
    pub fn stage_settings<T: DeserializeOwned>(&self, name: &str) -> Result<T, ConfigError> {
        let fail = |line: Option<usize>, msg: &str| {
            ConfigError::new(&self.source, line, format!("[stages.{name}]: {}", msg.trim_end()))
        };
        let doc = DeTable::parse(&self.text).map_err(|e| fail(None, e.message()))?;
        let table = lookup(doc.get_ref(), &["stages", name]).ok_or_else(|| fail(None, "no such stage"))?;
        let span = table.span();
        let DeValue::Table(table) = table.clone().into_inner() else {
            return Err(fail(Some(line_at(&self.text, span.start)), "not a table"));
        };
        let table: DeTable<'_> = table.into_iter().filter(|(k, _)| k.get_ref() != "enabled").collect();
        T::deserialize(ValueDeserializer::from(Spanned::new(span, DeValue::Table(table))))
            .map_err(|e| fail(e.span().map(|s| line_at(&self.text, s.start)), e.message()))
    }
}

/// Where `word` first stands in `text` as a whole word (not inside a longer name).
fn word_at(text: &str, word: &str) -> Option<usize> {
    let name_byte = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_');
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        !name_byte(text.as_bytes().get(at.wrapping_sub(1))) && !name_byte(text.as_bytes().get(at + word.len()))
    })
}

/// The 1-based line of byte offset `at`.
fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The value at `path` in a parsed document, with its span.
fn lookup<'a, 'i>(mut table: &'a DeTable<'i>, path: &[&str]) -> Option<&'a Spanned<DeValue<'i>>> {
    let (last, parents) = path.split_last()?;
    for key in parents {
        match table.iter().find(|(k, _)| k.get_ref() == key)?.1.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
    table.iter().find(|(k, _)| k.get_ref() == last).map(|(_, v)| v)
}

/// Whether the key at `path` is written in the document (not only its tables).
fn lookup_path_exists(text: &str, path: &[&str]) -> bool {
    DeTable::parse(text).is_ok_and(|doc| lookup(doc.get_ref(), path).is_some())
}

/// The line of the key at `path` as written (a `key =` line or a `[table]` header); failing
/// that, of the deepest table on the path that is written. Never a comment that merely mentions
/// the name.
pub fn key_line(text: &str, path: &[&str]) -> Option<usize> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut line = None;
    for key in path {
        let (k, v) = table.iter().find(|(k, _)| k.get_ref() == key)?;
        // A table made only by a dotted header (`[stages.arc]` makes `stages`) has an empty span.
        if !k.span().is_empty() {
            line = Some(line_at(text, k.span().start));
        }
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_and_line() {
        let e = PipelineConfig::parse("name = \"x\"\n\n[policy]\ninfected = \"explode\"\n", Path::new("p.toml"))
            .unwrap_err();
        assert_eq!(e.file, Path::new("p.toml"));
        assert_eq!(e.line, Some(4));
        assert!(e.reason.contains("unknown variant"), "{e}");
        let e =
            PipelineConfig::parse("name = \"x\"\n[policy]\ninfected = \"discard\"\n", Path::new("p.toml")).unwrap_err();
        assert_eq!(
            (e.line, e.reason.as_str()),
            (Some(2), "policy uses `discard` but `allow_discard = true` is not set")
        );
        let e = PipelineConfig::parse("name = \"x\"\nbogus = 1\n", Path::new("p.toml")).unwrap_err();
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn metrics_section() {
        let parse = |m: &str| PipelineConfig::parse(&format!("name = \"x\"\n\n[metrics]\n{m}"), Path::new("p.toml"));
        let c = parse("listen = \"127.0.0.1:9465\"\n").unwrap().metrics.unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:9465".parse().unwrap()));
        assert!(parse("listen = \"[::1]:9465\"\ntextfile = \"/tmp/s.prom\"\n").is_ok());
        let e = parse("listen = \"0.0.0.0:9465\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("allow_remote"), "{e}");
        assert!(parse("listen = \"0.0.0.0:9465\"\nallow_remote = true\n").is_ok());
        assert!(parse("").unwrap_err().reason.contains("listen or textfile"));
        assert!(parse("listen = \"localhost\"\n").is_err());
        assert!(parse("listen = \"127.0.0.1:1\"\nport = 2\n").is_err());
        assert!(PipelineConfig::embedded().metrics.is_none());
    }

    #[test]
    fn authserv_id_is_a_token() {
        let parse =
            |id: &str| PipelineConfig::parse(&format!("name = \"x\"\nauthserv_id = {id:?}\n"), Path::new("p.toml"));
        assert!(parse("mx.example.net").is_ok());
        for bad in ["spoolsift@mx", "a/b", "mx example", "mx;x", "\"mx\"", "(mx)", ""] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.line, Some(2), "{bad}");
            assert!(e.reason.starts_with("authserv_id must be one token"), "{bad}: {e}");
        }
    }

    #[test]
    fn embedded_default_parses() {
        assert!(!PipelineConfig::embedded().name.is_empty());
    }
}
