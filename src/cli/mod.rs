//! The `spoolsift` command line. Each subcommand lives in its own file.

use clap::{Parser, Subcommand};

pub mod arc_verify;
pub mod capture;
pub mod check_config;
pub mod explain;
pub mod inspect;
pub mod kick;
pub mod probe;
pub mod quarantine;
pub mod queue;
pub mod replay;
pub mod replay_diff;
pub mod scan;
pub mod watch;

#[derive(Debug, Parser)]
#[command(name = "spoolsift", version, about = "Scan Exim spool messages and re-queue them safely")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print each message's envelope, options, headers and body counts as one JSON object per line.
    Inspect(inspect::Args),
    /// Run a pipeline over archived spool pairs, read-only, and report what it would do.
    Scan(scan::Args),
    /// The daemon: take messages from a queuefile directory, scan, act, re-queue.
    Watch(watch::Args),
    /// Validate the ARC chain (RFC 8617) of raw messages or spool -H files.
    ArcVerify(arc_verify::Args),
    /// Copy a live queue's complete pairs without disturbing it, with a manifest; with
    /// --pipeline, also record what the services answered.
    Capture(capture::Args),
    /// Run a pipeline over a capture with its recorded answers and a fixed clock, deterministically.
    Replay(replay::Args),
    /// Validate pipeline definitions.
    CheckConfig(check_config::Args),
    /// For each recipient of a message: the rules that matched, what they set, and the action
    /// that results. Changes nothing.
    Explain(explain::Args),
    /// List, show, release or delete quarantined messages.
    Quarantine(quarantine::Args),
    /// Every message in spoolsift's own hands (waiting, in flight, deferred, held, rejected,
    /// awaiting its delivery kick): list, show, retry, hold, release.
    Queue(queue::Args),
    /// The delivery helper: run `exim -Mc` on the messages the daemon re-queued, outside its
    /// sandbox (its own unit, spoolsift-kick.service).
    Kick(kick::Args),
}

/// Exit codes shared by the subcommands.
pub mod exit {
    pub const OK: i32 = 0;
    /// Some input was invalid (each one reported).
    pub const INVALID: i32 = 1;
    /// Usage or I/O error.
    pub const ERROR: i32 = 2;
}

pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit::ERROR } else { exit::OK };
        }
    };
    crate::logging::init(match cli.command {
        Command::Watch(_) | Command::Kick(_) => crate::logging::Style::Daemon,
        _ => crate::logging::Style::Plain,
    });
    match cli.command {
        Command::Inspect(a) => inspect::run(&a),
        Command::Scan(a) => scan::run(&a),
        Command::Watch(a) => watch::run(&a),
        Command::ArcVerify(a) => arc_verify::run(&a),
        Command::Capture(a) => capture::run(&a),
        Command::Replay(a) => replay::run(&a),
        Command::CheckConfig(a) => check_config::run(&a),
        Command::Explain(a) => explain::run(&a),
        Command::Quarantine(a) => quarantine::run(&a),
        Command::Kick(a) => kick::run(&a),
        Command::Queue(a) => queue::run(&a),
    }
}
