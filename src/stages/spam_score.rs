//! What the two stages that score spam (`spamd`, `rspamd`) share: not sending a message over
//! their size limit, and the SpamAssassin-style headers they add.

use super::{StageResult, Verdict};

/// The answer for a message of `len` bytes over `max`: not sent to `service` (as spamc does
/// with its `-s` limit); `None` when it is within the limit.
pub fn skipped(len: u64, max: u64, service: &str) -> Option<StageResult> {
    (len > max).then(|| {
        StageResult::new(Verdict::Neutral)
            .detail("skipped", format!("{len} bytes, larger than max_message_bytes ({max}); not sent to {service}"))
    })
}

/// `X-Spam-Score: S` and `X-Spam-Status: Yes|No, score=S required=R tests=A,B`.
pub fn headers(spam: bool, score: &str, required: &str, tests: &str) -> [(String, String); 2] {
    let yes = if spam { "Yes" } else { "No" };
    [
        ("X-Spam-Score".into(), score.to_string()),
        ("X-Spam-Status".into(), format!("{yes}, score={score} required={required} tests={tests}")),
    ]
}
