//! Jepsen log lines (`INFO  jepsen.util - 0 :invoke :read nil`), as in Porcupine's etcd corpus.
//!
//! Jepsen's `jepsen.util/log-op` prints each operation as its process, type, `f` and value
//! (printed as EDN), then a tab and the error when there is one. The line order is the
//! real-time order and there are no timestamps. Lines without the `jepsen.util - ` marker
//! are skipped, since real logs interleave many others; a line with the marker that does not
//! parse is an error. Fields are split on any whitespace (tabs in older files, runs of spaces
//! in later ones), except that the value, which may contain spaces (`[3 0]`), is read as one
//! EDN form.

use crate::edn::{self, Kind};
use crate::error::InputError;
use crate::history::{Event, EventType, Process};
use crate::lines::Lines;
use serde_json::Value;
use std::io::BufRead;

/// What marks an operation line of a Jepsen log.
pub const MARKER: &str = "jepsen.util - ";

/// Reads a Jepsen log one event at a time, skipping lines that are not operations.
#[derive(Debug)]
pub struct JepsenLogReader<R> {
    lines: Lines<R>,
    lines_seen: u64,
    next_index: u64,
    failed: bool,
}

impl<R: BufRead> JepsenLogReader<R> {
    /// Events of the Jepsen log in `reader`, which came from `file`.
    pub fn new(reader: R, file: &str) -> JepsenLogReader<R> {
        JepsenLogReader {
            lines: Lines::new(reader, file),
            lines_seen: 0,
            next_index: 0,
            failed: false,
        }
    }

    fn read_event(&mut self) -> Result<Option<Event>, InputError> {
        while let Some(item) = self.lines.next() {
            let (line, text) = item?;
            self.lines_seen = line;
            let Some(at) = text.find(MARKER) else {
                continue;
            };
            let event = parse_operation(
                self.lines.file(),
                line,
                self.next_index,
                &text[at + MARKER.len()..],
            )?;
            self.next_index += 1;
            return Ok(Some(event));
        }
        let file = self.lines.file().to_string();
        match (self.next_index, self.lines_seen) {
            (0, 0) => Err(InputError::Empty { file }),
            (0, seen) => Err(InputError::malformed(
                &file,
                0,
                None,
                format!("no operation lines (containing {MARKER:?}) among {seen} lines; is this a Jepsen log?"),
            )),
            _ => Ok(None),
        }
    }
}

impl<R: BufRead> Iterator for JepsenLogReader<R> {
    type Item = Result<Event, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = self.read_event();
        self.failed = !matches!(result, Ok(Some(_)));
        result.transpose()
    }
}

/// Splits off the next whitespace-separated field; `None` when only blanks remain.
fn next_field(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    Some((&text[..end], &text[end..]))
}

/// Parses what follows the marker: `process type f value [error]`.
fn parse_operation(file: &str, line: u64, index: u64, text: &str) -> Result<Event, InputError> {
    let bad =
        |field: &str, message: String| InputError::malformed(file, line, Some(field), message);
    let missing = |field: &str, expected: &str| bad(field, format!("missing; expected {expected}"));

    let (process_text, rest) =
        next_field(text).ok_or_else(|| missing("process", "an integer or a keyword"))?;
    let process = match (process_text.parse::<u64>(), process_text.strip_prefix(':')) {
        (Ok(id), _) => Process::Client(id),
        (Err(_), Some(name)) if !name.is_empty() => Process::Named(name.to_string()),
        _ => {
            return Err(bad(
                "process",
                format!("expected a non-negative integer or a keyword, found {process_text:?}"),
            ))
        }
    };
    let types = ":invoke|:ok|:fail|:info";
    let (type_text, rest) = next_field(rest).ok_or_else(|| missing("type", types))?;
    let kind = EventType::parse(type_text.trim_start_matches(':'))
        .ok_or_else(|| bad("type", format!("expected {types}, found {type_text:?}")))?;
    let (f_text, rest) = next_field(rest).ok_or_else(|| missing("f", "a keyword such as :read"))?;
    // Jepsen prints `f` with `pr`, so it is a keyword; a bare word here means a field is missing.
    let f = f_text.strip_prefix(':').unwrap_or_default();
    if f.is_empty() {
        return Err(bad(
            "f",
            format!("expected a keyword such as :read, found {f_text:?}"),
        ));
    }

    let value_text = rest.trim_start();
    let (form, used) = match edn::read_prefix(value_text.as_bytes(), line) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(missing("value", "an EDN value such as nil, 3 or [3 0]")),
        Err(error) => return Err(error.into_input_error(file, Some("value"))),
    };
    let trailing = value_text.get(used..).unwrap_or_default().trim();

    let mut event = Event::new(index, kind, process, f);
    event.line = line;
    let completion_failed = matches!(kind, EventType::Fail | EventType::Info);
    if !trailing.is_empty() {
        event.value = Some(form.value);
        event.error = Some(Value::String(trailing.to_string()));
    } else if completion_failed && form.kind == Kind::Keyword {
        // `:info :cas :timed-out`: the keyword is the error, not the operation's value.
        event.value = Some(Value::Null);
        event.error = Some(form.value);
    } else {
        event.value = Some(form.value);
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Result<Vec<Event>, String> {
        JepsenLogReader::new(text.as_bytes(), "h.log")
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tab_and_space_separated_lines_read_alike() {
        let text = "INFO  jepsen.core - Running test\nINFO  jepsen.util - 2\t:invoke\t:cas\t[3 0]\nINFO  jepsen.util - 2   :ok     :cas    [3 0]\n";
        let events = read(text).unwrap();
        assert_eq!(events.len(), 2);
        for (event, (index, line, kind)) in events
            .iter()
            .zip([(0, 2, EventType::Invoke), (1, 3, EventType::Ok)])
        {
            assert_eq!((event.index, event.line, event.kind), (index, line, kind));
            assert_eq!(event.process, Process::Client(2));
            assert_eq!(event.f, "cas");
            assert_eq!(event.value, Some(json!([3, 0])));
            assert_eq!(event.error, None);
        }
    }

    #[test]
    fn values_and_errors_are_read_as_documented() {
        let cases: &[(&str, Value, Option<Value>)] = &[
            ("0\t:invoke\t:read\tnil", json!(null), None),
            ("0\t:ok\t:read\t4", json!(4), None),
            (
                "13\t:info\t:cas\t:timed-out",
                json!(null),
                Some(json!("timed-out")),
            ),
            (
                "13\t:fail\t:read\t:timed-out",
                json!(null),
                Some(json!("timed-out")),
            ),
            ("13\t:ok\t:read\t:some-keyword", json!("some-keyword"), None),
            (
                "4\t:fail\t:write\t3\tconnection refused",
                json!(3),
                Some(json!("connection refused")),
            ),
            (
                ":nemesis\t:info\t:start\t{\"n1\" #{\"n2\"}}",
                json!({"n1": ["n2"]}),
                None,
            ),
        ];
        for (operation, value, error) in cases {
            let event = &read(&format!("INFO  jepsen.util - {operation}\n")).unwrap()[0];
            assert_eq!(event.value.as_ref(), Some(value), "{operation}");
            assert_eq!(&event.error, error, "{operation}");
        }
        let nemesis = &read("INFO  jepsen.util - :nemesis\t:info\t:start\tnil").unwrap()[0];
        assert_eq!(nemesis.process, Process::nemesis());
    }

    #[test]
    fn a_bad_operation_line_names_its_line_and_field() {
        let cases = [
            ("0\t:done\t:read\tnil", "field \"type\": expected :invoke|:ok|:fail|:info, found \":done\""),
            ("-3\t:ok\t:read\tnil", "field \"process\": expected a non-negative integer or a keyword, found \"-3\""),
            ("0\t:ok", "field \"f\": missing; expected a keyword such as :read"),
            ("0\t:ok\t:read", "field \"value\": missing; expected an EDN value such as nil, 3 or [3 0]"),
            ("0\t:ok\t:cas\t[3", "field \"value\": unexpected end of input inside a vector opened on line 2; was the file cut short?"),
            ("", "field \"process\": missing; expected an integer or a keyword"),
            ("0 :ok : 3", "field \"f\": expected a keyword such as :read, found \":\""),
            ("0 :ok 3", "field \"f\": expected a keyword such as :read, found \"3\""),
        ];
        for (operation, expected) in cases {
            let text = format!(
                "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - {operation}\n"
            );
            assert_eq!(
                read(&text).unwrap_err(),
                format!("h.log:2: {expected}"),
                "{operation}"
            );
        }
    }

    #[test]
    fn a_log_without_operations_is_an_error() {
        assert_eq!(read("").unwrap_err(), "h.log: empty history: no events");
        assert_eq!(
            read("hello\nworld\n").unwrap_err(),
            "h.log: no operation lines (containing \"jepsen.util - \") among 2 lines; is this a Jepsen log?"
        );
    }
}
