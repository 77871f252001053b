//! A minimal SMTP client for tests: enough ESMTP to send a message with DSN parameters and read
//! the id Exim gives it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Envelope<'a> {
    pub from: &'a str,
    /// Extra MAIL FROM parameters (e.g. `RET=HDRS ENVID=x`).
    pub mail_params: &'a str,
    /// Recipients with their RCPT TO parameters (e.g. `NOTIFY=SUCCESS`).
    pub rcpts: &'a [(&'a str, &'a str)],
}

fn reply(r: &mut impl BufRead) -> (u16, String) {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.len() >= 4, "short SMTP reply {line:?}");
        all.push_str(&line);
        if line.as_bytes()[3] == b' ' {
            return (line[..3].parse().unwrap(), all);
        }
    }
}

fn command(w: &mut TcpStream, r: &mut impl BufRead, cmd: &str, want: u16) -> String {
    // One write per command: a command split over two segments waits for a delayed ACK.
    w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
    let (code, text) = reply(r);
    assert_eq!(code, want, "{cmd} -> {text}");
    text
}

/// Send `data` (LF or CRLF line ends; dot-stuffed here) and return Exim's message id.
pub fn send(port: u16, env: &Envelope<'_>, data: &[u8]) -> String {
    let mut w = TcpStream::connect(("127.0.0.1", port)).unwrap();
    w.set_nodelay(true).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    assert_eq!(reply(&mut r).0, 220);
    command(&mut w, &mut r, "EHLO client.test", 250);
    let mail =
        format!("MAIL FROM:<{}>{}{}", env.from, if env.mail_params.is_empty() { "" } else { " " }, env.mail_params);
    command(&mut w, &mut r, &mail, 250);
    for (rcpt, params) in env.rcpts {
        command(&mut w, &mut r, &format!("RCPT TO:<{rcpt}>{}{params}", if params.is_empty() { "" } else { " " }), 250);
    }
    command(&mut w, &mut r, "DATA", 354);
    let mut wire = Vec::with_capacity(data.len() + data.len() / 20);
    for line in data.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(body);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    w.write_all(&wire).unwrap();
    let (code, text) = reply(&mut r);
    assert_eq!(code, 250, "end of DATA -> {text}");
    // Exim answers QUIT only after a short pause; the message is safe once DATA got its 250.
    w.write_all(b"QUIT\r\n").unwrap();
    text.split("id=").nth(1).map(|s| s.trim().to_string()).unwrap_or_else(|| panic!("no id in {text:?}"))
}
