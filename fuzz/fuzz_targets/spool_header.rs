//! The `-H` reader on arbitrary bytes. It must never panic, and every input it accepts must be
//! written back byte for byte: numbers are only accepted in the canonical form Exim writes, so
//! nothing the reader takes can be reproduced differently. Accepted inputs then go through the
//! edits a re-queue makes; whenever `validate()` lets the result be written, it must read back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spoolsift::spool::recipients::dsn;
use spoolsift::spool::{AclVariable, OptionLine, Position, Removal, SpoolHeader};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = SpoolHeader::parse(data, None) else {
        return;
    };
    assert!(h.to_bytes() == data, "accepted input is not written back byte for byte");
    assert!(SpoolHeader::parse(data, Some(&h.id)).is_ok(), "its own id is refused as the expected one");

    let mut e = h;
    e.non_recipients.force_rewrite();
    e.options.remove("frozen");
    e.options.remove("manual_thaw");
    e.options.set(OptionLine::with_value("body_linecount", b"7"));
    e.options.set_acl(AclVariable::message(b"_scanned", b"yes"));
    for r in &mut e.recipients {
        r.fields.dsn_flags &= !dsn::NOTIFY_SUCCESS;
    }
    e.headers.add(b"X-Scanned", b"clean", Position::AfterFirstReceived).unwrap();
    e.headers.replace(b"Subject", b"[scanned] subject").unwrap();
    e.headers.remove(b"X-Spam", Removal::Drop);
    let _ = e.headers.rename(b"To", b"X-Original-To");
    if let Ok(bytes) = e.to_checked_bytes() {
        let back = match SpoolHeader::parse(&bytes, Some(&e.id)) {
            Ok(back) => back,
            Err(err) => panic!("validate() accepted a model that reads back as an error: {err}"),
        };
        assert!(back.to_bytes() == bytes, "a written file is not stable");
    }
});
