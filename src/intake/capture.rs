//! A capture: copies of a queue's complete pairs, taken without disturbing the queue, and a
//! manifest (written last: a capture without one is incomplete) saying what was copied.
//!
//! Layout: `queue/<id>-H`, `queue/<id>-D` (flat), `answers.json` when the stages ran with
//! recording on (see [`crate::outside::answers`]), `manifest.json`.
//!
//! The source is only read. No lock is taken (a lock held at the wrong moment makes an Exim queue
//! runner skip the message); instead a pair is copied only when it is complete by the intake's
//! rules as far as they can be seen without locking: both files exist, nobody holds the `-D`
//! lock (checked with `F_OFD_GETLK`, which takes none), the `-D` starts with its id line, and the
//! `-D` did not change size or mtime while it was copied (a queuefile copy still growing).

use crate::spool::open::open_regular;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::archive;
use crate::outside::answers::hex;
use crate::requeue::commit::sync_dir;
use crate::spool::{DataLock, LockProbe, MessageId, SpoolPair};

pub const MANIFEST: &str = "manifest.json";
pub const ANSWERS: &str = "answers.json";
pub const QUEUE: &str = "queue";
/// The manifest format this spoolsift writes and reads.
pub const FORMAT: u64 = 1;

/// What a capture holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u64,
    /// The spoolsift that made it (`spoolsift 0.1.0`).
    pub tool: String,
    /// When the capture started (seconds since the epoch): a replay's fixed clock.
    pub captured_at: u64,
    /// The answers file, when the stages ran with recording on.
    pub answers: Option<String>,
    /// The name of the pipeline whose stages recorded the answers.
    pub pipeline: Option<String>,
    pub messages: Vec<Captured>,
}

/// One captured pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    pub id: String,
    pub header_size: u64,
    pub data_size: u64,
    pub header_sha256: String,
    pub data_sha256: String,
    pub captured_at: u64,
}

/// The result of copying a queue.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub messages: Vec<Captured>,
    /// Files not copied, and why (incomplete, locked, changing).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Copy every complete pair under `source` (a queuefile directory or an Exim spool's `input/`,
/// flat or split) into `out/queue/`.
pub fn snapshot(source: &Path, out: &Path, now: u64) -> io::Result<Snapshot> {
    let found = archive::walk(&[source.to_path_buf()], None)?;
    let queue = out.join(QUEUE);
    std::fs::create_dir_all(&queue)?;
    let mut snap = Snapshot {
        skipped: found.incomplete.into_iter().map(|(p, why)| (p, why.to_string())).collect(),
        ..Snapshot::default()
    };
    for pair in &found.pairs {
        if snap.messages.iter().any(|m| m.id == pair.id.as_str()) {
            snap.skipped.push((pair.header_path(), "a second pair with this id".into()));
            continue;
        }
        match copy_pair(pair, &queue, now) {
            Ok(Ok(c)) => snap.messages.push(c),
            Ok(Err(why)) => snap.skipped.push((pair.header_path(), why)),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", pair.header_path().display()))),
        }
    }
    sync_dir(&queue)?;
    sync_dir(out)?;
    Ok(snap)
}

/// Copy one pair; `Ok(Err(why))` when it is not complete, or went while it was being copied
/// (on a live queuefile directory the daemon takes pairs away at any moment).
fn copy_pair(pair: &SpoolPair, queue: &Path, now: u64) -> io::Result<Result<Captured, String>> {
    let id = &pair.id;
    let gone = || Ok(Err("taken away while being copied".to_string()));
    let not_regular = |e: &io::Error| crate::spool::open::is_not_regular(e).then(|| Ok(Err(e.to_string())));
    match DataLock::peek(&pair.data_path(), id.first_line_len() as u64) {
        Ok(LockProbe::Locked) => return Ok(Err("-D locked (Exim is receiving or delivering it)".into())),
        Ok(LockProbe::Absent) => return gone(),
        Ok(LockProbe::Unlocked) => {}
        Err(e) => return not_regular(&e).unwrap_or(Err(e)),
    }
    let mut data = match open_regular(&pair.data_path(), false) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return gone(),
        Err(e) => return not_regular(&e).unwrap_or(Err(e)),
        Ok(f) => f,
    };
    let before = data.metadata()?;
    let header = match open_regular(&pair.header_path(), false).and_then(|mut f| {
        let mut b = Vec::new();
        io::Read::read_to_end(&mut f, &mut b).map(|_| b)
    }) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return gone(),
        Err(e) => return not_regular(&e).unwrap_or(Err(e)),
        Ok(b) => b,
    };
    let data_tmp = queue.join(format!(".{id}-D.tmp"));
    let (data_size, data_sha256, first_line) = copy_hashing(&mut data, &data_tmp)?;
    // Through the open file: a rename away meanwhile changes nothing we copied.
    let after = data.metadata()?;
    let why = if (before.len(), before.mtime(), before.mtime_nsec()) != (after.len(), after.mtime(), after.mtime_nsec())
        || data_size != before.len()
    {
        Some("-D changed while it was copied (a copy still being written)")
    } else if first_line != format!("{id}-D\n").as_bytes() {
        Some("-D does not start with its id line")
    } else {
        None
    };
    if let Some(why) = why {
        std::fs::remove_file(&data_tmp)?;
        return Ok(Err(why.into()));
    }
    let header_tmp = queue.join(format!(".{id}-H.tmp"));
    write_synced(&header_tmp, &header)?;
    // -D first: a capture cut short never holds an -H without its -D.
    std::fs::rename(&data_tmp, queue.join(format!("{id}-D")))?;
    std::fs::rename(&header_tmp, queue.join(format!("{id}-H")))?;
    Ok(Ok(Captured {
        id: id.to_string(),
        header_size: header.len() as u64,
        data_size,
        header_sha256: sha256_hex(&header),
        data_sha256,
        captured_at: now,
    }))
}

/// Copy `from` into a new file `to` (synced); its length, SHA-256 and first line.
fn copy_hashing(from: &mut std::fs::File, to: &Path) -> io::Result<(u64, String, Vec<u8>)> {
    let mut out = std::fs::File::create(to)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut len, mut first_line) = (0u64, Vec::new());
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if !first_line.ends_with(b"\n") && first_line.len() < 64 {
            let take = buf[..n].iter().position(|&b| b == b'\n').map_or(n, |p| p + 1);
            first_line.extend_from_slice(&buf[..take.min(64 - first_line.len())]);
        }
        ctx.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        len += n as u64;
    }
    out.sync_all()?;
    Ok((len, hex(ctx.finish().as_ref()), first_line))
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

/// Write a file under a temporary name, sync it, and rename it into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Read `capture/manifest.json` and check every pair against it (sizes and SHA-256), so a
    /// replay never runs over a capture that changed. The error names the file and what is wrong.
    pub fn read_verified(capture: &Path) -> Result<Manifest, String> {
        let path = capture.join(MANIFEST);
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("{}: {e} (a capture without its manifest is incomplete)", path.display()))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if m.format != FORMAT {
            return Err(format!("{}: format {} (this spoolsift reads format {FORMAT})", path.display(), m.format));
        }
        for c in &m.messages {
            let id = MessageId::parse(c.id.as_bytes()).map_err(|e| format!("{}: {}: {e}", path.display(), c.id))?;
            let pair = SpoolPair::new(&capture.join(QUEUE), id);
            let h = std::fs::read(pair.header_path()).map_err(|e| format!("{}: {e}", pair.header_path().display()))?;
            if h.len() as u64 != c.header_size || sha256_hex(&h) != c.header_sha256 {
                return Err(format!("{}: differs from the manifest", pair.header_path().display()));
            }
            let mut d =
                std::fs::File::open(pair.data_path()).map_err(|e| format!("{}: {e}", pair.data_path().display()))?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut buf = vec![0u8; 64 * 1024];
            let mut len = 0u64;
            loop {
                match d.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        ctx.update(&buf[..n]);
                        len += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("{}: {e}", pair.data_path().display())),
                }
            }
            if len != c.data_size || hex(ctx.finish().as_ref()) != c.data_sha256 {
                return Err(format!("{}: differs from the manifest", pair.data_path().display()));
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_complete_unlocked_pairs_only_and_verifies() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let input = src.path().join("input");
        std::fs::create_dir_all(input.join("z")).unwrap();
        let ids = ["1xXOQD-0004A8-22", "1xXOQE-0004A8-22", "1xXORz-0000000058C-2p8L", "1xXOQF-0004A8-22"];
        for (i, id) in ids.iter().enumerate() {
            let dir = if i == 2 { input.join("z") } else { input.clone() };
            std::fs::write(dir.join(format!("{id}-H")), format!("{id}-H\nheader\n")).unwrap();
            std::fs::write(dir.join(format!("{id}-D")), format!("{id}-D\nbody {i}\n")).unwrap();
        }
        std::fs::write(input.join("1xXOQF-0004A8-22-D"), b"not a data file\n").unwrap();
        let held = DataLock::try_acquire(&input.join("1xXOQE-0004A8-22-D"), 19).unwrap().unwrap();
        let snap = snapshot(&input, out.path(), 7).unwrap();
        let got: Vec<&str> = snap.messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(got, ["1xXOQD-0004A8-22", "1xXORz-0000000058C-2p8L"]);
        let skipped: Vec<&str> = snap.skipped.iter().map(|(_, why)| why.as_str()).collect();
        assert_eq!(skipped, ["-D locked (Exim is receiving or delivering it)", "-D does not start with its id line"]);
        drop(held);
        assert_eq!(
            std::fs::read(out.path().join("queue/1xXORz-0000000058C-2p8L-D")).unwrap(),
            b"1xXORz-0000000058C-2p8L-D\nbody 2\n"
        );
        let names: Vec<String> = std::fs::read_dir(out.path().join("queue"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "no temporary files left: {names:?}");
        let vanished = SpoolPair::new(&input, MessageId::parse(b"1xXOQG-0004A8-22").unwrap());
        assert_eq!(
            copy_pair(&vanished, &out.path().join("queue"), 7).unwrap(),
            Err("taken away while being copied".into())
        );
        let m = Manifest {
            format: FORMAT,
            tool: "spoolsift test".into(),
            captured_at: 7,
            answers: None,
            pipeline: None,
            messages: snap.messages,
        };
        std::fs::write(out.path().join(MANIFEST), m.to_json()).unwrap();
        assert_eq!(Manifest::read_verified(out.path()).unwrap(), m);
        std::fs::write(out.path().join("queue/1xXOQD-0004A8-22-D"), b"1xXOQD-0004A8-22-D\nchanged\n").unwrap();
        assert_eq!(
            Manifest::read_verified(out.path()).unwrap_err(),
            format!("{}: differs from the manifest", out.path().join("queue/1xXOQD-0004A8-22-D").display())
        );
    }
}
