//! End to end with a real Exim (built from Debian's source with the unpatched queuefile transport):
//! SMTP in → queuefile copy → read, add one header, re-queue → Exim delivers to a maildir.
//!
//! Both Exim series (old and new id formats), split spool on and off, keeping the id and minting a
//! new one. Each delivered file must carry the added header exactly once and the body byte for
//! byte as sent, and Exim must log no format error and nothing in its paniclog.

mod support;

use std::time::Duration;

use spoolsift::requeue::{
    self, BodyPlan, EximCommand, IdDecision as Decision, KickOutcome, Kicker, Marker, TargetSpool, Transform,
};
use spoolsift::spool::{DataFile, IdMinter, MessageId, Position, SpoolHeader, SpoolPair};
use support::smtp::{self, Envelope};
use support::{poll, Exim, EximOptions};

const WAIT: Duration = Duration::from_secs(60);

/// A body that exercises the transport: a leading dot, 8-bit bytes, a `From ` line, trailing space.
fn body(tag: &str) -> Vec<u8> {
    let mut b =
        format!("Hello from {tag}.\n.leading dot line\nFrom the start of a line\ntrailing space \n").into_bytes();
    b.extend_from_slice("8-bit: Grüße, naïve café\n".as_bytes());
    for i in 0..50 {
        b.extend_from_slice(format!("line {i:03} {}\n", "x".repeat(i)).as_bytes());
    }
    b
}

fn message(to: &str, tag: &str) -> (Vec<u8>, Vec<u8>) {
    let b = body(tag);
    let mut m = format!(
        "From: Alice <alice@client.test>\nTo: {to}\nSubject: spoolsift e2e {tag}\nMessage-ID: <{tag}@client.test>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
    )
    .into_bytes();
    m.extend_from_slice(&b);
    (m, b)
}

/// The body of a delivered maildir file: everything after the first blank line.
fn delivered_body(file: &[u8]) -> &[u8] {
    let at = file.windows(2).position(|w| w == b"\n\n").expect("header/body separator");
    &file[at + 2..]
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Wait until queuefile has copied `id` out and Exim has finished with the original.
fn wait_for_copy(exim: &Exim, target: &TargetSpool, id: &MessageId) -> SpoolPair {
    let pair = SpoolPair::new(&exim.queuefile_dir(), id.clone());
    poll("the queuefile copy and the end of the delivery attempt", WAIT, || {
        let present = pair.header_path().exists() && pair.data_path().exists();
        (present && requeue::decide(target, id, &Marker::default()).ok()? != Decision::Busy).then_some(())
    });
    pair
}

fn round_trip(series: &'static str, split: bool, keep_id: bool) {
    let exim = Exim::start(EximOptions { series, mode: "queuefile", split });
    let exim_cmd = EximCommand::new(exim.argv());
    assert_eq!(exim_cmd.split_spool_directory().unwrap(), split, "exim -bP split_spool_directory");
    let target = TargetSpool::new(&exim.spool(), None).unwrap().with_split(split);
    let tag = format!("{series}-{}-{}", if split { "split" } else { "flat" }, if keep_id { "keep" } else { "mint" });
    let (data, sent_body) = message("bob@test.example", &tag);
    let id = MessageId::parse(
        smtp::send(
            exim.port,
            &Envelope { from: "alice@client.test", mail_params: "", rcpts: &[("bob@test.example", "")] },
            &data,
        )
        .as_bytes(),
    )
    .unwrap();
    let pair = wait_for_copy(&exim, &target, &id);
    assert_eq!(requeue::decide(&target, &id, &Marker::default()).unwrap(), Decision::KeepId, "single recipient: done");

    let mut header = SpoolHeader::read(&pair.header_path()).unwrap();
    let external = DataFile::open(&pair.data_path(), &id).unwrap();
    let transform = Transform::default();
    transform.apply(&mut header);
    header.headers.add(b"X-Spoolsift-E2E", tag.as_bytes(), Position::AfterFirstReceived).unwrap();
    let committed = if keep_id {
        requeue::commit(&target, &header, BodyPlan::Link(&pair.data_path())).unwrap()
    } else {
        let new_id = IdMinter::new(id.format()).mint();
        transform.change_id(&mut header, new_id);
        requeue::commit(&target, &header, BodyPlan::Copy(&external)).unwrap()
    };
    drop(external);
    requeue::remove_external_pair(&pair).unwrap();
    assert_eq!(committed.id == id, keep_id);
    let expected_dir =
        if split { target.input.join(committed.id.split_char().to_string()) } else { target.input.clone() };
    assert_eq!(committed.header_path.parent().unwrap(), expected_dir);

    // -Mc returns once Exim has delivered: the kick's own check already sees the message gone.
    assert_eq!(
        Kicker::new(exim_cmd).kick(&target, std::slice::from_ref(&committed.id)),
        vec![(committed.id.clone(), KickOutcome::Delivered)]
    );
    let files = poll("delivery to bob's maildir", WAIT, || {
        let f = exim.delivered("bob");
        (!f.is_empty()).then_some(f)
    });
    assert_eq!(files.len(), 1, "exactly one copy delivered");
    let file = &files[0];
    assert_eq!(count(file, format!("\nX-Spoolsift-E2E: {tag}\n").as_bytes()), 1, "{}", String::from_utf8_lossy(file));
    assert_eq!(delivered_body(file), sent_body.as_slice(), "body must be byte-identical");
    poll("the re-queued message to complete", WAIT, || {
        exim.mainlog().contains(&format!("{} Completed", committed.id)).then_some(())
    });
    assert!(support::list(&exim.queuefile_dir()).is_empty(), "queuefile directory is empty again");
    exim.assert_clean_logs();
}

#[test]
fn bookworm_flat_keep_id() {
    round_trip("bookworm", false, true);
}

#[test]
fn bookworm_flat_mint_id() {
    round_trip("bookworm", false, false);
}

#[test]
fn bookworm_split_keep_id() {
    round_trip("bookworm", true, true);
}

#[test]
fn bookworm_split_mint_id() {
    round_trip("bookworm", true, false);
}

#[test]
fn trixie_flat_keep_id() {
    round_trip("trixie", false, true);
}

#[test]
fn trixie_flat_mint_id() {
    round_trip("trixie", false, false);
}

#[test]
fn trixie_split_keep_id() {
    round_trip("trixie", true, true);
}

#[test]
fn trixie_split_mint_id() {
    round_trip("trixie", true, false);
}

/// The unpatched queuefile transport runs once per recipient: the first recipient's call creates
/// the pair (listing every recipient, tree still empty), the others defer with EEXIST and the
/// original stays queued with the first recipient in its non-recipients tree. This is the
/// behaviour the engine's dedupe must handle.
fn once_per_recipient(series: &'static str) {
    let exim = Exim::start(EximOptions { series, mode: "queuefile", split: false });
    let target = TargetSpool::new(&exim.spool(), None).unwrap();
    let rcpts = [("bob@test.example", ""), ("carol@test.example", ""), ("dave@test.example", "")];
    let (data, _) = message("bob@test.example, carol@test.example, dave@test.example", "three");
    let id = smtp::send(exim.port, &Envelope { from: "alice@client.test", mail_params: "", rcpts: &rcpts }, &data);
    let id = MessageId::parse(id.as_bytes()).unwrap();
    poll("two EEXIST deferrals in the mainlog", WAIT, || {
        (exim.mainlog().matches(&format!("{id} == ")).count() == 2).then_some(())
    });
    let log = exim.mainlog();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str())).collect();
    assert_eq!(lines.iter().filter(|l| l.contains(" => ")).count(), 1, "{log}");
    let defers: Vec<&&str> = lines.iter().filter(|l| l.contains(" == ")).collect();
    assert!(defers.iter().all(|l| l.contains("File exists")), "{defers:?}");
    assert!(!log.contains(&format!("{id} Completed")));

    let pair = wait_for_copy(&exim, &target, &id);
    let copy = SpoolHeader::read(&pair.header_path()).unwrap();
    assert_eq!(copy.recipients.len(), 3, "the copy lists every recipient");
    assert!(copy.non_recipients.is_empty(), "taken before any recipient was marked delivered");
    assert_eq!(requeue::decide(&target, &id, &Marker::default()).unwrap(), Decision::MintId);
    let original = SpoolHeader::read(&target.input.join(format!("{id}-H"))).unwrap();
    let done: Vec<&[u8]> = original.non_recipients.iter().collect();
    assert_eq!(done.len(), 1, "exactly the first recipient is done in the original");
    assert_eq!(original.pending_recipients().count(), 2);
    assert!(!original.options.has("deliver_firsttime"), "rewritten after the first attempt");
    let bpr = String::from_utf8(exim.exim(&["-bpr"]).stdout).unwrap();
    assert!(bpr.contains(&format!("D {}", String::from_utf8_lossy(done[0]))), "{bpr}");
    exim.assert_clean_logs();
}

#[test]
fn bookworm_queuefile_runs_once_per_recipient() {
    once_per_recipient("bookworm");
}

#[test]
fn trixie_queuefile_runs_once_per_recipient() {
    once_per_recipient("trixie");
}

/// Every fixture of a series dropped into a live Exim's spool: `exim -bpr` lists each message the
/// way `inspect` reads it (sender, recipients in order, which are delivered, frozen, size).
fn live_bpr_agrees(series: &'static str, prefix: &str) {
    let exim = Exim::start(EximOptions { series, mode: "queue-only", split: false });
    let input = exim.spool().join("input");
    std::fs::create_dir_all(&input).unwrap();
    let mut expected = Vec::new();
    for (dir, header) in support::fixtures::fixtures() {
        if !dir.file_name().unwrap().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let name = header.file_name().unwrap().to_owned();
        let data = header.with_file_name(name.to_string_lossy().replace("-H", "-D"));
        std::fs::copy(&data, input.join(data.file_name().unwrap())).unwrap();
        std::fs::copy(&header, input.join(&name)).unwrap();
        expected.push(support::fixtures::describe(&header));
    }
    assert!(expected.len() >= 10, "{series}: {} fixtures", expected.len());
    let out = exim.exim(&["-bpr"]);
    let mut listed = support::fixtures::parse_bpr(&String::from_utf8_lossy(&out.stdout));
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, expected);
    exim.assert_clean_logs();
}

#[test]
fn bookworm_lists_the_fixtures_as_inspect_reads_them() {
    live_bpr_agrees("bookworm", "b496-");
}

#[test]
fn trixie_lists_the_fixtures_as_inspect_reads_them() {
    live_bpr_agrees("trixie", "t498-");
}

/// Exim's `lmdb` lookup copies a value with `string_copyn`, which measures it with `strlen` first:
/// a value stored without a NUL after it is read past its end. When it is the last thing in the
/// file (the first record of a new database is: LMDB fills a leaf page from its end, and pads a
/// record to an even length, with a zero only when it is odd), that read runs off the mapped file
/// and the delivery process dies of SIGBUS, at every attempt.
#[test]
fn exim_reads_each_verdict_back_even_the_last_bytes_of_the_file() {
    use spoolsift::state::verdicts::{VerdictDb, VerdictEntry};
    let exim = Exim::start(EximOptions { series: "trixie", mode: "plain", split: false });
    // Verdict texts one byte apart, so that one of the two records needs no padding.
    for verdict in ["clean", "clean."] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verdicts.mdb");
        let entry = |n: usize| VerdictEntry {
            original_id: format!("1xXOQD-0004A{n}-22"),
            requeued_id: None,
            action: "deliver".into(),
            verdict: format!("{verdict} {n}"),
            expires: 1_900_000_000,
        };
        let lookup = |id: &str| {
            let out = exim.exim(&["-be", &format!("${{lookup{{{id}}}lmdb{{{}}}}}", path.display())]);
            assert!(out.status.success(), "exim -be {id}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim_end_matches('\n').to_string()
        };
        let db = VerdictDb::open(&path).unwrap();
        db.record(&[entry(0)]).unwrap();
        assert_eq!(lookup("1xXOQD-0004A0-22"), entry(0).value());
        db.record(&(1..10).map(entry).collect::<Vec<_>>()).unwrap();
        for n in 0..10 {
            assert_eq!(lookup(&format!("1xXOQD-0004A{n}-22")), entry(n).value());
            // Our own reader gives the same text, without the terminator.
            assert_eq!(db.get(&format!("1xXOQD-0004A{n}-22")).unwrap(), Some(entry(n).value()));
        }
        assert_eq!(db.expire(1_900_000_000).unwrap(), 10, "the expiry is read through the terminator");
    }
}
