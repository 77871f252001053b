//! A read-only view of one message for consumers that want RFC 5322 bytes: the live headers, the
//! blank line, then the body, streamed from wherever the body lives without copying it.

use std::fs::File;
use std::io::{self, Read};

use super::data_file::DataFile;
use super::header_file::SpoolHeader;

/// Somewhere a body can be read from by offset: an open `-D` file, or bytes in memory.
pub trait BodySource: Send + Sync {
    fn body_len(&self) -> u64;
    fn read_body_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// The open file the body is stored in and where in it the body starts, when it is a file:
    /// a consumer that passes the body on unchanged can then let the kernel copy it (`sendfile`).
    fn body_file(&self) -> Option<(&File, u64)> {
        None
    }
}

impl BodySource for DataFile {
    fn body_len(&self) -> u64 {
        DataFile::body_len(self)
    }
    fn read_body_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        DataFile::read_body_at(self, buf, offset)
    }
    fn body_file(&self) -> Option<(&File, u64)> {
        Some((self.file(), self.body_offset()))
    }
}

impl BodySource for [u8] {
    fn body_len(&self) -> u64 {
        self.len() as u64
    }
    fn read_body_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl BodySource for Vec<u8> {
    fn body_len(&self) -> u64 {
        self.len() as u64
    }
    fn read_body_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_body_at(buf, offset)
    }
}

/// A message as a consumer sees it: the envelope and headers of a `-H`, and a body.
#[derive(Clone, Copy)]
pub struct MessageView<'a> {
    pub header: &'a SpoolHeader,
    pub body: &'a dyn BodySource,
}

impl<'a> MessageView<'a> {
    pub fn new(header: &'a SpoolHeader, body: &'a dyn BodySource) -> Self {
        MessageView { header, body }
    }

    /// Headers + blank line + body, as stored (LF line ends; a wire-format body stays CRLF).
    pub fn reader(&self) -> MessageReader<'a> {
        MessageReader { head: self.head(), head_pos: 0, body: self.body, body_pos: 0 }
    }

    /// The live headers and the blank line after them, as stored: what `reader()` gives before
    /// the body.
    pub fn head(&self) -> Vec<u8> {
        let mut head = self.header.headers.live_bytes();
        head.push(b'\n');
        head
    }

    /// The same bytes with every bare LF turned into CRLF, for consumers that need wire form
    /// (clamd, dccifd, DKIM/ARC hashing).
    pub fn wire_reader(&self) -> CrlfReader<MessageReader<'a>> {
        CrlfReader::new(self.reader())
    }

    /// The body alone in wire form (bare LF as CRLF), streamed.
    pub fn body_wire_reader(&self) -> CrlfReader<MessageReader<'a>> {
        CrlfReader::new(MessageReader { head: Vec::new(), head_pos: 0, body: self.body, body_pos: 0 })
    }

    /// Total length of `reader()`'s output.
    pub fn len(&self) -> u64 {
        self.header.headers.live_len() as u64 + 1 + self.body.body_len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Read the whole message into memory (for consumers that need a slice, such as a MIME parser).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        self.reader().read_to_end(&mut v)?;
        Ok(v)
    }
}

/// Streams a header block and then a body.
pub struct MessageReader<'a> {
    head: Vec<u8>,
    head_pos: usize,
    body: &'a dyn BodySource,
    body_pos: u64,
}

impl Read for MessageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head_pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.head_pos);
            buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            return Ok(n);
        }
        let n = self.body.read_body_at(buf, self.body_pos)?;
        self.body_pos += n as u64;
        Ok(n)
    }
}

/// Turns bare LF into CRLF while streaming; a CRLF already present is left alone.
pub struct CrlfReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    prev_cr: bool,
    /// A LF whose CR went out at the end of the previous read.
    owe_lf: bool,
}

impl<R: Read> CrlfReader<R> {
    pub fn new(inner: R) -> Self {
        CrlfReader { inner, buf: vec![0; 32 * 1024], start: 0, end: 0, prev_cr: false, owe_lf: false }
    }
}

impl<R: Read> Read for CrlfReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        if self.owe_lf {
            out[0] = b'\n';
            self.owe_lf = false;
            n = 1;
        }
        if self.start == self.end && n == 0 {
            self.end = self.inner.read(&mut self.buf)?;
            self.start = 0;
            if self.end == 0 {
                return Ok(0);
            }
        }
        // Copy up to the next LF in one go: the bytes between line ends are most of a message, and
        // a byte-at-a-time loop here cost as much CPU as sending the message to clamd.
        while n < out.len() && self.start < self.end {
            let src = &self.buf[self.start..self.end.min(self.start + out.len() - n)];
            let run = memchr::memchr(b'\n', src).unwrap_or(src.len());
            out[n..n + run].copy_from_slice(&src[..run]);
            if run > 0 {
                self.prev_cr = src[run - 1] == b'\r';
            }
            n += run;
            self.start += run;
            if run == src.len() {
                // Out of room or out of buffered input.
                break;
            }
            // self.buf[self.start] is a LF.
            if !self.prev_cr {
                out[n] = b'\r';
                n += 1;
                if n == out.len() {
                    self.owe_lf = true;
                    self.start += 1;
                    self.prev_cr = false;
                    return Ok(n);
                }
            }
            out[n] = b'\n';
            n += 1;
            self.prev_cr = false;
            self.start += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crlf(input: &[u8], out_chunk: usize) -> Vec<u8> {
        read_in_chunks(CrlfReader::new(input), out_chunk)
    }

    /// Everything `r` yields, read into a buffer of `out_chunk` bytes at a time.
    fn read_in_chunks(mut r: impl Read, out_chunk: usize) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = vec![0; out_chunk];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    }

    /// Hands out at most `step` bytes per read, so the adaptor refills mid-line and between a CR
    /// and its LF.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Every bare LF becomes CRLF, one byte at a time: what the adaptor must produce.
    fn reference(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &b) in input.iter().enumerate() {
            if b == b'\n' && (i == 0 || input[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn crlf_adaptor_matches_the_bytewise_reference(
            input in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\r', b'\n']), 0..300),
            step in 1usize..40,
            out_chunk in 1usize..40,
        ) {
            let all = read_in_chunks(CrlfReader::new(Trickle { data: &input, step }), out_chunk);
            proptest::prop_assert_eq!(all, reference(&input));
        }
    }

    #[test]
    fn crlf_adaptor_handles_every_chunk_size() {
        let input = b"a\nb\r\n\n\nlast";
        for chunk in 1..8 {
            assert_eq!(crlf(input, chunk), b"a\r\nb\r\n\r\n\r\nlast", "chunk {chunk}");
        }
    }
}
