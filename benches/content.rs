//! The content stage alone over the bench corpus: CPU per message of `ContentScanner::check`, on
//! one thread, with no service and no file-system work in the timed loop (the `-D` files are read
//! into memory first). Stable enough to compare decoders; under
//! `valgrind --tool=callgrind` give `ROUNDS=1` for instruction counts.
//!
//! ```sh
//! cargo bench --bench content            # MESSAGES=300 ROUNDS=5 by default
//! ```

#[path = "support/corpus.rs"]
mod corpus;

use std::time::Instant;

use spoolsift::spool::{MessageView, SpoolHeader};
use spoolsift::stages::content::{ContentConfig, ContentScanner};
use spoolsift::stages::{Stage, Verdict};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let n = env_or("MESSAGES", 300);
    let rounds = env_or("ROUNDS", 5).max(1);
    let dir = tempfile::tempdir().unwrap();
    let ids = corpus::generate(dir.path(), n, false);
    let messages: Vec<(SpoolHeader, Vec<u8>)> = ids
        .iter()
        .map(|(id, _)| {
            let h = std::fs::read(dir.path().join(format!("{id}-H"))).unwrap();
            let d = std::fs::read(dir.path().join(format!("{id}-D"))).unwrap();
            // A -D starts with its own name line; the body follows it.
            let body = d[d.iter().position(|&b| b == b'\n').unwrap() + 1..].to_vec();
            (SpoolHeader::parse(&h, Some(id)).unwrap(), body)
        })
        .collect();
    let bytes: usize = messages.iter().map(|(_, b)| b.len()).sum();
    let scanner = ContentScanner::new(ContentConfig::default()).unwrap();
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        for (header, body) in &messages {
            let r = scanner.check(&MessageView::new(header, body)).unwrap();
            assert_eq!(r.verdict, Verdict::Clean);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "content stage: {n} messages, {:.0} KB body on average; best of {rounds}: {:.1} us per message, {:.2} ns per body byte",
        bytes as f64 / n as f64 / 1024.0,
        best / n as f64 * 1e6,
        best / bytes as f64 * 1e9
    );
}
