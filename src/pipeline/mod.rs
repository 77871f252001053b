//! The per-message path: what a pipeline definition says ([`config`]), the stages it builds
//! ([`build`]), running them on one message ([`run`]) and turning their results into one action
//! ([`policy`]). The batch engine that claims, scans, acts and re-queues is `crate::engine`.

pub mod annotate;
pub mod build;
pub mod config;
pub mod decide;
pub mod layout;
pub mod policy;
pub mod rules;
pub mod run;

pub use config::{ConfigError, PipelineConfig};
pub use policy::{Action, Decision, Policy};
pub use run::{run_stages, run_stages_timed, run_stages_where, StageOutcome};
