//! The content scanner inside archives: zips in zips, tar in gzip, and the bombs. Every archive
//! is built at run time with the same crates that read it (zip, flate2, tar), so the bytes are
//! what other tools make.

mod support;

use std::io::{Cursor, Write};

use spoolsift::spool::MessageView;
use spoolsift::stages::content::{ContentConfig, ContentScanner};
use spoolsift::stages::{Stage, StageResult, Verdict};
use support::made::eicar;

/// The scan of a message with one base64 attachment `name`.
fn scan(config: &ContentConfig, name: &str, ctype: &str, bytes: &[u8]) -> StageResult {
    let scanner = ContentScanner::new(config.clone()).unwrap();
    let (header, body) = support::made::with_attachment(Some(name), ctype, bytes);
    let view = MessageView::new(&header, &body);
    scanner.check(&view).unwrap()
}

/// Each finding as `(filename, rule)` (`virus` for the test file), in order.
fn findings(r: &StageResult) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = String::new();
    for (k, v) in &r.details {
        match k.as_str() {
            "part" => name.clear(),
            "filename" => name = v.clone(),
            "rule" | "virus" => out.push((name.clone(), v.clone())),
            _ => {}
        }
    }
    out
}

fn pair(name: &str, rule: &str) -> (String, String) {
    (name.to_string(), rule.to_string())
}

fn zip_of(files: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default().compression_method(method)).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn stored(files: &[(&str, &[u8])]) -> Vec<u8> {
    zip_of(files, zip::CompressionMethod::Stored)
}

/// A PE header: `MZ`, and `PE\0\0` where `e_lfanew` points.
fn pe() -> Vec<u8> {
    let mut b = vec![0u8; 0x200];
    b[..2].copy_from_slice(b"MZ");
    b[0x3C] = 0x80;
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b
}

const ZIP: &str = "application/zip";

#[test]
fn an_exe_in_a_zip_in_a_zip() {
    let inner = stored(&[("readme.txt", b"hello\n"), ("setup.exe", &pe())]);
    let outer = stored(&[("docs/notes.txt", b"notes\n"), ("inner.zip", &inner)]);
    let r = scan(&ContentConfig::default(), "bundle.zip", ZIP, &outer);
    assert_eq!(
        findings(&r),
        [
            pair("bundle.zip/inner.zip/setup.exe", "filename:extension:exe"),
            pair("bundle.zip/inner.zip/setup.exe", "filetype:executable:pe")
        ]
    );
    // One level down only: the exe is not reached, and the depth is the finding.
    let shallow = ContentConfig { archive_max_depth: 1, ..ContentConfig::default() };
    let r = scan(&shallow, "bundle.zip", ZIP, &outer);
    assert_eq!(findings(&r), [pair("bundle.zip/inner.zip", "archive:depth")]);
    assert!(r.details.contains(&("limit".into(), "1".into())), "{r:?}");
    // Archives not opened: the zip passes.
    let off = ContentConfig { archives: false, ..ContentConfig::default() };
    assert_eq!(scan(&off, "bundle.zip", ZIP, &outer).verdict, Verdict::Clean);
}

#[test]
fn a_plain_zip_of_text_passes_and_the_test_file_inside_one_is_found() {
    let plain = zip_of(&[("a.txt", b"alpha\n"), ("b.txt", b"beta\n")], zip::CompressionMethod::Deflated);
    let r = scan(&ContentConfig::default(), "texts.zip", ZIP, &plain);
    assert_eq!((r.verdict.clone(), findings(&r)), (Verdict::Clean, vec![]));
    let r = scan(&ContentConfig::default(), "test.zip", ZIP, &stored(&[("eicar.txt", &eicar())]));
    assert_eq!(r.verdict, Verdict::Infected { name: "Eicar-Test-Signature".into() });
    assert_eq!(findings(&r), [pair("test.zip/eicar.txt", "Eicar-Test-Signature")]);
}

#[test]
fn a_42_style_bomb_stops_at_the_ratio() {
    // Each level holds 16 copies of the one below; the bottom is 16 MiB of zeros deflated to a
    // few KB. Fully expanded: 16^3 * 16 MiB = 64 GiB, from a few MB.
    let zeros = vec![0u8; 16 * 1024 * 1024];
    let deflated = zip::CompressionMethod::Deflated;
    let bottom = zip_of(&[("0.bin", &zeros)], deflated);
    let level = |inner: &[u8], stem: &str| {
        let names: Vec<String> = (0..16).map(|i| format!("{stem}{i}.zip")).collect();
        let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), inner)).collect();
        zip_of(&files, deflated)
    };
    let bomb = level(&level(&bottom, "b"), "a");
    assert!(bomb.len() < 2 * 1024 * 1024, "{}", bomb.len());
    let r = scan(&ContentConfig::default(), "42.zip", ZIP, &bomb);
    let f = findings(&r);
    assert_eq!(f, [pair("42.zip/a0.zip/b0.zip/0.bin", "archive:ratio")], "{r:?}");
    assert!(r.details.contains(&("limit".into(), "100".into())), "{r:?}");
    // With the ratio out of the way, the total stops it.
    let total = ContentConfig { archive_max_ratio: u64::MAX, ..ContentConfig::default() };
    let r = scan(&total, "42.zip", ZIP, &bomb);
    assert_eq!(findings(&r), [pair("42.zip/a0.zip/b6.zip/0.bin", "archive:expanded-bytes")], "{r:?}");
}

#[test]
fn names_in_an_encrypted_zip_and_in_members_we_cannot_inflate_are_still_checked() {
    use zip::unstable::write::FileOptionsExt;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let locked = zip::write::SimpleFileOptions::default().with_deprecated_encryption(b"secret").unwrap();
    w.start_file("setup.exe", locked).unwrap();
    w.write_all(&pe()).unwrap();
    let zip = w.finish().unwrap().into_inner();
    let r = scan(&ContentConfig::default(), "locked.zip", ZIP, &zip);
    assert_eq!(
        findings(&r),
        [
            pair("locked.zip/setup.exe", "filename:extension:exe"),
            pair("locked.zip/setup.exe", "filetype:encrypted-archive:zip")
        ]
    );
    // A member compressed with a method the scanner does not inflate (bzip2, 12), named .scr.
    let mut odd = stored(&[("screen.scr", b"not really bzip2")]);
    for sig in [&b"PK\x03\x04"[..], &b"PK\x01\x02"[..]] {
        let at = odd.windows(4).position(|w| w == sig).unwrap();
        let method = at + if sig == b"PK\x03\x04" { 8 } else { 10 };
        odd[method] = 12;
    }
    let r = scan(&ContentConfig::default(), "odd.zip", ZIP, &odd);
    assert_eq!(findings(&r), [pair("odd.zip/screen.scr", "filename:extension:scr")], "{r:?}");
    assert!(r.details.iter().any(|(k, v)| k == "note" && v.starts_with("odd.zip/screen.scr: not readable")), "{r:?}");
}

#[test]
fn the_member_limit() {
    let files: Vec<(String, Vec<u8>)> = (0..5).map(|i| (format!("{i}.txt"), b"x\n".to_vec())).collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let few = ContentConfig { archive_max_members: 3, ..ContentConfig::default() };
    let r = scan(&few, "many.zip", ZIP, &stored(&refs));
    assert_eq!(findings(&r), [pair("many.zip/3.txt", "archive:members")]);
}

#[test]
fn a_tar_in_gzip_is_walked_as_a_stream() {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [("site/index.html", b"<p>hi</p>".to_vec()), ("site/run.sh", b"#!/bin/sh\necho hi\n".to_vec())]
    {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let tgz = gz.finish().unwrap();
    let r = scan(&ContentConfig::default(), "site.tar.gz", "application/gzip", &tgz);
    assert_eq!(findings(&r), [pair("site.tar.gz/site.tar/site/run.sh", "filetype:executable:script")]);
    // The same tar attached as it is.
    let r = scan(&ContentConfig::default(), "site.tar", "application/x-tar", &tar);
    assert_eq!(findings(&r), [pair("site.tar/site/run.sh", "filetype:executable:script")]);
}

#[test]
fn seven_zip_and_rar_are_recognised_not_opened() {
    let seven = b"7z\xBC\xAF\x27\x1C\x00\x04rest of a 7z archive".to_vec();
    let r = scan(&ContentConfig::default(), "files.7z", "application/x-7z-compressed", &seven);
    assert_eq!(r.verdict, Verdict::Clean);
    assert!(r.details.contains(&("note".into(), "files.7z: 7z archives are not opened".into())), "{r:?}");
}
