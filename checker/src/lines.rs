//! A bounded line reader shared by the line-based formats: it never buffers more than a cap.

use crate::error::InputError;
use std::io::BufRead;

/// The longest line any reader accepts. A longer one is an error, not an allocation.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Reads lines from a `BufRead`, numbering them from 1, refusing lines over a cap and
/// text that is not UTF-8. Line endings (`\n` or `\r\n`) are stripped.
#[derive(Debug)]
pub struct Lines<R> {
    reader: R,
    file: String,
    line: u64,
    max_line_bytes: usize,
    buffer: Vec<u8>,
    failed: bool,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `reader`, which came from `file` (used in error messages).
    pub fn new(reader: R, file: &str) -> Lines<R> {
        Lines::with_limit(reader, file, MAX_LINE_BYTES)
    }

    /// As [`Lines::new`], with an explicit cap on the length of one line.
    pub fn with_limit(reader: R, file: &str, max_line_bytes: usize) -> Lines<R> {
        Lines {
            reader,
            file: file.to_string(),
            line: 0,
            max_line_bytes,
            buffer: Vec::new(),
            failed: false,
        }
    }

    /// The name of the file, for error messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Reads the next line into the internal buffer; `Ok(false)` at the end of input.
    fn fill_line(&mut self) -> Result<bool, InputError> {
        self.buffer.clear();
        loop {
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(InputError::Io {
                        file: self.file.clone(),
                        source,
                    })
                }
            };
            if available.is_empty() {
                return Ok(!self.buffer.is_empty());
            }
            let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..at], true),
                None => (available, false),
            };
            if self.buffer.len() + chunk.len() > self.max_line_bytes {
                return Err(InputError::malformed(
                    &self.file,
                    self.line + 1,
                    None,
                    format!(
                        "line longer than {} MiB; refusing to buffer it",
                        self.max_line_bytes / (1024 * 1024)
                    ),
                ));
            }
            self.buffer.extend_from_slice(chunk);
            let consumed = chunk.len() + usize::from(found_newline);
            self.reader.consume(consumed);
            if found_newline {
                return Ok(true);
            }
        }
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<(u64, String), InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.fill_line() {
            Ok(false) => None,
            Ok(true) => {
                self.line += 1;
                if self.buffer.last() == Some(&b'\r') {
                    self.buffer.pop();
                }
                match std::str::from_utf8(&self.buffer) {
                    Ok(text) => Some(Ok((self.line, text.to_string()))),
                    Err(error) => {
                        self.failed = true;
                        Some(Err(InputError::malformed(
                            &self.file,
                            self.line,
                            None,
                            format!(
                                "not UTF-8 text (invalid byte at column {})",
                                error.valid_up_to() + 1
                            ),
                        )))
                    }
                }
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8], limit: usize) -> Vec<Result<(u64, String), String>> {
        Lines::with_limit(input, "t", limit)
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn lines_are_numbered_and_stripped_of_line_endings() {
        let got = collect(b"a\r\nb\n\nc", 100);
        assert_eq!(
            got,
            vec![
                Ok((1, "a".to_string())),
                Ok((2, "b".to_string())),
                Ok((3, String::new())),
                Ok((4, "c".to_string())),
            ]
        );
    }

    #[test]
    fn an_overlong_line_is_an_error_naming_its_line_and_stops_the_reader() {
        let got = collect(b"ok\n0123456789abcdef\nmore\n", 8);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Ok((1, "ok".to_string())));
        let error = got[1].clone().unwrap_err();
        assert!(error.starts_with("t:2: line longer than"), "{error}");
    }

    #[test]
    fn binary_garbage_is_an_error_naming_its_line() {
        let got = collect(b"fine\n\xff\xfe\x00\n", 100);
        assert_eq!(
            got[1].clone().unwrap_err(),
            "t:2: not UTF-8 text (invalid byte at column 1)"
        );
        assert_eq!(got.len(), 2);
    }
}
