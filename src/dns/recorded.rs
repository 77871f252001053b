//! Recording and replaying TXT answers: a capture wraps the real lookup in a [`RecordingTxt`],
//! which keeps every answer (records or error) by name; a replay serves them from a
//! [`ReplayingTxt`], whose miss is an error naming the name (and is remembered, so the replay can
//! list what the capture lacks) rather than an invented answer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::{normalize_name, DnsError, TxtLookup};

/// One name's answer as a lookup gave it.
pub type TxtAnswer = Result<Vec<Vec<u8>>, DnsError>;

/// Answers by name (canonical form, see [`normalize_name`]).
pub type TxtAnswers = BTreeMap<String, TxtAnswer>;

/// Asks `inner` and keeps each answer.
pub struct RecordingTxt {
    inner: Arc<dyn TxtLookup>,
    seen: Arc<Mutex<TxtAnswers>>,
}

impl RecordingTxt {
    /// Record into `seen` (shared with whoever writes the answers out).
    pub fn new(inner: Arc<dyn TxtLookup>, seen: Arc<Mutex<TxtAnswers>>) -> RecordingTxt {
        RecordingTxt { inner, seen }
    }
}

impl TxtLookup for RecordingTxt {
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        let answer = self.inner.txt(name);
        // A name asked twice keeps its first answer: the one the first check saw.
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).entry(normalize_name(name)).or_insert(answer.clone());
        answer
    }
}

/// Serves recorded answers only.
pub struct ReplayingTxt {
    recorded: TxtAnswers,
    missing: Arc<Mutex<BTreeSet<String>>>,
}

impl ReplayingTxt {
    /// Serve `recorded`; names asked for but not recorded go into `missing`.
    pub fn new(recorded: TxtAnswers, missing: Arc<Mutex<BTreeSet<String>>>) -> ReplayingTxt {
        ReplayingTxt { recorded, missing }
    }
}

impl TxtLookup for ReplayingTxt {
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        let name = normalize_name(name);
        match self.recorded.get(&name) {
            Some(answer) => answer.clone(),
            None => {
                self.missing.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone());
                // A check that cannot get its answer must not pass or fail the message.
                Err(DnsError::Unrecorded(name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::StaticTxt;

    #[test]
    fn record_then_replay_gives_the_same_answers_and_names_a_miss() {
        let mut live = StaticTxt::new();
        live.insert("sel._domainkey.example.org", "v=DKIM1; p=AB");
        live.insert("sel._domainkey.example.org", "second");
        let seen = Arc::new(Mutex::new(TxtAnswers::new()));
        let rec = RecordingTxt::new(Arc::new(live), Arc::clone(&seen));
        assert_eq!(
            rec.txt("Sel._domainkey.Example.org.").unwrap(),
            vec![b"v=DKIM1; p=AB".to_vec(), b"second".to_vec()]
        );
        assert_eq!(rec.txt("gone.example"), Err(DnsError::NoSuchName));
        let recorded = seen.lock().unwrap().clone();
        assert_eq!(recorded.keys().collect::<Vec<_>>(), ["gone.example", "sel._domainkey.example.org"]);

        let missing = Arc::new(Mutex::new(BTreeSet::new()));
        let replay = ReplayingTxt::new(recorded, Arc::clone(&missing));
        assert_eq!(replay.txt("sel._domainkey.example.org").unwrap().len(), 2);
        assert_eq!(replay.txt("GONE.example."), Err(DnsError::NoSuchName));
        assert_eq!(
            replay.txt("other._domainkey.example.org."),
            Err(DnsError::Unrecorded("other._domainkey.example.org".into()))
        );
        assert_eq!(missing.lock().unwrap().iter().collect::<Vec<_>>(), ["other._domainkey.example.org"]);
    }
}
