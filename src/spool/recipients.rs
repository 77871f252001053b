//! Recipient lines of a `-H` file.
//!
//! Current Exim writes `addr` alone, or `addr <orcpt> <olen>,<dsnflags> <errors_to> <elen>,<pno>#3`
//! when any field is not the default. Older forms (`#1`, `addr <pno>`, Exim 3's `addr d,d,d`) are
//! still read. An address may contain spaces, so the line is parsed from the right, exactly as
//! Exim's reader does; MailScanner's reader, which only knows `#1`, takes a whole DSN line for the
//! address.

/// DSN NOTIFY bits of a recipient (Exim's `rf_*` values).
pub mod dsn {
    /// The next hop was told not to send DSNs (last hop).
    pub const LAST_HOP: u32 = 0x01;
    pub const NOTIFY_NEVER: u32 = 0x02;
    pub const NOTIFY_SUCCESS: u32 = 0x04;
    pub const NOTIFY_FAILURE: u32 = 0x08;
    pub const NOTIFY_DELAY: u32 = 0x10;
    pub const NOTIFY_ANY: u32 = NOTIFY_NEVER | NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY;
}

/// The fields of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientFields {
    pub address: Vec<u8>,
    /// ORCPT= as given (e.g. `rfc822;Bob@Dest.Example`).
    pub orcpt: Option<Vec<u8>>,
    pub dsn_flags: u32,
    pub errors_to: Option<Vec<u8>>,
    /// Index of the one_time parent in this list, or -1.
    pub pno: i32,
}

/// One recipient line: its fields, and the line as read so that an unchanged recipient in one of
/// the older forms is written back as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientLine {
    pub fields: RecipientFields,
    original: Option<(Vec<u8>, RecipientFields)>,
}

impl RecipientLine {
    pub fn new(address: &[u8]) -> RecipientLine {
        RecipientLine {
            fields: RecipientFields { address: address.to_vec(), orcpt: None, dsn_flags: 0, errors_to: None, pno: -1 },
            original: None,
        }
    }

    pub fn address(&self) -> &[u8] {
        &self.fields.address
    }

    /// Parse one line (without its LF) the way Exim's `spool_read_header` does.
    pub fn parse(line: &[u8]) -> Result<RecipientLine, &'static str> {
        let fields = parse_fields(line)?;
        Ok(RecipientLine { original: Some((line.to_vec(), fields.clone())), fields })
    }

    /// Write the line with its LF: as read when unchanged, otherwise in the current `#3` form.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match &self.original {
            Some((raw, f)) if *f == self.fields => out.extend_from_slice(raw),
            _ => write_current(&self.fields, out),
        }
        out.push(b'\n');
    }
}

fn write_current(f: &RecipientFields, out: &mut Vec<u8>) {
    out.extend_from_slice(&f.address);
    if f.pno < 0 && f.errors_to.is_none() && f.dsn_flags == 0 && f.orcpt.is_none() {
        return;
    }
    let orcpt = f.orcpt.as_deref().unwrap_or(b"");
    let errors_to = f.errors_to.as_deref().unwrap_or(b"");
    out.push(b' ');
    out.extend_from_slice(orcpt);
    out.extend_from_slice(format!(" {},{} ", orcpt.len(), f.dsn_flags).as_bytes());
    out.extend_from_slice(errors_to);
    out.extend_from_slice(format!(" {},{}#3", errors_to.len(), f.pno).as_bytes());
}

fn int(s: &[u8]) -> Option<i64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// `<len>,<n>` just before `end` (exclusive), walking left over `[0-9,-]`. Returns (start of the
/// digits, len, n).
fn pair_before(line: &[u8], end: usize) -> Result<(usize, usize, i64), &'static str> {
    let mut start = end;
    while start > 0 && matches!(line[start - 1], b'0'..=b'9' | b',' | b'-') {
        start -= 1;
    }
    let span = &line[start..end];
    let comma = span.iter().position(|&b| b == b',').ok_or("length,value pair without a comma")?;
    let len = int(&span[..comma]).filter(|&l| l >= 0).ok_or("bad length in length,value pair")?;
    let val = int(&span[comma + 1..]).ok_or("bad value in length,value pair")?;
    Ok((start, len as usize, val))
}

/// Take `len` bytes that end just before the space at `space`, then step over the space that must
/// precede them. Returns (the field, the new end of the line).
fn field_before(line: &[u8], space: usize, len: usize) -> Result<(Option<Vec<u8>>, usize), &'static str> {
    if space == 0 || line[space - 1] != b' ' {
        return Err("expected a space before a length,value pair");
    }
    let field_end = space - 1;
    let field_start = field_end.checked_sub(len).ok_or("field length runs past the start of the line")?;
    if field_start == 0 || line[field_start - 1] != b' ' {
        return Err("expected a space before a counted field");
    }
    let field = (len > 0).then(|| line[field_start..field_end].to_vec());
    Ok((field, field_start - 1))
}

fn parse_fields(line: &[u8]) -> Result<RecipientFields, &'static str> {
    if line.is_empty() {
        return Err("empty recipient line");
    }
    let mut fields = RecipientFields { address: Vec::new(), orcpt: None, dsn_flags: 0, errors_to: None, pno: -1 };
    let mut digits = line.len();
    while digits > 0 && line[digits - 1].is_ascii_digit() {
        digits -= 1;
    }
    let end = if digits == line.len() || digits == 0 {
        line.len()
    } else {
        match line[digits - 1] {
            b'#' => {
                let hash = digits - 1;
                let flags = int(&line[digits..]).ok_or("bad #flags")?;
                let mut end = hash;
                if flags & 0x01 != 0 {
                    let (start, len, pno) = pair_before(line, end)?;
                    let (errors_to, e) = field_before(line, start, len)?;
                    fields.errors_to = errors_to;
                    fields.pno = i32::try_from(pno).map_err(|_| "pno out of range")?;
                    end = e;
                }
                if flags & 0x02 != 0 {
                    let (start, len, dsn) = pair_before(line, end)?;
                    let (orcpt, e) = field_before(line, start, len)?;
                    fields.orcpt = orcpt;
                    fields.dsn_flags = u32::try_from(dsn).map_err(|_| "dsn flags out of range")?;
                    end = e;
                }
                end
            }
            // Early Exim 4: `addr <pno>`.
            b' ' => {
                fields.pno = int(&line[digits..]).and_then(|v| i32::try_from(v).ok()).ok_or("bad pno")?;
                digits - 1
            }
            // Exim 3: `addr d,d,d`; the second number is the pno.
            b',' => {
                let mut start = digits - 1;
                while start > 0 && matches!(line[start - 1], b'0'..=b'9' | b',') {
                    start -= 1;
                }
                if start == 0 || line[start - 1] != b' ' {
                    return Err("Exim 3 form needs a space before its numbers");
                }
                let nums: Vec<&[u8]> = line[start..].split(|&b| b == b',').collect();
                fields.pno =
                    nums.get(1).and_then(|n| int(n)).and_then(|v| i32::try_from(v).ok()).ok_or("bad Exim 3 pno")?;
                start - 1
            }
            _ => line.len(),
        }
    };
    if end == 0 {
        return Err("empty address");
    }
    fields.address = line[..end].to_vec();
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(line: &str) -> RecipientFields {
        let r = RecipientLine::parse(line.as_bytes()).unwrap();
        let mut out = Vec::new();
        r.write(&mut out);
        assert_eq!(out, format!("{line}\n").as_bytes());
        r.fields
    }

    #[test]
    fn dsn_line_from_the_spec() {
        let f = round("bob@dest.example rfc822;Bob@Dest.Example 23,12  0,-1#3");
        assert_eq!(f.address, b"bob@dest.example");
        assert_eq!(f.orcpt.as_deref(), Some(&b"rfc822;Bob@Dest.Example"[..]));
        assert_eq!(f.dsn_flags, 12);
        assert_eq!(f.errors_to, None);
        assert_eq!(f.pno, -1);
    }

    #[test]
    fn notify_success_without_orcpt() {
        let f = round("bob@dest.example  0,4  0,-1#3");
        assert_eq!((f.address.as_slice(), f.dsn_flags, f.orcpt), (&b"bob@dest.example"[..], 4, None));
    }

    #[test]
    fn address_with_spaces_and_errors_to() {
        let f = round("\"john smith\"@x.example  0,0 owner@x.example 15,2#3");
        assert_eq!(f.address, b"\"john smith\"@x.example");
        assert_eq!(f.errors_to.as_deref(), Some(&b"owner@x.example"[..]));
        assert_eq!(f.pno, 2);
    }

    #[test]
    fn older_forms() {
        assert_eq!(round("a@b errs@b 6,1#1").pno, 1);
        assert_eq!(round("a@b 3").pno, 3);
        assert_eq!(round("a@b 0,4,0").pno, 4);
        assert_eq!(round("user123@host9").address, b"user123@host9");
    }

    #[test]
    fn edited_line_is_written_in_current_form() {
        let mut r = RecipientLine::parse(b"a@b errs@b 6,1#1").unwrap();
        r.fields.dsn_flags = 8;
        let mut out = Vec::new();
        r.write(&mut out);
        assert_eq!(out, b"a@b  0,8 errs@b 6,1#3\n");
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(RecipientLine::parse(b"a@b x 99,4  0,-1#3").is_err());
        assert!(RecipientLine::parse(b"").is_err());
        assert!(RecipientLine::parse(b" 0,4  0,-1#3").is_err());
    }
}
