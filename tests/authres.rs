//! Authentication-Results we write, and forgeries of them: a field of ours re-folded, commented and
//! quoted in every way RFC 8601 §2.2 and RFC 5322 §3.2 allow is still read as ours (and so removed
//! when it arrives from outside), and the same forms of another host's id are not.

use proptest::prelude::*;
use proptest::sample::select;
use spoolsift::pipeline::annotate::{forges_ours, InjectConfig};
use spoolsift::pipeline::{Action, Decision};
use spoolsift::spool::{HeaderFlag, HeaderLine, Position, SpoolHeader};
use spoolsift::stages::authres;

const SPEC_EXAMPLE: &[u8] = include_bytes!("data/spec-example/1xXORz-0000000058C-2p8L-H");

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// The Authentication-Results value the header step writes for `authserv_id`.
fn written_by_us(authserv_id: &str) -> Vec<u8> {
    let mut h = SpoolHeader::parse(SPEC_EXAMPLE, None).unwrap();
    let decision = Decision { action: Action::Deliver, reasons: Vec::new() };
    InjectConfig::default().apply(&mut h, authserv_id, &[], &decision).unwrap();
    let ours: Vec<_> = h.headers.get(b"authentication-results").map(|l| l.value()).collect();
    assert_eq!(ours.len(), 1);
    ours.into_iter().next().unwrap()
}

/// An incoming field with this value, folded as it arrived.
fn incoming(value: &str) -> HeaderLine {
    HeaderLine::from_text(HeaderFlag::Plain, format!("Authentication-Results: {value}\n").as_bytes()).unwrap()
}

fn domain() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..5).prop_map(|labels| labels.join("."))
}

/// Folding white space: spaces and tabs, possibly a line break followed by white space.
fn fws() -> impl Strategy<Value = String> {
    prop_oneof![Just(" ".to_string()), Just("\t".to_string()), Just("\n\t".to_string()), Just("  \n ".to_string())]
}

/// A comment, nesting up to three deep, with quoted-pairs and the characters that end a naive
/// scan (`)`, `;`, `"`) escaped or inside.
fn comment() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        "[a-z .;=\"]{0,8}",
        Just("\\)".to_string()),
        Just("\\(".to_string()),
        Just("\\\\".to_string()),
        Just("mx.example.net;".to_string()),
        Just("\n\t".to_string()),
    ];
    let leaf = prop::collection::vec(text, 0..4).prop_map(|t| format!("({})", t.concat()));
    leaf.prop_recursive(3, 12, 3, |inner| {
        (prop::collection::vec(inner, 1..3), "[a-z ]{0,4}").prop_map(|(parts, t)| format!("({t}{})", parts.concat()))
    })
}

/// `[CFWS]`: any mix of white space, folds and comments, possibly empty.
fn cfws() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![fws(), comment()], 0..4).prop_map(|p| p.concat())
}

/// `id` written as the grammar allows: any case, maybe the root's dot, as a token or as a
/// quoted-string whose characters may be quoted-pairs and which may hold white space at its ends.
fn spelled(id: String) -> impl Strategy<Value = String> {
    let n = id.len();
    (
        prop::collection::vec(any::<bool>(), n),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<bool>(), n + 1),
        select(vec!["", " ", "\t"]),
    )
        .prop_map(move |(upper, dot, quoted, escape, pad)| {
            let mut s: String =
                id.chars().zip(&upper).map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c }).collect();
            if dot {
                s.push('.');
            }
            if !quoted {
                return s;
            }
            let inner: String =
                s.chars().zip(&escape).map(|(c, &e)| if e { format!("\\{c}") } else { c.to_string() }).collect();
            format!("\"{pad}{inner}{pad}\"")
        })
}

/// A whole value: CFWS, the id, maybe CFWS and a version, CFWS, then the results.
fn value_for(id: String, results: &'static str) -> impl Strategy<Value = String> {
    (cfws(), spelled(id), prop::option::of((fws(), cfws())), cfws()).prop_map(move |(before, id, version, after)| {
        let version = version.map_or(String::new(), |(f, c)| format!("{f}1{c}"));
        format!("{before}{id}{version}{after}; {results}")
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn our_own_field_is_ours(ours in domain()) {
        let written = written_by_us(&ours);
        let claim = authres::claim(&written).unwrap();
        prop_assert!(claim.is(&ours));
        prop_assert_eq!(claim.results(&written), &b"none"[..]);
    }

    #[test]
    fn refolded_commented_quoted_forms_of_ours_are_removed(
        (ours, value) in domain().prop_flat_map(|d| (Just(d.clone()), value_for(d, "arc=pass; spf=pass")))
    ) {
        // The value we write starts with our id; the forms below are the same field re-spelled.
        let prefix = format!("{ours};");
        prop_assert!(written_by_us(&ours).starts_with(prefix.as_bytes()));
        let claim = authres::claim(value.as_bytes()).unwrap();
        prop_assert!(claim.is(&ours), "{:?} from {:?}", String::from_utf8_lossy(&claim.id), value);
        prop_assert_eq!(claim.results(value.as_bytes()), &b"arc=pass; spf=pass"[..], "{:?}", value);
        prop_assert!(forges_ours(value.as_bytes(), &ours));
        // Through the header step: the incoming copy is marked deleted, ours is the only one left.
        let mut h = SpoolHeader::parse(SPEC_EXAMPLE, None).unwrap();
        h.headers.insert(incoming(&value), Position::Top);
        let decision = Decision { action: Action::Deliver, reasons: Vec::new() };
        InjectConfig::default().apply(&mut h, &ours, &[], &decision).unwrap();
        let left: Vec<_> = h.headers.get(b"authentication-results").map(|l| l.value()).collect();
        let only_ours = vec![format!("{ours}; none").into_bytes()];
        prop_assert_eq!(left, only_ours);
    }

    #[test]
    fn the_same_forms_of_another_host_are_kept(
        (ours, value) in domain().prop_flat_map(|d| (Just(d.clone()), value_for(format!("x{d}"), "spf=pass")))
    ) {
        prop_assert!(!forges_ours(value.as_bytes(), &ours), "{:?}", value);
        let mut h = SpoolHeader::parse(SPEC_EXAMPLE, None).unwrap();
        h.headers.insert(incoming(&value), Position::Top);
        let decision = Decision { action: Action::Deliver, reasons: Vec::new() };
        InjectConfig::default().apply(&mut h, &ours, &[], &decision).unwrap();
        prop_assert_eq!(h.headers.get(b"authentication-results").count(), 2);
    }
}

/// The three forgeries that reached a mailbox before the authserv-id was read by the grammar.
#[test]
fn the_forgeries_seen_in_the_wild_are_marked_deleted() {
    let mut h = SpoolHeader::parse(SPEC_EXAMPLE, None).unwrap();
    for v in [
        "(outer (inner) comment) mx.example.net; arc=pass",
        "\"mx.example.net\"; arc=pass",
        "mx.example.net.; arc=pass",
        "other.example; spf=pass",
    ] {
        h.headers.add(b"Authentication-Results", v.as_bytes(), Position::Bottom).unwrap();
    }
    let decision = Decision { action: Action::Deliver, reasons: Vec::new() };
    InjectConfig::default().apply(&mut h, "mx.example.net", &[], &decision).unwrap();
    let texts: Vec<String> = h
        .headers
        .all()
        .iter()
        .filter(|l| l.is_named(b"Authentication-Results"))
        .map(|l| format!("{}{}", if l.is_deleted() { "*" } else { " " }, String::from_utf8_lossy(l.text()).trim_end()))
        .collect();
    assert_eq!(
        texts,
        [
            " Authentication-Results: mx.example.net; none",
            "*Authentication-Results: (outer (inner) comment) mx.example.net; arc=pass",
            "*Authentication-Results: \"mx.example.net\"; arc=pass",
            "*Authentication-Results: mx.example.net.; arc=pass",
            " Authentication-Results: other.example; spf=pass",
        ]
    );
}
