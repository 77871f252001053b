//! The re-queue procedure against a spool directory on disk (the real-Exim tests are in
//! `exim_e2e.rs`): what lands where, with which bytes, owner and mode, and what is refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use spoolsift::requeue::{
    self, BodyPlan, IdDecision as Decision, Marker, RequeueError, SpoolLook, TargetSpool, Transform,
};
use spoolsift::spool::{DataFile, DataLock, IdFormat, IdMinter, MessageId, SpoolHeader};

const ID: &str = "1xXORz-0000000058C-2p8L";

fn spec_example() -> (SpoolHeader, std::path::PathBuf) {
    let dir = Path::new("tests/data/spec-example");
    (SpoolHeader::read(&dir.join(format!("{ID}-H"))).unwrap(), dir.join(format!("{ID}-D")))
}

fn target(root: &Path) -> TargetSpool {
    std::fs::create_dir_all(root.join("input")).unwrap();
    TargetSpool::new(root, None).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn transform_follows_the_procedure() {
    let (mut h, _) = spec_example();
    h.options.set(spoolsift::spool::OptionLine::with_value("frozen", b"1795895999"));
    h.options.set(spoolsift::spool::OptionLine::flag("manual_thaw"));
    Transform::default().apply(&mut h);
    let text = String::from_utf8(h.to_bytes()).unwrap();
    assert!(!text.contains("-frozen") && !text.contains("-manual_thaw"));
    // The marker goes after `_policy` (ACL variables are written sorted by name)...
    assert!(
        text.contains("-aclm _policy 19\ninbound\nsecond line\n-aclm _scanned 3\nyes\n-body_linecount 2\n"),
        "{text}"
    );
    // ...NOTIFY=SUCCESS,FAILURE loses SUCCESS (Exim already sent that DSN at queuefile time).
    assert!(text.contains("\nbob@dest.example rfc822;Bob@Dest.Example 23,8  0,-1#3\ncarol@dest.example\n"));
    assert!(text.contains("-deliver_firsttime\n"), "kept: it drives $first_delivery");
    let again = SpoolHeader::parse(text.as_bytes(), None).unwrap();
    assert!(Marker::default().is_on(&again));
}

#[test]
fn success_only_becomes_never() {
    let mut h = SpoolHeader::parse(
        b"1xXOQD-0004A8-22-H\nDebian-exim 102 105\n<s@x>\n1795895361 0\n-body_linecount 0\nXX\n1\nb@x  0,4  0,-1#3\n\n",
        None,
    )
    .unwrap();
    Transform::default().apply(&mut h);
    assert_eq!(h.recipients[0].fields.dsn_flags, 2);
}

#[test]
fn commit_under_a_new_id_copies_and_rewrites_the_first_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let t = target(tmp.path()).with_mode(0o640);
    let (mut h, data_path) = spec_example();
    let data = DataFile::open(&data_path, &h.id).unwrap();
    let tr = Transform::default();
    tr.apply(&mut h);
    let new_id = IdMinter::new(IdFormat::New23).mint();
    tr.change_id(&mut h, new_id.clone());
    let done = requeue::commit(&t, &h, BodyPlan::Copy(&data)).unwrap();
    assert_eq!(names(&t.input), [format!("{new_id}-D"), format!("{new_id}-H")]);
    let d = std::fs::read(&done.data_path).unwrap();
    assert_eq!(d, format!("{new_id}-D\nHello Bob.\nThis is line two.\n").as_bytes());
    let written = SpoolHeader::read(&done.header_path).unwrap();
    assert_eq!(written.id, new_id);
    let orig = written.options.acl(spoolsift::spool::AclScope::Message, b"_orig_id").unwrap();
    assert_eq!(orig.value, ID.as_bytes());
    for p in [&done.data_path, &done.header_path] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        let dir = std::fs::metadata(&t.input).unwrap();
        assert_eq!((m.uid(), m.gid()), (dir.uid(), dir.gid()));
    }
}

#[test]
fn owner_and_mode_are_what_the_target_asks_whatever_the_umask_or_the_directory_gives() {
    let tmp = tempfile::tempdir().unwrap();
    // The usual umask (022) narrows 0664; a file created with it must be widened again.
    let mut t = target(tmp.path()).with_mode(0o664);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // As root: an owner other than ours, in a set-gid directory of a third group.
        std::os::unix::fs::chown(&t.input, None, Some(4321)).unwrap();
        std::fs::set_permissions(&t.input, std::fs::Permissions::from_mode(0o2750)).unwrap();
        t = t.with_owner(Some((1234, 5678)));
    }
    let (mut h, data_path) = spec_example();
    let data = DataFile::open(&data_path, &h.id).unwrap();
    Transform::default().apply(&mut h);
    let done = requeue::commit(&t, &h, BodyPlan::Copy(&data)).unwrap();
    let owner = t.owner.unwrap();
    for p in [&done.data_path, &done.header_path] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o664, "{}", p.display());
        assert_eq!((m.uid(), m.gid()), owner, "{}", p.display());
    }
}

#[test]
fn commit_keeping_the_id_links_the_body_and_refuses_a_second_time() {
    let tmp = tempfile::tempdir().unwrap();
    let ext = tmp.path().join("qf");
    std::fs::create_dir(&ext).unwrap();
    let (mut h, data_path) = spec_example();
    std::fs::copy(&data_path, ext.join(format!("{ID}-D"))).unwrap();
    let t = target(&tmp.path().join("spool"));
    assert_eq!(requeue::decide(&t, &h.id, &Marker::default()).unwrap(), Decision::KeepId);
    Transform::default().apply(&mut h);
    let ext_d = ext.join(format!("{ID}-D"));
    let done = requeue::commit(&t, &h, BodyPlan::Link(&ext_d)).unwrap();
    assert_eq!(std::fs::metadata(&done.data_path).unwrap().ino(), std::fs::metadata(&ext_d).unwrap().ino());
    assert_eq!(requeue::decide(&t, &h.id, &Marker::default()).unwrap(), Decision::AlreadyRequeued);
    let again = requeue::commit(&t, &h, BodyPlan::Link(&ext_d));
    assert!(matches!(again, Err(RequeueError::AlreadyQueued(_))), "{again:?}");
    assert_eq!(names(&t.input), [format!("{ID}-D"), format!("{ID}-H")], "no temp file left behind");
}

#[test]
fn split_spool_goes_into_the_sixth_character_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let t = target(tmp.path()).with_split(true);
    let (h, data_path) = spec_example();
    let data = DataFile::open(&data_path, &h.id).unwrap();
    let done = requeue::commit(&t, &h, BodyPlan::Copy(&data)).unwrap();
    assert_eq!(done.header_path, t.input.join("z").join(format!("{ID}-H")));
    assert_eq!(std::fs::metadata(t.input.join("z")).unwrap().permissions().mode() & 0o7777, 0o750);
}

#[test]
fn a_missing_directory_is_made_when_first_needed_and_a_missing_body_is_still_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ext = tmp.path().join("qf");
    std::fs::create_dir(&ext).unwrap();
    let (mut h, data_path) = spec_example();
    let ext_d = ext.join(format!("{ID}-D"));
    // The split subdirectory is ours to make; a body that is not there is not mistaken for it.
    let t = target(&tmp.path().join("spool")).with_split(true);
    let gone = requeue::write_data(&t, &h.id, BodyPlan::Link(&ext_d));
    assert!(matches!(gone, Err(RequeueError::Io { op: "link", .. })), "{gone:?}");
    std::fs::copy(&data_path, &ext_d).unwrap();
    Transform::default().apply(&mut h);
    let done = requeue::commit(&t, &h, BodyPlan::Link(&ext_d)).unwrap();
    assert_eq!(done.header_path, t.input.join("z").join(format!("{ID}-H")));
    assert_eq!(std::fs::metadata(t.input.join("z")).unwrap().permissions().mode() & 0o7777, 0o750);
}

#[test]
fn a_temporary_header_left_by_an_interrupted_attempt_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let t = target(tmp.path());
    let (mut h, data_path) = spec_example();
    Transform::default().apply(&mut h);
    let stale = requeue::header_temp_path(&t, &h.id);
    std::fs::write(&stale, b"half a header").unwrap();
    let data = DataFile::open(&data_path, &h.id).unwrap();
    requeue::write_data(&t, &h.id, BodyPlan::Copy(&data)).unwrap();
    assert_eq!(requeue::prepare_header(&t, &h).unwrap(), stale);
    assert_eq!(std::fs::read(&stale).unwrap(), h.to_bytes());
    requeue::publish_header(&t, &h.id).unwrap();
    assert_eq!(names(&t.input), [format!("{ID}-D"), format!("{ID}-H")]);
}

#[test]
fn decide_sees_exims_lock_and_its_own_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let t = target(tmp.path());
    let (h, data_path) = spec_example();
    let id: MessageId = h.id.clone();
    let d = t.input.join(format!("{ID}-D"));
    let hp = t.input.join(format!("{ID}-H"));
    // `-H` alone: Exim is between the two unlinks of a completing message.
    std::fs::copy(Path::new("tests/data/spec-example").join(format!("{ID}-H")), &hp).unwrap();
    assert_eq!(requeue::decide(&t, &id, &Marker::default()).unwrap(), Decision::Busy);
    std::fs::copy(&data_path, &d).unwrap();
    assert_eq!(requeue::decide(&t, &id, &Marker::default()).unwrap(), Decision::MintId);
    let held = DataLock::try_acquire(&d, id.first_line_len() as u64).unwrap().unwrap();
    assert_eq!(requeue::decide(&t, &id, &Marker::default()).unwrap(), Decision::Busy);
    drop(held);
    let mut marked = h.clone();
    Transform::default().apply(&mut marked);
    std::fs::write(&hp, marked.to_bytes()).unwrap();
    assert_eq!(requeue::decide(&t, &id, &Marker::default()).unwrap(), Decision::AlreadyRequeued);
    std::fs::remove_file(&hp).unwrap();
    std::fs::remove_file(&d).unwrap();
    assert_eq!(requeue::decide(&t, &id, &Marker::default()).unwrap(), Decision::KeepId);
}

#[test]
fn a_batchs_look_finds_originals_in_either_place_and_remembers_only_missing_subdirectories() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, data_path) = spec_example();
    let id = h.id.clone();
    let original = |dir: &Path| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(&data_path, dir.join(format!("{ID}-D"))).unwrap();
        std::fs::copy(Path::new("tests/data/spec-example").join(format!("{ID}-H")), dir.join(format!("{ID}-H")))
            .unwrap();
    };
    let flat = target(&tmp.path().join("flat"));
    let m = Marker::default();
    // Our spool is flat, but Exim's may have been split when the original came in: it is found.
    original(&flat.input.join("z"));
    assert_eq!(SpoolLook::for_batch(&flat).decide(&id, &m).unwrap(), Decision::MintId);
    std::fs::remove_dir_all(flat.input.join("z")).unwrap();
    original(&flat.input);
    assert_eq!(SpoolLook::for_batch(&flat).decide(&id, &m).unwrap(), Decision::MintId);
    std::fs::remove_dir_all(&flat.input).unwrap();
    std::fs::create_dir(&flat.input).unwrap();
    // A subdirectory missing when the batch looked stays missing for that batch (only a message
    // received after its copy was claimed could be put there, and none is); the next batch looks
    // again.
    let mut batch = SpoolLook::for_batch(&flat);
    assert_eq!(batch.decide(&id, &m).unwrap(), Decision::KeepId);
    original(&flat.input.join("z"));
    assert_eq!(batch.decide(&id, &m).unwrap(), Decision::KeepId);
    assert_eq!(SpoolLook::for_batch(&flat).decide(&id, &m).unwrap(), Decision::MintId);
    // With a split target our own re-queues make subdirectories, so nothing is remembered.
    let split = target(&tmp.path().join("split")).with_split(true);
    let mut batch = SpoolLook::for_batch(&split);
    assert_eq!(batch.decide(&id, &m).unwrap(), Decision::KeepId);
    original(&split.input.join("z"));
    assert_eq!(batch.decide(&id, &m).unwrap(), Decision::MintId);
}

#[test]
fn new_body_counts_are_recorded() {
    let (mut h, _) = spec_example();
    let body = b"one\ntwo\0\nthree\n";
    requeue::transform::set_body_counts(&mut h, &spoolsift::spool::BodyCounts::of_bytes(body));
    assert_eq!(h.body_linecount(), Some(3));
    assert_eq!(h.options.number("body_zerocount"), Some(1));
    assert_eq!(h.options.number("max_received_linelength"), Some(46), "describes reception; unchanged");
    let tmp = tempfile::tempdir().unwrap();
    let t = target(tmp.path());
    let done = requeue::commit(&t, &h, BodyPlan::Bytes(body)).unwrap();
    assert_eq!(std::fs::read(done.data_path).unwrap(), [format!("{ID}-D\n").as_bytes(), body].concat());
}
