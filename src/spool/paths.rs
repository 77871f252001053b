//! Where a message's files live in an Exim spool.
//!
//! With `split_spool_directory`, `input/` files sit in a one-character subdirectory named by the
//! id's 6th character. Exim looks in both places whichever way the option is set, but both files
//! of a message must be in the same one: any other layout strands the message.

use std::path::{Path, PathBuf};

use super::id::MessageId;

/// `<spool>/input` or, for a named queue, `<spool>/<queue>/input`.
pub fn input_dir(spool: &Path, queue: Option<&str>) -> PathBuf {
    match queue {
        Some(q) => spool.join(q).join("input"),
        None => spool.join("input"),
    }
}

/// The directory a message's files go to: `input/` or `input/<c>/`.
pub fn message_dir(input: &Path, id: &MessageId, split: bool) -> PathBuf {
    if split {
        input.join(id.split_char().to_string())
    } else {
        input.to_path_buf()
    }
}

/// `<id>-H`, `<id>-D`.
pub fn file_name(id: &MessageId, suffix: char) -> String {
    format!("{id}-{suffix}")
}

/// The two places Exim would look for a message's file (split subdirectory first).
pub fn candidate_paths(input: &Path, id: &MessageId, suffix: char) -> [PathBuf; 2] {
    let name = file_name(id, suffix);
    [message_dir(input, id, true).join(&name), input.join(name)]
}

/// A message's pair of files in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolPair {
    pub id: MessageId,
    pub dir: PathBuf,
}

impl SpoolPair {
    pub fn new(dir: &Path, id: MessageId) -> SpoolPair {
        SpoolPair { id, dir: dir.to_path_buf() }
    }

    /// The pair named by a `-H` path.
    pub fn from_header_path(path: &Path) -> Option<SpoolPair> {
        let name = path.file_name()?.as_encoded_bytes();
        let id = MessageId::from_file_name(name, b'H')?;
        Some(SpoolPair { id, dir: path.parent().unwrap_or(Path::new(".")).to_path_buf() })
    }

    pub fn header_path(&self) -> PathBuf {
        self.dir.join(file_name(&self.id, 'H'))
    }

    pub fn data_path(&self) -> PathBuf {
        self.dir.join(file_name(&self.id, 'D'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_dir_is_the_sixth_character() {
        let id = MessageId::parse(b"1xXORz-0000000058C-2p8L").unwrap();
        assert_eq!(message_dir(Path::new("/s/input"), &id, true), Path::new("/s/input/z"));
        assert_eq!(message_dir(Path::new("/s/input"), &id, false), Path::new("/s/input"));
        let [a, b] = candidate_paths(Path::new("/s/input"), &id, 'D');
        assert_eq!(a, Path::new("/s/input/z/1xXORz-0000000058C-2p8L-D"));
        assert_eq!(b, Path::new("/s/input/1xXORz-0000000058C-2p8L-D"));
    }

    #[test]
    fn pair_from_header_path_validates_the_name() {
        assert!(SpoolPair::from_header_path(Path::new("/q/1xXOQD-0004A8-22-H")).is_some());
        assert!(SpoolPair::from_header_path(Path::new("/q/../etc-H")).is_none());
        assert!(SpoolPair::from_header_path(Path::new("/q/hdr.1xXOQD-0004A8-22")).is_none());
    }
}
