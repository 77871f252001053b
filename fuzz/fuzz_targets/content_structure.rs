//! The content scanner's structure census against mail-parser's own parse, on arbitrary
//! messages: the census must not count far fewer parts than mail-parser builds (nested messages
//! included), or a message under the limits by the census could still take mail-parser's memory.
//! mail-parser may panic on hostile input (with the debug assertions fuzzing builds have); such
//! panics are quietened here and those inputs skipped.

#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use mail_parser::{Message, MessageParser, PartType};
use spoolsift::stages::content::structure::{census, StructureLimits};
use spoolsift::stages::content::ContentScanner;

static QUIET: Once = Once::new();

fn parts(m: &Message<'_>) -> usize {
    m.parts
        .iter()
        .map(|p| match &p.body {
            PartType::Message(inner) => 1 + parts(inner),
            _ => 1,
        })
        .sum()
}

fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let limits = StructureLimits { max_parts: usize::MAX, max_depth: usize::MAX, max_header_fields: usize::MAX };
    let Ok(counts) = census(data, &limits) else {
        return; // only the decoded-size budget can stop it here
    };
    let counted = counts.parts;
    // Both parses the scanner may run: mail-parser's full one, and its structure parse that
    // ignores Content-Transfer-Encoding.
    let Ok(built) = std::panic::catch_unwind(|| {
        let full = MessageParser::new().parse(data).map_or(0, |m| parts(&m));
        let structure = ContentScanner::structure_parser().parse(data).map_or(0, |m| parts(&m));
        full.max(structure)
    }) else {
        return;
    };
    // The census follows mail-parser's framing, but not every quirk of its header parsers: on
    // hostile header blocks it may end a block a few bytes off and miss a level. What the memory
    // bound needs is that it cannot be fooled by more than that: never a large factor.
    if counted * 2 + 8 < built {
        eprintln!("census counted {counted} parts, mail-parser built {built}");
    }
    assert!(counted * 2 + 8 >= built, "census counted {counted} parts, mail-parser built {built}");
});
