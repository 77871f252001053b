//! Test inputs made at test time: the EICAR and GTUBE test strings (never committed as a file),
//! digests, and a stored zip archive.

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
