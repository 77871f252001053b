//! Where the log goes: `tracing` events written to standard error, one line each.
//!
//! - The daemons (`watch`, `kick`) under systemd: each line starts with the syslog priority in
//!   sd-daemon's form (`<3>` for errors), which journald reads, so `journalctl -p err -u spoolsift`
//!   shows exactly the errors; journald adds the time itself.
//! - The daemons elsewhere: `2026-12-02T16:01:02.345Z ERROR message`, time in UTC.
//! - The other commands: the message alone, as a Unix tool writes to standard error.
//!
//! A line that cannot be written is dropped: a closed standard error, or a full disk behind a
//! redirection, must not stop the daemon. (A journald that stops reading does block the writer,
//! as it blocks every service that logs to it.)

use std::fmt;
use std::io::Write;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A long-running process: priorities for journald, or timestamps.
    Daemon,
    /// A command: the message alone.
    Plain,
}

/// Install the subscriber for this process (once, at start). `SPOOLSIFT_LOG=debug` shows more.
pub fn init(style: Style) {
    let journald = style == Style::Daemon && stderr_is_journal();
    let max = match std::env::var("SPOOLSIFT_LOG").as_deref() {
        Ok("debug") => Level::DEBUG,
        Ok("warn") => Level::WARN,
        Ok("error") => Level::ERROR,
        _ => Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(max)
        .event_format(Line { style, journald })
        .with_writer(Stderr)
        .try_init();
}

/// A daemon that cannot start or go on says why in one line, as a command would
/// (`spoolsift watch: …`), at the error priority under systemd.
pub fn fatal(command: &str, why: &str) {
    let prefix = if stderr_is_journal() { "<3>" } else { "" };
    crate::errln!("{prefix}spoolsift {command}: {why}");
}

/// Whether standard error is the journal's stream: systemd sets `JOURNAL_STREAM` to its
/// `device:inode`, and a child that redirected its standard error must not be taken for it.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.split_once(':') else { return false };
    // fstat, not an open of /proc/self/fd/2: journald's stream is a socket, which cannot be
    // opened by path.
    // SAFETY: a zeroed stat is a valid value for fstat(2) to fill; fd 2 is only read.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer for the duration of the call.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino)
}

/// A log line's text with control characters shown as `\xNN`: a line is one line, whatever a
/// sender put in a header or an address (journald splits entries at a newline, and a `<N>` at the
/// start of a forged one would set its priority).
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The syslog priority of a level (sd-daemon(3)).
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

struct Line {
    style: Style,
    journald: bool,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = *event.metadata().level();
        if self.journald {
            write!(w, "<{}>", priority(level))?;
        } else if self.style == Style::Daemon {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let stamp = crate::outside::clock::rfc3339(now.as_secs());
            let stamp = stamp.trim_end_matches('Z');
            write!(w, "{stamp}.{:03}Z {level:<5} ", now.subsec_millis())?;
        }
        let mut text = String::new();
        ctx.field_format().format_fields(Writer::new(&mut text), event)?;
        writeln!(w, "{}", escape_controls(&text))
    }
}

/// Standard error, each line written whole, errors dropped.
struct Stderr;

struct StderrLine(Vec<u8>);

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for StderrLine {
    fn drop(&mut self) {
        let _ = std::io::stderr().lock().write_all(&self.0);
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = StderrLine;
    fn make_writer(&'a self) -> StderrLine {
        StderrLine(Vec::with_capacity(256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain ünïcode"), "plain ünïcode");
        assert_eq!(escape_controls("a\nb\r\x1b[31m\0"), "a\\x0ab\\x0d\\x1b[31m\\x00");
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!([Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE].map(priority), [3, 4, 6, 7, 7]);
    }
}
