//! Keep the id, or mint a new one? (The claiming rules of the re-queue procedure.)
//!
//! Keeping the id joins the logs up from `<=` to `=>` and lets the body be hard-linked, but it is
//! only safe once Exim has finished with the original: Exim unlinks `-D` and then `-H` *by name*
//! when a message completes, so a `-H` renamed into place in between would be deleted.

use std::io;
use std::path::Path;

use super::target::TargetSpool;
use super::transform::Marker;
use crate::spool::paths::candidate_paths;
use crate::spool::{DataLock, LockProbe, MessageId, SpoolHeader};

/// What to do with a message whose copy we hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The original is gone from the target spool: re-queue under the same id.
    KeepId,
    /// The original is still queued (other recipients deferred): re-queue under a new id.
    MintId,
    /// The target already holds our re-queued copy (a crash came between commit and cleanup).
    AlreadyRequeued,
    /// An Exim process is working on the original right now: try again later.
    Busy,
}

/// Look for the original message in the target spool, in both places Exim would.
pub fn decide(target: &TargetSpool, id: &MessageId, marker: &Marker) -> io::Result<Decision> {
    let lock_len = id.first_line_len() as u64;
    let mut data = LockProbe::Absent;
    for p in candidate_paths(&target.input, id, 'D') {
        match DataLock::probe(&p, lock_len)? {
            LockProbe::Absent => {}
            found => {
                data = found;
                break;
            }
        }
    }
    if data == LockProbe::Locked {
        return Ok(Decision::Busy);
    }
    let header = candidate_paths(&target.input, id, 'H').into_iter().find(|p| p.exists());
    match (data, header) {
        (LockProbe::Absent, None) => Ok(Decision::KeepId),
        (_, Some(h)) if is_marked(&h, marker) => Ok(Decision::AlreadyRequeued),
        // `-H` without `-D`: Exim is between its two unlinks of a completing message.
        (LockProbe::Absent, Some(_)) => Ok(Decision::Busy),
        _ => Ok(Decision::MintId),
    }
}

fn is_marked(header: &Path, marker: &Marker) -> bool {
    // An unreadable or malformed original is not ours: we always write well-formed files.
    SpoolHeader::read(header).is_ok_and(|h| marker.is_on(&h))
}
