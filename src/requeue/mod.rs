//! Writing a message back into an Exim spool so that Exim delivers it: the safe re-queue procedure.
//!
//! The order is what makes it safe. The `-D` goes in first; the `-H` is written under a temporary
//! name, synced and renamed into place last, because the queue runner only ever looks for `-H`
//! files: that rename is the commit point. Then the directory is synced, so the rename itself
//! survives a power cut. A file is never half-written at its final name.
//!
//! - [`decide`]: keep the message id or mint a new one (the original may still be in Exim's spool).
//! - [`transform`]: the edits every re-queued `-H` needs (marker, frozen state, DSN flags, counts).
//! - [`commit`]: the write sequence.
//! - [`exim`]: asking Exim about its configuration.
//! - [`kick`]: starting deliveries with `exim -Mc` outside the daemon's sandbox, and checking them.

pub mod commit;
pub mod decide;
pub mod exim;
pub mod kick;
pub mod target;
pub mod transform;

pub use commit::{
    commit, header_temp_path, prepare_header, publish_header, remove_external_pair, sync_dir, write_data, write_header,
    BodyPlan, Committed, RequeueError,
};
pub use decide::{decide, IdDecision, SpoolLook};
pub use exim::{EximCommand, Kicker};
pub use kick::{KickMode, KickOutcome, KickQueue};
pub use target::TargetSpool;
pub use transform::{Marker, Transform};
