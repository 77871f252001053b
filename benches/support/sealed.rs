//! The benches' corpus messages loaded for the stages, and an ARC set on every tenth, as a
//! forwarder would have sealed them (key made at start-up by support/keys.rs).

use std::path::{Path, PathBuf};

use std::io::Read;

use spoolsift::spool::{DataFile, MessageId, MessageView, SpoolHeader};
use spoolsift::stages::arc::verify::ArcStatus;
use spoolsift::stages::arc::{SealConfig, Sealer};

use crate::keys;

/// One corpus message: its parsed `-H` and where its `-D` is.
pub struct Message {
    pub id: MessageId,
    pub header: SpoolHeader,
    pub data: PathBuf,
}

pub fn load(corpus: &Path, ids: &[(MessageId, u64)]) -> Vec<Message> {
    ids.iter()
        .map(|(id, _)| {
            let bytes = std::fs::read(corpus.join(format!("{id}-H"))).unwrap();
            let header = SpoolHeader::parse(&bytes, Some(id)).unwrap();
            Message { id: id.clone(), header, data: corpus.join(format!("{id}-D")) }
        })
        .collect()
}

/// Seal every tenth corpus message with one ARC set, as a forwarder would have; the key record
/// goes into a records file for the arc stage. Returns that file and how many were sealed.
pub fn seal_some(dir: &Path, messages: &mut [Message]) -> (PathBuf, usize) {
    let (key, record) = keys::rsa_2048(dir);
    let records = dir.join("txt-records.json");
    std::fs::write(&records, serde_json::json!({ "fwd._domainkey.forwarder.example": record }).to_string()).unwrap();
    let config = SealConfig {
        domain: "forwarder.example".into(),
        selector: "fwd".into(),
        key_file: key.clone(),
        headers: vec!["from".into(), "to".into(), "subject".into(), "message-id".into(), "mime-version".into()],
        timestamp: Some(1_795_895_000),
    };
    let sealer = Sealer::new(&config, &std::fs::read(&key).unwrap()).unwrap();
    let mut sealed = 0;
    for m in messages.iter_mut().step_by(10) {
        let data = DataFile::open(&m.data, &m.id).unwrap();
        sealer.seal_spool(&mut m.header, &data, ArcStatus::None, "forwarder.example", &[], 1_795_895_000).unwrap();
        let path = m.data.with_file_name(format!("{}-H", m.id));
        std::fs::write(path, m.header.to_bytes()).unwrap();
        sealed += 1;
    }
    (records, sealed)
}

/// A message framed for zINSTREAM as the clamav stage sends it: the headers and the blank line as
/// one chunk, the body as stored as another, then the terminator.
#[allow(dead_code)]
pub fn instream_framed(m: &Message) -> Vec<u8> {
    let data = DataFile::open(&m.data, &m.id).unwrap();
    let mut body = Vec::new();
    data.body_reader().read_to_end(&mut body).unwrap();
    let mut bytes = b"zINSTREAM\0".to_vec();
    for chunk in [MessageView::new(&m.header, &data).head(), body].iter().filter(|c| !c.is_empty()) {
        bytes.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        bytes.extend_from_slice(chunk);
    }
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes
}

/// clamd's reply to one zINSTREAM, up to its NUL (the NUL not included): a `zIDSESSION` reply
/// keeps its `N: ` in front. Panics if clamd closes before the NUL.
#[allow(dead_code)]
pub fn clamd_reply(conn: &mut impl Read) -> String {
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while !reply.contains(&0) {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "clamd closed without a reply");
        reply.extend_from_slice(&buf[..n]);
    }
    reply.truncate(reply.iter().position(|&b| b == 0).unwrap_or(reply.len()));
    String::from_utf8_lossy(&reply).into_owned()
}
