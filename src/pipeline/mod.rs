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

/// When the engine last got anywhere (a message scanned, a batch committed, an idle rescan with
/// nothing in flight), in seconds of a monotonic clock: the daemon tells systemd's watchdog it is
/// alive only while this moves.
static LAST_PROGRESS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static CLOCK_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn monotonic_secs() -> u64 {
    CLOCK_START.get_or_init(std::time::Instant::now).elapsed().as_secs()
}

/// Say that the engine got somewhere.
pub fn progressed() {
    LAST_PROGRESS.store(monotonic_secs(), std::sync::atomic::Ordering::Relaxed);
}

/// How long since the engine last got anywhere.
pub fn stalled_for() -> std::time::Duration {
    let last = LAST_PROGRESS.load(std::sync::atomic::Ordering::Relaxed);
    std::time::Duration::from_secs(monotonic_secs().saturating_sub(last))
}
