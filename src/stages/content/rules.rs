//! Attachment name and type rules, normalised once from the configuration.

use std::collections::HashSet;

use crate::stages::ListChanges;

/// Extensions and types, lowercased, leading dots dropped.
#[derive(Debug, Clone, Default)]
pub struct NameRules {
    blocked: HashSet<String>,
    documents: HashSet<String>,
    types: HashSet<String>,
}

/// A file name's last extension, lowercase, taken as [`NameRules::check_name`] takes names;
/// `None` without a base name before it.
pub fn extension(name: &str) -> Option<String> {
    let name = windows_name(name);
    let (base, ext) = name.rsplit_once('.')?;
    let ext = ext.trim().to_lowercase();
    (!base.trim().is_empty() && !ext.is_empty()).then_some(ext)
}

/// A name the way Windows would save it (see [`NameRules::check_name`]).
fn windows_name(name: &str) -> &str {
    let name = name.split('\0').next().unwrap_or("");
    let name = name.rsplit(['/', '\\']).next().unwrap_or("");
    name.trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

fn norm_ext(e: &str) -> String {
    e.trim().trim_start_matches('.').to_ascii_lowercase()
}

impl NameRules {
    pub fn new(blocked: &[String], documents: &[String], types: &[String]) -> NameRules {
        NameRules {
            blocked: blocked.iter().map(|e| norm_ext(e)).filter(|e| !e.is_empty()).collect(),
            documents: documents.iter().map(|e| norm_ext(e)).filter(|e| !e.is_empty()).collect(),
            types: types.iter().map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect(),
        }
    }

    /// These rules with a recipient's changes: its blocked extensions and types added, its
    /// allowed ones taken out.
    pub fn changed(&self, changes: &ListChanges) -> NameRules {
        let mut out = self.clone();
        out.blocked.extend(changes.block_extensions.iter().map(|e| norm_ext(e)));
        for e in &changes.allow_extensions {
            out.blocked.remove(&norm_ext(e));
        }
        out.types.extend(changes.block_types.iter().map(|t| t.trim().to_ascii_lowercase()));
        for t in &changes.allow_types {
            out.types.remove(&t.trim().to_ascii_lowercase());
        }
        out
    }

    /// The rule a file name breaks (without the `filename:` prefix), if any.
    ///
    /// The name is taken the way Windows would save it, since that is where these extensions
    /// execute: a path is cut to its last component, anything from a NUL on is dropped (clients
    /// differ, and the short reading is the dangerous one), and trailing dots and white space go.
    /// Spaces before a dot are trimmed too, so `invoice.pdf     .exe` is a double extension.
    pub fn check_name(&self, name: &str) -> Option<String> {
        let name = windows_name(name);
        let mut exts = name.rsplit('.').map(|e| e.trim().to_lowercase());
        let last = exts.next()?;
        // The base name alone is not an extension.
        let prev = exts.next()?;
        let has_base = exts.next().is_some();
        if !self.blocked.contains(&last) {
            return None;
        }
        if has_base && self.documents.contains(&prev) {
            return Some(format!("double-extension:{prev}.{last}"));
        }
        Some(format!("extension:{last}"))
    }

    /// Whether `type/subtype` (lowercase) is a blocked content type.
    pub fn blocked_type(&self, ctype: &str) -> bool {
        self.types.contains(ctype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> NameRules {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        NameRules::new(&s(&["exe", ".SCR", "js"]), &s(&["pdf", "doc"]), &s(&["application/x-msdownload"]))
    }

    #[test]
    fn names() {
        let r = rules();
        let check = |n: &str| r.check_name(n);
        assert_eq!(check("setup.exe").as_deref(), Some("extension:exe"));
        assert_eq!(check("SETUP.EXE").as_deref(), Some("extension:exe"));
        assert_eq!(check("x.Scr").as_deref(), Some("extension:scr"));
        assert_eq!(check("invoice.pdf.exe").as_deref(), Some("double-extension:pdf.exe"));
        assert_eq!(check("invoice.PDF   .exe. . ").as_deref(), Some("double-extension:pdf.exe"));
        assert_eq!(check("C:\\Users\\x\\invoice.doc.js").as_deref(), Some("double-extension:doc.js"));
        assert_eq!(check("a.exe\0.pdf").as_deref(), Some("extension:exe"));
        assert_eq!(check(".pdf.exe").as_deref(), Some("double-extension:pdf.exe"), "empty base name");
        assert_eq!(check("pdf.exe").as_deref(), Some("extension:exe"), "pdf is the base name here");
        assert_eq!(check("report.exe.pdf"), None);
        assert_eq!(check("exe"), None);
        assert_eq!(check("notes.txt"), None);
        assert_eq!(check(""), None);
        assert!(r.blocked_type("application/x-msdownload"));
        assert!(!r.blocked_type("application/pdf"));
    }

    #[test]
    fn a_recipients_changes_add_to_and_take_from_the_lists() {
        let set = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        let changes = ListChanges {
            block_extensions: set(&[".DOCM"]),
            allow_extensions: set(&["exe"]),
            block_types: set(&["Application/Zip"]),
            allow_types: set(&["application/x-msdownload"]),
        };
        let r = rules().changed(&changes);
        assert_eq!(r.check_name("invoice.pdf.exe"), None);
        assert_eq!(r.check_name("x.scr").as_deref(), Some("extension:scr"), "the rest of the list stays");
        assert_eq!(r.check_name("macro.docm").as_deref(), Some("extension:docm"));
        assert!(r.blocked_type("application/zip"));
        assert!(!r.blocked_type("application/x-msdownload"));
        // The original is unchanged.
        assert_eq!(rules().check_name("macro.docm"), None);
    }
}
