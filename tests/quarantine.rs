//! `spoolsift quarantine` on what the daemon quarantined: a message queuefile copied once per
//! recipient is one entry; it is found by its key or its Exim id; a release delivers each
//! recipient once, and a second release (or one after a release that stopped) does not deliver
//! again.

mod support;

use spoolsift::spool::SpoolHeader;
use support::made::eicar_text;
use support::spoolsift;
use support::{list, standalone_pipeline, Standalone};

const ID: &str = "1zzzzz-00000000001-0007";
const RCPTS: [&str; 3] = ["bob@example.org", "carol@example.org", "dave@example.org"];

/// A queuefile copy of the infected message, with `done` recipients delivered already.
fn drop_copy(w: &Standalone, done: usize) {
    let subject = "Subject: infected";
    let mut h = format!(
        "{ID}-H\nDebian-exim 102 105\n<alice@example.org>\n1795895471 0\n-received_protocol local\n-body_linecount 1\n"
    );
    if done == 0 {
        h.push_str("XX\n");
    } else {
        // The non-recipients tree: one node per delivered address (Exim's balanced tree, here a chain).
        for (i, r) in RCPTS[..done].iter().enumerate() {
            let right = if i + 1 < done { 'Y' } else { 'N' };
            h.push_str(&format!("N{right} {r}\n"));
        }
    }
    h.push_str(&format!("{}\n", RCPTS.len()));
    for r in RCPTS {
        h.push_str(&format!("{r}\n"));
    }
    h.push_str(&format!("\n{:03}  {subject}\n", subject.len() + 1));
    std::fs::write(w.qf.join(format!("{ID}-D")), format!("{ID}-D\n{}\n", eicar_text())).unwrap();
    std::fs::write(w.qf.join(format!("{ID}-H")), h).unwrap();
}

#[test]
fn one_entry_per_message_released_once() {
    let w = Standalone::new();
    let pipeline = standalone_pipeline(&w.root, "quarantine", "");
    let p = pipeline.to_str().unwrap();
    // queuefile's three copies, one per recipient attempt, each taken by its own run.
    for done in 0..3 {
        drop_copy(&w, done);
        let o = spoolsift(&["watch", "--pipeline", p, "--once"]);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(list(&w.qf).is_empty());
    }
    let o = spoolsift(&["quarantine", "--pipeline", p, "list"]);
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(listing.lines().count(), 1, "{listing}");
    let key = list(&w.root.join("work/quarantine")).pop().unwrap();
    // The size listed: the -D file and the live header fields.
    let data = w.root.join("work/quarantine").join(&key).join(format!("{ID}-D"));
    let size = std::fs::metadata(&data).unwrap().len() as usize + "Subject: infected\n".len();
    let after = listing.trim_end().strip_prefix(&format!("{key} {ID} ")).unwrap_or_else(|| panic!("{listing}"));
    let (when, rest) = after.split_once(' ').unwrap();
    assert_eq!(when.len(), "2026-12-02T14:12:27Z".len(), "{listing}");
    assert!(when.ends_with('Z') && when.as_bytes()[10] == b'T', "{listing}");
    assert_eq!(
        rest,
        format!(
            "{size} <alice@example.org> -> bob@example.org,carol@example.org,dave@example.org \"infected\": \
             content: infected (Eicar-Test-Signature)"
        ),
        "{listing}"
    );
    // As JSON, one object per entry.
    let o = spoolsift(&["quarantine", "--pipeline", p, "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["key"].as_str(), v["id"].as_str(), v["size"].as_u64()),
        (Some(key.as_str()), Some(ID), Some(size as u64))
    );
    assert_eq!(v["recipients"], serde_json::json!(RCPTS));
    assert_eq!(v["subject"], "infected");
    assert_eq!(v["releasing"], serde_json::Value::Null);

    // By its Exim id: one re-queued copy, for all three recipients.
    let o = spoolsift(&["quarantine", "--pipeline", p, "release", ID]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let queued: Vec<String> = list(&w.input).into_iter().filter(|n| n.ends_with("-H")).collect();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let h = SpoolHeader::read(&w.input.join(&queued[0])).unwrap();
    let pending: Vec<String> =
        h.pending_recipients().map(|(_, r)| String::from_utf8_lossy(r.address()).into_owned()).collect();
    assert_eq!(pending, RCPTS);
    // Again: nothing more.
    let o = spoolsift(&["quarantine", "--pipeline", p, "release", ID]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&o.stderr), format!("spoolsift quarantine: no quarantine entry \"{ID}\"\n"));
    assert_eq!(list(&w.input).iter().filter(|n| n.ends_with("-H")).count(), 1);
}

#[test]
fn a_release_that_stopped_half_way_is_not_repeated() {
    let w = Standalone::new();
    let pipeline = standalone_pipeline(&w.root, "quarantine", "");
    let p = pipeline.to_str().unwrap();
    drop_copy(&w, 0);
    assert_eq!(spoolsift(&["watch", "--pipeline", p, "--once"]).status.code(), Some(0));
    let quarantine = w.root.join("work/quarantine");
    let key = list(&quarantine).pop().unwrap();
    // A release that named its id and stopped (or one running at this moment).
    std::fs::write(quarantine.join(&key).join("releasing"), "1zzzzz-00000000009-0007\n").unwrap();
    let o = spoolsift(&["quarantine", "--pipeline", p, "release", &key]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "spoolsift quarantine: {key} was released already, as 1zzzzz-00000000009-0007: see `exim -bp`; \
             delete the entry once that is settled\n"
        )
    );
    assert!(list(&w.input).is_empty(), "nothing queued");
    let o = spoolsift(&["quarantine", "--pipeline", p, "list"]);
    assert!(String::from_utf8_lossy(&o.stdout).ends_with(" (released as 1zzzzz-00000000009-0007)\n"));
}

#[test]
fn entries_older_than_keep_days_expire() {
    let w = Standalone::new();
    let keep = |days: u64| standalone_pipeline(&w.root, "quarantine", &format!("[quarantine]\nkeep_days = {days}\n"));
    let pipeline = keep(30);
    let p = pipeline.to_str().unwrap();
    drop_copy(&w, 0);
    assert_eq!(spoolsift(&["watch", "--pipeline", p, "--once"]).status.code(), Some(0));
    let quarantine = w.root.join("work/quarantine");
    let key = list(&quarantine).pop().unwrap();
    // 29 days old: kept.
    let age = |days: u64| {
        let when = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86400);
        std::fs::File::options()
            .write(true)
            .open(quarantine.join(&key).join("verdict.json"))
            .unwrap()
            .set_modified(when)
            .unwrap();
    };
    age(29);
    let o = spoolsift(&["quarantine", "--pipeline", p, "expire"]);
    assert_eq!((o.status.code(), String::from_utf8_lossy(&o.stdout).as_ref()), (Some(0), ""));
    // 31 days old, with keep_days = 0: kept for ever.
    age(31);
    let forever = keep(0);
    let o = spoolsift(&["quarantine", "--pipeline", forever.to_str().unwrap(), "expire"]);
    assert_eq!((o.status.code(), String::from_utf8_lossy(&o.stdout).as_ref()), (Some(0), ""));
    assert_eq!(list(&quarantine), std::slice::from_ref(&key));
    // With 30: gone.
    let pipeline = keep(30);
    let o = spoolsift(&["quarantine", "--pipeline", pipeline.to_str().unwrap(), "expire"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("expired {key} {ID}\n"));
    assert!(list(&quarantine).is_empty());
}
