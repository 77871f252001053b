//! The malformed corpus (`tests/malformed/`, format in its README): every case gives exactly its
//! expected error, with line, byte offset and reason, and nothing in or near the corpus panics the
//! reader.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use spoolsift::spool::header_file::MAX_LINE;
use spoolsift::spool::{DataFile, SpoolError, SpoolHeader};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/malformed");

/// The corpus's valid base message (README.md of the corpus gives its layout).
const BASE: &str = "1xXORz-0000000058C-2p8L-H\nroot 0 0\n<alice@sender.example>\n1795895471 0\n\
-received_time_usec .673212\n--helo_name client.example.net\n-aclm _policy 19\ninbound\nsecond line\n\
-body_linecount 2\n-deliver_firsttime\nXX\n2\nbob@dest.example rfc822;Bob@Dest.Example 23,12  0,-1#3\n\
carol@dest.example\n\n035F From: Alice <alice@sender.example>\n\
047T To: Bob <bob@dest.example>, carol@dest.example\n046  Subject: Test message\n  with a folded subject\n\
017  X-ACL-Added: yes\n";

/// Cases too big to commit, by the name their `expected.txt` gives.
fn generated(case: &str) -> Vec<u8> {
    match case {
        // An option line one byte over Exim's 4 × BIG_BUFFER_SIZE, as line 12 (offset 204).
        "over-long-line" => with_option_line_of(MAX_LINE + 1),
        other => panic!("no generator for case {other}"),
    }
}

/// The base message with a `-local_scan` line of exactly `len` bytes (without its LF) after
/// `-deliver_firsttime`.
fn with_option_line_of(len: usize) -> Vec<u8> {
    let prefix = "-local_scan ";
    let line = format!("{prefix}{}\n", "x".repeat(len - prefix.len()));
    BASE.replacen("-deliver_firsttime\n", &format!("-deliver_firsttime\n{line}"), 1).into_bytes()
}

/// What a case does, from the first line of its `expected.txt`.
enum Action {
    Read(String),
    Data(String),
    Generate(String),
}

fn action(expected: &str) -> Action {
    let first = expected.lines().next().unwrap_or_default();
    let (key, name) = first.split_once(": ").unwrap_or_else(|| panic!("bad first line {first:?}"));
    match key {
        "read" => Action::Read(name.to_string()),
        "data" => Action::Data(name.to_string()),
        "generate" => Action::Generate(name.to_string()),
        _ => panic!("unknown action {key:?}"),
    }
}

/// The error as `expected.txt` spells it, with the path shown as `shown`.
fn render_error(e: &SpoolError, shown: &str) -> String {
    let display = SpoolError { path: Some(PathBuf::from(shown)), ..e.clone() }.to_string();
    format!("error: {display}\nline: {}\noffset: {}\nreason: {:?}\n", e.line, e.offset, e.reason)
}

/// The `-H` a case directory holds (for `data:` cases).
fn header_in(dir: &Path) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().as_encoded_bytes().ends_with(b"-H"))
        .collect();
    assert_eq!(found.len(), 1, "{}: a data case holds exactly one -H", dir.display());
    found.pop().unwrap()
}

/// Run one case; returns what it produced, in `expected.txt`'s format.
fn run_case(dir: &Path, expected: &str) -> String {
    match action(expected) {
        Action::Read(name) => {
            let path = dir.join(&name);
            let head = format!("read: {name}\n");
            match SpoolHeader::read(&path) {
                Err(e) => {
                    assert_eq!(e.path.as_deref(), Some(path.as_path()), "the error names the file read");
                    head + &render_error(&e, &name)
                }
                Ok(h) => {
                    assert_eq!(h.to_bytes(), std::fs::read(&path).unwrap(), "an accepted file is written back as read");
                    format!("{head}parsed: ok\nwas_sorted_on_read: {}\n", h.non_recipients.was_sorted_on_read())
                }
            }
        }
        Action::Data(name) => {
            let h = SpoolHeader::read(&header_in(dir)).expect("the -H of a data case is valid");
            let path = dir.join(&name);
            let head = format!("data: {name}\n");
            match DataFile::open(&path, &h.id) {
                Err(e) => {
                    assert_eq!(e.path.as_deref(), Some(path.as_path()), "the error names the file read");
                    head + &render_error(&e, &name)
                }
                Ok(d) => format!("{head}opened: ok\nbody_len: {}\n", d.body_len()),
            }
        }
        Action::Generate(name) => {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join(&name);
            std::fs::write(&path, generated(dir.file_name().unwrap().to_str().unwrap())).unwrap();
            let head = format!("generate: {name}\n");
            match SpoolHeader::read(&path) {
                Err(e) => head + &render_error(&e, &name),
                Ok(h) => format!("{head}parsed: ok\nwas_sorted_on_read: {}\n", h.non_recipients.was_sorted_on_read()),
            }
        }
    }
}

fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(CORPUS).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

#[test]
fn every_case_gives_exactly_its_expected_result() {
    let dirs = cases();
    assert!(dirs.len() >= 70, "corpus has only {} cases", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expected =
            std::fs::read_to_string(dir.join("expected.txt")).unwrap_or_else(|e| panic!("{case}: expected.txt: {e}"));
        match catch_unwind(AssertUnwindSafe(|| run_case(dir, &expected))) {
            Ok(got) if got == expected => {}
            Ok(got) => failures.push(format!("{case}:\n--- expected\n{expected}--- got\n{got}")),
            Err(_) => failures.push(format!("{case}: PANICKED")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n\n{}", failures.len(), dirs.len(), failures.join("\n"));
}

/// Each case directory holds `expected.txt` and only the files it reads, so nothing unreviewed
/// hides in the corpus.
#[test]
fn case_directories_hold_only_what_they_use() {
    for dir in cases() {
        let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
        let mut want = vec!["expected.txt".to_string()];
        match action(&expected) {
            Action::Read(name) if !name.contains('/') => want.push(name),
            Action::Read(_) | Action::Generate(_) => {}
            Action::Data(name) => {
                want.push(header_in(&dir).file_name().unwrap().to_string_lossy().into_owned());
                want.push(name);
            }
        }
        let mut have: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        have.sort();
        want.sort();
        assert_eq!(have, want, "{}", dir.display());
    }
}

/// The limit is inclusive: a line of exactly `MAX_LINE` bytes is read (and written back).
#[test]
fn a_line_of_exactly_the_limit_is_accepted() {
    let bytes = with_option_line_of(MAX_LINE);
    let h = SpoolHeader::parse(&bytes, None).unwrap();
    assert_eq!(h.options.value("local_scan").map(<[u8]>::len), Some(MAX_LINE - "-local_scan ".len()));
    assert_eq!(h.to_bytes(), bytes);
    assert_eq!(SpoolHeader::parse(BASE.as_bytes(), None).unwrap().to_bytes(), BASE.as_bytes());
}

/// Every input of the corpus, cut at every length, with every single byte dropped, and with each
/// byte replaced by a few structural bytes: the reader never panics, and whatever it accepts it
/// writes back exactly.
#[test]
fn near_misses_of_the_corpus_never_panic() {
    let mut inputs: Vec<Vec<u8>> = vec![BASE.as_bytes().to_vec()];
    for dir in cases() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap() != "expected.txt" {
                inputs.push(std::fs::read(p).unwrap());
            }
        }
    }
    inputs.sort();
    inputs.dedup();
    let check = |b: &[u8]| {
        let r = catch_unwind(|| SpoolHeader::parse(b, None).map(|h| h.to_bytes()));
        match r {
            Err(_) => panic!("parse panicked on {:?}", String::from_utf8_lossy(b)),
            Ok(Ok(out)) => assert_eq!(out, b, "accepted but written back differently"),
            Ok(Err(_)) => {}
        }
    };
    let mut n = 0usize;
    for input in &inputs {
        for cut in 0..=input.len() {
            check(&input[..cut]);
            n += 1;
        }
        for i in 0..input.len() {
            let mut v = input.clone();
            v.remove(i);
            check(&v);
            for b in [b'\n', b' ', b'-', b'0', b'#', b'Y'] {
                let mut v = input.clone();
                v[i] = b;
                check(&v);
            }
            n += 7;
        }
    }
    assert!(n > 100_000, "only {n} variants");
}
