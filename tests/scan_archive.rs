//! `spoolsift scan` over an archive: 5,000 generated pairs in a flat directory and a split
//! `input/` tree, a few of them infected, malformed or incomplete. The report's counts must match
//! what was generated, `--shard` must partition the archive, and the archive must be untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use spoolsift::spool::{IdClock, IdFormat, IdMinter, MessageId};

const TOTAL: usize = 5000;

fn header(id: &MessageId, subject: &str, body_lines: usize) -> String {
    let subject = format!("Subject: {subject}\n");
    format!(
        "{id}-H\nDebian-exim 102 105\n<alice@example.net>\n1795895471 0\n-received_protocol esmtp\n-body_linecount {body_lines}\nXX\n1\nbob@example.org\n\n{:03}  {subject}",
        subject.len()
    )
}

struct Archive {
    _root: tempfile::TempDir,
    dir: PathBuf,
    infected: usize,
    /// The exact error each malformed `-H` must be reported with.
    malformed: Vec<String>,
    incomplete: usize,
}

fn generate() -> Archive {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("archive");
    let flat = dir.join("queuefile");
    let split = dir.join("spool").join("input");
    std::fs::create_dir_all(&flat).unwrap();
    let eicar = String::from_utf8(spoolsift::stages::content::eicar::signature()).unwrap();
    let mut minter =
        IdMinter::new(IdFormat::New23).with_pid(99).with_clock(IdClock::Fixed { secs: 1_795_895_471, micros: 0 });
    let (mut infected, mut malformed, mut incomplete) = (0, Vec::new(), 0);
    for i in 0..TOTAL {
        let id = minter.mint();
        let d = if i % 2 == 0 { flat.clone() } else { split.join(id.split_char().to_string()) };
        std::fs::create_dir_all(&d).unwrap();
        let body = if i % 50 == 7 {
            infected += 1;
            format!("{eicar}\n")
        } else {
            format!("message {i}\nline two\n")
        };
        let mut h = header(&id, &format!("archive {i}"), body.matches('\n').count());
        if i % 500 == 3 {
            // A header one byte shorter than its length says: refused, with file, line and byte.
            let declared = format!("Subject: archive {i}\n").len();
            let offset = h.find("\n\n").unwrap() + 2;
            h = h.replacen("Subject", "Subjec", 1);
            let path = d.join(format!("{id}-H"));
            malformed.push(format!(
                "{}:11 (byte {offset}): header length {declared} runs past the end of the file",
                path.display()
            ));
        }
        std::fs::write(d.join(format!("{id}-H")), h).unwrap();
        if i % 1000 == 11 {
            incomplete += 1;
            continue;
        }
        std::fs::write(d.join(format!("{id}-D")), format!("{id}-D\n{body}")).unwrap();
    }
    Archive { _root: root, dir, infected, malformed, incomplete }
}

/// Every file's bytes and modification time, to prove the scan wrote nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), (std::fs::read(&p).unwrap(), std::fs::metadata(&p).unwrap().modified().unwrap()));
            }
        }
    }
    out
}

fn scan(args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spoolsift")).arg("scan").args(args).output().unwrap();
    let lines = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out.status.code().unwrap(), lines, String::from_utf8(out.stderr).unwrap())
}

#[test]
fn scan_reports_every_pair_and_touches_nothing() {
    let a = generate();
    let before = snapshot(&a.dir);
    let dir = a.dir.to_str().unwrap();
    let (code, lines, stderr) = scan(&["--jobs", "2", dir]);
    assert_eq!(code, 3, "unreadable pairs set the exit status:\n{stderr}");
    assert_eq!(lines.len(), TOTAL, "one line per -H");
    let mut actions: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    for l in &lines {
        match l["action"].as_str() {
            Some(a) => *actions.entry(a.to_string()).or_default() += 1,
            None => errors.push(l["error"].as_str().unwrap().to_string()),
        }
    }
    let clean = TOTAL - a.infected - a.malformed.len() - a.incomplete;
    assert_eq!(actions, BTreeMap::from([("deliver".to_string(), clean), ("quarantine".to_string(), a.infected)]));
    assert_eq!(errors.len(), a.malformed.len() + a.incomplete);
    assert_eq!(errors.iter().filter(|e| *e == "-H without its -D").count(), a.incomplete);
    let mut bad: Vec<String> = errors.into_iter().filter(|e| e != "-H without its -D").collect();
    bad.sort();
    let mut want = a.malformed.clone();
    want.sort();
    assert_eq!(bad, want);
    assert!(stderr.contains(&format!("scanned {} messages", clean + a.infected)), "{stderr}");
    for (what, n) in
        [("deliver", clean), ("quarantine", a.infected), ("content clean", clean), ("content infected", a.infected)]
    {
        assert!(stderr.contains(&format!("\n  {what:<32} {n:>8}\n")), "summary line for {what}: {stderr}");
    }
    assert!(
        stderr.ends_with(&format!("  {:<32} {:>8}\n", "unreadable pairs", a.malformed.len() + a.incomplete)),
        "{stderr}"
    );
    assert_eq!(snapshot(&a.dir), before, "the archive is untouched");
}

#[test]
fn shards_partition_the_archive() {
    let a = generate();
    let dir = a.dir.to_str().unwrap();
    let ids = |shard: &str| -> Vec<String> {
        let (_, lines, _) = scan(&["--shard", shard, dir]);
        lines.iter().filter_map(|l| l["id"].as_str().map(str::to_string)).collect()
    };
    let (s0, s1) = (ids("0/2"), ids("1/2"));
    assert!(!s0.is_empty() && !s1.is_empty());
    let mut both: Vec<String> = s0.iter().chain(&s1).cloned().collect();
    both.sort();
    let (_, all, _) = scan(&[dir]);
    let mut all: Vec<String> = all.iter().filter_map(|l| l["id"].as_str().map(str::to_string)).collect();
    all.sort();
    assert_eq!(both, all);
}
