//! Test inputs made at test time: the EICAR and GTUBE test strings (never committed as a file),
//! digests, a stored zip archive, a message with one attachment.

/// The EICAR test file's 68 bytes, assembled by the crate (so no file in the repository holds
/// them).
pub fn eicar() -> Vec<u8> {
    spoolsift::stages::content::eicar::signature()
}

/// [`eicar`] as text, for bodies written with `format!`.
pub fn eicar_text() -> String {
    String::from_utf8(eicar()).expect("the test string is ASCII")
}

/// The GTUBE line, SpamAssassin's and rspamd's test string for spam, assembled from pieces so that
/// no file in the repository holds it (a spam filter would otherwise flag mail carrying a patch).
pub fn gtube() -> String {
    ["XJS*C4JDBQADN1.NSBN3*2IDNEN*", "GTUBE-STANDARD-", "ANTI-UBE-TEST-", "EMAIL*C.34X"].concat()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A zip archive holding `name` uncompressed (method 0).
pub fn stored_zip(name: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file(name, options).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap().into_inner()
}

/// A message with a line of text and one base64 attachment of `bytes`, declared `ctype`, named
/// `name` (a `Content-Disposition: attachment` filename) when given: its `-H` and its body.
pub fn with_attachment(name: Option<&str>, ctype: &str, bytes: &[u8]) -> (spoolsift::spool::SpoolHeader, Vec<u8>) {
    let disposition = name.map(|n| format!("Content-Disposition: attachment; filename=\"{n}\"\n")).unwrap_or_default();
    let body = format!(
        "--b1\nContent-Type: text/plain\n\nSee the attachment.\n--b1\nContent-Type: {ctype}\n{disposition}\
         Content-Transfer-Encoding: base64\n\n{}\n--b1--\n",
        super::base64(bytes, Some(76))
    );
    let mut h = String::from(
        "1xXORz-0000000058C-2p8L-H\nroot 0 0\n<alice@sender.example>\n1795895471 0\nXX\n1\nbob@dest.example\n\n",
    );
    for field in ["MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"b1\""] {
        h.push_str(&format!("{:03}  {field}\n", field.len() + 1));
    }
    (spoolsift::spool::SpoolHeader::parse(h.as_bytes(), None).unwrap(), body.into_bytes())
}
