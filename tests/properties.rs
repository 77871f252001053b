//! Property tests of the `-H` model: whatever the writer is given (and `validate` accepts) reads
//! back as the same model and is written again byte for byte; edits through the public API keep a
//! file readable and its serialisation stable.
//!
//! How models are compared: `SpoolHeader` derives `PartialEq`, but `RecipientLine` and
//! `NonRecipients` also keep the lines they were read from (so that unchanged old-form lines are
//! written back as read), which a model built in memory does not have. So [`assert_same_model`]
//! compares the public fields — id, originator, sender, L4, options, the tree as a set,
//! recipients by their `fields`, headers (flag and text) — and every property also compares the
//! serialised bytes.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::select;
use spoolsift::spool::{
    AclScope, AclVariable, HeaderFlag, HeaderLine, HeaderSection, MessageId, NonRecipients, OptionLine, Position,
    RecipientLine, Removal, SpoolHeader, SpoolOption, SpoolOptions,
};

const SPEC_EXAMPLE: &[u8] = include_bytes!("data/spec-example/1xXORz-0000000058C-2p8L-H");

/// 256 cases per property by default; `PROPTEST_CASES=N` for a deeper run.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// Comparing models

fn assert_same_model(a: &SpoolHeader, b: &SpoolHeader) {
    assert_eq!(a.id, b.id);
    assert_eq!(a.originator, b.originator);
    assert_eq!(a.sender, b.sender);
    assert_eq!((a.received_time, a.warning_count), (b.received_time, b.warning_count));
    assert_eq!(a.options, b.options);
    let tree = |h: &SpoolHeader| h.non_recipients.iter().map(<[u8]>::to_vec).collect::<Vec<_>>();
    assert_eq!(tree(a), tree(b));
    let fields = |h: &SpoolHeader| h.recipients.iter().map(|r| r.fields.clone()).collect::<Vec<_>>();
    assert_eq!(fields(a), fields(b));
    assert_eq!(a.headers, b.headers);
}

/// Serialise, read back, compare, and serialise again. Returns the bytes.
fn round_trip(model: &SpoolHeader) -> Vec<u8> {
    let bytes = model.to_checked_bytes().unwrap_or_else(|e| panic!("validate refused {model:#?}: {e}"));
    assert_eq!(bytes, model.to_bytes());
    let back = SpoolHeader::parse(&bytes, Some(&model.id))
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&bytes)));
    assert_same_model(model, &back);
    assert_eq!(back.to_bytes(), bytes, "read-back model writes different bytes");
    bytes
}

// ---------------------------------------------------------------------------------------------
// Strategies for valid models

/// Bytes that may stand in a single-line field: anything but LF, CR and NUL (8-bit data included,
/// pitfall 20).
fn line_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>().prop_map(|b| if matches!(b, b'\n' | b'\r' | 0) { b'x' } else { b }), len)
}

/// Single-line bytes biased towards the characters the grammar cares about.
fn tricky_line(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(select(b" -#,<>()@.0123456789YNXxa\t".to_vec()), len.clone()),
        1 => line_bytes(len),
    ]
}

fn message_id() -> impl Strategy<Value = MessageId> {
    prop_oneof!["[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}", "[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}"]
        .prop_map(|s| MessageId::parse(s.as_bytes()).unwrap())
}

fn quoter() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::weighted(0.2, "[A-Za-z0-9_]{1,8}".prop_map(String::into_bytes))
}

/// Names with values Exim's reader checks, and the values it accepts.
fn known_option() -> impl Strategy<Value = (String, Option<Vec<u8>>)> {
    prop_oneof![
        (
            select(vec!["frozen", "body_linecount", "body_zerocount", "max_received_linelength", "dsn_ret"]),
            any::<i64>()
        )
            .prop_map(|(n, v)| (n.to_string(), Some(v.to_string().into_bytes()))),
        "\\.[0-9]{1,6}".prop_map(|v| ("received_time_usec".to_string(), Some(v.into_bytes()))),
        select(vec!["deliver_firsttime", "local", "N", "manual_thaw", "spool_file_wireformat"])
            .prop_map(|n| (n.to_string(), None)),
    ]
}

fn other_option() -> impl Strategy<Value = (String, Option<Vec<u8>>)> {
    (
        "[a-z_][a-z0-9_]{0,15}".prop_filter("ACL keywords and checked names", |n| {
            !matches!(
                n.as_str(),
                "acl"
                    | "aclc"
                    | "aclm"
                    | "frozen"
                    | "body_linecount"
                    | "body_zerocount"
                    | "max_received_linelength"
                    | "dsn_ret"
                    | "received_time_usec"
            )
        }),
        // Values may hold spaces (extra ones are part of the value), start with `-`, or be empty.
        prop::option::weighted(0.8, tricky_line(0..24)),
    )
}

fn option_line() -> impl Strategy<Value = SpoolOption> {
    (any::<bool>(), quoter(), prop_oneof![known_option(), other_option()]).prop_map(|(tainted, quoter, (n, value))| {
        SpoolOption::Line(OptionLine { tainted, quoter, name: n.into_bytes(), value })
    })
}

fn acl_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Counted, not line based: LFs, lines that look like options, anything at all.
        prop::collection::vec(select(b"-\n aclm 19XX\n#-frozen".to_vec()), 0..40),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn acl_variable() -> impl Strategy<Value = SpoolOption> {
    (
        any::<bool>(),
        quoter(),
        select(vec![AclScope::Connection, AclScope::Message, AclScope::Numbered]),
        "[_a-z0-9]{1,10}",
        acl_value(),
    )
        .prop_map(|(tainted, quoter, scope, name, value)| {
            SpoolOption::Acl(AclVariable { tainted, quoter, scope, name: name.into_bytes(), value })
        })
}

fn options() -> impl Strategy<Value = SpoolOptions> {
    prop::collection::vec(prop_oneof![3 => option_line(), 1 => acl_variable()], 0..10).prop_map(SpoolOptions)
}

/// An address that reads back as itself in every recipient form: not empty, no line breaks, and
/// not ending in a digit (a plain line `a 5` would read as `a` with pno 5). Spaces are fine.
fn address() -> impl Strategy<Value = Vec<u8>> {
    (tricky_line(0..20), select(b"abz>.@\"]\xc3\xa9".to_vec())).prop_map(|(mut a, last)| {
        a.push(last);
        a
    })
}

fn tree_address() -> impl Strategy<Value = Vec<u8>> {
    // Tree nodes are `<L><R> <address>`: any non-empty single-line address, homonyms included.
    prop_oneof![
        address(),
        line_bytes(1..16),
        (address(), "[a-z_]{1,8}").prop_map(|(mut a, t)| {
            a.push(b'/');
            a.extend_from_slice(t.as_bytes());
            a
        })
    ]
}

fn non_recipients() -> impl Strategy<Value = NonRecipients> {
    prop::collection::btree_set(tree_address(), 0..9).prop_map(|set: BTreeSet<Vec<u8>>| {
        let mut t = NonRecipients::new();
        for a in &set {
            t.insert(a);
        }
        t
    })
}

fn recipient() -> impl Strategy<Value = RecipientLine> {
    (
        address(),
        prop::option::weighted(0.3, line_bytes(1..24)),
        prop_oneof![3 => Just(0u32), 2 => 0u32..32, 1 => any::<u32>()],
        prop::option::weighted(0.3, line_bytes(1..24)),
        // -1 (no parent) or an index; Exim never writes other negative values, and the plain form
        // cannot hold them.
        prop_oneof![3 => Just(-1i32), 2 => 0i32..8, 1 => 0..=i32::MAX],
    )
        .prop_map(|(address, orcpt, dsn_flags, errors_to, pno)| {
            let mut r = RecipientLine::new(&address);
            r.fields.orcpt = orcpt;
            r.fields.dsn_flags = dsn_flags;
            r.fields.errors_to = errors_to;
            r.fields.pno = pno;
            r
        })
}

fn header_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(vec![
            "Received",
            "From",
            "To",
            "Cc",
            "Bcc",
            "Reply-To",
            "Sender",
            "Message-ID",
            "Subject",
            "Resent-From"
        ])
        .prop_map(|n| n.as_bytes().to_vec()),
        "[!-9;-~]{1,16}".prop_map(String::into_bytes),
    ]
}

/// A flag as the reader would produce it from some byte: canonical, not a control character (the
/// reader refuses those) and not a digit (it would read as part of the length).
fn header_flag() -> impl Strategy<Value = HeaderFlag> {
    prop_oneof![
        3 => select(b" *PFTCBRSI".to_vec()).prop_map(HeaderFlag::from_byte),
        1 => any::<u8>()
            .prop_map(|b| if (b.is_ascii_whitespace() && b != b' ') || b.is_ascii_digit() { b'X' } else { b })
            .prop_map(HeaderFlag::from_byte),
    ]
}

/// Stored header text: `Name:` value, continuation lines starting with SP or HT, final LF.
fn header_text() -> impl Strategy<Value = Vec<u8>> {
    (header_name(), line_bytes(0..40), prop::collection::vec((select(vec![b' ', b'\t']), line_bytes(0..30)), 0..3))
        .prop_map(|(name, value, folds)| {
            let mut t = name;
            t.push(b':');
            t.extend_from_slice(&value);
            for (lead, rest) in folds {
                t.push(b'\n');
                t.push(lead);
                t.extend_from_slice(&rest);
            }
            t.push(b'\n');
            t
        })
}

#[derive(Debug, Clone)]
enum HeaderBuild {
    Text(HeaderFlag, Vec<u8>),
    Add(Vec<u8>, Vec<u8>, Position),
}

fn position() -> impl Strategy<Value = Position> {
    select(vec![Position::Top, Position::Bottom, Position::AfterFirstReceived])
}

/// A header value as a stage would give it: one line (folded by `add` when long).
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![line_bytes(0..30), "([a-z]{1,12}[ \t]{1,2}){0,20}[a-z]{0,5}".prop_map(String::into_bytes)]
}

fn headers() -> impl Strategy<Value = HeaderSection> {
    prop::collection::vec(
        prop_oneof![
            (header_flag(), header_text()).prop_map(|(f, t)| HeaderBuild::Text(f, t)),
            (header_name(), header_value(), position()).prop_map(|(n, v, p)| HeaderBuild::Add(n, v, p)),
        ],
        0..8,
    )
    .prop_map(|builds| {
        let mut s = HeaderSection::default();
        for b in builds {
            match b {
                HeaderBuild::Text(flag, text) => {
                    s.insert(HeaderLine::from_text(flag, &text).unwrap(), Position::Bottom)
                }
                HeaderBuild::Add(name, value, at) => s.add(&name, &value, at).unwrap(),
            }
        }
        s
    })
}

fn model() -> impl Strategy<Value = SpoolHeader> {
    (
        message_id(),
        (tricky_line(0..16), any::<i64>(), any::<i64>()),
        prop_oneof![1 => Just(Vec::new()), 4 => line_bytes(1..30)],
        (any::<i64>(), any::<i64>()),
        options(),
        non_recipients(),
        prop::collection::vec(recipient(), 0..6),
        headers(),
    )
        .prop_map(
            |(id, (login, uid, gid), sender, (received_time, warning_count), options, nr, recipients, headers)| {
                SpoolHeader {
                    id,
                    originator: spoolsift::spool::Originator { login, uid, gid },
                    sender,
                    received_time,
                    warning_count,
                    options,
                    non_recipients: nr,
                    recipients,
                    headers,
                }
            },
        )
}

proptest! {
    #![proptest_config(config())]

    /// model → bytes → model: the same public fields, a sorted tree, and the same bytes again.
    #[test]
    fn generated_models_round_trip(m in model()) {
        let bytes = round_trip(&m);
        let back = SpoolHeader::parse(&bytes, None).unwrap();
        prop_assert!(back.non_recipients.was_sorted_on_read());
        prop_assert_eq!(back.recipients.len(), m.recipients.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Wild models: fields of any bytes. Whatever `validate` accepts must round-trip.

fn maybe_wild<T: std::fmt::Debug + Clone + 'static>(
    valid: impl Strategy<Value = T> + 'static,
    wild: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![6 => valid, 1 => wild].boxed()
}

fn wild_model() -> impl Strategy<Value = SpoolHeader> {
    let any_bytes = || prop::collection::vec(any::<u8>(), 0..12);
    let wild_name = prop_oneof![
        any_bytes(),
        select(vec!["frozen", "body_linecount", "dsn_ret", "received_time_usec", "ident"])
            .prop_map(|n| n.as_bytes().to_vec()),
    ];
    let wild_value = prop_oneof![
        20 => prop::option::of(any_bytes()),
        1 => Just(Some(vec![b'v'; spoolsift::spool::header_file::MAX_LINE])),
    ];
    let wild_option = (any::<bool>(), prop::option::of(any_bytes()), wild_name, wild_value)
        .prop_map(|(tainted, quoter, name, value)| SpoolOption::Line(OptionLine { tainted, quoter, name, value }));
    let wild_acl = (any::<bool>(), prop::option::of(any_bytes()), any_bytes(), any_bytes()).prop_map(
        |(tainted, quoter, name, value)| {
            SpoolOption::Acl(AclVariable { tainted, quoter, scope: AclScope::Message, name, value })
        },
    );
    let wild_recipient =
        (any_bytes(), prop::option::of(any_bytes()), any::<u32>(), prop::option::of(any_bytes()), any::<i32>())
            .prop_map(|(address, orcpt, dsn_flags, errors_to, pno)| {
                let mut r = RecipientLine::new(&address);
                r.fields = spoolsift::spool::RecipientFields { address, orcpt, dsn_flags, errors_to, pno };
                r
            });
    (
        model(),
        prop::collection::vec(
            maybe_wild(prop_oneof![option_line(), acl_variable()], prop_oneof![wild_option, wild_acl]),
            0..4,
        ),
        prop::collection::vec(maybe_wild(recipient(), wild_recipient), 0..4),
        prop::option::weighted(0.2, any_bytes()),
        prop::option::weighted(0.2, any_bytes()),
        prop::option::weighted(0.2, (any::<u8>(), header_text())),
        prop::option::weighted(0.2, any_bytes()),
    )
        .prop_map(|(mut m, opts, rcpts, login, sender, flagged, tree_addr)| {
            m.options.0.extend(opts);
            m.recipients.extend(rcpts);
            if let Some(l) = login {
                m.originator.login = l;
            }
            if let Some(s) = sender {
                m.sender = s;
            }
            if let Some((b, text)) = flagged {
                // Any flag byte at all (digits and control characters included).
                let flag = HeaderFlag::from_byte(b);
                m.headers.insert(HeaderLine::from_text(flag, &text).unwrap(), Position::Bottom);
            }
            if let Some(a) = tree_addr {
                m.non_recipients.insert(&a);
            }
            m
        })
}

proptest! {
    #![proptest_config(config())]

    /// `validate` is the writer's promise that a model reads back as itself: check it on models
    /// whose fields may hold any bytes at all.
    #[test]
    fn whatever_validate_accepts_round_trips(m in wild_model()) {
        if m.validate().is_ok() {
            round_trip(&m);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Edit sequences through the public API

#[derive(Debug, Clone)]
enum Edit {
    AddHeader(Vec<u8>, Vec<u8>, Position),
    InsertHeader(HeaderFlag, Vec<u8>, Position),
    /// Remove headers named like the n-th stored header (or a random name).
    RemoveHeader(usize, Option<Vec<u8>>, Removal),
    ReplaceHeader(usize, Option<Vec<u8>>, Vec<u8>),
    RenameHeader(usize, Option<Vec<u8>>, Vec<u8>),
    TreeInsert(Vec<u8>),
    /// Remove the n-th address of the tree (or the address of the n-th recipient).
    TreeRemove(usize, bool),
    TreeRewrite,
    SetDsnFlags(usize, u32),
    ClearNotifySuccess,
    SetPno(usize, i32),
    SetOrcpt(usize, Option<Vec<u8>>),
    SetErrorsTo(usize, Option<Vec<u8>>),
    AddRecipient(RecipientLine),
    RemoveRecipient(usize),
    SetOption(SpoolOption),
    RemoveOption(usize),
    SetAcl(SpoolOption),
}

fn header_edit() -> impl Strategy<Value = Edit> {
    let ix = || 0usize..16;
    let name_choice = || prop::option::weighted(0.3, header_name());
    prop_oneof![
        (header_name(), header_value(), position()).prop_map(|(n, v, p)| Edit::AddHeader(n, v, p)),
        (header_flag(), header_text(), position()).prop_map(|(f, t, p)| Edit::InsertHeader(f, t, p)),
        (ix(), name_choice(), select(vec![Removal::MarkDeleted, Removal::Drop]))
            .prop_map(|(i, n, r)| Edit::RemoveHeader(i, n, r)),
        (ix(), name_choice(), header_value()).prop_map(|(i, n, v)| Edit::ReplaceHeader(i, n, v)),
        (ix(), name_choice(), header_name()).prop_map(|(i, n, new)| Edit::RenameHeader(i, n, new)),
    ]
}

fn envelope_edit() -> impl Strategy<Value = Edit> {
    let ix = || 0usize..16;
    prop_oneof![
        tree_address().prop_map(Edit::TreeInsert),
        (ix(), any::<bool>()).prop_map(|(i, r)| Edit::TreeRemove(i, r)),
        Just(Edit::TreeRewrite),
        (ix(), any::<u32>()).prop_map(|(i, f)| Edit::SetDsnFlags(i, f)),
        Just(Edit::ClearNotifySuccess),
        (ix(), -1i32..8).prop_map(|(i, p)| Edit::SetPno(i, p)),
        (ix(), prop::option::of(line_bytes(1..20))).prop_map(|(i, o)| Edit::SetOrcpt(i, o)),
        (ix(), prop::option::of(line_bytes(1..20))).prop_map(|(i, e)| Edit::SetErrorsTo(i, e)),
        recipient().prop_map(Edit::AddRecipient),
        ix().prop_map(Edit::RemoveRecipient),
        option_line().prop_map(Edit::SetOption),
        ix().prop_map(Edit::RemoveOption),
        acl_variable().prop_map(Edit::SetAcl),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![header_edit(), envelope_edit()]
}

fn stored_name(h: &SpoolHeader, i: usize, name: Option<Vec<u8>>) -> Vec<u8> {
    name.or_else(|| {
        let all = h.headers.all();
        (!all.is_empty()).then(|| all[i % all.len()].name().to_vec())
    })
    .unwrap_or_else(|| b"Subject".to_vec())
}

fn apply(h: &mut SpoolHeader, e: Edit) {
    let n = h.recipients.len();
    match e {
        Edit::AddHeader(name, value, at) => h.headers.add(&name, &value, at).unwrap(),
        Edit::InsertHeader(flag, text, at) => h.headers.insert(HeaderLine::from_text(flag, &text).unwrap(), at),
        Edit::RemoveHeader(i, name, how) => {
            let name = stored_name(h, i, name);
            h.headers.remove(&name, how);
        }
        Edit::ReplaceHeader(i, name, value) => {
            let name = stored_name(h, i, name);
            h.headers.replace(&name, &value).unwrap();
        }
        Edit::RenameHeader(i, name, new) => {
            let name = stored_name(h, i, name);
            h.headers.rename(&name, &new).unwrap();
        }
        Edit::TreeInsert(a) => {
            h.non_recipients.insert(&a);
        }
        Edit::TreeRemove(i, from_recipients) => {
            let victim = if from_recipients && n > 0 {
                Some(h.recipients[i % n].address().to_vec())
            } else {
                h.non_recipients.iter().nth(i % h.non_recipients.len().max(1)).map(<[u8]>::to_vec)
            };
            if let Some(a) = victim {
                h.non_recipients.remove(&a);
            }
        }
        Edit::TreeRewrite => h.non_recipients.force_rewrite(),
        Edit::SetDsnFlags(i, f) if n > 0 => h.recipients[i % n].fields.dsn_flags = f,
        Edit::ClearNotifySuccess => {
            for r in &mut h.recipients {
                r.fields.dsn_flags &= !spoolsift::spool::recipients::dsn::NOTIFY_SUCCESS;
            }
        }
        Edit::SetPno(i, p) if n > 0 => h.recipients[i % n].fields.pno = p,
        Edit::SetOrcpt(i, o) if n > 0 => h.recipients[i % n].fields.orcpt = o,
        Edit::SetErrorsTo(i, e) if n > 0 => h.recipients[i % n].fields.errors_to = e,
        Edit::AddRecipient(r) => h.recipients.push(r),
        Edit::RemoveRecipient(i) if n > 0 => {
            h.recipients.remove(i % n);
        }
        Edit::SetOption(SpoolOption::Line(l)) => h.options.set(l),
        Edit::RemoveOption(i) => {
            let names: Vec<String> = h
                .options
                .0
                .iter()
                .filter_map(|o| match o {
                    SpoolOption::Line(l) => Some(String::from_utf8_lossy(&l.name).into_owned()),
                    SpoolOption::Acl(_) => None,
                })
                .collect();
            if !names.is_empty() {
                h.options.remove(&names[i % names.len()]);
            }
        }
        Edit::SetAcl(SpoolOption::Acl(a)) => h.options.set_acl(a),
        _ => {}
    }
}

/// A file with what only a reader meets: older recipient forms, an unsorted tree, an option value
/// with extra spaces, a quoted tainted ACL block whose value looks like options, headers without a
/// colon or with an odd flag byte.
fn oddities() -> Vec<u8> {
    let header = |flag: char, text: &str| format!("{:03}{flag} {text}", text.len());
    let mut s = String::from(
        "1xXOQD-0004A8-22-H\nDebian exim 102 105\n<>\n1795895361 1\n-ident root\n--(pgsql)aclm _x 5\na\n-b\n\n\
         -unknown_option  two  spaces\n-N\nYY m@x\nNN z@x\nNN a@x\n4\na@b errs@b 6,1#1\nc@d 3\ne@f 0,4,0\n\
         \"john smith\"@x.example  0,0 owner@x.example 15,2#3\n\n",
    );
    s += &header(' ', "garbage!\n");
    s += &header('x', "Name : value\n\tcontinued\n");
    s += &header('P', "Received: from x\n");
    s += &header('*', "Subject: old\n");
    s.into_bytes()
}

/// A starting point with the "as read" copies in place: a generated model read back from its bytes,
/// the spec example as Exim wrote it, or the oddities above.
fn start() -> impl Strategy<Value = SpoolHeader> {
    prop_oneof![
        4 => model().prop_map(|m| SpoolHeader::parse(&m.to_bytes(), None).unwrap()),
        1 => Just(SpoolHeader::parse(SPEC_EXAMPLE, None).unwrap()),
        1 => Just(SpoolHeader::parse(&oddities(), None).unwrap()),
    ]
}

/// Regression: renaming a header read without a colon used to replace its whole text by the new
/// name, without the final LF, and the file written next could not be read.
#[test]
fn renaming_a_header_without_a_colon_keeps_the_file_readable() {
    let mut h = SpoolHeader::parse(&oddities(), None).unwrap();
    assert_eq!(h.headers.rename(b"garbage!", b"X-New").unwrap(), 0);
    assert_eq!(h.headers.rename(b"name", b"X-Name").unwrap(), 1);
    assert_eq!(h.headers.all()[1].text(), b"X-Name: value\n\tcontinued\n");
    round_trip(&h);
}

#[test]
fn oddities_are_a_fixed_point() {
    let bytes = oddities();
    let h = SpoolHeader::parse(&bytes, None).unwrap();
    assert!(!h.non_recipients.was_sorted_on_read());
    assert_eq!(h.recipients.iter().map(|r| r.fields.pno).collect::<Vec<_>>(), [1, 3, 4, 2]);
    assert_eq!(round_trip(&h), bytes);
}

proptest! {
    #![proptest_config(config())]

    /// After every edit the model is writable, reads back as itself, and writes the same bytes
    /// again; untouched recipient lines and an untouched tree keep their original text.
    #[test]
    fn edit_sequences_keep_the_file_readable_and_stable(
        h in start(),
        edits in prop::collection::vec(edit(), 1..12),
    ) {
        let mut h = h;
        for e in edits {
            apply(&mut h, e);
            let bytes = round_trip(&h);
            // Reading the written file again and writing it once more changes nothing.
            let again = SpoolHeader::parse(&bytes, None).unwrap();
            prop_assert_eq!(round_trip(&again), bytes);
        }
    }

    /// Editing headers alone never changes a byte of the envelope.
    #[test]
    fn header_edits_leave_the_envelope_alone(
        h in start(),
        edits in prop::collection::vec(header_edit(), 1..8),
    ) {
        let before = h.to_bytes();
        let envelope = |b: &[u8]| {
            let h = SpoolHeader::parse(b, None).unwrap();
            let mut e = h.clone();
            e.headers = HeaderSection::default();
            e.to_bytes()
        };
        let mut h = h;
        for e in edits {
            apply(&mut h, e);
        }
        prop_assert_eq!(envelope(&round_trip(&h)), envelope(&before));
    }
}

/// The spec example itself, as a fixed point of the whole pipeline.
#[test]
fn spec_example_is_a_fixed_point() {
    let h = SpoolHeader::parse(SPEC_EXAMPLE, None).unwrap();
    assert_eq!(round_trip(&h), SPEC_EXAMPLE);
}
