//! From a pipeline definition to the stages it names.

use serde::de::DeserializeOwned;

use super::config::{ConfigError, PipelineConfig};
use crate::outside::Outside;
use crate::stages::clamav::ClamavStage;
use crate::stages::content::ContentScanner;
use crate::stages::dcc::DccStage;
use crate::stages::Stage;

/// One `[stages.NAME]` table as the stage's own configuration type.
fn settings<T: DeserializeOwned>(cfg: &PipelineConfig, name: &str, table: &toml::Table) -> Result<T, ConfigError> {
    let mut t = table.clone();
    t.remove("enabled");
    t.try_into().map_err(|e: toml::de::Error| {
        cfg.error(&format!("[stages.{name}]"), format!("[stages.{name}]: {}", e.message()))
    })
}

/// Build the enabled stages, in name order (they run in parallel; the order only shows in
/// reports). An unknown stage name is an error, not ignored: a typo must not turn a check off.
pub fn stages(cfg: &PipelineConfig) -> Result<Vec<Box<dyn Stage>>, ConfigError> {
    stages_with(cfg, &Outside::default())
}

/// [`stages`], with the stages that talk to services recording or replaying their answers and
/// taking time from `outside`'s clock (capture and replay).
pub fn stages_with(cfg: &PipelineConfig, outside: &Outside) -> Result<Vec<Box<dyn Stage>>, ConfigError> {
    let mut out: Vec<Box<dyn Stage>> = Vec::new();
    for (name, table) in &cfg.stages {
        if !PipelineConfig::stage_enabled(table) {
            continue;
        }
        let section = format!("[stages.{name}]");
        let fail = |e: String| cfg.error(&section, format!("{section}: {e}"));
        let stage: Box<dyn Stage> = match name.as_str() {
            "content" => Box::new(ContentScanner::new(settings(cfg, name, table)?).map_err(|e| fail(e.to_string()))?),
            "clamav" => {
                Box::new(ClamavStage::new(settings(cfg, name, table)?).map_err(fail)?.with_outside(outside.clone()))
            }
            "dcc" => Box::new(
                DccStage::new(settings(cfg, name, table)?)
                    .map_err(|e| fail(e.to_string()))?
                    .with_outside(outside.clone()),
            ),
            other => return Err(cfg.error(&section, format!("unknown stage [stages.{other}]"))),
        };
        out.push(stage);
    }
    Ok(out)
}
