//! The pipeline: what a pipeline definition says ([`config`]), running the stages on one message
//! ([`run`]), turning their results into one action ([`policy`]), and the engine that claims,
//! scans, acts and re-queues ([`engine`], [`recovery`]), batches overlapped by [`executor`].

pub mod build;
pub mod commit;
pub mod config;
pub mod engine;
pub mod executor;
pub mod isolation;
pub mod layout;
pub mod policy;
pub mod recovery;
pub mod run;

pub use config::{ConfigError, PipelineConfig};
pub use executor::Next;
pub use policy::{Action, Decision, Policy};
pub use run::{run_stages, run_stages_timed, StageOutcome};
