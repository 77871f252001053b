//! The clock, where time reaches the output (a quarantine verdict's time, a frozen message's
//! time, stage timings in reports, minted ids). A replay runs on a fixed clock so that two replays
//! of one capture write the same bytes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::spool::IdClock;

/// What "now" is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// Always this second (since the epoch); durations measured against it are zero.
    Fixed(u64),
}

impl Clock {
    /// Seconds since the epoch.
    pub fn now_secs(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            Clock::Fixed(secs) => *secs,
        }
    }

    /// Time since `start` (an [`Instant`] taken when the measured work began); zero on a fixed
    /// clock, where a measured duration would be the only thing differing between two replays.
    pub fn elapsed(&self, start: Instant) -> Duration {
        match self {
            Clock::System => start.elapsed(),
            Clock::Fixed(_) => Duration::ZERO,
        }
    }

    pub fn is_fixed(&self) -> bool {
        matches!(self, Clock::Fixed(_))
    }

    /// The clock for minting message ids: on a fixed clock, a sequence starting at its second.
    pub fn id_clock(&self) -> IdClock {
        match self {
            Clock::System => IdClock::System,
            Clock::Fixed(secs) => IdClock::Fixed { secs: *secs, micros: 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_stands_still() {
        let c = Clock::Fixed(1_800_000_000);
        assert_eq!(c.now_secs(), 1_800_000_000);
        assert_eq!(c.elapsed(Instant::now() - Duration::from_secs(3)), Duration::ZERO);
        assert!(Clock::System.elapsed(Instant::now() - Duration::from_secs(3)) >= Duration::from_secs(3));
        let mut m = crate::spool::IdMinter::new(crate::spool::IdFormat::New23).with_pid(1).with_clock(c.id_clock());
        assert_eq!(m.mint().as_str(), "1xocE4-00000000001-0000");
        assert_eq!(m.mint().as_str(), "1xocE4-00000000001-0001");
    }
}
