//! Notices: a short message saying what became of a message (quarantined, held), written into
//! Exim's spool as a new message by the re-queue procedure, for Exim to deliver like any other.
//!
//! Each notice has the null envelope sender (RFC 5321 §4.5.5: nothing answers it, no loop) and
//! `Auto-Submitted: auto-replied` (RFC 3834), and carries our re-queue marker, so the scan router
//! does not hand it back to us. Who gets one: the postmaster (with the quarantine key, for every
//! quarantined message), the recipients of a quarantined or held message when asked, and its
//! sender only when asked (off by default: most senders of what gets quarantined are forged, and
//! a notice to them is backscatter). Notices to one address are limited per hour.
//!
//! A notice is sent once its message's outcome is durable; a stop between the two loses that
//! notice (never the message, nor a second notice).

pub use crate::pipeline::config::NotifyConfig;
pub use crate::pipeline::decide::Tell;
use crate::requeue::{self, BodyPlan, Committed, RequeueError, TargetSpool, Transform};
use crate::spool::headers::sanitize;
use crate::spool::{BodyCounts, MessageId, Position, Reason, SpoolError, SpoolHeader};

/// What a notice says, about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About {
    pub id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: String,
    /// `quarantined` or `held`.
    pub action: &'static str,
    pub reasons: Vec<String>,
    pub key: Option<String>,
}

/// One notice to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl NotifyConfig {
    pub fn is_on(&self) -> bool {
        !self.postmaster.is_empty() || self.recipients || self.sender
    }

    fn expand(&self, text: &str, a: &About) -> String {
        text.replace("{id}", &a.id)
            .replace("{sender}", if a.sender.is_empty() { "<>" } else { &a.sender })
            .replace("{recipients}", &a.recipients.join(", "))
            .replace("{subject}", &a.subject)
            .replace("{action}", a.action)
            .replace("{reasons}", &a.reasons.join("; "))
            .replace("{key}", a.key.as_deref().unwrap_or("(none)"))
    }

    /// The notices for `a`: the postmaster's (quarantined only), then the recipients', then the
    /// sender's, each address once.
    pub fn notices(&self, a: &About, tell: Tell) -> Vec<Notice> {
        let mut to: Vec<String> = Vec::new();
        if !self.postmaster.is_empty() && a.key.is_some() {
            to.push(self.postmaster.clone());
        }
        if tell.recipients {
            to.extend(a.recipients.iter().cloned());
        }
        if tell.sender && !a.sender.is_empty() {
            to.push(a.sender.clone());
        }
        let mut seen = std::collections::BTreeSet::new();
        to.retain(|t| seen.insert(t.to_ascii_lowercase()));
        // The postmaster's notice names the key; one to anyone else does not (releasing is for
        // the postmaster).
        let public = About { key: None, ..a.clone() };
        to.into_iter()
            .map(|t| {
                let about = if t == self.postmaster { a } else { &public };
                Notice {
                    subject: sanitize(&self.expand(&self.subject, about), 200),
                    body: text_body(&self.expand(&self.template, about)),
                    to: t,
                }
            })
            .collect()
    }
}

/// A body of text lines: control characters but tabs and line feeds made visible, CR LF to LF,
/// and an LF at the end.
fn text_body(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.replace("\r\n", "\n").chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Write `n` into `target` as message `id`: a new `-D` and `-H` by the re-queue procedure.
#[allow(clippy::too_many_arguments)]
pub fn write(
    target: &TargetSpool,
    transform: &Transform,
    id: MessageId,
    n: &Notice,
    from: &str,
    message_id_domain: &str,
    now: u64,
) -> Result<Committed, RequeueError> {
    let (uid, gid) = target.owner.unwrap_or((0, 0));
    let login = user_name(uid).unwrap_or_else(|| "exim".into());
    let skeleton = format!(
        "{id}-H\n{login} {uid} {gid}\n<>\n{now} 0\n-ident {login}\n-received_protocol local\n-body_linecount 0\nXX\n1\nx@x\n\n"
    );
    let mut h = SpoolHeader::parse(skeleton.as_bytes(), Some(&id)).map_err(RequeueError::from)?;
    h.recipients = vec![crate::spool::RecipientLine::new(n.to.as_bytes())];
    let date = crate::outside::clock::rfc5322(now);
    for (name, value) in [
        ("Auto-Submitted", "auto-replied".to_string()),
        ("From", from.to_string()),
        ("To", n.to.clone()),
        ("Subject", n.subject.clone()),
        ("Date", date),
        ("Message-ID", format!("<{id}@{message_id_domain}>")),
        ("MIME-Version", "1.0".into()),
        ("Content-Type", "text/plain; charset=utf-8".into()),
        ("Content-Transfer-Encoding", "8bit".into()),
    ] {
        h.headers
            .add(name.as_bytes(), sanitize(&value, 998).as_bytes(), Position::Bottom)
            .map_err(|e| RequeueError::Invalid(SpoolError::whole_file(Reason::Io(e.to_string()))))?;
    }
    transform.apply(&mut h);
    let body = n.body.as_bytes();
    let counts =
        BodyCounts { lines: body.iter().filter(|&&b| b == b'\n').count() as u64, nuls: 0, ..BodyCounts::default() };
    requeue::transform::set_body_counts(&mut h, &counts);
    requeue::commit(target, &h, BodyPlan::Bytes(body))
}

/// The login name of `uid`, as Exim writes its own in line 2 of the messages it makes.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: a zeroed passwd is a valid value for getpwuid_r to fill; buf outlives the call and
    // the result's pointers are read before it is dropped.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded: pw_name points at a NUL-terminated string inside buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about() -> About {
        About {
            id: "1xXORz-0000000058C-2p8L".into(),
            sender: "alice@sender.example".into(),
            recipients: vec!["bob@dest.example".into(), "carol@dest.example".into()],
            subject: "Offer\u{7}".into(),
            action: "quarantined",
            reasons: vec!["content: infected (Eicar-Test-Signature)".into()],
            key: Some("000000000042.1xXORz-0000000058C-2p8L".into()),
        }
    }

    #[test]
    fn who_is_told_and_what() {
        let cfg = NotifyConfig { postmaster: "postmaster@dest.example".into(), ..NotifyConfig::default() };
        let n = cfg.notices(&about(), Tell::default());
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].to, "postmaster@dest.example");
        assert_eq!(n[0].subject, "Message quarantined: Offer", "control characters go from a header");
        assert_eq!(
            n[0].body,
            "A message was not delivered as it was sent: it was quarantined.\n\nMessage id: 1xXORz-0000000058C-2p8L\n\
             From: alice@sender.example\nTo: bob@dest.example, carol@dest.example\nSubject: Offer\\u{7}\n\
             Why: content: infected (Eicar-Test-Signature)\nQuarantine key: 000000000042.1xXORz-0000000058C-2p8L\n\n\
             Ask your postmaster if you need it.\n"
        );
        let all = cfg.notices(&about(), Tell { recipients: true, sender: true });
        assert_eq!(
            all.iter().map(|n| n.to.as_str()).collect::<Vec<_>>(),
            ["postmaster@dest.example", "bob@dest.example", "carol@dest.example", "alice@sender.example"]
        );
        assert!(all[1].body.contains("Quarantine key: (none)"), "only the postmaster gets the key");
        // A held message has no key: the postmaster is not told of it.
        let held = About { action: "held", key: None, ..about() };
        assert!(cfg.notices(&held, Tell::default()).is_empty());
        // No notice to the null sender.
        let bounce = About { sender: String::new(), ..about() };
        assert_eq!(cfg.notices(&bounce, Tell { recipients: false, sender: true }).len(), 1);
    }
}
