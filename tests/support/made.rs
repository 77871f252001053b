//! Test inputs made at test time: the EICAR test string (never committed as a file), digests,
//! and a stored zip archive.

/// The EICAR test file's 68 bytes, assembled by the crate (so no file in the repository holds
/// them).
pub fn eicar() -> Vec<u8> {
    spoolsift::stages::content::eicar::signature()
}

/// [`eicar`] as text, for bodies written with `format!`.
pub fn eicar_text() -> String {
    String::from_utf8(eicar()).expect("the test string is ASCII")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// CRC-32 (ISO-HDLC, as zip uses it), for [`stored_zip`].
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A zip archive holding `name` uncompressed (method 0), as an old-style archiver writes it:
/// the local header, the data, one central directory entry and the end record.
pub fn stored_zip(name: &str, data: &[u8]) -> Vec<u8> {
    let (crc, len, nlen) = (crc32(data), data.len() as u32, name.len() as u16);
    let mut z = Vec::new();
    // Local file header: signature, version 1.0, flags, method 0 (stored), time, date.
    z.extend(0x0403_4b50u32.to_le_bytes());
    z.extend([10, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
    z.extend(crc.to_le_bytes());
    z.extend(len.to_le_bytes());
    z.extend(len.to_le_bytes());
    z.extend(nlen.to_le_bytes());
    z.extend(0u16.to_le_bytes());
    z.extend(name.as_bytes());
    z.extend(data);
    let central = z.len() as u32;
    // Central directory entry: made by / needed 1.0, flags, method, time, date.
    z.extend(0x0201_4b50u32.to_le_bytes());
    z.extend([10, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
    z.extend(crc.to_le_bytes());
    z.extend(len.to_le_bytes());
    z.extend(len.to_le_bytes());
    z.extend(nlen.to_le_bytes());
    // Extra and comment length, disk number, internal and external attributes.
    z.extend([0u8; 10]);
    // Offset of the local header.
    z.extend(0u32.to_le_bytes());
    z.extend(name.as_bytes());
    let central_len = z.len() as u32 - central;
    // End of central directory: one entry on disk 0.
    z.extend(0x0605_4b50u32.to_le_bytes());
    z.extend([0, 0, 0, 0, 1, 0, 1, 0]);
    z.extend(central_len.to_le_bytes());
    z.extend(central.to_le_bytes());
    z.extend(0u16.to_le_bytes());
    z
}
