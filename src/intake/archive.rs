//! Finding spool pairs in archived spools, strictly read-only: flat or split `input/` trees,
//! queuefile directories, or any tree of `<id>-H`/`<id>-D` files. No locks are taken (a lock could
//! stall a live Exim) and nothing is written next to the files.

use std::io;
use std::path::{Path, PathBuf};

use crate::spool::{MessageId, SpoolPair};

/// What a walk found.
#[derive(Debug, Default)]
pub struct Found {
    /// Pairs whose `-H` name is a valid id, sorted by path.
    pub pairs: Vec<SpoolPair>,
    /// `-H` files without their `-D` (Exim skips these), `-D` files without their `-H`, and files
    /// named on the command line that are not spool files at all.
    pub incomplete: Vec<(PathBuf, &'static str)>,
    /// Directories named on the command line under which no spool file was found.
    pub empty_roots: Vec<PathBuf>,
}

/// An I/O error that names the path it happened on.
fn at(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A deterministic split of the id space, so several machines can share an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parse `i/n` with `0 <= i < n`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (i, n) = s.split_once('/').ok_or("shard must be i/n")?;
        let index: u32 = i.parse().map_err(|_| format!("bad shard index {i:?}"))?;
        let count: u32 = n.parse().map_err(|_| format!("bad shard count {n:?}"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= i < n"));
        }
        Ok(Shard { index, count })
    }

    /// FNV-1a over the id: stable across machines and releases, unlike the std hasher.
    pub fn contains(&self, id: &MessageId) -> bool {
        let h = id
            .as_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        h % u64::from(self.count) == u64::from(self.index)
    }
}

/// Walk `roots` (files or directories, recursively) for spool pairs.
pub fn walk(roots: &[PathBuf], shard: Option<Shard>) -> io::Result<Found> {
    let mut found = Found::default();
    let mut stack: Vec<PathBuf> = Vec::new();
    for root in roots {
        let meta = std::fs::metadata(root).map_err(at(root))?;
        let before = found.pairs.len() + found.incomplete.len();
        if meta.is_dir() {
            stack.push(root.clone());
        } else if !consider(root, &mut found) {
            found.incomplete.push((root.clone(), "not an Exim spool file: its name is not <id>-H or <id>-D"));
        }
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> =
                std::fs::read_dir(&dir).and_then(|rd| rd.collect::<Result<_, _>>()).map_err(at(&dir))?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let ft = e.file_type().map_err(at(&e.path()))?;
                if ft.is_dir() {
                    stack.push(e.path());
                } else if ft.is_file() {
                    consider(&e.path(), &mut found);
                }
            }
        }
        if meta.is_dir() && found.pairs.len() + found.incomplete.len() == before {
            found.empty_roots.push(root.clone());
        }
    }
    if let Some(s) = shard {
        found.pairs.retain(|p| s.contains(&p.id));
    }
    found.pairs.sort_by_key(SpoolPair::header_path);
    found.pairs.dedup();
    Ok(found)
}

/// Take `path` if it is named as a spool file; whether it is.
fn consider(path: &Path, found: &mut Found) -> bool {
    let name = path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
    if let Some(id) = MessageId::from_file_name(name, b'H') {
        let pair = SpoolPair::new(path.parent().unwrap_or(Path::new(".")), id);
        if pair.data_path().is_file() {
            found.pairs.push(pair);
        } else {
            found.incomplete.push((path.to_path_buf(), "-H without its -D"));
        }
    } else if let Some(id) = MessageId::from_file_name(name, b'D') {
        let pair = SpoolPair::new(path.parent().unwrap_or(Path::new(".")), id);
        if !pair.header_path().is_file() {
            found.incomplete.push((path.to_path_buf(), "-D without its -H"));
        }
    } else {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing_and_partition() {
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("2/2").is_err());
        let shards: Vec<Shard> = (0..3).map(|i| Shard::parse(&format!("{i}/3")).unwrap()).collect();
        let mut m = crate::spool::IdMinter::new(crate::spool::IdFormat::New23)
            .with_clock(crate::spool::IdClock::Fixed { secs: 1_800_000_000, micros: 0 });
        for _ in 0..100 {
            let id = m.mint();
            assert_eq!(shards.iter().filter(|s| s.contains(&id)).count(), 1);
        }
    }

    #[test]
    fn walk_finds_pairs_and_incomplete_ones() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("input").join("z");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("1xXORz-0000000058C-2p8L-H"), b"").unwrap();
        std::fs::write(sub.join("1xXORz-0000000058C-2p8L-D"), b"").unwrap();
        std::fs::write(dir.path().join("1xXOQD-0004A8-22-H"), b"").unwrap();
        std::fs::write(dir.path().join("1xXOQE-0004A8-22-D"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        let f = walk(&[dir.path().to_path_buf()], None).unwrap();
        assert_eq!(f.pairs.len(), 1);
        assert_eq!(f.pairs[0].id.as_str(), "1xXORz-0000000058C-2p8L");
        let mut inc: Vec<_> = f.incomplete.iter().map(|(p, why)| (p.file_name().unwrap().to_owned(), *why)).collect();
        inc.sort();
        assert_eq!(inc.len(), 2);
        assert_eq!(inc[0].1, "-H without its -D");
        assert_eq!(inc[1].1, "-D without its -H");
    }
}
