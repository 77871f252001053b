//! ARC verification time per message: chains of 1 and 3 RSA-2048 sets sealed at start-up (keys
//! made with openssl), key records from memory, so the figure is canonicalization, hashing and
//! RSA, not DNS. Run with `scripts/bench.sh` or `cargo bench --bench arc`.

#[path = "support/keys.rs"]
mod keys;

use std::time::Instant;

use spoolsift::dns::StaticTxt;
use spoolsift::spool::message::CrlfReader;
use spoolsift::stages::arc::verify::{self, split_message, ArcStatus};
use spoolsift::stages::arc::{SealConfig, Sealer};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = keys::rsa_2048(dir.path());
    let mut txt = StaticTxt::new();
    txt.insert("b._domainkey.bench.example", record);
    let config = SealConfig {
        domain: "bench.example".into(),
        selector: "b".into(),
        key_file: key.clone(),
        headers: vec!["from".into(), "to".into(), "subject".into(), "date".into(), "message-id".into()],
        timestamp: Some(1_750_000_000),
    };
    let sealer = Sealer::new(&config, &std::fs::read(&key).unwrap()).unwrap();

    println!("{:>9} {:>10} {:>12} {:>10}", "instances", "body", "µs/message", "messages/s");
    for body_kb in [2usize, 100] {
        let line = "The quick brown fox jumps over the lazy dog, again and again.  \n";
        let body = line.repeat(body_kb * 1024 / line.len());
        let mut msg = format!(
            "From: a@origin.example\nTo: b@dest.example\nSubject: bench\nDate: Sun, 15 Jun 2025 12:00:00 +0000\nMessage-ID: <b@x>\n\n{body}"
        )
        .into_bytes();
        for instances in 1..=3u32 {
            let (headers, b) = split_message(&msg);
            let cv = if instances == 1 { ArcStatus::None } else { ArcStatus::Pass };
            let set = sealer.seal(&headers, &mut CrlfReader::new(b), cv, "mx.bench.example; none", 0).unwrap().unwrap();
            let mut next = [set.seal, set.ams, set.aar].concat();
            next.extend_from_slice(&msg);
            msg = next;
            if instances == 2 {
                continue;
            }
            let (headers, b) = split_message(&msg);
            let run = || verify::verify(&headers, &mut CrlfReader::new(b), &txt, 1_750_000_060).unwrap();
            assert_eq!(run().result, ArcStatus::Pass);
            let rounds = if body_kb > 10 { 300 } else { 1000 };
            let start = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(run());
            }
            let per = start.elapsed().as_secs_f64() / f64::from(rounds);
            println!("{instances:>9} {:>8}KB {:>12.1} {:>10.0}", body_kb, per * 1e6, 1.0 / per);
        }
    }
}
