//! Keep the id, or mint a new one? (The claiming rules of the re-queue procedure.)
//!
//! Keeping the id joins the logs up from `<=` to `=>` and lets the body be hard-linked, but it is
//! only safe once Exim has finished with the original: Exim unlinks `-D` and then `-H` *by name*
//! when a message completes, so a `-H` renamed into place in between would be deleted.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::target::TargetSpool;
use super::transform::Marker;
use crate::spool::paths::{file_name, message_dir};
use crate::spool::{DataLock, LockProbe, MessageId, SpoolHeader};

/// What to do with a message whose copy we hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdDecision {
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
pub fn decide(target: &TargetSpool, id: &MessageId, marker: &Marker) -> io::Result<IdDecision> {
    SpoolLook { target, missing_subdirs: None }.decide(id, marker)
}

/// The target spool as one batch of decisions sees it: [`decide`], but each split subdirectory
/// that turns out to be missing is probed once per batch instead of twice per message.
///
/// Why a missing subdirectory may be remembered: Exim looks for a message in both places, but
/// puts its files in one when it receives it and never moves them, and we put ours only where
/// `target.split` says, so a subdirectory we never write to (`split` off) that was missing after
/// a message was received cannot have gained that message's files since. A look must therefore
/// be made after every copy it decides about was claimed (their originals were received before
/// queuefile copied them), and not outlive its batch, whose later messages it would not cover.
/// With `split` on nothing is remembered: our own re-queues make subdirectories.
pub struct SpoolLook<'t> {
    target: &'t TargetSpool,
    /// By the id's sixth character: is that subdirectory there?
    missing_subdirs: Option<HashMap<char, bool>>,
}

impl<'t> SpoolLook<'t> {
    pub fn for_batch(target: &'t TargetSpool) -> SpoolLook<'t> {
        SpoolLook { target, missing_subdirs: (!target.split).then(HashMap::new) }
    }

    /// The places Exim would look for this message's files, split subdirectory first.
    fn dirs(&mut self, id: &MessageId) -> Vec<PathBuf> {
        let flat = self.target.input.clone();
        let split = message_dir(&self.target.input, id, true);
        let Some(known) = &mut self.missing_subdirs else { return vec![split, flat] };
        // Only a definite "not there" is remembered; anything else is probed as before.
        let missing = *known
            .entry(id.split_char())
            .or_insert_with(|| matches!(std::fs::metadata(&split), Err(e) if e.kind() == io::ErrorKind::NotFound));
        if missing {
            vec![flat]
        } else {
            vec![split, flat]
        }
    }

    /// Look for the original message in the target spool, in both places Exim would (or in the
    /// one that can hold it).
    pub fn decide(&mut self, id: &MessageId, marker: &Marker) -> io::Result<IdDecision> {
        let dirs = self.dirs(id);
        let lock_len = id.first_line_len() as u64;
        let mut data = LockProbe::Absent;
        for d in &dirs {
            match DataLock::probe(&d.join(file_name(id, 'D')), lock_len)? {
                LockProbe::Absent => {}
                found => {
                    data = found;
                    break;
                }
            }
        }
        if data == LockProbe::Locked {
            return Ok(IdDecision::Busy);
        }
        let header = dirs.iter().map(|d| d.join(file_name(id, 'H'))).find(|p| p.exists());
        match (data, header) {
            (LockProbe::Absent, None) => Ok(IdDecision::KeepId),
            (_, Some(h)) if is_marked(&h, marker) => Ok(IdDecision::AlreadyRequeued),
            // `-H` without `-D`: Exim is between its two unlinks of a completing message.
            (LockProbe::Absent, Some(_)) => Ok(IdDecision::Busy),
            _ => Ok(IdDecision::MintId),
        }
    }
}

fn is_marked(header: &Path, marker: &Marker) -> bool {
    // An unreadable or malformed original is not ours: we always write well-formed files.
    SpoolHeader::read(header).is_ok_and(|h| marker.is_on(&h))
}
