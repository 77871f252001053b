//! Running a message's stages. The stages of one message are independent of each other, so they
//! run at the same time; a slow network service then costs its own latency, not the sum.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::outside::Clock;
use crate::spool::MessageView;
use crate::stages::{Stage, StageError, StageResult};

/// One stage's answer for one message, and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageOutcome {
    pub stage: String,
    pub result: Result<StageResult, StageError>,
    pub elapsed: Duration,
}

fn run_one(stage: &dyn Stage, view: &MessageView<'_>, clock: Clock) -> StageOutcome {
    let start = Instant::now();
    // A panicking stage is a bug in that stage; the message must still not be delivered as if
    // checked, so it becomes a temporary failure and the policy defers it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.check(view)))
        .unwrap_or_else(|_| Err(StageError::Temporary(format!("stage {} panicked", stage.name()))));
    StageOutcome { stage: stage.name().to_string(), result, elapsed: clock.elapsed(start) }
}

/// Run every stage on the message, in parallel when there is more than one, in stage order.
pub fn run_stages(stages: &[Box<dyn Stage>], view: &MessageView<'_>) -> Vec<StageOutcome> {
    run_stages_timed(stages, view, Clock::System)
}

/// [`run_stages`], timing the stages on `clock` (a fixed clock records no durations).
pub fn run_stages_timed(stages: &[Box<dyn Stage>], view: &MessageView<'_>, clock: Clock) -> Vec<StageOutcome> {
    match stages {
        [] => Vec::new(),
        [only] => vec![run_one(only.as_ref(), view, clock)],
        _ => std::thread::scope(|s| {
            let handles: Vec<_> = stages.iter().map(|st| s.spawn(move || run_one(st.as_ref(), view, clock))).collect();
            handles.into_iter().map(|h| h.join().expect("run_one catches panics")).collect()
        }),
    }
}
