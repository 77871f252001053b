//! The built-in content scanner: what the embedded pipeline runs, with no external service.
//!
//! It finds the EICAR test file (see [`eicar`] for the exact rule), attachments whose SHA-256 is on
//! a blocklist, blocked file names (extensions, document-then-executable double extensions) and
//! content types, attachments blocked for what their bytes are whatever they are called
//! (executables, macro documents, disk images, HTML forms, encrypted zips: [`filetype`]) or whose
//! bytes are of another format than their name or declared type says, and parts or messages over
//! a size limit. Zip, gzip and tar attachments are opened (`src/stages/content/archive.rs`) to
//! [`ContentConfig::archive_max_depth`] levels, and each member gets the name, type and test-file
//! checks as if attached (its `filename` is its path: `bundle.zip/inner.zip/setup.exe`), within
//! limits against archive bombs (`archive:depth`, `archive:members`, `archive:expanded-bytes`,
//! `archive:ratio`); encrypted members are `filetype:encrypted-archive:zip`; 7z and rar are
//! recognised and noted as not opened. Office and OpenDocument files are zips too, and are not
//! walked as archives.
//!
//! Where it looks. A message whose top-level part is a single part in identity encoding (plain
//! text, the common case) is scanned where its body lives, in chunks, without a copy of the
//! message. Anything else is read into memory and parsed with mail-parser, which decodes base64
//! and quoted-printable and nested messages; every leaf part is checked, nested messages to
//! [`ContentConfig::max_nesting`] levels. mail-parser does its best with broken MIME; where it
//! gave up on a part's encoding we decode it leniently ourselves, and the raw body is always
//! searched for the test string as well, so a message that does not parse at all still gets that.
//! Decoding base64 is most of the work, and mail-parser does it slowly, so the structure comes
//! from a parse that leaves bodies encoded and we decode them ourselves, falling
//! back to mail-parser's full parse wherever the two could differ: the results are the same
//! (`src/stages/content/own.rs` says how).
//!
//! Results. The verdict is `Infected` if the test file was found anywhere, else the first
//! `Blocked` rule in part order, else `Clean`. Each finding adds `part` (an IMAP section number:
//! `1`, `2.1`...; `raw` for the undecoded body, `message` for the whole), `filename` when the part
//! has one, then `virus` or `rule`. Rules are `filename:extension:<ext>`,
//! `filename:double-extension:<doc>.<ext>`, `mime:<type/subtype>`, `filetype:<kind>:<how>`
//! (`filetype:executable:elf`), `mismatch:<extension or declared type>:<family>`
//! (`mismatch:pdf:elf`), `sha256:<hex>`, `size:part` and `size:message` (the last two add `size`
//! and `limit`). `parts` counts the leaf parts checked.
//!
//! Lists. The configured extension, type and file-kind lists add to the built-in ones
//! ([`BUILTIN_BLOCKED_EXTENSIONS`] and its siblings, every kind of [`filetype::Class`]);
//! `replace_builtin = true` makes them replace the built-in lists instead.

mod archive;
mod blocklist;
mod decode;
pub mod eicar;
pub mod filetype;
mod findings;
mod own;
mod rules;
pub mod structure;

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use serde::Deserialize;

pub use blocklist::{BlocklistError, Sha256Blocklist};

use self::archive::{ArchiveLimits, Event as ArchiveEvent};
use self::blocklist::{hex, sha256};
use self::decode::{declared_encoding, encoding_named, part_bytes, transfer_decoded};
use self::eicar::Eicar;
use self::filetype::Class;
use self::findings::{Finding, Scan};
use self::own::Bail;
use self::rules::NameRules;
use self::structure::{Breach, StructureLimits};
use super::{ListChanges, Stage, StageError, StageResult};
use crate::spool::MessageView;

/// Settings of the `content` stage (`[stages.content]` in a pipeline definition).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentConfig {
    /// Detect the EICAR test file, so the whole chain (detection, policy, quarantine) can be
    /// tested end to end with a harmless message.
    pub eicar: bool,
    /// File of SHA-256 digests of attachments to block (hex, one per line, `#` comments).
    /// Read when the stage is built; a bad line is an error, not skipped.
    pub sha256_blocklist: Option<PathBuf>,
    /// Attachment extensions to block, without the dot, any case, beside the built-in list
    /// ([`BUILTIN_BLOCKED_EXTENSIONS`]: what Windows runs or mounts on a double click, close to
    /// the lists large mailbox providers refuse).
    pub blocked_extensions: Vec<String>,
    /// Extensions that make a file look like a document, beside the built-in ones. One of them
    /// followed by a blocked extension (`invoice.pdf.exe`) is reported as a double extension:
    /// the classic disguise, worth its own rule name in reports.
    pub double_extension_documents: Vec<String>,
    /// Content types (`type/subtype`, any case) to block whatever the file is called, beside the
    /// built-in ones.
    pub blocked_content_types: Vec<String>,
    /// Kinds of file blocked by what their bytes are, whatever their name (see
    /// `src/stages/content/filetype.rs`), beside the built-in ones (all of them):
    /// `executable`, `macro-document`, `disk-image`, `html-form`, `encrypted-archive`.
    pub blocked_file_types: Vec<Class>,
    /// Kinds of file not blocked after all, e.g. `["encrypted-archive"]` where password-protected
    /// zips are business as usual: taken out of the built-in and the configured kinds.
    pub allowed_file_types: Vec<Class>,
    /// The four lists above replace the built-in ones instead of adding to them (`[]` then
    /// blocks nothing of that kind).
    pub replace_builtin: bool,
    /// Block a part whose bytes are of another format than its name's extension or its declared
    /// type says (`mismatch:pdf:elf`), for the formats whose bytes tell.
    pub block_type_mismatch: bool,
    /// Look inside zip, gzip and tar attachments (7z and rar are recognised, not opened): every
    /// member gets the name, type and test-file checks. See `src/stages/content/archive.rs`.
    pub archives: bool,
    /// Archive levels opened (1: the attachment's own members only).
    pub archive_max_depth: usize,
    /// Members at every level of one attachment (`archive:members`).
    pub archive_max_members: usize,
    /// Bytes inflated from one attachment, every level (`archive:expanded-bytes`).
    pub archive_max_expanded_bytes: u64,
    /// Inflated bytes per compressed byte of one member, past its first MiB (`archive:ratio`).
    pub archive_max_ratio: u64,
    /// Largest message in bytes (headers and body as stored); 0 for no limit. Over it, the message
    /// is blocked without being read. The default is Exim's own `message_size_limit` default, so
    /// it only bites where Exim's limit was raised.
    pub max_message_size: u64,
    /// Largest decoded part in bytes; 0 for no limit. Off by default, as in MailScanner: the
    /// message limit already bounds the work, and a per-part limit mostly catches large PDFs.
    pub max_part_size: u64,
    /// How many message/rfc822 levels to descend into. Deeper parts are still searched for the
    /// test string undecoded, and the result notes the limit. At most 64.
    pub max_nesting: usize,
    /// Most MIME parts in a message, at every level (containers and nested messages count). A
    /// message with more is blocked (`structure:parts`) without being parsed: the parser's memory
    /// grows with the number of parts, and 47 MB of empty parts is 9.5 million of them.
    pub max_parts: usize,
    /// Most multipart and message levels one inside the other (`structure:depth`).
    pub max_depth: usize,
    /// Most header fields in any one part, the message's own header included
    /// (`structure:header-fields`).
    pub max_header_fields: usize,
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig {
            eicar: true,
            sha256_blocklist: None,
            blocked_extensions: Vec::new(),
            double_extension_documents: Vec::new(),
            blocked_content_types: Vec::new(),
            blocked_file_types: Vec::new(),
            allowed_file_types: Vec::new(),
            replace_builtin: false,
            block_type_mismatch: true,
            archives: true,
            archive_max_depth: 3,
            archive_max_members: 1_000,
            archive_max_expanded_bytes: 100 * 1024 * 1024,
            archive_max_ratio: 100,
            max_message_size: 50 * 1024 * 1024,
            max_part_size: 0,
            max_nesting: 10,
            max_parts: 10_000,
            max_depth: 64,
            max_header_fields: 1_000,
        }
    }
}

/// Blocked extensions unless `replace_builtin`: what Windows runs or mounts on a double click.
pub const BUILTIN_BLOCKED_EXTENSIONS: &[&str] = &[
    "ade", "adp", "appx", "bas", "bat", "chm", "cmd", "com", "cpl", "dll", "exe", "hta", "img", "inf", "ins", "iso",
    "isp", "jar", "js", "jse", "lnk", "mde", "msc", "msi", "msix", "msp", "mst", "pif", "ps1", "reg", "scr", "sct",
    "shb", "shs", "sys", "vb", "vbe", "vbs", "vhd", "vhdx", "vxd", "wsc", "wsf", "wsh", "xll",
];

/// Document extensions for the double-extension rule unless `replace_builtin`.
pub const BUILTIN_DOUBLE_EXTENSION_DOCUMENTS: &[&str] = &[
    "7z", "bmp", "csv", "doc", "docm", "docx", "gif", "htm", "html", "jpeg", "jpg", "mp3", "mp4", "odp", "ods", "odt",
    "pdf", "png", "ppt", "pptx", "rar", "rtf", "tif", "tiff", "txt", "xls", "xlsm", "xlsx", "zip",
];

/// Blocked content types unless `replace_builtin`.
pub const BUILTIN_BLOCKED_CONTENT_TYPES: &[&str] = &[
    "application/x-msdownload",
    "application/x-msdos-program",
    "application/x-dosexec",
    "application/x-ms-dos-executable",
    "application/vnd.microsoft.portable-executable",
    "application/x-msi",
    "application/x-ms-installer",
    "application/hta",
    "application/x-ms-shortcut",
];

impl ContentConfig {
    /// A configured list with the built-in one it extends (unless `replace_builtin`).
    fn with_builtin(&self, configured: &[String], builtin: &[&str]) -> Vec<String> {
        let base = if self.replace_builtin { &[][..] } else { builtin };
        base.iter().map(|s| s.to_string()).chain(configured.iter().cloned()).collect()
    }

    /// The kinds of file blocked by their bytes.
    fn blocked_classes(&self) -> Vec<Class> {
        let mut out: Vec<Class> = if self.replace_builtin { Vec::new() } else { Class::ALL.to_vec() };
        for class in &self.blocked_file_types {
            if !out.contains(class) {
                out.push(*class);
            }
        }
        out.retain(|c| !self.allowed_file_types.contains(c));
        out
    }
}

/// Upper bound on [`ContentConfig::max_nesting`]: each message level is a few stack frames of ours,
/// and a hostile message can nest millions deep for a few bytes each.
const MAX_NESTING_CAP: usize = 64;

/// Multipart-in-multipart levels we follow within one message. mail-parser keeps its own stack
/// on the heap; this bounds ours and the section strings, which grow with depth.
const MAX_MULTIPART_DEPTH: usize = 64;

/// Findings listed per kind; a message with thousands of bad parts must not make a huge log line.
const MAX_LISTED: usize = 16;

/// The `content` stage.
pub struct ContentScanner {
    config: ContentConfig,
    eicar: Eicar,
    /// Shared with the copies made for recipients with their own lists.
    blocklist: Arc<Sha256Blocklist>,
    rules: NameRules,
    /// The kinds of file blocked by their bytes.
    classes: Vec<Class>,
    /// mail-parser without transfer decoding (see [`own`]).
    structure: MessageParser,
}

/// Which parse a walk is over: mail-parser's full one, or its structure with our own decoding.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Full,
    Own,
}

impl ContentScanner {
    /// Build the stage; reads the blocklist file if one is configured.
    pub fn new(config: ContentConfig) -> Result<ContentScanner, BlocklistError> {
        let blocklist = match &config.sha256_blocklist {
            Some(path) => Sha256Blocklist::load(path)?,
            None => Sha256Blocklist::default(),
        };
        let rules = NameRules::new(
            &config.with_builtin(&config.blocked_extensions, BUILTIN_BLOCKED_EXTENSIONS),
            &config.with_builtin(&config.double_extension_documents, BUILTIN_DOUBLE_EXTENSION_DOCUMENTS),
            &config.with_builtin(&config.blocked_content_types, BUILTIN_BLOCKED_CONTENT_TYPES),
        );
        let classes = config.blocked_classes();
        let config = ContentConfig { max_nesting: config.max_nesting.min(MAX_NESTING_CAP), ..config };
        Ok(ContentScanner {
            config,
            eicar: Eicar::default(),
            blocklist: Arc::new(blocklist),
            rules,
            classes,
            structure: own::structure_parser(),
        })
    }

    /// Use this blocklist instead of the configured file's.
    pub fn with_blocklist(mut self, blocklist: Sha256Blocklist) -> ContentScanner {
        self.blocklist = Arc::new(blocklist);
        self
    }

    pub fn config(&self) -> &ContentConfig {
        &self.config
    }

    /// The single-part case, scanned where the body lives.
    fn scan_single(&self, view: &MessageView<'_>, root: &MessagePart<'_>, scan: &mut Scan) -> std::io::Result<()> {
        const PART: &str = "1";
        scan.parts = 1;
        let filename = root.attachment_name();
        let ctype = content_type(root);
        self.check_labels(PART, filename, ctype.as_deref(), scan);
        if sniffed(filename, ctype.as_deref()) {
            // The head is enough for the magic numbers; only a part held whole is opened as a
            // container. A whole message that is one binary attachment without a transfer
            // encoding is rare (it needs BINARYMIME).
            let mut head = vec![0; SNIFF_HEAD.min(view.body.body_len() as usize)];
            let mut got = 0;
            while got < head.len() {
                match view.body.read_body_at(&mut head[got..], got as u64)? {
                    0 => break,
                    n => got += n,
                }
            }
            head.truncate(got);
            let whole = got as u64 == view.body.body_len();
            self.check_bytes(PART, filename, ctype.as_deref(), &head, whole, scan);
        }
        let hashing = !self.blocklist.is_empty();
        if self.config.eicar || hashing {
            let mut ctx = hashing.then(|| ring::digest::Context::new(&ring::digest::SHA256));
            let infected = self.eicar.scan_body(view.body, |chunk| {
                if let Some(ctx) = ctx.as_mut() {
                    ctx.update(chunk);
                }
            })?;
            if infected && self.config.eicar {
                scan.add(Finding::virus(PART, filename));
            }
            if let Some(ctx) = ctx {
                let mut digest = [0u8; 32];
                digest.copy_from_slice(ctx.finish().as_ref());
                self.check_digest(PART, filename, &digest, scan);
            }
        }
        self.check_size(PART, filename, view.body.body_len(), scan);
        Ok(())
    }

    /// Every leaf part of `m`, depth-first in MIME order. `prefix` is the section of the part that
    /// holds `m` (empty at the top); `depth` counts message/rfc822 levels; `boundary` is the one
    /// that frames `m` (empty at the top), which our own decoding needs to know. Only the `Own`
    /// pass bails.
    fn walk(
        &self,
        m: &Message<'_>,
        prefix: &str,
        depth: usize,
        pass: Pass,
        boundary: &[u8],
        scan: &mut Scan,
    ) -> Result<(), Bail> {
        let mut seen = vec![false; m.parts.len()];
        // (part id, its section or None for the message's root, multipart depth, its boundary)
        let mut stack: Vec<(usize, Option<String>, usize, &[u8])> = vec![(0, None, 0, boundary)];
        while let Some((id, section, level, framing)) = stack.pop() {
            let Some(part) = m.parts.get(id) else { continue };
            if std::mem::replace(&mut seen[id], true) {
                continue;
            }
            if let Some(children) = part.sub_parts() {
                let base = section.as_deref().unwrap_or(prefix);
                if level >= MAX_MULTIPART_DEPTH {
                    scan.note(format!("multipart nesting over {MAX_MULTIPART_DEPTH} at {}", or_top(base)));
                    continue;
                }
                let inner = part.content_type().and_then(|ct| ct.attribute("boundary")).unwrap_or_default();
                for (i, &child) in children.iter().enumerate().rev() {
                    // Children come after their parent in mail-parser's list; anything else would
                    // be a loop.
                    if child as usize > id {
                        stack.push((child as usize, Some(section_of(base, i + 1)), level + 1, inner.as_bytes()));
                    }
                }
                continue;
            }
            let section = section.unwrap_or_else(|| section_of(prefix, 1));
            self.check_part(m, part, &section, depth, pass, framing, scan)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn check_part(
        &self,
        m: &Message<'_>,
        part: &MessagePart<'_>,
        section: &str,
        depth: usize,
        pass: Pass,
        boundary: &[u8],
        scan: &mut Scan,
    ) -> Result<(), Bail> {
        let filename = part.attachment_name();
        let ctype = content_type(part);
        self.check_labels(section, filename, ctype.as_deref(), scan);
        // mail-parser converts text to UTF-8, but a digest is of the file as sent.
        let converted = matches!(part.body, PartType::Text(Cow::Owned(_)) | PartType::Html(Cow::Owned(_)));
        let (bytes, converted, problem, encoding) = match pass {
            Pass::Full => {
                (part_bytes(m, part, declared_encoding(part)), converted, part.is_encoding_problem, part.encoding)
            }
            Pass::Own => {
                let cte = own::transfer_encoding(m, part)?;
                match own::decode(m, part, cte.as_deref(), boundary)? {
                    Some(d) => (Cow::Owned(d.contents), d.is_text, false, d.encoding),
                    None => {
                        let bytes = part_bytes(m, part, encoding_named(cte.as_deref()));
                        (bytes, converted, part.is_encoding_problem, part.encoding)
                    }
                }
            }
        };
        if !self.blocklist.is_empty() {
            let digest = if converted && !problem {
                sha256(&transfer_decoded(m, part, encoding).unwrap_or(Cow::Borrowed(&bytes)))
            } else {
                sha256(&bytes)
            };
            self.check_digest(section, filename, &digest, scan);
        }
        let is_message = matches!(part.body, PartType::Message(_))
            || matches!(ctype.as_deref(), Some("message/rfc822" | "message/global"));
        if is_message && depth >= self.config.max_nesting {
            scan.note(format!("message nesting over {} at {section}", self.config.max_nesting));
        } else if is_message {
            let walked = match &part.body {
                PartType::Message(inner) => {
                    self.walk(inner, section, depth + 1, pass, boundary, scan)?;
                    true
                }
                // Only encoded messages get here, which our own decoding leaves to the full parse.
                PartType::Binary(_) | PartType::InlineBinary(_) if pass == Pass::Own => return Err(Bail),
                // mail-parser stops decoding nested messages after a few levels; go on ourselves.
                PartType::Binary(b) | PartType::InlineBinary(b) => match MessageParser::new().parse(b.as_ref()) {
                    Some(inner) => {
                        self.walk(&inner, section, depth + 1, Pass::Full, b"", scan)?;
                        true
                    }
                    None => false,
                },
                _ => false,
            };
            if walked {
                return Ok(());
            }
        }
        // A leaf, or a message we did not descend into: its bytes are what there is to search.
        scan.parts += 1;
        if sniffed(filename, ctype.as_deref()) {
            self.check_bytes(section, filename, ctype.as_deref(), &bytes, true, scan);
        }
        if self.config.eicar && self.eicar.in_part(&bytes) {
            scan.add(Finding::virus(section, filename));
        }
        self.check_size(section, filename, bytes.len() as u64, scan);
        Ok(())
    }

    /// Name and type rules.
    fn check_labels(&self, section: &str, filename: Option<&str>, ctype: Option<&str>, scan: &mut Scan) {
        if let Some(rule) = filename.and_then(|n| self.rules.check_name(n)) {
            scan.add(Finding::blocked(section, filename, format!("filename:{rule}")));
        }
        if let Some(t) = ctype.filter(|t| self.rules.blocked_type(t)) {
            scan.add(Finding::blocked(section, filename, format!("mime:{t}")));
        }
    }

    /// What the part's bytes are: a kind blocked whatever its name, and a format other than its
    /// name or declared type says.
    fn check_bytes(
        &self,
        section: &str,
        filename: Option<&str>,
        ctype: Option<&str>,
        bytes: &[u8],
        whole: bool,
        scan: &mut Scan,
    ) {
        let found = self.check_kind(section, filename, ctype, bytes, whole, scan);
        let Some(family) = found.filter(|f| whole && self.config.archives && archive::is_archive(Some(f))) else {
            return;
        };
        if family == "zip" && filetype::is_document_zip(bytes) {
            return;
        }
        let name = filename.map(printable).unwrap_or_else(|| format!("part {section}"));
        let limits = ArchiveLimits {
            max_depth: self.config.archive_max_depth,
            max_members: self.config.archive_max_members,
            max_expanded_bytes: self.config.archive_max_expanded_bytes,
            max_ratio: self.config.archive_max_ratio,
        };
        archive::walk(&name, family, bytes, &limits, &mut |event| match event {
            ArchiveEvent::Member { path, head, whole } => {
                self.check_labels(section, Some(path), None, scan);
                self.check_kind(section, Some(path), None, head, whole, scan);
                if whole && self.config.eicar && self.eicar.in_part(head) {
                    scan.add(Finding::virus(section, Some(path)));
                }
            }
            ArchiveEvent::Encrypted { path, format } => {
                if self.classes.contains(&Class::EncryptedArchive) {
                    let rule = format!("filetype:{}:{format}", Class::EncryptedArchive.name());
                    scan.add(Finding::blocked(section, Some(path), rule));
                }
            }
            ArchiveEvent::NotOpened { path, why } => scan.note(format!("{}: {why}", printable(path))),
            ArchiveEvent::Breach { path, limit, found, max } => {
                scan.add(Finding::blocked(section, Some(path), limit.rule()).limited(found, max));
            }
        });
    }

    /// The kind and format checks of [`Self::check_bytes`]; the format family found, if any.
    fn check_kind(
        &self,
        section: &str,
        filename: Option<&str>,
        ctype: Option<&str>,
        bytes: &[u8],
        whole: bool,
        scan: &mut Scan,
    ) -> Option<&'static str> {
        let ext = filename.and_then(rules::extension);
        let html = ctype == Some("text/html") || matches!(ext.as_deref(), Some("htm" | "html" | "shtml" | "xhtml"));
        let found = filetype::sniff(bytes, whole, html);
        for (class, how) in &found.classes {
            if self.classes.contains(class) {
                scan.add(Finding::blocked(section, filename, format!("filetype:{}:{how}", class.name())));
            }
        }
        let real = found.family?;
        if !self.config.block_type_mismatch {
            return Some(real);
        }
        if let Some(ext) = ext.as_deref() {
            if filetype::family_of_extension(ext).is_some_and(|claimed| claimed != real) {
                scan.add(Finding::blocked(section, filename, format!("mismatch:{ext}:{real}")));
            }
        }
        if let Some(t) = ctype.filter(|t| filetype::family_of_type(t).is_some_and(|claimed| claimed != real)) {
            scan.add(Finding::blocked(section, filename, format!("mismatch:{t}:{real}")));
        }
        Some(real)
    }

    fn check_digest(&self, section: &str, filename: Option<&str>, digest: &[u8; 32], scan: &mut Scan) {
        if self.blocklist.contains(digest) {
            scan.add(Finding::blocked(section, filename, format!("sha256:{}", hex(digest))));
        }
    }

    fn check_size(&self, section: &str, filename: Option<&str>, size: u64, scan: &mut Scan) {
        let limit = self.config.max_part_size;
        if limit > 0 && size > limit {
            scan.add(Finding::blocked(section, filename, "size:part").sized(size, limit));
        }
    }

    /// Parse and walk; `Err` says why the MIME structure could not be used. Our own decoding
    /// first, the full parse where that bails (or always, for `reference`).
    fn scan_mime(&self, data: &[u8], reference: bool) -> Result<Scan, &'static str> {
        if !reference {
            if let Some(scan) = self.scan_own(data) {
                return Ok(scan);
            }
        }
        // mail-parser promises not to panic, but has debug assertions and unchecked arithmetic on
        // hostile input; a panic here must cost the structure, not the verdict.
        catch_unwind(AssertUnwindSafe(|| {
            let m = MessageParser::new().parse(data).ok_or("no MIME structure found")?;
            let mut scan = Scan::default();
            let walked = self.walk(&m, "", 0, Pass::Full, b"", &mut scan);
            debug_assert!(walked.is_ok(), "only our own decoding bails");
            Ok(scan)
        }))
        .unwrap_or(Err("MIME parser failed on this message"))
    }

    /// The structure parse with our own decoding; `None` where only the full parse can tell what
    /// it makes of the message (including where either parse would panic).
    fn scan_own(&self, data: &[u8]) -> Option<Scan> {
        catch_unwind(AssertUnwindSafe(|| {
            let m = self.structure.parse(data)?;
            own::same_framing(&m).ok()?;
            let mut scan = Scan::default();
            self.walk(&m, "", 0, Pass::Own, b"", &mut scan).ok()?;
            Some(scan)
        }))
        .ok()
        .flatten()
    }

    /// The parsing path over a whole message in memory, its body from `body_at`: what `check`
    /// does with any message that is not a single unencoded part. Public for the tests that
    /// compare it with `reference` set (mail-parser's full parse alone) and unset.
    #[doc(hidden)]
    pub fn scan_message(&self, data: &[u8], body_at: usize, reference: bool) -> StageResult {
        self.scan_bytes(data, body_at, reference).into_result()
    }

    /// The structure parser the scanner's own decoding runs first (mail-parser ignoring
    /// Content-Transfer-Encoding); for the fuzz target that checks the census against it.
    #[doc(hidden)]
    pub fn structure_parser() -> MessageParser {
        own::structure_parser()
    }

    /// Whether [`ContentScanner::scan_message`] would use our own decoding on `data`, rather than
    /// bail to the full parse; for the tests, which must show they exercise it.
    #[doc(hidden)]
    pub fn decodes_itself(&self, data: &[u8]) -> bool {
        self.scan_own(data).is_some()
    }

    /// The parsing path: `data` is the whole message, its body from `body_at`.
    fn scan_bytes(&self, data: &[u8], body_at: usize, reference: bool) -> Scan {
        let mut scan = self.scan_mime(data, reference).unwrap_or_else(|why| {
            let mut s = Scan::default();
            s.details.push(("mime_error".into(), why.into()));
            s
        });
        // Also the undecoded body: catches what the structure hid from the walk (a preamble, a
        // mis-framed part) and everything when there was no structure.
        if self.config.eicar && !scan.infected() && self.eicar.in_part(data.get(body_at..).unwrap_or_default()) {
            scan.add(Finding::virus("raw", None));
        }
        scan
    }
}

impl Stage for ContentScanner {
    fn name(&self) -> &str {
        "content"
    }

    fn check(&self, view: &MessageView<'_>) -> Result<StageResult, StageError> {
        let size = view.len();
        let limit = self.config.max_message_size;
        if limit > 0 && size > limit {
            let f = Finding::blocked("message", None, "size:message").sized(size, limit);
            return Ok(Scan { findings: vec![f], ..Scan::default() }.into_result());
        }
        let io_err = |e: std::io::Error| StageError::Temporary(format!("reading the message: {e}"));
        let limits = self.structure_limits();
        let fields = view.header.headers.live().count();
        if fields > limits.max_header_fields {
            // Not even the header is handed to the parser; the body is still searched as it is.
            let mut scan = Scan::default();
            scan.add(Finding::breach(Breach::HeaderFields { limit: limits.max_header_fields }, fields));
            if self.config.eicar && self.eicar.scan_body(view.body, |_| {}).map_err(io_err)? {
                scan.add(Finding::virus("raw", None));
            }
            return Ok(scan.into_result());
        }
        let mut head = view.header.headers.live_bytes();
        head.push(b'\n');
        let single = catch_unwind(AssertUnwindSafe(|| {
            MessageParser::new().parse_headers(&head).filter(|m| m.parts.first().is_some_and(is_single_identity))
        }))
        .ok()
        .flatten();
        if let Some(m) = single {
            let mut scan = Scan::default();
            self.scan_single(view, &m.parts[0], &mut scan).map_err(io_err)?;
            return Ok(scan.into_result());
        }
        let data = view.to_vec().map_err(io_err)?;
        if let Err(breach) = structure::census(&data, &limits) {
            let mut scan = Scan::default();
            scan.add(Finding::breach(breach, 0));
            if self.config.eicar && self.eicar.in_part(data.get(head.len()..).unwrap_or_default()) {
                scan.add(Finding::virus("raw", None));
            }
            return Ok(scan.into_result());
        }
        Ok(self.scan_bytes(&data, head.len(), false).into_result())
    }

    fn with_list_changes(&self, changes: &ListChanges) -> Option<Box<dyn Stage>> {
        Some(Box::new(ContentScanner {
            config: self.config.clone(),
            eicar: self.eicar.clone(),
            blocklist: Arc::clone(&self.blocklist),
            rules: self.rules.changed(changes),
            classes: self.classes.clone(),
            structure: self.structure.clone(),
        }))
    }
}

impl ContentScanner {
    fn structure_limits(&self) -> StructureLimits {
        StructureLimits {
            max_parts: self.config.max_parts,
            max_depth: self.config.max_depth,
            max_header_fields: self.config.max_header_fields,
        }
    }
}

/// A top-level part we can scan in place: not a container, and its body is its content.
fn is_single_identity(root: &MessagePart<'_>) -> bool {
    let container = root
        .content_type()
        .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart") || ct.ctype().eq_ignore_ascii_case("message"));
    !container && declared_encoding(root) == Encoding::None
}

/// How much of a single-part body is read to tell its type.
const SNIFF_HEAD: usize = 64 * 1024;

/// Whether a part's bytes are looked at for their type: attachments (named), and parts declared
/// as anything but text. A message's own text is not: a body that starts with `#!/bin/sh` is a
/// script someone mailed to be read.
fn sniffed(filename: Option<&str>, ctype: Option<&str>) -> bool {
    filename.is_some() || ctype.is_some_and(|t| !t.starts_with("text/") && !t.starts_with("multipart/"))
}

fn content_type(part: &MessagePart<'_>) -> Option<String> {
    let ct = part.content_type()?;
    let t = match ct.subtype() {
        Some(sub) => format!("{}/{}", ct.ctype(), sub),
        None => ct.ctype().to_string(),
    };
    Some(t.to_ascii_lowercase())
}

fn section_of(prefix: &str, n: usize) -> String {
    if prefix.is_empty() {
        n.to_string()
    } else {
        format!("{prefix}.{n}")
    }
}

fn or_top(section: &str) -> &str {
    if section.is_empty() {
        "the top"
    } else {
        section
    }
}

/// Make a sender-chosen name safe for a log line: no control characters, bounded length.
fn printable(name: &str) -> String {
    let mut out: String = name.chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect();
    if name.chars().nth(200).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::Verdict;

    #[test]
    fn no_structure_at_all_still_gets_the_raw_search() {
        let scanner = ContentScanner::new(ContentConfig::default()).unwrap();
        // mail-parser 0.11 finds a structure in any non-empty input, so only an empty message
        // (or a parser panic) gets here.
        let r = scanner.scan_message(b"", 0, false);
        assert_eq!(r.verdict, Verdict::Clean);
        assert_eq!(r.details, [("mime_error".to_string(), "no MIME structure found".to_string())]);
    }

    #[test]
    fn names_are_made_printable() {
        assert_eq!(printable("a\r\nb.exe"), "a??b.exe");
        assert_eq!(printable(&"x".repeat(300)).len(), 203);
    }
}
