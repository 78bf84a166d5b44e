//! History formats: detection from the first bytes, and `open`, which streams any of them as events.
//!
//! Every format is read as a stream of [`Event`]s with the same conventions (DESIGN.md): the
//! file order is the real-time order, `index` is dense from 0 in that order, and `line` is the
//! 1-based source line. Detection looks at content, never at the file name, and does not
//! consume it: it peeks at the reader's buffer with [`BufRead::fill_buf`].

use crate::error::InputError;
use crate::history::{Event, Header, History};
use crate::jepsen_edn::JepsenEdnReader;
use crate::jepsen_log::{JepsenLogReader, MARKER};
use crate::jsonl::JsonlReader;
use crate::porcupine_kv::PorcupineKvReader;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::Path;

/// The size of the read buffer of [`open`]: also how much of a file detection can see.
const OPEN_BUFFER_BYTES: usize = 256 * 1024;

/// A history format that [`open`] can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Helios's own JSON Lines, version 1 (DESIGN.md).
    Jsonl,
    /// Jepsen EDN: a vector or list of operation maps, or a bare sequence of them.
    JepsenEdn,
    /// Jepsen log lines: `INFO  jepsen.util - 0 :invoke :read nil`, tab- or space-separated.
    JepsenLog,
    /// Porcupine's key-value lines: `{:process 0, :type :invoke, :f :get, :key "5", :value nil}`.
    PorcupineKv,
}

impl Format {
    /// Every format, in the order detection prefers them.
    pub const ALL: [Format; 4] = [
        Format::Jsonl,
        Format::JepsenLog,
        Format::PorcupineKv,
        Format::JepsenEdn,
    ];

    /// The format's name, as `--format` and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::JepsenEdn => "jepsen-edn",
            Format::JepsenLog => "jepsen-log",
            Format::PorcupineKv => "porcupine-kv",
        }
    }

    /// The format of a name given by [`Format::name`].
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|format| format.name() == name)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An opened history: its format, its header (JSON Lines only) and its events, streamed.
pub struct EventSource {
    /// The format the events are read in, detected or forced.
    pub format: Format,
    /// The header line, when the format has one and the history holds it.
    pub header: Option<Header>,
    /// The events in file order. The stream ends after its first error, and yields
    /// [`InputError::Empty`] when the history holds no event.
    pub events: Box<dyn Iterator<Item = Result<Event, InputError>> + Send>,
}

impl std::fmt::Debug for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSource")
            .field("format", &self.format)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Opens a history file as a stream of events; `format` overrides detection.
pub fn open(path: &Path, format: Option<Format>) -> Result<EventSource, InputError> {
    let file = path.display().to_string();
    let handle = std::fs::File::open(path).map_err(|source| InputError::Io {
        file: file.clone(),
        source,
    })?;
    let reader = BufReader::with_capacity(OPEN_BUFFER_BYTES, handle);
    from_reader(Box::new(reader), &file, format)
}

/// Same as [`open`], from any reader (`file` is the name used in error messages).
pub fn from_reader(
    mut reader: Box<dyn BufRead + Send>,
    file: &str,
    format: Option<Format>,
) -> Result<EventSource, InputError> {
    let format = match format {
        Some(format) => format,
        None => {
            let prefix = peek(&mut reader, file)?;
            match detect(prefix) {
                Some(format) => format,
                None if prefix.iter().all(u8::is_ascii_whitespace) => {
                    return Err(InputError::Empty {
                        file: file.to_string(),
                    })
                }
                None => {
                    return Err(InputError::UnknownFormat {
                        file: file.to_string(),
                        message: format!(
                            "unrecognised history format: {}; expected JSON Lines, Jepsen EDN, Jepsen log lines or Porcupine key-value lines",
                            describe_prefix(prefix)
                        ),
                    })
                }
            }
        }
    };
    let (header, events): (_, Box<dyn Iterator<Item = _> + Send>) = match format {
        Format::Jsonl => {
            let events = JsonlReader::new(reader, file)?;
            let header = events.header().cloned();
            (header, Box::new(RequireEvents::new(events, file)))
        }
        Format::JepsenEdn => (None, Box::new(JepsenEdnReader::new(reader, file))),
        Format::JepsenLog => (None, Box::new(JepsenLogReader::new(reader, file))),
        Format::PorcupineKv => (None, Box::new(PorcupineKvReader::new(reader, file))),
    };
    Ok(EventSource {
        format,
        header,
        events,
    })
}

/// Convenience: reads a whole history into memory (header and events).
pub fn read_all(path: &Path, format: Option<Format>) -> Result<History, InputError> {
    let source = open(path, format)?;
    let events = source.events.collect::<Result<Vec<_>, _>>()?;
    Ok(History {
        header: source.header,
        events,
    })
}

/// The reader's buffered bytes, filled once if empty, without consuming them.
fn peek<'r>(reader: &'r mut Box<dyn BufRead + Send>, file: &str) -> Result<&'r [u8], InputError> {
    loop {
        match reader.fill_buf() {
            Ok(_) => break,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(InputError::Io {
                    file: file.to_string(),
                    source,
                })
            }
        }
    }
    reader.fill_buf().map_err(|source| InputError::Io {
        file: file.to_string(),
        source,
    })
}

/// Detects the format from the first bytes of the content (not the file name).
///
/// In order: a JSON object naming `"helios_history"` or `"type"` is JSON Lines; a line with
/// `jepsen.util - `, or a first line that starts with a log level, is a Jepsen log; a first
/// form line `{:...}` with a `:key` is Porcupine key-value; `[`, `(`, `{:`, `#` or a `;`
/// comment start Jepsen EDN. Anything else is `None`.
pub fn detect(prefix: &[u8]) -> Option<Format> {
    let text = prefix.strip_prefix(b"\xef\xbb\xbf").unwrap_or(prefix);
    let lines = || {
        text.split(|&b| b == b'\n')
            .map(|line| line.trim_ascii())
            .filter(|line| !line.is_empty())
    };
    let first = lines().next()?;
    if let Some(object) = first.strip_prefix(b"{") {
        if object.trim_ascii_start().starts_with(b"\"") {
            let json_lines = contains(first, b"\"helios_history\"") || has_json_type_key(first);
            return json_lines.then_some(Format::Jsonl);
        }
    }
    if lines().any(|line| contains(line, MARKER.as_bytes())) || starts_with_log_level(first) {
        return Some(Format::JepsenLog);
    }
    let first_form = lines().find(|line| !line.starts_with(b";"));
    if first_form.is_some_and(|line| line.starts_with(b"{:") && has_key_keyword(line)) {
        return Some(Format::PorcupineKv);
    }
    match first {
        [b'[' | b'(' | b';' | b'#', ..] => Some(Format::JepsenEdn),
        [b'{', b':', ..] => Some(Format::JepsenEdn),
        _ => None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// `"type"` followed by optional blanks and a colon.
fn has_json_type_key(line: &[u8]) -> bool {
    let needle = b"\"type\"";
    (0..line.len().saturating_sub(needle.len() - 1))
        .filter(|&at| line[at..].starts_with(needle))
        .any(|at| {
            line[at + needle.len()..]
                .trim_ascii_start()
                .starts_with(b":")
        })
}

/// `:key` as a whole keyword, not a prefix of `:keys`.
fn has_key_keyword(line: &[u8]) -> bool {
    let needle = b":key";
    (0..line.len().saturating_sub(needle.len() - 1))
        .filter(|&at| line[at..].starts_with(needle))
        .any(|at| {
            matches!(
                line.get(at + needle.len()),
                Some(b' ' | b'\t' | b',' | b'"')
            )
        })
}

fn starts_with_log_level(line: &[u8]) -> bool {
    ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
        .iter()
        .any(|level| {
            line.strip_prefix(level.as_bytes())
                .is_some_and(|rest| matches!(rest.first(), Some(b' ' | b'\t' | b'[')))
        })
}

/// What the start of an unrecognised input looks like, for the error message.
fn describe_prefix(prefix: &[u8]) -> String {
    let start = &prefix[..prefix.len().min(48)];
    let text = std::str::from_utf8(start).ok().or_else(|| {
        // A cut in the middle of a UTF-8 sequence is not binary.
        std::str::from_utf8(prefix)
            .err()
            .filter(|e| e.valid_up_to() >= start.len().saturating_sub(3))?;
        std::str::from_utf8(&start[..start.len().saturating_sub(3)]).ok()
    });
    match text {
        Some(text) if !text.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            let first_line = text.trim_start().lines().next().unwrap_or_default();
            format!("the input starts with {first_line:?}")
        }
        _ => {
            let bytes: Vec<String> = start.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("the input looks binary (first bytes {})", bytes.join(" "))
        }
    }
}

/// Ends a stream of events with [`InputError::Empty`] when it yielded none.
struct RequireEvents<I> {
    inner: I,
    file: String,
    yielded: bool,
    done: bool,
}

impl<I> RequireEvents<I> {
    fn new(inner: I, file: &str) -> RequireEvents<I> {
        RequireEvents {
            inner,
            file: file.to_string(),
            yielded: false,
            done: false,
        }
    }
}

impl<I: Iterator<Item = Result<Event, InputError>>> Iterator for RequireEvents<I> {
    type Item = Result<Event, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.inner.next();
        match &item {
            Some(Ok(_)) => self.yielded = true,
            Some(Err(_)) => self.done = true,
            None => {
                self.done = true;
                if !self.yielded {
                    return Some(Err(InputError::Empty {
                        file: self.file.clone(),
                    }));
                }
            }
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for format in Format::ALL {
            assert_eq!(Format::parse(format.name()), Some(format));
            assert_eq!(serde_json::to_value(format).unwrap(), format.name());
        }
        assert_eq!(Format::parse("edn"), None);
    }

    #[test]
    fn detection_follows_the_content() {
        let cases: &[(&str, Option<Format>)] = &[
            ("{\"helios_history\":1}\n", Some(Format::Jsonl)),
            ("\n{\"index\":0,\"type\":\"invoke\"}", Some(Format::Jsonl)),
            ("{ \"index\":0, \"type\" : \"invoke\"}", Some(Format::Jsonl)),
            ("{\"results\": true}", None),
            (
                "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n",
                Some(Format::JepsenLog),
            ),
            (
                "2024 starting\nINFO  jepsen.util - 0 :invoke :read nil",
                Some(Format::JepsenLog),
            ),
            (
                "INFO [2017-01-01] jepsen.core - Running",
                Some(Format::JepsenLog),
            ),
            (
                "{:process 0, :type :invoke, :f :get, :key \"5\", :value nil}\n",
                Some(Format::PorcupineKv),
            ),
            (
                "; kv\n{:process 0, :type :invoke, :f :get, :key \"5\"}\n",
                Some(Format::PorcupineKv),
            ),
            (
                "{:process 0, :type :invoke, :f :get, :keys 5}\n",
                Some(Format::JepsenEdn),
            ),
            ("[{:process 4, :type :invoke}", Some(Format::JepsenEdn)),
            ("({:type :invoke}", Some(Format::JepsenEdn)),
            (
                "; T1 ww T3\n\n{:index 10, :type :invoke}",
                Some(Format::JepsenEdn),
            ),
            ("\u{feff}[{:f :read}]", Some(Format::JepsenEdn)),
            ("#jepsen.history.Op{:f :read}", Some(Format::JepsenEdn)),
            ("hello world", None),
            ("\x00\x01\x02", None),
            ("   \n\t", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(detect(text.as_bytes()), *expected, "{text:?}");
        }
    }

    fn open_text(text: &'static [u8], format: Option<Format>) -> Result<(Format, usize), String> {
        let source = from_reader(Box::new(text), "t", format).map_err(|e| e.to_string())?;
        let count = source
            .events
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?
            .len();
        Ok((source.format, count))
    }

    #[test]
    fn unknown_and_empty_inputs_are_typed_errors() {
        assert_eq!(
            open_text(b"", None),
            Err("t: empty history: no events".into())
        );
        assert_eq!(
            open_text(b"  \n\n", None),
            Err("t: empty history: no events".into())
        );
        assert_eq!(
            open_text(b"hello world\nsecond", None),
            Err("t: unrecognised history format: the input starts with \"hello world\"; expected JSON Lines, Jepsen EDN, Jepsen log lines or Porcupine key-value lines".into())
        );
        let binary = open_text(b"\x00\xff\xfe\x01", None).unwrap_err();
        assert!(
            binary.starts_with(
                "t: unrecognised history format: the input looks binary (first bytes 00 ff fe 01)"
            ),
            "{binary}"
        );
        assert_eq!(
            open_text(b"", Some(Format::Jsonl)),
            Err("t: empty history: no events".into())
        );
        assert_eq!(
            open_text(b"{\"helios_history\":1}\n", None),
            Err("t: empty history: no events".into())
        );
    }

    #[test]
    fn a_forced_format_overrides_detection() {
        let text = b"{:process 0, :type :invoke, :f :get, :key \"5\", :value nil}\n";
        assert_eq!(open_text(text, None), Ok((Format::PorcupineKv, 1)));
        assert_eq!(
            open_text(text, Some(Format::JepsenEdn)),
            Ok((Format::JepsenEdn, 1))
        );
        let error = open_text(text, Some(Format::Jsonl)).unwrap_err();
        assert!(error.starts_with("t:1: not valid JSON"), "{error}");
    }

    #[test]
    fn every_format_yields_the_same_events_for_the_same_history() {
        let jsonl = b"{\"index\":0,\"type\":\"invoke\",\"process\":1,\"f\":\"get\",\"key\":\"5\",\"value\":null}\n{\"index\":1,\"type\":\"ok\",\"process\":1,\"f\":\"get\",\"key\":\"5\",\"value\":\"x\"}\n";
        let edn = b"[{:process 1, :type :invoke, :f :get, :key \"5\", :value nil}\n {:process 1, :type :ok, :f :get, :key \"5\", :value \"x\"}]";
        let kv = b"{:process 1, :type :invoke, :f :get, :key \"5\", :value nil}\n{:process 1, :type :ok, :f :get, :key \"5\", :value \"x\"}\n";
        let events = |text: &'static [u8]| -> Vec<Event> {
            let source = from_reader(Box::new(text), "t", None).unwrap();
            source.events.map(|e| e.unwrap()).collect()
        };
        let expected = events(jsonl);
        assert_eq!(events(edn), expected);
        assert_eq!(events(kv), expected);
    }
}
