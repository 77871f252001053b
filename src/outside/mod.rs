//! The outside world as the pipeline meets it: the clock and the network services' answers. Live
//! in the daemon and offline scans; recorded by `spoolsift capture`; fixed and replayed by
//! `spoolsift replay`, so that a replay's output depends on the capture alone.

pub mod answers;
pub mod clock;

pub use answers::{Answer, AnswerBook, Answers, MissingAnswer, RequestDigest, RequestHasher};
pub use clock::Clock;

/// What a stage that talks to the outside world is given.
#[derive(Debug, Clone, Default)]
pub struct Outside {
    pub clock: Clock,
    pub answers: Answers,
}
