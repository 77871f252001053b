//! The non-recipients tree: addresses already delivered, stored by Exim as a binary search tree in
//! pre-order (`<L><R> <address>` per node, `XX` when empty).
//!
//! Exim looks addresses up with `strcmp` but never checks the order on read, so an unsorted tree
//! parses and then silently misses entries, and those recipients are delivered again. We read the
//! tree as a set (membership is what "already delivered" means), remember whether the file's tree was
//! a proper search tree, and always write a sorted, balanced tree when the set changed.

use std::collections::BTreeSet;

/// One node line as read: the address and its child flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeNodeLine<'a> {
    pub left: bool,
    pub right: bool,
    pub address: &'a [u8],
}

/// Parse one `YN address` node line (without its LF).
pub(crate) fn parse_node(line: &[u8]) -> Result<TreeNodeLine<'_>, &'static str> {
    if line.len() < 4 {
        return Err("node line shorter than `NN x`");
    }
    let flag = |b: u8| match b {
        b'Y' => Ok(true),
        b'N' => Ok(false),
        _ => Err("child flags must be Y or N"),
    };
    if line[2] != b' ' {
        return Err("node line needs a space after the two child flags");
    }
    Ok(TreeNodeLine { left: flag(line[0])?, right: flag(line[1])?, address: &line[3..] })
}

/// The set of addresses Exim has finished with, plus the lines it was read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NonRecipients {
    set: BTreeSet<Vec<u8>>,
    /// The lines as read (each with its LF) and the set they gave; written back unchanged while the
    /// set is still equal, so an unmodified file round-trips byte for byte.
    original: Option<(Vec<u8>, BTreeSet<Vec<u8>>)>,
    /// Whether the tree as read was a strict search tree (false means Exim would miss entries).
    sorted_on_read: bool,
}

impl NonRecipients {
    pub fn new() -> Self {
        NonRecipients { set: BTreeSet::new(), original: None, sorted_on_read: true }
    }

    pub(crate) fn from_read(set: BTreeSet<Vec<u8>>, raw: Vec<u8>, sorted: bool) -> Self {
        NonRecipients { original: Some((raw, set.clone())), set, sorted_on_read: sorted }
    }

    pub fn contains(&self, address: &[u8]) -> bool {
        self.set.contains(address)
    }

    pub fn insert(&mut self, address: &[u8]) -> bool {
        self.set.insert(address.to_vec())
    }

    pub fn remove(&mut self, address: &[u8]) -> bool {
        self.set.remove(address)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.set.iter().map(Vec::as_slice)
    }

    /// False when the file held a tree whose order Exim's lookups would get wrong.
    pub fn was_sorted_on_read(&self) -> bool {
        self.sorted_on_read
    }

    /// Forget the lines as read, so the next write emits a sorted balanced tree even if the set is
    /// unchanged (used when re-queueing a file whose tree was unsorted).
    pub fn force_rewrite(&mut self) {
        self.original = None;
        self.sorted_on_read = true;
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        if let Some((raw, set)) = &self.original {
            if *set == self.set {
                out.extend_from_slice(raw);
                return;
            }
        }
        if self.set.is_empty() {
            out.extend_from_slice(b"XX\n");
            return;
        }
        let keys: Vec<&[u8]> = self.set.iter().map(Vec::as_slice).collect();
        write_balanced(&keys, out);
    }
}

/// Pre-order of a balanced search tree over sorted unique keys: middle element as root.
fn write_balanced(keys: &[&[u8]], out: &mut Vec<u8>) {
    // Explicit stack: a long list must not exhaust the call stack.
    let mut stack = vec![(0usize, keys.len())];
    while let Some((lo, hi)) = stack.pop() {
        if lo >= hi {
            continue;
        }
        let mid = lo + (hi - lo) / 2;
        out.push(if mid > lo { b'Y' } else { b'N' });
        out.push(if mid + 1 < hi { b'Y' } else { b'N' });
        out.push(b' ');
        out.extend_from_slice(keys[mid]);
        out.push(b'\n');
        stack.push((mid + 1, hi));
        stack.push((lo, mid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_tree_is_sorted_preorder() {
        let mut t = NonRecipients::new();
        for a in ["d@x", "a@x", "c@x", "b@x", "e@x"] {
            t.insert(a.as_bytes());
        }
        let mut out = Vec::new();
        t.write(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "YY c@x\nYN b@x\nNN a@x\nYN e@x\nNN d@x\n");
    }

    #[test]
    fn empty_is_xx() {
        let mut out = Vec::new();
        NonRecipients::new().write(&mut out);
        assert_eq!(out, b"XX\n");
    }
}
