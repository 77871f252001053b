//! From a pipeline definition to the stages it names.

use super::config::{ConfigError, PipelineConfig};
use std::sync::Arc;

use crate::dns::{DnsTxt, ResolverSettings, StaticTxt, TxtLookup};
use crate::outside::Outside;
use crate::stages::arc::{ArcConfig, ArcStage, Sealer};
use crate::stages::clamav::ClamavStage;
use crate::stages::content::ContentScanner;
use crate::stages::dcc::DccStage;
use crate::stages::dkim::{DkimConfig, DkimStage};
use crate::stages::rspamd::RspamdStage;
use crate::stages::spamd::SpamdStage;
use crate::stages::Stage;

/// The stages a pipeline may name, each built by its arm in [`stages_with`]: adding a stage is
/// its file under `src/stages/`, its `pub mod` there, its name here and its arm below.
pub const STAGES: [&str; 7] = ["arc", "clamav", "content", "dcc", "dkim", "rspamd", "spamd"];

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
        let fail = |e: String| cfg.stage_error(name, &e);
        let stage: Box<dyn Stage> = match name.as_str() {
            "content" => Box::new(ContentScanner::new(cfg.stage_settings(name)?).map_err(|e| fail(e.to_string()))?),
            "clamav" => {
                Box::new(ClamavStage::new(cfg.stage_settings(name)?).map_err(fail)?.with_outside(outside.clone()))
            }
            "dcc" => Box::new(
                DccStage::new(cfg.stage_settings(name)?)
                    .map_err(|e| fail(e.to_string()))?
                    .with_outside(outside.clone()),
            ),
            "rspamd" => {
                Box::new(RspamdStage::new(cfg.stage_settings(name)?).map_err(fail)?.with_outside(outside.clone()))
            }
            "spamd" => {
                Box::new(SpamdStage::new(cfg.stage_settings(name)?).map_err(fail)?.with_outside(outside.clone()))
            }
            "dkim" => {
                let config: DkimConfig = cfg.stage_settings(name)?;
                Box::new(dkim_stage(config, outside).map_err(fail)?)
            }
            "arc" => {
                let config: ArcConfig = cfg.stage_settings(name)?;
                arc_sealer(cfg)?;
                Box::new(arc_stage(&config, outside).map_err(fail)?)
            }
            // PipelineConfig::parse refuses names outside STAGES.
            other => unreachable!("stage {other} passed PipelineConfig::parse"),
        };
        out.push(stage);
    }
    Ok(out)
}

/// The ARC stage: key records from the configured records file, or DNS through hickory; either
/// recorded or replayed by `outside`.
fn arc_stage(config: &ArcConfig, outside: &Outside) -> Result<ArcStage, String> {
    let live = arc_dns(config)?;
    // Every key lookup may take its full timeout on each attempt; a few lookups per message.
    let budget = config.dns_timeout() * (config.dns_attempts.max(1) as u32) * 4 + std::time::Duration::from_secs(5);
    let dns = outside.answers.txt_lookup(live);
    Ok(ArcStage::new(dns, config.on_dns_failure, budget).with_clock(outside.clock))
}

/// The dkim stage: its keys looked up as the arc stage's are.
fn dkim_stage(config: DkimConfig, outside: &Outside) -> Result<DkimStage, String> {
    let dns_config = config.dns();
    let live = arc_dns(&dns_config)?;
    let signatures = config.max_signatures.max(1) as u32;
    let budget = dns_config.dns_timeout() * (dns_config.dns_attempts.max(1) as u32) * signatures
        + std::time::Duration::from_secs(5);
    let dns = outside.answers.txt_lookup(live);
    Ok(DkimStage::new(dns, config, budget).with_clock(outside.clock))
}

/// Where the arc stage looks its keys up: the records file, or DNS.
pub fn arc_dns(config: &ArcConfig) -> Result<Arc<dyn TxtLookup>, String> {
    Ok(match &config.txt_records {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("txt_records {}: {e}", path.display()))?;
            Arc::new(StaticTxt::from_json(&bytes).map_err(|e| format!("txt_records {}: {e}", path.display()))?)
        }
        None => Arc::new(DnsTxt::new(&ResolverSettings {
            nameservers: config.nameserver_addrs()?,
            timeout: config.dns_timeout(),
            attempts: config.dns_attempts,
        })?),
    })
}

/// The ARC sealer of `[stages.arc.seal]`, if the arc stage is on and has one. Reads the key file.
pub fn arc_sealer(cfg: &PipelineConfig) -> Result<Option<Sealer>, ConfigError> {
    if !cfg.stages.get("arc").is_some_and(PipelineConfig::stage_enabled) {
        return Ok(None);
    }
    let config: ArcConfig = cfg.stage_settings("arc")?;
    let Some(seal) = config.seal else { return Ok(None) };
    let pem = std::fs::read(&seal.key_file).map_err(|e| {
        cfg.error_at(
            &["stages", "arc", "seal", "key_file"],
            format!("[stages.arc.seal]: cannot read key_file {}: {e}", seal.key_file.display()),
        )
    })?;
    Sealer::new(&seal, &pem)
        .map(Some)
        .map_err(|e| cfg.error_at(&["stages", "arc", "seal"], format!("[stages.arc.seal]: {e}")))
}
