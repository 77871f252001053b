//! The worked example of the spool specification (a `-H` written by Exim 4.100-dev), read field by
//! field, written back byte for byte, and edited.

use std::path::Path;

use spoolsift::spool::{AclScope, DataFile, HeaderFlag, MessageView, Position, Removal, SpoolHeader};

const DIR: &str = "tests/data/spec-example";
const ID: &str = "1xXORz-0000000058C-2p8L";

fn read() -> (Vec<u8>, SpoolHeader) {
    let path = Path::new(DIR).join(format!("{ID}-H"));
    let bytes = std::fs::read(&path).unwrap();
    (bytes, SpoolHeader::read(&path).unwrap())
}

#[test]
fn every_field_is_read() {
    let (_, h) = read();
    assert_eq!(h.id.as_str(), ID);
    assert_eq!((h.originator.login.as_slice(), h.originator.uid, h.originator.gid), (&b"root"[..], 0, 0));
    assert_eq!(h.sender, b"alice@sender.example");
    assert_eq!((h.received_time, h.warning_count), (1_795_895_471, 0));
    assert_eq!(h.options.0.len(), 15);
    let helo = h.options.get("helo_name").unwrap();
    assert!(helo.tainted);
    assert_eq!(helo.value.as_deref(), Some(&b"client.example.net"[..]));
    assert!(!h.options.get("ident").unwrap().tainted);
    let conn = h.options.acl(AclScope::Connection, b"_conn").unwrap();
    assert!(conn.tainted);
    assert_eq!(conn.value, b"client-said-client.example.net");
    assert_eq!(h.options.acl(AclScope::Message, b"_policy").unwrap().value, b"inbound\nsecond line");
    assert_eq!(h.body_linecount(), Some(2));
    assert!(h.options.has("deliver_firsttime"));
    assert_eq!(h.options.value("dsn_envid"), Some(&b"env-123"[..]));
    assert!(h.non_recipients.is_empty());
    assert_eq!(h.recipients.len(), 2);
    let bob = &h.recipients[0].fields;
    assert_eq!(bob.address, b"bob@dest.example");
    assert_eq!(bob.orcpt.as_deref(), Some(&b"rfc822;Bob@Dest.Example"[..]));
    assert_eq!((bob.dsn_flags, bob.pno, bob.errors_to.is_none()), (12, -1, true));
    assert_eq!(h.recipients[1].address(), b"carol@dest.example");
    let flags: Vec<u8> = h.headers.all().iter().map(|l| l.flag().byte()).collect();
    assert_eq!(flags, b"PFTC I  ");
    let lengths: Vec<usize> = h.headers.all().iter().map(|l| l.text().len()).collect();
    assert_eq!(lengths, [170, 35, 47, 22, 46, 36, 38, 17]);
    assert_eq!(h.headers.live_len(), 411);
    let data = DataFile::open(&Path::new(DIR).join(format!("{ID}-D")), &h.id).unwrap();
    assert_eq!(data.body_len(), 29);
    assert_eq!(data.counts().unwrap().lines, 2);
    assert_eq!(h.message_size(data.body_len()), 441, "Exim logged S=441");
}

#[test]
fn unmodified_file_is_written_back_byte_for_byte() {
    let (bytes, h) = read();
    assert_eq!(h.to_bytes(), bytes);
}

#[test]
fn header_edits_recompute_lengths() {
    let (bytes, mut h) = read();
    h.headers.add(b"X-Scanned", b"clean", Position::Bottom).unwrap();
    h.headers.replace(b"Subject", b"[SPAM] Test message").unwrap();
    let expected = String::from_utf8(bytes).unwrap().replace(
        "046  Subject: Test message\n  with a folded subject\n",
        "046* Subject: Test message\n  with a folded subject\n029  Subject: [SPAM] Test message\n",
    ) + "017  X-Scanned: clean\n";
    let out = h.to_bytes();
    assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
    let again = SpoolHeader::parse(&out, None).unwrap();
    let subjects: Vec<_> = again.headers.all().iter().filter(|l| l.is_named(b"subject")).map(|l| l.flag()).collect();
    assert_eq!(subjects, [HeaderFlag::Deleted, HeaderFlag::Plain]);
    assert_eq!(again.headers.get(b"subject").next().unwrap().value(), b"[SPAM] Test message");
    assert_eq!(again.headers.live_len(), 411 - 46 + 29 + 17);
    let mut dropped = again.clone();
    assert_eq!(dropped.headers.remove(b"x-scanned", Removal::Drop), 1);
    assert_eq!(dropped.headers.all().len(), again.headers.all().len() - 1);
}

#[test]
fn message_view_yields_rfc5322_and_wire_form() {
    let (_, h) = read();
    let data = DataFile::open(&Path::new(DIR).join(format!("{ID}-D")), &h.id).unwrap();
    let view = MessageView::new(&h, &data);
    let lf = view.to_vec().unwrap();
    assert_eq!(lf.len() as u64, view.len());
    assert!(lf.starts_with(b"Received: from client.example.net"));
    assert!(lf.ends_with(b"X-ACL-Added: yes\n\nHello Bob.\nThis is line two.\n"));
    let mut wire = Vec::new();
    std::io::Read::read_to_end(&mut view.wire_reader(), &mut wire).unwrap();
    assert_eq!(wire.len(), lf.len() + lf.iter().filter(|&&b| b == b'\n').count());
    assert!(wire.ends_with(b"yes\r\n\r\nHello Bob.\r\nThis is line two.\r\n"));
}
