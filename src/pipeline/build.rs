//! From a pipeline definition to the stages it names.

use std::path::Path;

use super::config::{ConfigError, PipelineConfig};
use crate::stages::Stage;

/// Build the enabled stages, in definition order. An unknown stage name is an error, not ignored:
/// a typo must not turn a check off.
pub fn stages(cfg: &PipelineConfig) -> Result<Vec<Box<dyn Stage>>, ConfigError> {
    let file = Path::new(&cfg.name);
    let mut out: Vec<Box<dyn Stage>> = Vec::new();
    for (name, table) in &cfg.stages {
        if !PipelineConfig::stage_enabled(table) {
            continue;
        }
        let mut settings = table.clone();
        settings.remove("enabled");
        match name.as_str() {
            "content" => {
                let c: crate::stages::content::ContentConfig = settings.try_into().map_err(|e: toml::de::Error| {
                    ConfigError::new(file, None, format!("[stages.content]: {}", e.message()))
                })?;
                let scanner = crate::stages::content::ContentScanner::new(c)
                    .map_err(|e| ConfigError::new(file, None, format!("[stages.content]: {e}")))?;
                out.push(Box::new(scanner));
            }
            other => return Err(ConfigError::new(file, None, format!("unknown stage [stages.{other}]"))),
        }
    }
    Ok(out)
}
