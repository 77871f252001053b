//! The edits every re-queued `-H` needs, so that Exim delivers it once, unfrozen, without sending
//! a second success DSN, and without routing it back to the scanner.

use crate::spool::recipients::dsn;
use crate::spool::{AclScope, AclVariable, BodyCounts, MessageId, OptionLine, SpoolHeader};

/// The spool-only ACL variable that stops Exim's scan router from matching the re-queued message
/// (`condition = ${if !def:acl_m_scanned}`). Senders cannot forge it, unlike a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Name without `acl_m`: `_scanned` for `$acl_m_scanned`.
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Default for Marker {
    fn default() -> Self {
        Marker { name: b"_scanned".to_vec(), value: b"yes".to_vec() }
    }
}

impl Marker {
    /// A marker from the variable name as an admin writes it: `acl_m_scanned` or `_scanned`.
    pub fn named(var: &str, value: &str) -> Result<Marker, String> {
        let rest = var.strip_prefix("acl_m").unwrap_or(var);
        let ok = !rest.is_empty()
            && (rest.starts_with('_') || rest.chars().all(|c| c.is_ascii_digit()))
            && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!("{var:?} is not a message ACL variable name (acl_m_<name> or acl_m<digit>)"));
        }
        if value.is_empty() {
            return Err("the marker needs a non-empty value (Exim's def: tests for one)".into());
        }
        Ok(Marker { name: rest.as_bytes().to_vec(), value: value.as_bytes().to_vec() })
    }

    pub fn is_on(&self, h: &SpoolHeader) -> bool {
        h.options.acl(AclScope::Message, &self.name).is_some_and(|v| !v.value.is_empty())
    }
}

/// Which of the re-queue edits to make.
#[derive(Debug, Clone)]
pub struct Transform {
    pub marker: Marker,
    /// Where to record the original id when the message gets a new one (`None`: don't).
    pub original_id_var: Option<Vec<u8>>,
    /// Drop `-frozen`/`-manual_thaw` (a copy forced out of a frozen message still says frozen).
    pub unfreeze: bool,
}

impl Default for Transform {
    fn default() -> Self {
        Transform { marker: Marker::default(), original_id_var: Some(b"_orig_id".to_vec()), unfreeze: true }
    }
}

impl Transform {
    /// Apply the edits that do not depend on the body.
    ///
    /// Kept as they are, on purpose: line 2–4 (originator, sender, receive time: they drive message
    /// age and retry timing), `-received_time_*`, `-deliver_firsttime` (`$first_delivery`), the
    /// host, TLS and auth lines, `-N`, ORCPT, `-dsn_envid`, `-dsn_ret`, and the recipient list with
    /// its non-recipients tree (Exim skips what the tree holds).
    pub fn apply(&self, h: &mut SpoolHeader) {
        if self.unfreeze {
            h.options.remove("frozen");
            h.options.remove("manual_thaw");
        }
        h.options.set_acl(AclVariable::message(&self.marker.name, &self.marker.value));
        clear_success_notify(h);
        if !h.non_recipients.was_sorted_on_read() {
            // An unsorted tree makes Exim miss entries and deliver those addresses again.
            h.non_recipients.force_rewrite();
        }
    }

    /// Give the message a new id, recording the old one.
    pub fn change_id(&self, h: &mut SpoolHeader, new_id: MessageId) {
        if let Some(var) = &self.original_id_var {
            if h.options.acl(AclScope::Message, var).is_none() {
                h.options.set_acl(AclVariable::message(var, h.id.as_bytes()));
            }
        }
        h.id = new_id;
    }
}

/// Exim already sent the success DSN when queuefile "delivered" the copy to us; a second one would
/// follow the real delivery. Clear NOTIFY=SUCCESS; where that leaves no NOTIFY bit at all, set
/// NEVER, so that "SUCCESS only" does not turn into the default "FAILURE" bounces.
fn clear_success_notify(h: &mut SpoolHeader) {
    for r in &mut h.recipients {
        let f = &mut r.fields;
        if f.dsn_flags & dsn::NOTIFY_SUCCESS != 0 {
            f.dsn_flags &= !dsn::NOTIFY_SUCCESS;
            if f.dsn_flags & dsn::NOTIFY_ANY == 0 {
                f.dsn_flags |= dsn::NOTIFY_NEVER;
            }
        }
    }
}

/// Record a new body's counts: `-body_linecount` (too small truncates BDAT deliveries, too large
/// stalls them) and `-body_zerocount` only when non-zero. A new body is always written with LF line
/// ends, so a wire-format flag goes. `-max_received_linelength` stays: it describes what was
/// received, headers included, and is informational only.
pub fn set_body_counts(h: &mut SpoolHeader, counts: &BodyCounts) {
    h.options.remove("spool_file_wireformat");
    h.options.set(OptionLine::with_value("body_linecount", counts.lines.to_string().as_bytes()));
    if counts.nuls > 0 {
        h.options.set(OptionLine::with_value("body_zerocount", counts.nuls.to_string().as_bytes()));
    } else {
        h.options.remove("body_zerocount");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names() {
        assert_eq!(Marker::named("acl_m_scanned", "yes").unwrap().name, b"_scanned");
        assert_eq!(Marker::named("_done", "1").unwrap().name, b"_done");
        assert_eq!(Marker::named("acl_m4", "1").unwrap().name, b"4");
        assert!(Marker::named("acl_c_x", "1").is_err());
        assert!(Marker::named("acl_m_bad name", "1").is_err());
        assert!(Marker::named("acl_m_x", "").is_err());
    }
}
