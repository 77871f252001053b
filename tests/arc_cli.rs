//! `spoolsift arc-verify`: exact output for raw messages and spool pairs, exit codes.

mod support;

use std::path::Path;

use spoolsift::stages::arc::ArcStatus;
use support::arc::*;
use support::spoolsift;

#[test]
fn raw_messages_and_spool_pairs() {
    let mut w = World::new();
    let key = w.rsa_key("cli.example", "k", 2048);
    let sealed = w.our_seal(&message(), &key, "cli.example", "k", ArcStatus::None, "mx.cli.example; none");
    let good = w.path().join("good.eml");
    std::fs::write(&good, &sealed).unwrap();
    let bad = w.path().join("bad.eml");
    std::fs::write(&bad, replace_once(&sealed, "Hello Bob", "Hello Eve")).unwrap();
    let plain = w.path().join("plain.eml");
    std::fs::write(&plain, message()).unwrap();
    // The same sealed message as an Exim spool pair.
    let (header, body) = spool_message(&sealed);
    let spool = w.path().join("input");
    std::fs::create_dir(&spool).unwrap();
    let h_path = spool.join(format!("{}-H", header.id));
    std::fs::write(&h_path, header.to_bytes()).unwrap();
    let mut data = format!("{}-D\n", header.id).into_bytes();
    data.extend_from_slice(&body);
    std::fs::write(spool.join(format!("{}-D", header.id)), data).unwrap();

    let records = w.records.to_str().unwrap();
    let files = [&good, &bad, &plain, &h_path].map(|p| p.to_str().unwrap().to_string());
    let mut args = vec!["arc-verify", "--txt-records", records, "--json"];
    args.extend(files.iter().map(String::as_str));
    let o = spoolsift(&args);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = [
        format!(
            r#"{{"file":"{}","result":"pass","reason":"","instances":1,"oldest_pass":0,"domains":["cli.example"]}}"#,
            files[0]
        ),
        format!(
            r#"{{"file":"{}","result":"fail","reason":"i=1 AMS body hash mismatch","instances":1,"oldest_pass":0,"domains":["cli.example"]}}"#,
            files[1]
        ),
        format!(r#"{{"file":"{}","result":"none","reason":"","instances":0,"oldest_pass":0,"domains":[]}}"#, files[2]),
        format!(
            r#"{{"file":"{}","result":"pass","reason":"","instances":1,"oldest_pass":0,"domains":["cli.example"]}}"#,
            files[3]
        ),
    ];
    assert_eq!(String::from_utf8(o.stdout).unwrap(), expected.join("\n") + "\n");
    assert!(o.stderr.is_empty());

    // Readable lines.
    let o = spoolsift(&["arc-verify", "--txt-records", records, &files[0], &files[1], &files[2]]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!(
            "{}: arc=pass i=1 domains=cli.example oldest-pass=0\n{}: arc=fail i=1 domains=cli.example (i=1 AMS body hash mismatch)\n{}: arc=none\n",
            files[0], files[1], files[2]
        )
    );

    // A missing file is an I/O error (exit 2); the other files are still checked.
    let missing = w.path().join("missing.eml");
    let o = spoolsift(&["arc-verify", "--txt-records", records, "--json", missing.to_str().unwrap(), &files[2]]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), expected[2].clone() + "\n");
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        format!("spoolsift arc-verify: {}: No such file or directory (os error 2)\n", missing.display())
    );
}

#[test]
fn usage_errors() {
    let o = spoolsift(&["arc-verify"]);
    assert_eq!(o.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("r.json");
    std::fs::write(&records, "[]").unwrap();
    let o = spoolsift(&["arc-verify", "--txt-records", records.to_str().unwrap(), "x.eml"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        format!(
            "spoolsift arc-verify: {}: the top level must be a JSON object (name → TXT value)\n",
            records.display()
        )
    );
}

#[test]
fn check_config_reads_the_seal_key() {
    let mut w = World::new();
    let key = w.rsa_key("cfg.example", "k", 2048);
    let small = Key::rsa(w.path(), "small", 1024);
    let p = w.path().join("arc.toml");
    let write = |key_file: &Path| {
        let text = format!(
            "name = \"arc\"\n[stages.arc]\ntxt_records = \"{}\"\n\n[stages.arc.seal]\ndomain = \"cfg.example\"\nselector = \"k\"\nkey_file = \"{}\"\n",
            w.records.display(),
            key_file.display()
        );
        std::fs::write(&p, text).unwrap();
    };
    write(&key.pkcs8);
    let o = spoolsift(&["check-config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    write(&small.pkcs8);
    let o = spoolsift(&["check-config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        format!(
            "invalid: {}:5: [stages.arc.seal]: {}: RSA sealing keys must have at least 2048 bits\n",
            p.display(),
            small.pkcs8.display()
        )
    );
    write(&w.path().join("absent.pem"));
    let o = spoolsift(&["check-config", p.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        format!(
            "invalid: {}:8: [stages.arc.seal]: cannot read key_file {}: No such file or directory (os error 2)\n",
            p.display(),
            w.path().join("absent.pem").display()
        )
    );
}
