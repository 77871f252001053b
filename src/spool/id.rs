//! Exim message ids: validation, decoding and minting.
//!
//! Two formats exist. Exim before 4.97 writes 16 characters `tttttt-pppppp-ss`; 4.97 and later
//! write 23 characters `tttttt-ppppppppppp-ssss` (and read both). Every field is a big-endian base-62
//! number over `0-9A-Za-z`, left-padded with `0`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

const BASE: u64 = 62;

fn digit_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'A'..=b'Z' => Some(u64::from(b - b'A') + 10),
        b'a'..=b'z' => Some(u64::from(b - b'a') + 36),
        _ => None,
    }
}

fn digit_char(v: u64) -> u8 {
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[v as usize]
}

fn decode(field: &[u8]) -> u64 {
    // Callers validated the alphabet; 11 base-62 digits fit in u64 (62^11 < 2^66 is false for the
    // top digit, so saturate rather than wrap on absurd pids).
    field.iter().fold(0u64, |acc, &b| acc.saturating_mul(BASE).saturating_add(digit_value(b).unwrap_or(0)))
}

fn encode(mut v: u64, width: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + width, b'0');
    for i in (0..width).rev() {
        out[start + i] = digit_char(v % BASE);
        v /= BASE;
    }
}

/// Which of Exim's two id layouts an id uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum IdFormat {
    /// 16 characters, Exim < 4.97: pid in 6 digits, fraction = µs/500 in 2 digits.
    Old16,
    /// 23 characters, Exim >= 4.97: pid in 11 digits, fraction = µs in 4 digits.
    New23,
}

impl IdFormat {
    /// Length of an id in this format.
    pub fn id_len(self) -> usize {
        match self {
            IdFormat::Old16 => 16,
            IdFormat::New23 => 23,
        }
    }

    fn widths(self) -> (usize, usize, usize) {
        match self {
            IdFormat::Old16 => (6, 6, 2),
            IdFormat::New23 => (6, 11, 4),
        }
    }
}

/// Why a string is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("message id must be 16 or 23 characters, got {0}")]
    Length(usize),
    #[error("message id has {0:?} where a '-' belongs")]
    Separator(char),
    #[error("message id has a character outside 0-9A-Za-z: {0:?}")]
    Alphabet(char),
}

/// A validated Exim message id. A file name that is not a valid id is never opened as one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    /// Validate bytes as an id of either format.
    pub fn parse(s: &[u8]) -> Result<MessageId, IdError> {
        let format = match s.len() {
            16 => IdFormat::Old16,
            23 => IdFormat::New23,
            n => return Err(IdError::Length(n)),
        };
        let (t, p, _) = format.widths();
        for (i, &b) in s.iter().enumerate() {
            if i == t || i == t + 1 + p {
                if b != b'-' {
                    return Err(IdError::Separator(char::from(b)));
                }
            } else if digit_value(b).is_none() {
                return Err(IdError::Alphabet(char::from(b)));
            }
        }
        // Validated ASCII, so this cannot fail.
        Ok(MessageId(String::from_utf8_lossy(s).into_owned()))
    }

    /// The id of a spool file name such as `1xXOQD-0004A8-22-H`, if the name is exactly an id
    /// followed by `-` and `suffix`.
    pub fn from_file_name(name: &[u8], suffix: u8) -> Option<MessageId> {
        let (stem, tail) = name.split_at_checked(name.len().checked_sub(2)?)?;
        if tail != [b'-', suffix] {
            return None;
        }
        MessageId::parse(stem).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn format(&self) -> IdFormat {
        if self.0.len() == 16 {
            IdFormat::Old16
        } else {
            IdFormat::New23
        }
    }

    fn field(&self, n: usize) -> &[u8] {
        let (t, p, s) = self.format().widths();
        let b = self.0.as_bytes();
        match n {
            0 => &b[..t],
            1 => &b[t + 1..t + 1 + p],
            _ => &b[t + p + 2..t + p + 2 + s],
        }
    }

    /// Arrival time in seconds since the epoch (close to, not equal to, line 4 of `-H`).
    pub fn time(&self) -> u64 {
        decode(self.field(0))
    }

    /// Pid of the receiving process.
    pub fn pid(&self) -> u64 {
        decode(self.field(1))
    }

    /// The raw sub-second field: µs (new format) or µs/500 (old format), or the
    /// `localhost_number` variants of those.
    pub fn fraction(&self) -> u64 {
        decode(self.field(2))
    }

    /// The character naming the split-spool subdirectory: the 6th of the id.
    pub fn split_char(&self) -> char {
        char::from(self.0.as_bytes()[5])
    }

    /// Length of the first line of `-H`/`-D` including its LF: where the `-D` body starts.
    pub fn first_line_len(&self) -> usize {
        self.0.len() + 3
    }

    /// Build an id from its fields (used by minting and by tests).
    pub fn from_parts(format: IdFormat, time: u64, pid: u64, fraction: u64) -> MessageId {
        let (t, p, s) = format.widths();
        let mut out = Vec::with_capacity(format.id_len());
        encode(time, t, &mut out);
        out.push(b'-');
        encode(pid, p, &mut out);
        out.push(b'-');
        encode(fraction, s, &mut out);
        MessageId(String::from_utf8_lossy(&out).into_owned())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Where minted ids take their time from.
#[derive(Debug, Clone)]
pub enum IdClock {
    /// The system clock; minting waits for it to move on, as Exim does.
    System,
    /// A deterministic clock for replays: starts at the given time and advances by one unit of the
    /// id's resolution per id.
    Fixed { secs: u64, micros: u32 },
}

/// Mints ids that are unique on this host: the pid makes them unique between processes, and within
/// this process each id's (second, fraction) is strictly after the previous one. Like Exim, we wait
/// for the clock rather than invent future timestamps, so a later process that reuses our pid cannot
/// produce an id we already handed out.
#[derive(Debug)]
pub struct IdMinter {
    format: IdFormat,
    pid: u64,
    localhost_number: Option<u32>,
    clock: IdClock,
    last: Option<(u64, u64)>,
}

impl IdMinter {
    pub fn new(format: IdFormat) -> IdMinter {
        IdMinter {
            format,
            pid: u64::from(std::process::id()),
            localhost_number: None,
            clock: IdClock::System,
            last: None,
        }
    }

    /// Mirror Exim's `localhost_number` so ids from several hosts sharing a queue cannot collide.
    pub fn with_localhost_number(mut self, n: Option<u32>) -> Self {
        self.localhost_number = n;
        self
    }

    pub fn with_clock(mut self, clock: IdClock) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_pid(mut self, pid: u64) -> Self {
        self.pid = pid;
        self
    }

    pub fn format(&self) -> IdFormat {
        self.format
    }

    /// The fraction field for a microsecond value, per Exim's formulas.
    fn fraction_of(&self, micros: u64) -> u64 {
        match (self.format, self.localhost_number) {
            (IdFormat::New23, None) => micros,
            (IdFormat::New23, Some(n)) => u64::from(n) * 500_000 + micros / 2,
            (IdFormat::Old16, None) => micros / 500,
            (IdFormat::Old16, Some(n)) => u64::from(n) * 200 + micros / 5000,
        }
    }

    /// One unit of the fraction field, in microseconds.
    fn resolution_micros(&self) -> u32 {
        match (self.format, self.localhost_number) {
            (IdFormat::New23, None) => 1,
            (IdFormat::New23, Some(_)) => 2,
            (IdFormat::Old16, None) => 500,
            (IdFormat::Old16, Some(_)) => 5000,
        }
    }

    fn now(&mut self) -> (u64, u64) {
        match &mut self.clock {
            IdClock::System => {
                let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                (d.as_secs(), u64::from(d.subsec_micros()))
            }
            IdClock::Fixed { secs, micros } => {
                let now = (*secs, u64::from(*micros));
                let step = match self.format {
                    IdFormat::New23 if self.localhost_number.is_none() => 1,
                    IdFormat::New23 => 2,
                    IdFormat::Old16 if self.localhost_number.is_none() => 500,
                    IdFormat::Old16 => 5000,
                };
                *micros += step;
                if *micros >= 1_000_000 {
                    *micros -= 1_000_000;
                    *secs += 1;
                }
                now
            }
        }
    }

    /// A new id, strictly after every id this minter made before.
    pub fn mint(&mut self) -> MessageId {
        loop {
            let (secs, micros) = self.now();
            let stamp = (secs, self.fraction_of(micros));
            if self.last.is_none_or(|last| stamp > last) {
                self.last = Some(stamp);
                return MessageId::from_parts(self.format, stamp.0, self.pid, stamp.1);
            }
            // The clock has not moved one unit yet; Exim sleeps here too.
            std::thread::sleep(std::time::Duration::from_micros(u64::from(self.resolution_micros())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_example() {
        let id = MessageId::parse(b"1xXORz-0000000058C-2p8L").unwrap();
        assert_eq!(id.format(), IdFormat::New23);
        assert_eq!(id.time(), 1_795_895_471);
        assert_eq!(id.pid(), 19728);
        assert_eq!(id.fraction(), 673_217);
        assert_eq!(id.split_char(), 'z');
        assert_eq!(id.first_line_len(), 26);
        let old = MessageId::parse(b"1xXOQD-0004A8-22").unwrap();
        assert_eq!(old.format(), IdFormat::Old16);
        assert_eq!(old.time(), 1_795_895_361);
        assert_eq!(old.first_line_len(), 19);
    }

    #[test]
    fn rejects_near_misses() {
        assert_eq!(MessageId::parse(b"1xXOQD-0004A8-2"), Err(IdError::Length(15)));
        assert_eq!(MessageId::parse(b"1xXOQD_0004A8-22"), Err(IdError::Separator('_')));
        assert_eq!(MessageId::parse(b"1xXOQD-0004A8-2_"), Err(IdError::Alphabet('_')));
        assert_eq!(MessageId::parse(b"../../etc/passwd"), Err(IdError::Alphabet('.')));
        assert!(MessageId::from_file_name(b"1xXOQD-0004A8-22-H", b'H').is_some());
        assert!(MessageId::from_file_name(b"1xXOQD-0004A8-22-D", b'H').is_none());
        assert!(MessageId::from_file_name(b"hdr.1xXOQD-0004A8-22", b'H').is_none());
    }

    #[test]
    fn parts_round_trip() {
        for format in [IdFormat::Old16, IdFormat::New23] {
            let id = MessageId::from_parts(format, 1_795_895_471, 19728, 1234);
            let again = MessageId::parse(id.as_bytes()).unwrap();
            assert_eq!((again.time(), again.pid(), again.fraction()), (1_795_895_471, 19728, 1234));
        }
    }

    #[test]
    fn minting_is_strictly_increasing_and_unique() {
        for format in [IdFormat::New23, IdFormat::Old16] {
            let mut m = IdMinter::new(format);
            let ids: Vec<_> = (0..50).map(|_| m.mint()).collect();
            for w in ids.windows(2) {
                assert!((w[0].time(), w[0].fraction()) < (w[1].time(), w[1].fraction()), "{w:?}");
            }
        }
    }

    #[test]
    fn fixed_clock_is_deterministic() {
        let mk = || {
            IdMinter::new(IdFormat::New23)
                .with_pid(42)
                .with_clock(IdClock::Fixed { secs: 1_800_000_000, micros: 999_999 })
        };
        let a: Vec<_> = {
            let mut m = mk();
            (0..3).map(|_| m.mint()).collect()
        };
        let b: Vec<_> = {
            let mut m = mk();
            (0..3).map(|_| m.mint()).collect()
        };
        assert_eq!(a, b);
        assert_eq!(a[1].time(), 1_800_000_001);
        assert_eq!(a[1].fraction(), 0);
    }
}
