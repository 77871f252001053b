//! Every spool file a real Exim wrote (spool-fixtures/) is read, written back byte for byte, and
//! described by `inspect` the way Exim itself described it when the fixture was captured
//! (`exim -bpr` and `exim -Mvh`, saved beside each pair). `exim_e2e.rs` repeats the comparison
//! against a live Exim.

mod support;

use spoolsift::spool::{DataFile, SpoolHeader};
use support::fixtures::{describe, exim_size, fixtures, parse_bpr};

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    let all = fixtures();
    assert!(all.len() >= 30, "fixtures missing: {}", all.len());
    for (dir, header) in &all {
        let bytes = std::fs::read(header).unwrap();
        let h = SpoolHeader::read(header).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(h.to_bytes(), bytes, "{}", dir.display());
        assert!(h.non_recipients.was_sorted_on_read(), "{}", dir.display());
        let d = DataFile::open(&header.with_file_name(format!("{}-D", h.id)), &h.id).unwrap();
        let counts = d.counts().unwrap();
        if h.is_wireformat() {
            assert_eq!(h.body_linecount(), None, "{}", dir.display());
        } else {
            assert_eq!(h.body_linecount(), Some(counts.lines as i64), "{}", dir.display());
        }
    }
}

#[test]
fn inspect_agrees_with_what_exim_reported() {
    for (dir, header) in fixtures() {
        let mvh = std::fs::read(dir.join("exim-Mvh.txt")).unwrap();
        assert_eq!(mvh, std::fs::read(&header).unwrap(), "{}: exim -Mvh shows the -H as stored", dir.display());
        let bpr = parse_bpr(&std::fs::read_to_string(dir.join("exim-bpr.txt")).unwrap());
        assert_eq!(bpr, [describe(&header)], "{}", dir.display());
    }
}

#[test]
fn exim_size_format() {
    assert_eq!(exim_size(482), "  482");
    assert_eq!(exim_size(1741), " 1.7K");
    assert_eq!(exim_size(215_000), " 210K");
}
