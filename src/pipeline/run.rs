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
///
/// The first stage runs on the calling thread and each other one on a thread of its own: a thread
/// start costs about 60 µs of CPU here, as much as a whole clean check by some stages, and the
/// caller would only sit waiting otherwise.
pub fn run_stages(stages: &[Box<dyn Stage>], view: &MessageView<'_>) -> Vec<StageOutcome> {
    run_stages_timed(stages, view, Clock::System)
}

/// [`run_stages`], timing the stages on `clock` (a fixed clock records no durations).
pub fn run_stages_timed(stages: &[Box<dyn Stage>], view: &MessageView<'_>, clock: Clock) -> Vec<StageOutcome> {
    let Some((first, rest)) = stages.split_first() else { return Vec::new() };
    if rest.is_empty() {
        return vec![run_one(first.as_ref(), view, clock)];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = rest.iter().map(|st| s.spawn(move || run_one(st.as_ref(), view, clock))).collect();
        let mut out = Vec::with_capacity(stages.len());
        out.push(run_one(first.as_ref(), view, clock));
        out.extend(handles.into_iter().map(|h| h.join().expect("run_one catches panics")));
        out
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar, Mutex};

    use super::*;
    use crate::spool::SpoolHeader;
    use crate::stages::Verdict;

    /// A stage that answers clean only once every stage of the group has started: it passes
    /// only if they all run at the same time.
    struct Rendezvous {
        name: String,
        group: Arc<(Mutex<usize>, Condvar)>,
        size: usize,
    }

    impl Stage for Rendezvous {
        fn name(&self) -> &str {
            &self.name
        }

        fn check(&self, _: &MessageView<'_>) -> Result<StageResult, StageError> {
            let (arrived, cv) = &*self.group;
            let mut n = arrived.lock().unwrap();
            *n += 1;
            cv.notify_all();
            let started = *cv.wait_timeout_while(n, Duration::from_secs(10), |n| *n < self.size).unwrap().0;
            if started < self.size {
                return Err(StageError::Temporary(format!("{}: only {started} of {} started", self.name, self.size)));
            }
            if self.name == "b" {
                panic!("a stage's panic stays in its own outcome");
            }
            Ok(StageResult::clean())
        }
    }

    #[test]
    fn the_stages_of_one_message_run_at_the_same_time_in_stage_order() {
        let group = Arc::new((Mutex::new(0), Condvar::new()));
        let stages: Vec<Box<dyn Stage>> = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                Box::new(Rendezvous { name: name.into(), group: Arc::clone(&group), size: 3 }) as Box<dyn Stage>
            })
            .collect();
        let header = SpoolHeader::parse(
            b"1xXORz-0000000058C-2p8L-H\nroot 0 0\n<a@b.example>\n1795895471 0\nXX\n1\nc@d.example\n\n014  Subject: test\n",
            None,
        )
        .unwrap();
        let body = b"body\n".to_vec();
        let outcomes = run_stages(&stages, &MessageView::new(&header, &body));
        let got: Vec<(&str, &Result<StageResult, StageError>)> =
            outcomes.iter().map(|o| (o.stage.as_str(), &o.result)).collect();
        let clean = Ok(StageResult::new(Verdict::Clean));
        let panicked = Err(StageError::Temporary("stage b panicked".into()));
        assert_eq!(got, vec![("a", &clean), ("b", &panicked), ("c", &clean)]);
    }
}
