//! The content scanner's own transfer decoding against mail-parser's full parse, on arbitrary
//! messages: both must report exactly the same. mail-parser may panic on hostile input (with the
//! debug assertions fuzzing builds have); the scanner catches that on either path and falls back,
//! so such panics are quietened here and only a difference between the paths is a finding.

#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use spoolsift::stages::content::{ContentConfig, ContentScanner};

static QUIET: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let scanner = ContentScanner::new(ContentConfig { max_part_size: 64, ..ContentConfig::default() }).unwrap();
    let body_at = data.windows(2).position(|w| w == b"\n\n").map_or(data.len(), |p| p + 2);
    assert_eq!(scanner.scan_message(data, body_at, false), scanner.scan_message(data, body_at, true));
});
