//! The `arc` stage: ARC (RFC 8617) validation of the chain a message arrived with, and the sealer
//! that adds our own set once the message is final.
//!
//! Our own implementation over `ring`, not the `mail-auth` crate: the version that builds with
//! this project's rustc (0.13.3) gives wrong verdicts — a chain with a missing AMS comes out
//! `none`, `rsa-sha1` and a missing `a=` are accepted, tag lists are parsed leniently (duplicate
//! and upper-case tags, stray `;`), an AMS whose `h=` lists ARC-Seal passes, and there is no
//! oldest-pass; its sealer starts a new chain at i=1 on top of a chain it could not parse and
//! signs the old sets under `cv=fail`, `t=` cannot be fixed for tests, and its relaxed body
//! canonicalization is wrong for white-space-only trailing lines until 0.15, which needs a newer
//! rustc. The pieces: [`tags`] (tag lists), [`canon`] (canonicalization), [`keys`] (key records
//! and signing keys), [`verify`] (§5.2) and [`seal`] (§5.1).
//!
//! The stage reports `AuthPass`, `AuthFail` or `Neutral` (no chain), and the `arc=` clause of our
//! Authentication-Results. DNS failures fail the chain, as §5.2.1 says, unless the configuration
//! asks for a deferral instead.

pub mod canon;
pub mod keys;
pub mod seal;
pub mod tags;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use seal::{NewSet, SealConfig, Sealer};
pub use verify::{ArcResult, ArcStatus, DnsTrouble};

use super::{Stage, StageError, StageResult, Verdict};
use crate::dns::TxtLookup;
use crate::outside::Clock;
use crate::spool::{BodySource, HeaderFlag, HeaderLine, MessageView, Position, SpoolHeader};

/// What a temporary DNS failure during validation leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnDnsFailure {
    /// The chain fails (RFC 8617 §5.2.1: there are no temporary ARC errors).
    #[default]
    Fail,
    /// The stage reports a temporary failure, so the policy defers the message.
    Defer,
}

/// `[stages.arc]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArcConfig {
    /// A JSON records file (name → TXT value) instead of DNS: for tests and offline scans.
    pub txt_records: Option<std::path::PathBuf>,
    /// Name servers (`ip` or `ip:port`); empty for the system's resolv.conf.
    pub nameservers: Vec<String>,
    pub dns_timeout_ms: u64,
    pub dns_attempts: usize,
    pub on_dns_failure: OnDnsFailure,
    /// Add our own ARC set to the messages we re-queue.
    pub seal: Option<SealConfig>,
}

impl Default for ArcConfig {
    fn default() -> Self {
        ArcConfig {
            txt_records: None,
            nameservers: Vec::new(),
            dns_timeout_ms: 5000,
            dns_attempts: 2,
            on_dns_failure: OnDnsFailure::Fail,
            seal: None,
        }
    }
}

impl ArcConfig {
    /// The configured name servers as socket addresses (port 53 unless given).
    pub fn nameserver_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        self.nameservers
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("nameservers: {s:?} is not an IP address or ip:port"))
            })
            .collect()
    }

    pub fn dns_timeout(&self) -> Duration {
        Duration::from_millis(self.dns_timeout_ms)
    }
}

pub struct ArcStage {
    dns: Arc<dyn TxtLookup>,
    on_dns_failure: OnDnsFailure,
    timeout: Duration,
    /// "Now" for signature expiry (`x=`): fixed in a replay.
    clock: Clock,
}

/// A comment (RFC 8601 / RFC 5322 `ccontent`): parentheses and backslashes quoted.
pub(crate) fn comment(text: &str) -> String {
    let mut out = String::from("(");
    for c in text.chars() {
        if matches!(c, '(' | ')' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(')');
    out
}

/// Our `arc=` clause for Authentication-Results.
pub fn auth_results_clause(r: &ArcResult, remote_ip: Option<std::net::IpAddr>) -> String {
    let mut clause = format!("arc={}", r.result.as_str());
    match r.result {
        ArcStatus::Pass => clause.push_str(&format!(" (i={}) header.oldest-pass={}", r.instances, r.oldest_pass)),
        ArcStatus::Fail => clause.push_str(&format!(" {}", comment(&r.reason))),
        ArcStatus::None => {}
    }
    if let Some(ip) = remote_ip {
        clause.push_str(&format!(" smtp.remote-ip={ip}"));
    }
    clause
}

/// A message's live header fields, as stored.
pub fn header_texts(h: &SpoolHeader) -> Vec<&[u8]> {
    h.headers.live().map(HeaderLine::text).collect()
}

impl ArcStage {
    /// `timeout` bounds one message's check (all its key lookups).
    pub fn new(dns: Arc<dyn TxtLookup>, on_dns_failure: OnDnsFailure, timeout: Duration) -> ArcStage {
        ArcStage { dns, on_dns_failure, timeout, clock: Clock::System }
    }

    pub fn with_clock(mut self, clock: Clock) -> ArcStage {
        self.clock = clock;
        self
    }
}

impl Stage for ArcStage {
    fn name(&self) -> &str {
        "arc"
    }

    fn check(&self, message: &MessageView<'_>) -> Result<StageResult, StageError> {
        let headers = header_texts(message.header);
        let r = verify::verify(&headers, &mut message.body_wire_reader(), self.dns.as_ref(), self.clock.now_secs())
            .map_err(|e| StageError::Temporary(format!("reading the body: {e}")))?;
        let defer = match r.dns_trouble {
            DnsTrouble::Unrecorded => true,
            DnsTrouble::Temporary => self.on_dns_failure == OnDnsFailure::Defer,
            DnsTrouble::None => false,
        };
        if defer {
            return Err(StageError::Temporary(r.reason));
        }
        let remote_ip = message.header.client_ip();
        let verdict = match r.result {
            ArcStatus::Pass => Verdict::AuthPass,
            ArcStatus::Fail => Verdict::AuthFail,
            ArcStatus::None => Verdict::Neutral,
        };
        let mut out = StageResult::new(verdict)
            .detail("instances", r.instances.to_string())
            .detail("oldest_pass", r.oldest_pass.to_string())
            .detail("domains", r.domains.join(","));
        if !r.reason.is_empty() {
            out = out.detail("reason", r.reason.clone());
        }
        out.auth_results.push(auth_results_clause(&r, remote_ip));
        Ok(out)
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The `cv` our validation gave, from the arc stage's verdict.
pub fn cv_of(verdict: &Verdict) -> ArcStatus {
    match verdict {
        Verdict::AuthPass => ArcStatus::Pass,
        Verdict::AuthFail => ArcStatus::Fail,
        _ => ArcStatus::None,
    }
}

impl Sealer {
    /// Seal a final spool header: AAR from our own results (`resinfo`, this run's clauses, never
    /// an Authentication-Results field of the message, which a sender could have forged), then
    /// AMS and AS, prepended in that order through the spool header API. `Err` says why the
    /// message was not sealed; the message itself is unchanged then.
    pub fn seal_spool(
        &self,
        h: &mut SpoolHeader,
        body: &dyn BodySource,
        cv: ArcStatus,
        authserv_id: &str,
        resinfo: &[String],
        now: u64,
    ) -> Result<(), String> {
        let payload = if resinfo.is_empty() {
            format!("{authserv_id}; none")
        } else {
            format!("{authserv_id}; {}", resinfo.join("; "))
        };
        let view = MessageView::new(h, body);
        let set = self
            .seal(&header_texts(h), &mut view.body_wire_reader(), cv, &payload, now)
            .map_err(|e| format!("reading the body: {e}"))??;
        for text in [&set.aar, &set.ams, &set.seal] {
            let line = HeaderLine::from_text(HeaderFlag::Plain, text).map_err(|e| e.to_string())?;
            h.headers.insert(line, Position::Top);
        }
        Ok(())
    }
}
