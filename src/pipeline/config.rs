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
        let cfg: PipelineConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::new(file, line, e.message().to_string())
        })?;
        cfg.policy.check().map_err(|r| ConfigError::new(file, line_of(text, "[policy]"), r))?;
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
    fn embedded_default_parses() {
        assert!(!PipelineConfig::embedded().name.is_empty());
    }
}
