//! Pipeline definitions (`pipelines/*.toml`): which stages run, with what settings, and what the
//! policy does with their results. A bad file is refused with its path, line and reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::policy::Policy;
use crate::stages::inject::InjectConfig;

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
    /// Start deliveries with `exim -Mc` after each batch (otherwise the queue runner finds them).
    #[serde(default = "yes")]
    pub kick: bool,
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
    /// The LMDB data file (`${lookup{$message_exim_id}lmdb{THIS}}`); `THIS-lock` sits beside it.
    pub database: PathBuf,
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
}

impl Default for DeferConfig {
    fn default() -> Self {
        DeferConfig { initial_secs: 60, max_interval_secs: 3600, max_age_secs: 2 * 86400 }
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
fn default_marker() -> String {
    "acl_m_scanned".into()
}
fn yes() -> bool {
    true
}
fn default_kick_batch() -> usize {
    30
}
fn default_retention() -> u64 {
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
        let mut cfg: PipelineConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::new(file, line, e.message().to_string())
        })?;
        cfg.source = file.to_path_buf();
        cfg.text = text.to_string();
        cfg.policy.check().map_err(|r| ConfigError::new(file, line_of(text, "[policy]"), r))?;
        if let Some(i) = &cfg.intake {
            if i.queuefile_directory.is_some() == i.incoming_spool_directory.is_some() {
                return Err(ConfigError::new(
                    file,
                    line_of(text, "[intake]"),
                    "[intake] needs exactly one of queuefile_directory and incoming_spool_directory",
                ));
            }
        }
        if let Some(m) = &cfg.metrics {
            m.check().map_err(|r| ConfigError::new(file, line_of(text, "[metrics]"), r))?;
        }
        if cfg.authserv_id.is_empty() || cfg.authserv_id.contains(|c: char| c.is_whitespace() || c == ';') {
            return Err(ConfigError::new(file, line_of(text, "authserv_id"), "authserv_id must be one token"));
        }
        Ok(cfg)
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

    /// An error about this definition, pointing at the first line that contains `near`.
    pub fn error(&self, near: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.source, line_of(&self.text, near), reason)
    }

    /// Whether a stage table is switched on (`enabled` defaults to true).
    pub fn stage_enabled(table: &toml::Table) -> bool {
        table.get("enabled").and_then(toml::Value::as_bool).unwrap_or(true)
    }
}

/// The first line of `text` containing `needle`, for pointing at a section in an error.
pub fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
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
    fn embedded_default_parses() {
        assert!(!PipelineConfig::embedded().name.is_empty());
    }
}
