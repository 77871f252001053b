//! ARC key lookups through hickory-resolver against a real dnsmasq on a loopback port: a key that
//! is found, a name that does not exist, and a server that never answers, each giving the verdict
//! (or deferral) the configuration asks for.

mod support;

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spoolsift::dns::{DnsError, DnsTxt, ResolverSettings, TxtLookup};
use spoolsift::pipeline::{build, PipelineConfig};
use spoolsift::spool::MessageView;
use spoolsift::stages::arc::ArcStatus;
use spoolsift::stages::{StageError, Verdict};
use support::arc::*;

/// A dnsmasq serving `records` (name, value) on 127.0.0.1:port; stopped by its PID on drop.
struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Dnsmasq {
    fn start(records: &[(String, String)]) -> Dnsmasq {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new("dnsmasq");
        cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null"])
            .args(["--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file="])
            .arg(format!("--port={port}"))
            // Answer for the test domain from local data only: unknown names are NXDOMAIN there
            // (elsewhere dnsmasq, having no upstream, refuses the query).
            .arg("--local=/dns.example/");
        for (name, value) in records {
            // DNS character-strings hold at most 255 bytes: split the value into several. No
            // quotes: without a shell, dnsmasq would keep them as part of the text.
            assert!(!value.contains(','), "dnsmasq separates strings at commas");
            let parts: Vec<String> =
                value.as_bytes().chunks(200).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            cmd.arg(format!("--txt-record={name},{}", parts.join(",")));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq runs (scripts/install-test-deps.sh)");
        Dnsmasq { child, port }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn resolver(port: u16, timeout_ms: u64) -> DnsTxt {
    DnsTxt::new(&ResolverSettings {
        nameservers: vec![format!("127.0.0.1:{port}").parse().unwrap()],
        timeout: Duration::from_millis(timeout_ms),
        attempts: 1,
    })
    .unwrap()
}

/// Poll until dnsmasq answers (it takes a moment to bind), with a deadline.
fn wait_ready(port: u16, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh resolver each time: nothing cached from before the server was up.
        match resolver(port, 200).txt(name) {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!("dnsmasq on port {port} never answered: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn pipeline(port: u16, on_dns_failure: &str) -> Vec<Box<dyn spoolsift::stages::Stage>> {
    let text = format!(
        "name = \"dns\"\n[stages.arc]\nnameservers = [\"127.0.0.1:{port}\"]\ndns_timeout_ms = 300\ndns_attempts = 1\non_dns_failure = \"{on_dns_failure}\"\n"
    );
    build::stages(&PipelineConfig::parse(&text, Path::new("dns.toml")).unwrap()).unwrap()
}

#[test]
fn key_lookups_through_dnsmasq() {
    let mut w = World::new();
    let key = w.rsa_key("dns.example", "sel", 2048);
    let msg = w.our_seal(&message(), &key, "dns.example", "sel", ArcStatus::None, "mx.dns.example; none");
    let server = Dnsmasq::start(&[("sel._domainkey.dns.example".into(), key.record.clone())]);
    wait_ready(server.port, "sel._domainkey.dns.example");

    let dns = resolver(server.port, 1000);
    assert_eq!(dns.txt("SEL._domainkey.dns.example.").unwrap(), vec![key.record.clone().into_bytes()]);
    assert_eq!(dns.txt("nope._domainkey.dns.example"), Err(DnsError::NoSuchName));

    let (header, body) = spool_message(&msg);
    let view = MessageView::new(&header, &body);
    for mode in ["fail", "defer"] {
        let stages = pipeline(server.port, mode);
        let r = stages[0].check(&view).unwrap();
        assert_eq!(r.verdict, Verdict::AuthPass);
        assert_eq!(r.auth_results, ["arc=pass (i=1) header.oldest-pass=0 smtp.remote-ip=192.0.2.10"]);
    }
    // NXDOMAIN is an answer, not a temporary failure: the chain fails in both modes.
    let ams = field(&msg, "ARC-Message-Signature");
    let (header, body) = spool_message(&replace_once(&msg, &ams, &ams.replace("s=sel;", "s=nope;")));
    let view = MessageView::new(&header, &body);
    for mode in ["fail", "defer"] {
        let r = pipeline(server.port, mode)[0].check(&view).unwrap();
        assert_eq!(r.verdict, Verdict::AuthFail);
        assert_eq!(
            r.auth_results,
            ["arc=fail (i=1 AMS key lookup nope._domainkey.dns.example: no such name) smtp.remote-ip=192.0.2.10"]
        );
    }
}

#[test]
fn a_server_that_never_answers() {
    // A bound socket nobody reads: queries time out.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut w = World::new();
    let key = w.rsa_key("dns.example", "sel", 2048);
    let msg = w.our_seal(&message(), &key, "dns.example", "sel", ArcStatus::None, "mx.dns.example; none");
    let (header, body) = spool_message(&msg);
    let view = MessageView::new(&header, &body);

    assert!(matches!(resolver(port, 200).txt("sel._domainkey.dns.example"), Err(DnsError::Temporary(_))));
    // RFC 8617 §5.2.1 (the default): the chain fails, the reason kept.
    let r = pipeline(port, "fail")[0].check(&view).unwrap();
    assert_eq!(r.verdict, Verdict::AuthFail);
    assert_eq!(
        r.auth_results,
        ["arc=fail (i=1 AMS key lookup sel._domainkey.dns.example: temporary DNS failure) smtp.remote-ip=192.0.2.10"]
    );
    // Or a temporary stage error, so the policy defers the message.
    let e = pipeline(port, "defer")[0].check(&view).unwrap_err();
    assert_eq!(e, StageError::Temporary("i=1 AMS key lookup sel._domainkey.dns.example: temporary DNS failure".into()));
    drop(silent);
}
