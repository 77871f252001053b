//! Running a message's stages. The stages of one message are independent of each other, so they
//! run at the same time; a slow network service then costs its own latency, not the sum.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::outside::Clock;
use crate::spool::MessageView;
use crate::stages::{ListChanges, Stage, StageError, StageResult};

/// One stage's answer for one message, and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct StageOutcome {
    pub stage: String,
    pub result: Result<StageResult, StageError>,
    pub elapsed: Duration,
}

/// As a quarantine entry's `verdict.json` gives it (docs/quarantine.md): `stage`, `elapsed_ms`,
/// and `result` (the stage's answer) or `error` (why it had none).
impl Serialize for StageOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("stage", &self.stage)?;
        m.serialize_entry("elapsed_ms", &(self.elapsed.as_secs_f64() * 1000.0))?;
        match &self.result {
            Ok(r) => m.serialize_entry("result", r)?,
            Err(e) => m.serialize_entry("error", &e.to_string())?,
        }
        m.end()
    }
}

fn run_one(stage: &dyn Stage, view: &MessageView<'_>, clock: Clock) -> StageOutcome {
    let start = Instant::now();
    // A panicking stage is a bug in that stage; the message must still not be delivered as if
    // checked, so it becomes a temporary failure and the policy defers it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.check(view)))
        .unwrap_or_else(|_| Err(StageError::Panicked(stage.name().to_string())));
    StageOutcome { stage: stage.name().to_string(), result, elapsed: clock.elapsed(start) }
}

/// Run every stage on the message, in parallel when there is more than one, in stage order.
///
/// The first stage runs on the calling thread and each other one on a thread of its own, so a
/// stage that waits for a service never holds up another (nor a pool's thread). The threads are
/// kept and reused (the `workers` module below): starting one cost about 60 µs of CPU here, as
/// much as a whole clean check by some stages, twice per message.
pub fn run_stages(stages: &[Box<dyn Stage>], view: &MessageView<'_>) -> Vec<StageOutcome> {
    run_stages_timed(stages, view, Clock::System)
}

/// [`run_stages`], timing the stages on `clock` (a fixed clock records no durations).
pub fn run_stages_timed(stages: &[Box<dyn Stage>], view: &MessageView<'_>, clock: Clock) -> Vec<StageOutcome> {
    run_stages_where(stages, |_| true, view, clock)
}

/// [`run_stages_timed`] for the stages `wanted` names (rules may turn a stage off for every
/// recipient of a message: it is then not run at all).
pub fn run_stages_where(
    stages: &[Box<dyn Stage>],
    wanted: impl Fn(&str) -> bool,
    view: &MessageView<'_>,
    clock: Clock,
) -> Vec<StageOutcome> {
    let stages: Vec<&dyn Stage> = stages.iter().map(|s| s.as_ref()).filter(|s| wanted(s.name())).collect();
    let Some((first, rest)) = stages.split_first() else { return Vec::new() };
    if rest.is_empty() {
        return vec![run_one(*first, view, clock)];
    }
    let results = workers::Waiting::new(rest.len());
    for (i, st) in rest.iter().enumerate() {
        let done = results.slot(i);
        workers::run(move || done.put(run_one(*st, view, clock)));
    }
    let mut out = Vec::with_capacity(stages.len());
    out.push(run_one(*first, view, clock));
    out.extend(results.wait_all().into_iter().map(|o| o.expect("run_one catches panics")));
    out
}

/// The stages that have lists, checked again with each of `changes` (the distinct changes the
/// recipients' rules make to them): for each, the outcomes of those stages, in stage order. They
/// run one after the other on this thread: only the built-in content scanner has lists, and it
/// only computes.
pub fn run_with_list_changes(
    stages: &[Box<dyn Stage>],
    wanted: impl Fn(&str) -> bool,
    changes: Vec<ListChanges>,
    view: &MessageView<'_>,
    clock: Clock,
) -> Vec<(ListChanges, Vec<StageOutcome>)> {
    changes
        .into_iter()
        .map(|c| {
            let outcomes = stages
                .iter()
                .filter(|s| wanted(s.name()))
                .filter_map(|s| s.with_list_changes(&c))
                .map(|s| run_one(s.as_ref(), view, clock))
                .collect();
            (c, outcomes)
        })
        .collect()
}

/// Threads for the stages of a message after its first: one per stage at once, as many as are
/// asked for, kept after their job to take the next one and ended after a while without work.
///
/// Hand-offs go through a mutex and a condition variable each, not a channel: the channels spin
/// and yield before they sleep, which cost more context switches than the thread starts saved.
mod workers {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    use std::time::Duration;

    use super::StageOutcome;

    type Job = Box<dyn FnOnce() + Send + 'static>;

    /// How long a thread waits for another job before it ends: long enough to outlast the gaps
    /// between batches of a busy queue, short enough that a burst's threads do not stay forever.
    const IDLE: Duration = Duration::from_secs(30);

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where an idle thread waits for its next job.
    #[derive(Default)]
    struct Inbox {
        job: Mutex<Option<Job>>,
        cv: Condvar,
    }

    /// Threads waiting for a job.
    static IDLE_THREADS: Mutex<Vec<Arc<Inbox>>> = Mutex::new(Vec::new());

    /// One message's outcomes, and how many jobs have not finished with what they borrowed.
    pub struct Results {
        state: Mutex<(Vec<Option<StageOutcome>>, usize)>,
        cv: Condvar,
    }

    /// A job's place in its [`Results`]. Dropping it, with the job, counts the job as finished,
    /// whether it ran or not.
    pub struct Slot {
        results: Arc<Results>,
        index: usize,
    }

    impl Slot {
        pub fn put(self, outcome: StageOutcome) {
            lock(&self.results.state).0[self.index] = Some(outcome);
        }
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            lock(&self.results.state).1 -= 1;
            self.results.cv.notify_all();
        }
    }

    /// Waits, when dropped (an unwind included), until every job handed out has finished.
    pub struct Waiting(Arc<Results>);

    impl Waiting {
        pub fn new(jobs: usize) -> Waiting {
            Waiting(Arc::new(Results { state: Mutex::new((vec![None; jobs], 0)), cv: Condvar::new() }))
        }

        pub fn slot(&self, index: usize) -> Slot {
            lock(&self.0.state).1 += 1;
            Slot { results: Arc::clone(&self.0), index }
        }

        fn wait(&self) -> MutexGuard<'_, (Vec<Option<StageOutcome>>, usize)> {
            let guard = lock(&self.0.state);
            self.0.cv.wait_while(guard, |s| s.1 > 0).unwrap_or_else(|e| e.into_inner())
        }

        pub fn wait_all(self) -> Vec<Option<StageOutcome>> {
            std::mem::take(&mut self.wait().0)
        }
    }

    impl Drop for Waiting {
        fn drop(&mut self) {
            drop(self.wait());
        }
    }

    /// Run `job` on a thread of its own: an idle one, or a new one.
    ///
    /// `job` may borrow from the caller's stack: the caller must not return (nor unwind past
    /// those borrows) before the job has been dropped, which [`Waiting`] ensures when the job owns
    /// one of its slots.
    pub fn run<'a>(job: impl FnOnce() + Send + 'a) {
        let job: Box<dyn FnOnce() + Send + 'a> = Box::new(job);
        // SAFETY: only the lifetime changes. The job is run or dropped by a worker thread, and
        // the caller waits for that (see above); until then what it borrows stays alive.
        let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + 'a>, Job>(job) };
        // An idle thread leaves the list only under this lock, and waits for a job once it is
        // off it, so the one popped here takes this job.
        let popped = lock(&IDLE_THREADS).pop();
        match popped {
            Some(inbox) => {
                *lock(&inbox.job) = Some(job);
                inbox.cv.notify_one();
            }
            None => {
                let inbox = Arc::new(Inbox::default());
                std::thread::Builder::new()
                    .name("spoolsift-stage".into())
                    .spawn(move || serve(job, inbox))
                    .expect("starting a stage thread");
            }
        }
    }

    fn serve(mut job: Job, inbox: Arc<Inbox>) {
        loop {
            // The job's own code catches a stage's panic; this keeps the thread should anything
            // else in it panic (its slot is dropped either way, so its caller goes on).
            let _ = catch_unwind(AssertUnwindSafe(job));
            lock(&IDLE_THREADS).push(Arc::clone(&inbox));
            let waited = inbox.cv.wait_timeout_while(lock(&inbox.job), IDLE, |j| j.is_none());
            let mut next = waited.unwrap_or_else(|e| e.into_inner()).0.take();
            if next.is_none() {
                let mut list = lock(&IDLE_THREADS);
                if let Some(at) = list.iter().position(|i| Arc::ptr_eq(i, &inbox)) {
                    list.swap_remove(at);
                    return;
                }
                drop(list);
                // Taken off the list just now by a caller that is handing over a job.
                let guard = lock(&inbox.job);
                next = inbox.cv.wait_while(guard, |j| j.is_none()).unwrap_or_else(|e| e.into_inner()).take();
            }
            job = next.expect("waited until there was one");
        }
    }
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
        let panicked = Err(StageError::Panicked("b".into()));
        assert_eq!(got, vec![("a", &clean), ("b", &panicked), ("c", &clean)]);
    }
}
