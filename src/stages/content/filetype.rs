//! The real type of a part, from its bytes rather than from its name or its declared type.
//!
//! Two questions are asked of an attachment's bytes. Is it one of the kinds a mail gateway
//! blocks whatever it is called ([`Class`]: executables, documents with macros, disk images,
//! HTML forms, encrypted archives)? And what format family is it (`pdf`, `zip`, `pe`...), to
//! compare with what its name and its declared type claim: `invoice.pdf` that is an ELF binary
//! is a disguise even where ELF files are allowed.
//!
//! `infer` names the formats in general; the kinds that block are checked here more strictly
//! than a first magic number (infer calls anything starting `MZ` an executable, and a text file
//! may), and the containers are opened: an OLE2 file (`cfb`) for its VBA storage, a zip (`zip`)
//! for an OOXML `vbaProject.bin`. Both readers work on the part's
//! decoded bytes, which the scanner already holds; a reader that panics on hostile input costs
//! the answer for that container, not the scan.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A kind of file blocked for what it is, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// PE, ELF, Mach-O, or a script with a `#!` line.
    Executable,
    /// An OLE2 document with a VBA project, or an OOXML one with `vbaProject.bin`.
    MacroDocument,
    /// ISO 9660, VHD, VHDX, Apple disk image: mounted with a double click, and a way past
    /// Mark-of-the-Web for what is inside.
    DiskImage,
    /// An HTML attachment with a `<form>`: a credential form carried past link scanners.
    HtmlForm,
    /// An archive with encrypted members: nothing can look inside (found by `src/stages/content/archive.rs`).
    EncryptedArchive,
}

impl Class {
    pub const ALL: [Class; 5] =
        [Class::Executable, Class::MacroDocument, Class::DiskImage, Class::HtmlForm, Class::EncryptedArchive];

    /// Its name in `blocked_file_types` and in findings (`filetype:executable:elf`).
    pub fn name(self) -> &'static str {
        match self {
            Class::Executable => "executable",
            Class::MacroDocument => "macro-document",
            Class::DiskImage => "disk-image",
            Class::HtmlForm => "html-form",
            Class::EncryptedArchive => "encrypted-archive",
        }
    }
}

/// What the bytes of one part are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sniffed {
    /// The format family (`pdf`, `zip`, `ole2`, `png`, `pe`, `elf`...), where the bytes say.
    pub family: Option<&'static str>,
    /// The blocking kinds it is, each with what showed it (`elf`, `ole2-vba`, `iso9660`).
    pub classes: Vec<(Class, &'static str)>,
}

/// Look at a part's bytes. `whole` says whether `bytes` is all of the part (the containers are
/// only opened then); `html` whether it is declared or named as HTML.
pub fn sniff(bytes: &[u8], whole: bool, html: bool) -> Sniffed {
    let mut out = Sniffed { family: family(bytes), classes: Vec::new() };
    if let Some(how) = executable(bytes) {
        out.classes.push((Class::Executable, how));
    }
    if let Some(how) = disk_image(bytes) {
        out.classes.push((Class::DiskImage, how));
    }
    if whole {
        match out.family {
            Some("ole2") if opened(|| ole2_has_vba(bytes)) => out.classes.push((Class::MacroDocument, "ole2-vba")),
            Some("zip") if opened(|| zip_has_vba(bytes)) => out.classes.push((Class::MacroDocument, "ooxml-vba")),
            _ => {}
        }
    }
    if (html || out.family == Some("html")) && has_form(bytes) {
        out.classes.push((Class::HtmlForm, "form"));
    }
    out
}

/// A container reader's answer, or its default where it panicked.
fn opened<T: Default>(f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_default()
}

/// The format family by magic number, our own checks first for the kinds that block. Images
/// are one family.
fn family(b: &[u8]) -> Option<&'static str> {
    if let Some(exe) = executable(b) {
        return Some(exe);
    }
    if b.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return Some("ole2");
    }
    // PDF readers accept the header anywhere in the first 1024 bytes.
    if memchr::memmem::find(&b[..b.len().min(1024)], b"%PDF-").is_some() {
        return Some("pdf");
    }
    if b.starts_with(b"PK\x03\x04") || b.starts_with(b"PK\x05\x06") {
        return Some("zip");
    }
    if disk_image(b).is_some() {
        return Some("disk-image");
    }
    if is_tar(b) {
        return Some("tar");
    }
    if looks_like_html(b) {
        return Some("html");
    }
    let t = infer::get(b)?;
    Some(match t.mime_type() {
        // One family: a PNG saved as `.jpg` is a common mistake, not a disguise.
        "image/png" | "image/jpeg" | "image/gif" => "image",
        "application/gzip" => "gzip",
        "application/x-7z-compressed" => "7z",
        "application/vnd.rar" => "rar",
        "application/x-bzip2" => "bzip2",
        "application/x-xz" => "xz",
        "application/vnd.ms-cab-compressed" => "cab",
        "application/rtf" => "rtf",
        _ => return None,
    })
}

/// PE (an `MZ` header whose `e_lfanew` points at `PE\0\0`), ELF, Mach-O, or a `#!` script.
fn executable(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"MZ") && b.len() >= 0x40 {
        let at = u32::from_le_bytes([b[0x3C], b[0x3D], b[0x3E], b[0x3F]]) as usize;
        if b.get(at..at.checked_add(4)?) == Some(b"PE\0\0") {
            return Some("pe");
        }
    }
    if b.len() > 52 && b.starts_with(b"\x7FELF") {
        return Some("elf");
    }
    if infer::app::is_mach(b) {
        return Some("mach-o");
    }
    // `#!/bin/sh`, `#! /usr/bin/env python`: an interpreter path follows.
    if let Some(rest) = b.strip_prefix(b"#!") {
        if rest.iter().find(|&&c| c != b' ' && c != b'\t') == Some(&b'/') {
            return Some("script");
        }
    }
    None
}

fn disk_image(b: &[u8]) -> Option<&'static str> {
    // ISO 9660 and UDF volume descriptors start at sector 16.
    const ISO: usize = 0x8001;
    if b.get(ISO..ISO + 5).is_some_and(|m| m == b"CD001" || m == b"BEA01") {
        return Some("iso9660");
    }
    if b.starts_with(b"vhdxfile") {
        return Some("vhdx");
    }
    // A VHD ends with a 512-byte footer (a dynamic one also starts with a copy of it).
    if b.starts_with(b"conectix") || tail(b, 512).is_some_and(|t| t.starts_with(b"conectix")) {
        return Some("vhd");
    }
    // A UDIF (.dmg) ends with its 512-byte `koly` trailer.
    if tail(b, 512).is_some_and(|t| t.starts_with(b"koly")) {
        return Some("dmg");
    }
    None
}

fn tail(b: &[u8], n: usize) -> Option<&[u8]> {
    b.len().checked_sub(n).map(|at| &b[at..])
}

fn looks_like_html(b: &[u8]) -> bool {
    let head = &b[..b.len().min(512)];
    let start = head.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(head.len());
    let lower = head[start..].to_ascii_lowercase();
    lower.starts_with(b"<!doctype html") || lower.starts_with(b"<html") || lower.starts_with(b"<head")
}

/// `<form` as a tag, in any case, anywhere in the part.
fn has_form(b: &[u8]) -> bool {
    memchr::memmem::find_iter(b, b"<").any(|at| {
        let tag = &b[at + 1..b.len().min(at + 6)];
        tag.len() == 5
            && tag[..4].eq_ignore_ascii_case(b"form")
            && matches!(tag[4], b' ' | b'\t' | b'\r' | b'\n' | b'>')
    })
}

/// An OLE2 compound file with a VBA project: Word keeps it in the `Macros` storage, Excel in
/// `_VBA_PROJECT_CUR`, both with a `VBA` storage and a `_VBA_PROJECT` stream inside.
fn ole2_has_vba(bytes: &[u8]) -> bool {
    let Ok(file) = cfb::CompoundFile::open(Cursor::new(bytes)) else { return false };
    let vba = file.walk().any(|e| {
        let name = e.name();
        name.eq_ignore_ascii_case("_VBA_PROJECT") || name.eq_ignore_ascii_case("_VBA_PROJECT_CUR")
    });
    vba
}

/// Whether a zip holds an OOXML VBA project (`word/vbaProject.bin`, `xl/...`). Only the
/// central directory is read.
fn zip_has_vba(bytes: &[u8]) -> bool {
    let Ok(zip) = zip::ZipArchive::new(Cursor::new(bytes)) else { return false };
    let vba = zip
        .file_names()
        .flatten()
        .any(|n| n.rsplit('/').next().is_some_and(|f| f.eq_ignore_ascii_case("vbaProject.bin")));
    vba
}

/// Whether a zip is an Office or OpenDocument file rather than an archive: its members are the
/// document's parts, not files someone sent.
pub fn is_document_zip(bytes: &[u8]) -> bool {
    opened(|| {
        let Ok(zip) = zip::ZipArchive::new(Cursor::new(bytes)) else { return false };
        let doc = zip.file_names().flatten().any(|n| n == "[Content_Types].xml" || n == "mimetype");
        doc
    })
}

/// A POSIX or GNU tar header: `ustar` at byte 257.
pub fn is_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar")
}

/// The family a file name's extension claims, for the formats whose bytes say what they are.
pub fn family_of_extension(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "pdf" => "pdf",
        "zip" | "docx" | "xlsx" | "pptx" | "docm" | "xlsm" | "pptm" | "odt" | "ods" | "odp" | "jar" | "epub" => "zip",
        "doc" | "xls" | "ppt" | "msg" | "msi" => "ole2",
        "png" | "jpg" | "jpeg" | "gif" => "image",
        "gz" | "tgz" => "gzip",
        "7z" => "7z",
        "rar" => "rar",
        "exe" | "dll" | "scr" | "sys" | "cpl" => "pe",
        _ => return None,
    })
}

/// The family a declared content type claims.
pub fn family_of_type(ctype: &str) -> Option<&'static str> {
    Some(match ctype {
        "application/pdf" => "pdf",
        "application/zip" | "application/x-zip-compressed" | "application/java-archive" | "application/epub+zip" => {
            "zip"
        }
        t if t.starts_with("application/vnd.openxmlformats-officedocument.")
            || t.starts_with("application/vnd.oasis.opendocument.")
            || t.starts_with("application/vnd.ms-word.document.macroenabled")
            || t.starts_with("application/vnd.ms-excel.sheet.macroenabled") =>
        {
            "zip"
        }
        "application/msword" | "application/vnd.ms-excel" | "application/vnd.ms-powerpoint" => "ole2",
        "image/png" | "image/jpeg" | "image/jpg" | "image/pjpeg" | "image/gif" => "image",
        "application/gzip" | "application/x-gzip" => "gzip",
        "application/x-7z-compressed" => "7z",
        "application/vnd.rar" | "application/x-rar-compressed" | "application/x-rar" => "rar",
        "application/x-msdownload" | "application/vnd.microsoft.portable-executable" | "application/x-dosexec" => "pe",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pe() -> Vec<u8> {
        let mut b = vec![0u8; 0x100];
        b[..2].copy_from_slice(b"MZ");
        b[0x3C] = 0x80;
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        b
    }

    #[test]
    fn executables_by_their_headers() {
        let classes = |b: &[u8]| sniff(b, true, false).classes;
        assert_eq!(classes(&pe()), [(Class::Executable, "pe")]);
        let mut elf = b"\x7FELF\x02\x01\x01".to_vec();
        elf.resize(64, 0);
        assert_eq!(classes(&elf), [(Class::Executable, "elf")]);
        assert_eq!(classes(b"\xCF\xFA\xED\xFE\x07\x00\x00\x01"), [(Class::Executable, "mach-o")]);
        assert_eq!(classes(b"#! /usr/bin/env python3\nprint(1)\n"), [(Class::Executable, "script")]);
        // Not executables: an `MZ` that is text, a `#!` without a path, a Java class.
        assert_eq!(classes(b"MZ is how this note starts, and it goes on for a while to be long enough....."), []);
        assert_eq!(classes(b"#!important\n"), []);
        assert_eq!(classes(b"\xCA\xFE\xBA\xBE\x00\x00\x00\x34"), []);
    }

    #[test]
    fn disk_images_and_families() {
        let mut iso = vec![0u8; 0x8001 + 16];
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        assert_eq!(
            sniff(&iso, true, false),
            Sniffed { family: Some("disk-image"), classes: vec![(Class::DiskImage, "iso9660")] }
        );
        let mut vhd = vec![0u8; 2048];
        vhd[1536..1544].copy_from_slice(b"conectix");
        assert_eq!(sniff(&vhd, true, false).classes, [(Class::DiskImage, "vhd")]);
        assert_eq!(sniff(b"%PDF-1.7\n", true, false).family, Some("pdf"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", true, false).family, Some("image"));
        assert_eq!(sniff(b"just text\n", true, false), Sniffed::default());
    }

    #[test]
    fn forms_in_html() {
        let page = b"<!DOCTYPE html><html><body><FORM action=\"https://x.example/\">";
        assert_eq!(sniff(page, true, false).classes, [(Class::HtmlForm, "form")]);
        assert_eq!(sniff(b"a <formula> is not a form", true, true).classes, []);
        assert_eq!(sniff(b"<p>no form here</p>", true, true).classes, []);
        // Only in HTML.
        assert_eq!(sniff(b"text about a <form> tag", true, false).classes, []);
    }

    #[test]
    fn hostile_containers_answer_nothing() {
        let mut ole = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
        ole.extend(std::iter::repeat_n(0xFF, 600));
        assert_eq!(sniff(&ole, true, false), Sniffed { family: Some("ole2"), classes: vec![] });
        let mut zip = b"PK\x03\x04".to_vec();
        zip.extend(std::iter::repeat_n(0xFF, 100));
        assert_eq!(sniff(&zip, true, false), Sniffed { family: Some("zip"), classes: vec![] });
    }
}
