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

/// When the engine last got anywhere (a message scanned, a batch claimed or committed), in Unix
/// seconds: the daemon tells systemd's watchdog it is alive only while this moves.
pub static LAST_PROGRESS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Say that the engine got somewhere.
pub fn progressed() {
    LAST_PROGRESS.store(crate::state::journal::now_secs(), std::sync::atomic::Ordering::Relaxed);
}
