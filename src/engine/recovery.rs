//! Start-up recovery: complete or roll back every journal record a crash left behind, and remove
//! our temporary files. See [`super`] for the steps these states stand between.

use std::io;
use std::path::{Path, PathBuf};

use super::commit::remove_if_present;
use super::{remove_pair, Engine};
use crate::requeue::commit::is_temp_name;
use crate::state::{ClaimRecord, ClaimState};

fn remove_temp_files(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name();
        if is_temp_name(name.as_encoded_bytes()) {
            std::fs::remove_file(e.path())?;
            n += 1;
        } else if name.len() == 1 && e.file_type()?.is_dir() {
            n += remove_temp_files(&e.path())?;
        }
    }
    Ok(n)
}

impl Engine<'_> {
    /// Bring the journal and the files back in line. Returns a line per record acted on.
    pub fn recover(&mut self) -> io::Result<Vec<String>> {
        let mut notes = Vec::new();
        // The records first: a temporary -H is the evidence of a rename that did not happen.
        for rec in self.db.all()? {
            if let Some(note) = self.recover_one(rec)? {
                notes.push(note);
            }
        }
        // Claims the last run took to scan and did not finish were in flight when it stopped: each
        // is scanned alone before anything else, and marked as this run's so that they are again
        // if this run stops before it gets to them. Deferrals waiting are not among them. Only a
        // claim whose scan had started counts the stop as a crashed scan: one still waiting for
        // its lone scan was not being looked at.
        let (prev, run) = self.db.next_run()?;
        self.run = run;
        let mut left: Vec<ClaimRecord> =
            self.db.all()?.into_iter().filter(|r| r.state == ClaimState::Claimed && r.scan_run == Some(prev)).collect();
        if !left.is_empty() {
            left.iter_mut().for_each(|r| {
                r.scan_run = Some(run);
                if !r.awaiting_lone_scan {
                    r.crashed_scans += 1;
                }
                r.awaiting_lone_scan = true;
            });
            self.db.put(&left)?;
            notes.push(format!("{} claims left by a stopped daemon are scanned one at a time", left.len()));
            self.isolate(left.into_iter().map(|r| r.key));
        }
        notes.extend(self.remove_split_leftovers()?);
        notes.extend(self.remove_work_temps()?);
        let temps = remove_temp_files(&self.target.input)?;
        if temps > 0 {
            notes.push(format!("removed {temps} temporary files of an interrupted re-queue"));
        }
        crate::requeue::sync_dir(&self.dirs.work)?;
        if self.intake.dir.exists() {
            crate::requeue::sync_dir(&self.intake.dir)?;
        }
        Ok(notes)
    }

    fn recover_one(&mut self, mut rec: ClaimRecord) -> io::Result<Option<String>> {
        let (wh, wd) = self.dirs.files(&rec.key);
        let target = rec.target_id.as_deref().and_then(|t| crate::spool::MessageId::parse(t.as_bytes()).ok());
        let target_files = target.as_ref().map(|t| {
            let dir = self.target.dir_for(t);
            (dir.join(format!("{t}-H")), dir.join(format!("{t}-D")), crate::requeue::header_temp_path(&self.target, t))
        });
        // Only what is on disk is looked at here; nothing is removed before the journal says
        // what the removal is for (see `roll_back`).
        let committed = match (rec.state, &target_files) {
            (ClaimState::Claimed, None) => return self.recover_claim(&rec, &wh, &wd),
            // A roll-back that stopped before its files were gone: finish it (below).
            (ClaimState::Claimed, Some((th, _, _))) => th.exists(),
            (_, None) => false,
            (ClaimState::Committed, _) => true,
            // No -H is renamed before the journal says DataWritten.
            (ClaimState::Committing, Some((th, _, _))) => th.exists(),
            (ClaimState::DataWritten, Some((th, td, temp))) => {
                // The -H in place: committed. The temporary -H still there: the rename never
                // happened, and Exim has not seen the message. No -H, temporary -H or -D: renamed,
                // and Exim delivered it (it unlinks -D, then -H); nothing of ours removes these
                // files before the journal has left DataWritten. Renamed, -H gone, -D still there:
                // not what Exim leaves; without a -H Exim will never deliver it, so the safe
                // reading is "not committed".
                th.exists() || (!temp.exists() && !td.exists())
            }
        };
        if committed {
            // The recipients it handed on must be remembered even though the crash came before
            // the transaction that would have done it.
            rec.state = ClaimState::Committed;
            let expires = self.clock.now_secs() + self.retention_secs;
            self.db.commit_with_dedupe(std::slice::from_ref(&rec), expires)?;
            remove_pair(&wh, &wd)?;
            self.db.remove(&[&rec.key])?;
            return Ok(Some(format!(
                "{}: re-queue as {} had completed; cleaned up",
                rec.key,
                rec.target_id.unwrap_or_default()
            )));
        }
        let finishing = rec.state == ClaimState::Claimed;
        self.roll_back(&mut rec, target_files.as_ref())?;
        if finishing {
            let note = self.recover_claim(&rec, &wh, &wd)?;
            return Ok(note.or(Some(format!("{}: interrupted roll-back finished; will be processed again", rec.key))));
        }
        Ok(Some(format!("{}: interrupted re-queue rolled back; will be processed again", rec.key)))
    }

    /// A split stopped around its journal transaction leaves files without a record: before it,
    /// the parts' pairs (the claim is whole and will be scanned again); after it, the claim's own
    /// pair (its parts own the message now). Either is a second name or copy of a message some
    /// record holds, and goes. Files without a record that belong to no split are left alone.
    fn remove_split_leftovers(&self) -> io::Result<Vec<String>> {
        let keys: std::collections::BTreeSet<String> = self.db.all()?.into_iter().map(|r| r.key).collect();
        let mut notes = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dirs.work) else { return Ok(notes) };
        for e in rd {
            let name = e?.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix("-H").or_else(|| name.strip_suffix("-D")) else { continue };
            if keys.contains(key) {
                continue;
            }
            let leftover = match key.split_once('+') {
                Some((whole, _)) => keys.contains(whole),
                None => keys.range(format!("{key}+")..).next().is_some_and(|k| k.starts_with(&format!("{key}+"))),
            };
            if leftover {
                remove_if_present(&self.dirs.work.join(&name))?;
                notes.push(format!("{name}: left by a split that stopped; removed (a record holds the message)"));
            }
        }
        Ok(notes)
    }

    /// The temporary files of a work file being rewritten when the daemon stopped (a split part's
    /// `-H`, a header rewritten, a `-D` copied to Exim's owner and mode): the file they were to
    /// replace is still there or is a split's leftover, and nothing writes them before the start
    /// is over, so they go.
    fn remove_work_temps(&self) -> io::Result<Vec<String>> {
        let mut notes = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dirs.work) else { return Ok(notes) };
        for e in rd {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.ends_with(".new.tmp") || name.ends_with(".own.tmp")) && e.file_type()?.is_file() {
                remove_if_present(&e.path())?;
                notes.push(format!("{name}: a rewrite the stop interrupted; removed"));
            }
        }
        Ok(notes)
    }

    /// Undo an uncommitted re-queue: the journal first says the claim is to be done again, still
    /// naming the target; then the target's files go; then the target is forgotten. Stopped
    /// anywhere, the next start finds either the state it started from, or a claim whose target
    /// files are still to be removed (the `Claimed` case above). The other order could leave a
    /// journal saying the files were written and the files gone, which reads as "Exim delivered
    /// it": the message would be lost.
    fn roll_back(
        &mut self,
        rec: &mut ClaimRecord,
        target_files: Option<&(PathBuf, PathBuf, PathBuf)>,
    ) -> io::Result<()> {
        rec.state = ClaimState::Claimed;
        self.db.put(std::slice::from_ref(rec))?;
        if let Some((_, td, temp)) = target_files {
            remove_if_present(td)?;
            remove_if_present(temp)?;
            crate::requeue::sync_dir(td.parent().unwrap_or(td))?;
        }
        rec.target_id = None;
        Ok(self.db.put(std::slice::from_ref(rec))?)
    }

    /// A claim without a re-queue in progress: put its pair back together in the work directory.
    fn recover_claim(&mut self, rec: &ClaimRecord, wh: &Path, wd: &Path) -> io::Result<Option<String>> {
        let id = crate::spool::MessageId::parse(rec.original_id.as_bytes()).map_err(io::Error::other)?;
        // Finished before the stop, only not yet struck from the journal: whole in the quarantine
        // or in rejected/. Nothing is taken from the intake for it then (a copy there under the
        // same id is another copy), and a quarantined one's recipients are remembered as held.
        if !wh.exists() && !wd.exists() {
            if let Some(entry) = self.quarantine.get(&rec.key)? {
                let held: Vec<Vec<u8>> = entry.verdict["recipients"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r.as_str()).map(|r| r.as_bytes().to_vec()).collect())
                    .unwrap_or_default();
                let expires = self.clock.now_secs() + self.retention_secs;
                self.db.finish(&[&rec.key], &[(rec.original_id.clone(), held)], expires)?;
                return Ok(Some(format!("{}: quarantined before the stop; its recipients are held there", rec.key)));
            }
            if self.dirs.rejected.join(&rec.key).is_dir() {
                self.db.remove(&[&rec.key])?;
                return Ok(Some(format!("{}: moved aside before the stop", rec.key)));
            }
        }
        // The claim may have stopped between its two renames. (A part of a split was never in
        // the intake: a pair there under its id is another copy.)
        for (work, suffix) in [(wd, 'D'), (wh, 'H')].into_iter().filter(|_| rec.split_from.is_none()) {
            for dir in self.intake.dirs_for(&id) {
                let intake = dir.join(format!("{id}-{suffix}"));
                if !work.exists() && intake.exists() {
                    std::fs::rename(&intake, work)?;
                }
            }
        }
        self.intake.forget(&id)?;
        // A quarantine moves the -D and then the -H: stopped in between, the -D is in the
        // quarantine and the -H still here.
        if wh.exists() && !wd.exists() && self.quarantine.undo_partial(&rec.key, &id, wd)? {
            return Ok(Some(format!("{}: interrupted quarantine undone; will be processed again", rec.key)));
        }
        if !wh.exists() && !wd.exists() {
            self.db.remove(&[&rec.key])?;
            return Ok(Some(format!("{}: claimed copy is gone from both places; forgotten", rec.key)));
        }
        Ok(None)
    }
}
