//! Bounded line reading: a line longer than the limit is skipped to its end, not buffered.

use std::io::{self, BufRead};

/// What one call of [`read_line`] found.
pub(crate) enum Line {
    /// End of input.
    Eof,
    /// A line (without its `\n`) is in the buffer.
    Complete,
    /// The line had this many bytes, over the limit; the buffer holds nothing useful.
    TooLong(u64),
}

/// Reads the next line into `buf` (cleared first), keeping at most `limit` bytes.
pub(crate) fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>, limit: usize) -> io::Result<Line> {
    buf.clear();
    let mut total: u64 = 0;
    let mut saw_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        saw_any = true;
        let (chunk, found_newline) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        total += chunk.len() as u64;
        if total <= limit as u64 {
            buf.extend_from_slice(chunk);
        }
        let consumed = chunk.len() + usize::from(found_newline);
        reader.consume(consumed);
        if found_newline {
            break;
        }
    }
    if !saw_any {
        return Ok(Line::Eof);
    }
    if total > limit as u64 {
        buf.clear();
        return Ok(Line::TooLong(total));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_bounds_long_ones() {
        let data = b"short\r\nthis line is too long\nend";
        let mut reader = io::BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert!(matches!(read_line(&mut reader, &mut buf, 10).unwrap(), Line::Complete));
        assert_eq!(buf, b"short");
        assert!(matches!(read_line(&mut reader, &mut buf, 10).unwrap(), Line::TooLong(21)));
        assert!(matches!(read_line(&mut reader, &mut buf, 10).unwrap(), Line::Complete));
        assert_eq!(buf, b"end");
        assert!(matches!(read_line(&mut reader, &mut buf, 10).unwrap(), Line::Eof));
    }
}
