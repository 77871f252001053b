//! The content scanner's archive walk on arbitrary bytes attached as `a.zip`: the scanner looks
//! at what the bytes are, so the fuzzer reaches the zip, gzip and tar readers by their magic
//! numbers. Any panic out of the scanner, any hang (libFuzzer's timeout) and any memory past the
//! RSS limit is a finding; the readers' own panics are caught inside the walk.

#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use spoolsift::stages::content::{ContentConfig, ContentScanner};

static QUIET: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    // Small limits, so that every limit is reached within the fuzzer's input sizes.
    let config = ContentConfig {
        archive_max_members: 64,
        archive_max_expanded_bytes: 8 * 1024 * 1024,
        archive_max_ratio: 50,
        ..ContentConfig::default()
    };
    let scanner = ContentScanner::new(config).unwrap();
    let mut message = b"Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: application/zip\n\
Content-Disposition: attachment; filename=\"a.zip\"\nContent-Transfer-Encoding: binary\n\n"
        .to_vec();
    let body_at = message.iter().position(|&b| b == b'\n').map_or(0, |p| p + 2);
    message.extend_from_slice(data);
    message.extend_from_slice(b"\n--b1--\n");
    let _ = scanner.scan_message(&message, body_at, false);
});
