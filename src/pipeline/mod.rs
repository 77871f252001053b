//! The pipeline: what a pipeline definition says ([`config`]), running the stages on one message
//! ([`run`]), and turning their results into one action ([`policy`]).

pub mod build;
pub mod config;
pub mod engine;
pub mod policy;
pub mod recovery;
pub mod run;

pub use config::{ConfigError, PipelineConfig};
pub use policy::{Action, Decision, Policy};
pub use run::{run_stages, run_stages_timed, StageOutcome};
