//! Taking complete pairs out of a queuefile directory.
//!
//! queuefile writes `<id>-H` then `<id>-D` under their final names: hard links when the directory is
//! on the spool's file system, growing copies otherwise, with no completion signal either way. A
//! pair is taken only when it is complete by this rule: both names exist; the original `-D` in
//! Exim's spool is gone or unlocked (the delivery attempt that made the copy has ended); the
//! external `-D` can be locked; and in copy mode its size has not changed since the previous look.
//! In link mode the external `-D` is the original's inode, so locking it answers the second
//! question too, and the original's names are not probed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::requeue::commit::sync_dir;
use crate::spool::paths::candidate_paths;
use crate::spool::{DataLock, LockProbe, MessageId, SpoolPair};

/// A pair found in the intake directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub pair: SpoolPair,
    /// Size of the `-D`, for batching by bytes.
    pub size: u64,
}

/// Why a pair is not taken yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotYet {
    /// Exim's delivery attempt still holds the original (or, in link mode, this very `-D`).
    Locked,
    /// Copy mode: the `-D` is still growing.
    Growing,
    /// One of the two names is missing.
    Incomplete,
}

/// Where the pairs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeKind {
    /// A queuefile transport's directory: flat, copies of messages Exim still owns until their
    /// delivery attempt ends.
    Queuefile,
    /// A stock Exim's own spool (MailScanner's model, for Exims built without queuefile): an
    /// instance with `queue_only` receives, spoolsift takes each message out of its `input/`
    /// (flat or split) under Exim's own lock, and removes its msglog.
    EximSpool { spool: PathBuf },
}

/// The intake directory and, for queuefile, the Exim spool it copies from.
#[derive(Debug)]
pub struct QueuefileDir {
    /// The queuefile directory, or the incoming Exim's `input/`.
    pub dir: PathBuf,
    pub kind: IntakeKind,
    /// Exim's `input/`, to see whether the original's delivery attempt has ended.
    pub spool_input: Option<PathBuf>,
    /// `-D` files with no `-H` older than this are moved aside (a failed copy blocks its id).
    pub orphan_age: Duration,
    /// Copy mode: the size of each `-D` at the previous look. Behind a lock because the engine,
    /// intake included, is shared by its intake, scanner and committer threads.
    sizes: Mutex<HashMap<MessageId, u64>>,
    /// The device of `spool_input` as of the last [`QueuefileDir::list`] (`Some(None)`: it did not
    /// exist), so that [`QueuefileDir::check`] need not stat it once per pair.
    spool_dev: Mutex<Option<Option<u64>>>,
    /// Pairs of the last listing for claims ([`QueuefileDir::looking`]) not yet looked at,
    /// oldest first.
    listed: Mutex<VecDeque<SpoolPair>>,
}

/// At most this many pairs, those with the oldest ids, are kept from one listing for the claims
/// that follow. A listing reads the whole directory, so with a backlog it is made once per many
/// claims rather than at each (a backlog of 4,096 pairs listed at every claim of a batch raised
/// the intake's CPU per message by a quarter), and memory does not grow with the backlog.
const LISTED_MAX: usize = 16_384;

/// One claim's look through the intake: [`Looking::next_pair`] gives the pairs left from the last
/// listing, then those of a new one when they run out, at most one listing per look.
pub struct Looking<'q> {
    intake: &'q QueuefileDir,
    relisted: bool,
    /// The ids given in this look: none is given twice in one look, so that the two looks of a
    /// growing copy ([`QueuefileDir::check`]) are never the same moment.
    given: HashSet<MessageId>,
}

impl Looking<'_> {
    /// The next pair to check, oldest first; `None` when this look has seen them all. A pair is
    /// given once: one that is not complete yet is found again by a later look's listing.
    pub fn next_pair(&mut self) -> io::Result<Option<SpoolPair>> {
        loop {
            let next = self.intake.listed.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            if let Some(pair) = next {
                if self.given.insert(pair.id.clone()) {
                    return Ok(Some(pair));
                }
                continue;
            }
            if self.relisted {
                return Ok(None);
            }
            self.relisted = true;
            let mut pairs = self.intake.list()?;
            pairs.truncate(LISTED_MAX);
            *self.intake.listed.lock().unwrap_or_else(|p| p.into_inner()) = pairs.into();
        }
    }
}

impl QueuefileDir {
    pub fn new(dir: &Path, spool_input: Option<&Path>, orphan_age: Duration) -> QueuefileDir {
        QueuefileDir {
            dir: dir.to_path_buf(),
            kind: IntakeKind::Queuefile,
            spool_input: spool_input.map(Path::to_path_buf),
            orphan_age,
            sizes: Mutex::default(),
            spool_dev: Mutex::default(),
            listed: Mutex::default(),
        }
    }

    /// The `input/` of a stock Exim's spool as the intake.
    pub fn exim_spool(spool: &Path, orphan_age: Duration) -> QueuefileDir {
        QueuefileDir {
            dir: spool.join("input"),
            kind: IntakeKind::EximSpool { spool: spool.to_path_buf() },
            spool_input: None,
            orphan_age,
            sizes: Mutex::default(),
            spool_dev: Mutex::default(),
            listed: Mutex::default(),
        }
    }

    /// Start a claim's look through the intake (see [`Looking`]). The spool's device is taken
    /// afresh, as a listing takes it, so that link mode is seen within a batch even when the
    /// pairs come from an earlier listing.
    pub fn looking(&self) -> Looking<'_> {
        if let Some(input) = &self.spool_input {
            *self.spool_dev.lock().unwrap_or_else(|p| p.into_inner()) = Some(device_of(input));
        }
        Looking { intake: self, relisted: false, given: HashSet::new() }
    }

    /// The directories a message of this intake may be in.
    pub fn dirs_for(&self, id: &MessageId) -> Vec<PathBuf> {
        match self.kind {
            IntakeKind::Queuefile => vec![self.dir.clone()],
            IntakeKind::EximSpool { .. } => vec![self.dir.join(id.split_char().to_string()), self.dir.clone()],
        }
    }

    /// Pairs with a `-H` in the intake (and, for an Exim spool, its split subdirectories), oldest
    /// ids first.
    pub fn list(&self) -> io::Result<Vec<SpoolPair>> {
        if let Some(input) = &self.spool_input {
            // Taken afresh with every listing: a mount, or Exim creating `input/`, shows within one
            // batch.
            *self.spool_dev.lock().unwrap_or_else(|p| p.into_inner()) = Some(device_of(input));
        }
        let mut dirs = vec![self.dir.clone()];
        if matches!(self.kind, IntakeKind::EximSpool { .. }) {
            match std::fs::read_dir(&self.dir) {
                Ok(rd) => {
                    for e in rd.filter_map(|e| e.ok()) {
                        let name = e.file_name();
                        let b = name.as_encoded_bytes();
                        if b.len() == 1 && b[0].is_ascii_alphanumeric() && e.path().is_dir() {
                            dirs.push(e.path());
                        }
                    }
                }
                // Exim creates input/ with the first message.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
        let mut pairs = Vec::new();
        for d in dirs {
            for e in std::fs::read_dir(&d)?.filter_map(|e| e.ok()) {
                if let Some(id) = MessageId::from_file_name(e.file_name().as_encoded_bytes(), b'H') {
                    pairs.push(SpoolPair::new(&d, id));
                }
            }
        }
        pairs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(pairs)
    }

    /// After a claim from an Exim spool: the message's msglog goes too, as Exim would remove it.
    pub fn forget(&self, id: &MessageId) -> io::Result<()> {
        if let IntakeKind::EximSpool { spool } = &self.kind {
            let msglog = spool.join("msglog");
            for p in [msglog.join(id.split_char().to_string()).join(id.as_str()), msglog.join(id.as_str())] {
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Check the completeness rule for one pair and, when it holds, lock its `-D`. The returned
    /// lock must be held until the pair has been moved away. For an Exim spool the lock is Exim's
    /// own: while we hold it, no Exim process delivers the message.
    ///
    /// A pair either of whose names is not a regular file (a link, FIFO, directory...: nothing
    /// Exim writes) is taken at once and without a lock, opened by nobody, so that the engine's
    /// reader refuses it and it is moved aside with the reason; it must neither stop the daemon
    /// nor stay in the directory to be looked at again.
    pub fn check(&self, pair: &SpoolPair) -> io::Result<Result<(Ready, Option<DataLock>), NotYet>> {
        let pair = pair.clone();
        let id = &pair.id;
        let lock_len = id.first_line_len() as u64;
        let odd = |pair: SpoolPair| Ok(Ok((Ready { pair, size: 0 }, None)));
        match std::fs::symlink_metadata(pair.header_path()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(NotYet::Incomplete)),
            Err(e) => return Err(e),
            Ok(m) if !m.file_type().is_file() => {
                return match std::fs::symlink_metadata(pair.data_path()) {
                    Ok(_) => odd(pair),
                    Err(_) => Ok(Err(NotYet::Incomplete)),
                }
            }
            Ok(_) => {}
        }
        let lock = match DataLock::try_acquire(&pair.data_path(), lock_len) {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(Err(NotYet::Locked)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(NotYet::Incomplete)),
            // A file we may not open (mode 000, say) or that a lease holds: taken unopened, and
            // the engine's reader gives the reason it is moved aside with.
            Err(e) if crate::spool::open::is_the_files_fault(&e) => return odd(pair),
            Err(e) => return Err(e),
        };
        let meta = lock.metadata().clone();
        if matches!(self.kind, IntakeKind::EximSpool { .. }) {
            // Exim renames -H into place last and holds the -D lock while receiving.
            return Ok(Ok((Ready { pair, size: meta.len() }, Some(lock))));
        }
        let Some(input) = &self.spool_input else {
            return Ok(self.settled(pair, &meta).map(|r| (r, Some(lock))));
        };
        let spool_dev = self.spool_dev.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| device_of(input));
        if spool_dev == Some(meta.dev()) {
            // Link mode: queuefile links when the two directories share a device, so the -D we
            // have just locked is the original's inode, and our lock is the proof that the
            // delivery attempt which linked it (and held that very inode locked) has ended. A
            // probe of the original's names would ask the same question of the same inode, or
            // find it gone. (A body replaced under the original's name since the copy, as
            // `exim -Meb` does, is a new inode that this copy is not of; the re-queue's own look
            // at the spool, `requeue::decide`, still sees it and its lock.) Nothing here can grow.
            self.sizes.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
            return Ok(Ok((Ready { pair, size: meta.len() }, Some(lock))));
        }
        // Copy mode: the original is another inode, whose lock says whether the attempt is over.
        for original in candidate_paths(input, id, 'D') {
            if DataLock::probe(&original, lock_len)? == LockProbe::Locked {
                return Ok(Err(NotYet::Locked));
            }
        }
        Ok(self.settled(pair, &meta).map(|r| (r, Some(lock))))
    }

    /// Copy mode: nothing on the file says the copy is finished, so wait for one look at which the
    /// size did not change.
    fn settled(&self, pair: SpoolPair, meta: &std::fs::Metadata) -> Result<Ready, NotYet> {
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        if sizes.insert(pair.id.clone(), meta.len()) != Some(meta.len()) {
            return Err(NotYet::Growing);
        }
        sizes.remove(&pair.id);
        Ok(Ready { pair, size: meta.len() })
    }

    /// `-D` files without a `-H`, older than `orphan_age` and not locked: leftovers of a failed
    /// copy, which would block that id for ever. They are moved (never deleted) into `aside`.
    pub fn move_orphans(&self, aside: &Path) -> io::Result<Vec<PathBuf>> {
        let now = SystemTime::now();
        let mut moved = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let Some(id) = MessageId::from_file_name(e.file_name().as_encoded_bytes(), b'D') else { continue };
            let pair = SpoolPair::new(&self.dir, id.clone());
            if std::fs::symlink_metadata(pair.header_path()).is_ok() {
                continue;
            }
            let age = e.metadata()?.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if age < self.orphan_age {
                continue;
            }
            // Not a regular file: no Exim holds it; it goes aside without a lock.
            let _lock = match DataLock::try_acquire(&e.path(), id.first_line_len() as u64) {
                Ok(Some(lock)) => Some(lock),
                Ok(None) => continue,
                Err(e) if crate::spool::open::is_the_files_fault(&e) => None,
                Err(e) => return Err(e),
            };
            crate::private_files::create_dir(aside)?;
            let to = aside.join(e.file_name());
            std::fs::rename(e.path(), &to)?;
            crate::private_files::write_file(
                &aside.join(format!("{id}.reason")),
                b"orphan -D without -H (a failed queuefile copy)\n",
                crate::private_files::FILE_MODE,
            )?;
            moved.push(to);
        }
        if !moved.is_empty() {
            sync_dir(&self.dir)?;
            sync_dir(aside)?;
        }
        Ok(moved)
    }
}

fn device_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1xXORz-0000000058C-2p8L";

    fn id() -> MessageId {
        MessageId::parse(ID.as_bytes()).unwrap()
    }

    /// A queuefile directory and an Exim spool's `input/` on one file system (link mode); the
    /// spool's `input/` is not created.
    fn world() -> (tempfile::TempDir, QueuefileDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let qf = tmp.path().join("qf");
        let input = tmp.path().join("spool").join("input");
        std::fs::create_dir_all(&qf).unwrap();
        let intake = QueuefileDir::new(&qf, Some(&input), Duration::from_secs(900));
        (tmp, intake, input)
    }

    fn drop_pair(dir: &Path, id: &MessageId) {
        std::fs::write(dir.join(format!("{id}-H")), format!("{id}-H\n")).unwrap();
        std::fs::write(dir.join(format!("{id}-D")), format!("{id}-D\nbody\n")).unwrap();
    }

    fn look(intake: &QueuefileDir, id: &MessageId) -> Result<u64, NotYet> {
        let pair = intake.list().unwrap().into_iter().find(|p| p.id == *id).expect("listed");
        intake.check(&pair).unwrap().map(|(r, _lock)| r.size)
    }

    #[test]
    fn link_mode_takes_the_locks_of_the_originals_inode_as_the_attempts() {
        let (_tmp, intake, input) = world();
        std::fs::create_dir_all(input.join("z")).unwrap();
        let id = id();
        drop_pair(&intake.dir, &id);
        // The original, still queued, is the same inode as the copy (split or not).
        for original in candidate_paths(&input, &id, 'D') {
            std::fs::hard_link(intake.dir.join(format!("{id}-D")), &original).unwrap();
            let exim = DataLock::try_acquire(&original, id.first_line_len() as u64).unwrap().unwrap();
            assert_eq!(look(&intake, &id), Err(NotYet::Locked), "{}", original.display());
            drop(exim);
            assert_eq!(look(&intake, &id), Ok(31), "attempt over: taken at the first look");
            std::fs::remove_file(&original).unwrap();
        }
    }

    /// Every pair one look gives, checked as a claim checks them: (id's last four characters,
    /// what the check said).
    fn one_look(intake: &QueuefileDir) -> Vec<(String, Result<u64, NotYet>)> {
        let mut look = intake.looking();
        let mut seen = Vec::new();
        while let Some(pair) = look.next_pair().unwrap() {
            let said = intake.check(&pair).unwrap().map(|(r, _lock)| r.size);
            seen.push((pair.id.as_str()[19..].to_string(), said));
        }
        seen
    }

    #[test]
    fn a_look_gives_each_pair_once_oldest_first_and_lists_again_only_when_the_last_listing_is_used_up() {
        let (_tmp, intake, _input) = world();
        let ids: Vec<MessageId> = ["2p8N", "2p8L", "2p8M"]
            .iter()
            .map(|s| MessageId::parse(format!("1xXORz-0000000058C-{s}").as_bytes()).unwrap())
            .collect();
        for id in &ids {
            drop_pair(&intake.dir, id);
        }
        // Copy mode (no input/ yet): a copy is taken at the second look at an unchanged size, and
        // one look never looks at a pair twice, even when it lists again.
        let growing = Err(NotYet::Growing);
        assert_eq!(one_look(&intake), [("2p8L".into(), growing), ("2p8M".into(), growing), ("2p8N".into(), growing)]);
        // The pairs stay where they are (a claim would move them): the next look lists again.
        assert_eq!(one_look(&intake), [("2p8L".into(), Ok(31)), ("2p8M".into(), Ok(31)), ("2p8N".into(), Ok(31))]);
        // A look that stops early leaves the rest of its listing to the next look, which gives
        // those first, and a pair dropped since only once they are used up.
        let mut look = intake.looking();
        assert_eq!(look.next_pair().unwrap().unwrap().id, ids[1]);
        drop(look);
        let newer = MessageId::parse(b"1xXORz-0000000058C-2p8P").unwrap();
        drop_pair(&intake.dir, &newer);
        let mut look = intake.looking();
        let order: Vec<String> =
            std::iter::from_fn(|| look.next_pair().unwrap()).map(|p| p.id.as_str()[19..].to_string()).collect();
        assert_eq!(order, ["2p8M", "2p8N", "2p8L", "2p8P"]);
    }

    #[test]
    fn the_spools_device_is_looked_at_again_with_every_listing() {
        let (_tmp, intake, input) = world();
        let first = id();
        drop_pair(&intake.dir, &first);
        // No input/ yet: nothing says this is link mode, so the size must hold still for one look.
        assert_eq!(look(&intake, &first), Err(NotYet::Growing));
        assert_eq!(look(&intake, &first), Ok(31));
        // Exim creates input/ with its first message; the next listing sees link mode.
        std::fs::create_dir_all(&input).unwrap();
        let second = MessageId::parse(b"1xXORz-0000000058C-2p8M").unwrap();
        drop_pair(&intake.dir, &second);
        assert_eq!(look(&intake, &second), Ok(31));
    }
}
