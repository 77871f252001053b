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

/// `secs` since the epoch as a UTC civil date and time: (year, month, day, hour, minute, second,
/// weekday with Sunday 0). Written here (days to a civil date, the proleptic Gregorian calendar)
/// rather than pulling a date crate in for two formats.
fn civil(secs: u64) -> (i64, i64, i64, u64, u64, u64, u64) {
    let (days, rem) = (secs / 86400, secs % 86400);
    // Days since 0000-03-01, so that a leap day ends its year.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday.
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60, (days + 4) % 7)
}

/// `secs` since the epoch as an RFC 3339 UTC time, `2026-12-02T14:12:27Z`.
pub fn rfc3339(secs: u64) -> String {
    let (year, month, day, h, m, s, _) = civil(secs);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// `secs` since the epoch as an RFC 5322 date, `Wed, 02 Dec 2026 14:12:27 +0000`.
pub fn rfc5322(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (year, month, day, h, m, s, wd) = civil(secs);
    format!("{}, {day:02} {} {year:04} {h:02}:{m:02}:{s:02} +0000", DAYS[wd as usize], MONTHS[(month - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_895_471), "2026-11-28T19:51:11Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(rfc5322(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322(1_795_895_471), "Sat, 28 Nov 2026 19:51:11 +0000");
        assert_eq!(rfc5322(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

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
