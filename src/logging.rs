//! Where the log goes: `tracing` events written to standard error, one line each.
//!
//! - The daemons (`watch`, `kick`) under systemd: each line starts with the syslog priority in
//!   sd-daemon's form (`<3>` for errors), which journald reads, so `journalctl -p err -u spoolsift`
//!   shows exactly the errors; journald adds the time itself.
//! - The daemons elsewhere: `2026-12-02T16:01:02.345Z ERROR message`, time in UTC.
//! - The other commands: the message alone, as a Unix tool writes to standard error.
//!
//! A line that cannot be written is dropped: logging must never stop the daemon (a closed
//! standard error, or a full disk behind a redirection).

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
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.split_once(':') else { return false };
    let meta = std::fs::File::options().read(true).open("/proc/self/fd/2").and_then(|f| f.metadata());
    match meta {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
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
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
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
    fn levels_map_to_syslog_priorities() {
        assert_eq!([Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE].map(priority), [3, 4, 6, 7, 7]);
    }
}
