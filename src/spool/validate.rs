//! The writer's guard: a model that would serialise into something other than itself is refused
//! before a byte is written. Model fields are public for convenience, so a value with an LF in it
//! could otherwise smuggle an extra option line (`-frozen …`) or recipient into the file.

use super::error::{Reason, SpoolError};
use super::header_file::{check_known_value, SpoolHeader, MAX_LINE};
use super::options::SpoolOption;
use super::recipients::RecipientLine;

fn clean_line(b: &[u8]) -> bool {
    !b.iter().any(|&c| matches!(c, b'\n' | b'\r' | 0))
}

fn refuse(what: &'static str) -> SpoolError {
    SpoolError::whole_file(Reason::Unwritable(what))
}

/// The reader refuses longer lines, as Exim does (ACL values and header texts are counted, not
/// read as lines, so they have no such limit).
const TOO_LONG: &str = "line longer than Exim reads (4 x BIG_BUFFER_SIZE)";

impl SpoolHeader {
    /// Check that [`SpoolHeader::to_bytes`] will write a file that reads back as this model.
    pub fn validate(&self) -> Result<(), SpoolError> {
        if !clean_line(&self.originator.login) {
            return Err(refuse("login contains CR, LF or NUL"));
        }
        if !clean_line(&self.sender) {
            return Err(refuse("sender contains CR, LF or NUL"));
        }
        let owner_line =
            self.originator.login.len() + format!(" {} {}", self.originator.uid, self.originator.gid).len();
        if owner_line > MAX_LINE || self.sender.len() + 2 > MAX_LINE {
            return Err(refuse(TOO_LONG));
        }
        for o in &self.options.0 {
            match o {
                SpoolOption::Line(l) => {
                    let name_ok = !l.name.is_empty()
                        && clean_line(&l.name)
                        && !l.name.contains(&b' ')
                        && !matches!(l.name[0], b'-' | b'(')
                        && !matches!(l.name.as_slice(), b"aclc" | b"aclm" | b"acl");
                    if !name_ok {
                        return Err(refuse("option name is empty, has a space, CR, LF or NUL, or is an ACL keyword"));
                    }
                    if l.value.as_deref().is_some_and(|v| !clean_line(v)) {
                        return Err(refuse("option value contains CR, LF or NUL"));
                    }
                    // `-frozen` without a time (and the like) is a read error, for Exim and for us.
                    check_known_value(&l.name, l.value.as_deref()).map_err(refuse)?;
                }
                SpoolOption::Acl(a) => {
                    if a.name.is_empty() || !clean_line(&a.name) || a.name.contains(&b' ') {
                        return Err(refuse("ACL variable name is empty or has a space, CR, LF or NUL"));
                    }
                }
            }
            let quoter = match o {
                SpoolOption::Line(l) => &l.quoter,
                SpoolOption::Acl(a) => &a.quoter,
            };
            if quoter
                .as_deref()
                .is_some_and(|q| q.is_empty() || !q.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_'))
            {
                return Err(refuse("quoter is not a lookup type name"));
            }
            let mut written = Vec::new();
            o.write(&mut written);
            if written.iter().position(|&b| b == b'\n').unwrap_or(written.len()) > MAX_LINE {
                return Err(refuse(TOO_LONG));
            }
        }
        if self.non_recipients.iter().any(|a| a.is_empty() || !clean_line(a)) {
            return Err(refuse("non-recipient address is empty or contains CR, LF or NUL"));
        }
        if self.non_recipients.iter().any(|a| a.len() + 3 > MAX_LINE) {
            return Err(refuse(TOO_LONG));
        }
        if self.recipients.len() > super::header_file::MAX_RECIPIENTS {
            return Err(refuse("more recipients than Exim reads"));
        }
        for r in &self.recipients {
            let f = &r.fields;
            let fields_ok = clean_line(&f.address)
                && f.orcpt.as_deref().is_none_or(clean_line)
                && f.errors_to.as_deref().is_none_or(clean_line);
            if !fields_ok {
                return Err(refuse("recipient field contains CR, LF or NUL"));
            }
            // Parsed from the right, an address such as `a 5` would come back as `a` with pno 5.
            let mut line = Vec::new();
            r.write(&mut line);
            line.pop();
            if line.len() > MAX_LINE {
                return Err(refuse(TOO_LONG));
            }
            if RecipientLine::parse(&line).map(|back| back.fields) != Ok(f.clone()) {
                return Err(refuse("recipient would not read back as written"));
            }
        }
        // A digit flag would be read as part of the length; the reader refuses control characters.
        let bad_flag = |b: u8| b.is_ascii_digit() || (b.is_ascii_whitespace() && b != b' ');
        if self.headers.all().iter().any(|h| bad_flag(h.flag().byte())) {
            return Err(refuse("header flag byte is a digit or a control character"));
        }
        Ok(())
    }

    /// [`SpoolHeader::to_bytes`] after [`SpoolHeader::validate`].
    pub fn to_checked_bytes(&self) -> Result<Vec<u8>, SpoolError> {
        self.validate()?;
        Ok(self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use crate::spool::{HeaderFlag, HeaderLine, OptionLine, Position, RecipientLine, SpoolHeader};

    fn sample() -> SpoolHeader {
        SpoolHeader::parse(
            b"1xXOQD-0004A8-22-H\nDebian-exim 102 105\n<s@x>\n1795895361 0\n-body_linecount 0\nXX\n1\nb@x\n\n",
            None,
        )
        .unwrap()
    }

    #[test]
    fn refuses_what_would_not_read_back() {
        assert!(sample().validate().is_ok());
        let mut h = sample();
        h.options.set(OptionLine::with_value("ident", b"x\n-frozen 1"));
        assert!(h.to_checked_bytes().is_err());
        let mut h = sample();
        h.recipients.push(RecipientLine::new(b"odd 5"));
        assert!(h.validate().is_err());
        let mut h = sample();
        h.sender = b"a\r".to_vec();
        assert!(h.validate().is_err());
        let mut h = sample();
        h.options.set(OptionLine::flag("aclm"));
        assert!(h.validate().is_err());
        let mut h = sample();
        h.options.set(OptionLine::flag("frozen"));
        assert!(h.validate().is_err());
        let mut h = sample();
        h.options.set(OptionLine::with_value("ident", &[b'x'; super::MAX_LINE]));
        assert!(h.validate().is_err());
        h.options.set(OptionLine::with_value("ident", &[b'x'; super::MAX_LINE - "-ident ".len()]));
        assert!(h.validate().is_ok());
        assert_eq!(SpoolHeader::parse(&h.to_bytes(), None).unwrap(), h);
        for flag in [b'0', b'\t', b'\n'] {
            let mut h = sample();
            let line = HeaderLine::from_text(HeaderFlag::from_byte(flag), b"X-A: 1\n").unwrap();
            h.headers.insert(line, Position::Bottom);
            assert!(h.validate().is_err(), "flag {flag}");
        }
    }
}
