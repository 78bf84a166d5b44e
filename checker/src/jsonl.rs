//! The native history format: JSON Lines, version 1 (DESIGN.md), read as a stream and written back exactly.

use crate::error::InputError;
use crate::history::{Event, EventType, Header, History};
use crate::lines::Lines;
use serde_json::Value;
use std::io::{BufRead, Write};

/// Reads a JSON Lines history one event at a time, so that a large file is never held whole.
///
/// The optional header is read on construction. Blank lines are skipped. Each event's
/// `index` must be dense from 0, which catches lost or duplicated lines.
#[derive(Debug)]
pub struct JsonlReader<R> {
    lines: Lines<R>,
    header: Option<Header>,
    pending: Option<(u64, String)>,
    next_index: u64,
    failed: bool,
}

impl<R: BufRead> JsonlReader<R> {
    /// Starts reading `reader`, which came from `file`, and reads the header if present.
    pub fn new(reader: R, file: &str) -> Result<JsonlReader<R>, InputError> {
        let mut lines = Lines::new(reader, file);
        let mut header = None;
        let mut pending = None;
        for item in lines.by_ref() {
            let (line, text) = item?;
            if text.trim().is_empty() {
                continue;
            }
            if text.contains("\"helios_history\"") {
                header = Some(parse_header(file, line, &text)?);
            } else {
                pending = Some((line, text));
            }
            break;
        }
        Ok(JsonlReader {
            lines,
            header,
            pending,
            next_index: 0,
            failed: false,
        })
    }

    /// The header line, if the history has one.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    fn parse(&mut self, line: u64, text: &str) -> Result<Event, InputError> {
        let file = self.lines.file();
        let mut event: Event = match serde_json::from_str(text) {
            Ok(event) => event,
            Err(error) => return Err(diagnose(file, line, text, &error)),
        };
        if event.index != self.next_index {
            return Err(InputError::malformed(
                file,
                line,
                Some("index"),
                format!(
                    "expected {} (indices are dense from 0), found {}",
                    self.next_index, event.index
                ),
            ));
        }
        self.next_index += 1;
        event.line = line;
        Ok(event)
    }
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    type Item = Result<Event, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let (line, text) = match self.pending.take() {
            Some(pending) => pending,
            None => loop {
                match self.lines.next()? {
                    Ok((_, text)) if text.trim().is_empty() => continue,
                    Ok(found) => break found,
                    Err(error) => {
                        self.failed = true;
                        return Some(Err(error));
                    }
                }
            },
        };
        let result = self.parse(line, &text);
        self.failed = result.is_err();
        Some(result)
    }
}

fn parse_header(file: &str, line: u64, text: &str) -> Result<Header, InputError> {
    let header: Header = serde_json::from_str(text).map_err(|error| {
        InputError::malformed(
            file,
            line,
            Some("helios_history"),
            format!("bad header: {error}"),
        )
    })?;
    if header.helios_history != 1 {
        return Err(InputError::malformed(
            file,
            line,
            Some("helios_history"),
            format!("unsupported version {}, expected 1", header.helios_history),
        ));
    }
    Ok(header)
}

/// Turns a serde error on one line into a message that names the field at fault.
///
/// This is the slow path, taken only for a bad line: it re-reads the line as a plain
/// JSON value and checks each field in turn.
fn diagnose(file: &str, line: u64, text: &str, error: &serde_json::Error) -> InputError {
    let bad =
        |field: Option<&str>, message: String| InputError::malformed(file, line, field, message);
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) if error.is_eof() => {
            return bad(
                None,
                format!("truncated JSON ({error}); was the file cut short?"),
            )
        }
        Err(_) => return bad(None, format!("not valid JSON: {error}")),
    };
    let Some(object) = value.as_object() else {
        return bad(
            None,
            format!("expected a JSON object, found {}", kind_of(&value)),
        );
    };
    let types = "invoke|ok|fail|info";
    match object.get("type") {
        None => return bad(Some("type"), format!("missing; expected {types}")),
        Some(Value::String(name)) if EventType::parse(name).is_some() => {}
        Some(other) => return bad(Some("type"), format!("expected {types}, found {other}")),
    }
    for field in ["index", "time"] {
        match object.get(field) {
            None if field == "time" => {}
            None => {
                return bad(
                    Some(field),
                    "missing; expected a non-negative integer".into(),
                )
            }
            Some(value) if value.is_u64() => {}
            Some(other) => {
                return bad(
                    Some(field),
                    format!("expected a non-negative integer, found {other}"),
                )
            }
        }
    }
    match object.get("process") {
        Some(Value::Number(n)) if n.is_u64() => {}
        Some(Value::String(_)) => {}
        None => {
            return bad(
                Some("process"),
                "missing; expected an integer or a name".into(),
            )
        }
        Some(other) => {
            return bad(
                Some("process"),
                format!("expected an integer or a name, found {other}"),
            )
        }
    }
    match object.get("f") {
        Some(Value::String(_)) => {}
        None => return bad(Some("f"), "missing; expected a string".into()),
        Some(other) => return bad(Some("f"), format!("expected a string, found {other}")),
    }
    for field in ["node"] {
        if let Some(other) = object.get(field).filter(|v| !v.is_string() && !v.is_null()) {
            return bad(Some(field), format!("expected a string, found {other}"));
        }
    }
    bad(None, error.to_string())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a whole JSON Lines history into memory. Prefer [`JsonlReader`] for large files.
pub fn read_history<R: BufRead>(reader: R, file: &str) -> Result<History, InputError> {
    let mut events = JsonlReader::new(reader, file)?;
    let header = events.header().cloned();
    let events = events.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok(History { header, events })
}

/// Writes one event as one line.
pub fn write_event<W: Write>(mut writer: W, event: &Event) -> std::io::Result<()> {
    serde_json::to_writer(&mut writer, event)?;
    writer.write_all(b"\n")
}

/// Writes a whole history, header first. Reading the result gives back an equal history.
pub fn write_history<W: Write>(mut writer: W, history: &History) -> std::io::Result<()> {
    if let Some(header) = &history.header {
        serde_json::to_writer(&mut writer, header)?;
        writer.write_all(b"\n")?;
    }
    for event in &history.events {
        write_event(&mut writer, event)?;
    }
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANONICAL: &str = r#"{"helios_history":1,"workload":"register","seed":42,"nodes":["m0","m1"]}
{"index":0,"time":1520331,"type":"invoke","process":3,"f":"write","key":"k7","value":5}
{"index":1,"time":2250911,"type":"ok","process":3,"f":"write","key":"k7","value":5,"node":"s1"}
{"index":2,"time":2301001,"type":"info","process":"nemesis","f":"start-partition","value":{"groups":[["m0","m1"],["m2","m3","m4"]]}}
{"index":3,"time":9301001,"type":"invoke","process":4,"f":"txn","value":[["append","x",1],["r","y",null]]}
{"index":4,"time":9301002,"type":"fail","process":4,"f":"txn","value":[["append","x",1],["r","y",null]],"error":"timeout","custom":true}
"#;

    fn read(text: &str) -> Result<History, String> {
        read_history(text.as_bytes(), "h.jsonl").map_err(|e| e.to_string())
    }

    #[test]
    fn a_canonical_history_round_trips_byte_for_byte() {
        let history = read(CANONICAL).unwrap();
        assert_eq!(history.events.len(), 5);
        assert_eq!(history.header.as_ref().unwrap().seed, Some(42));
        assert_eq!(history.events[2].line, 4);
        let mut out = Vec::new();
        write_history(&mut out, &history).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), CANONICAL);
    }

    #[test]
    fn an_explicit_null_value_is_kept_distinct_from_an_absent_one() {
        let text = "{\"index\":0,\"type\":\"invoke\",\"process\":1,\"f\":\"read\",\"value\":null}\n{\"index\":1,\"type\":\"invoke\",\"process\":2,\"f\":\"read\"}\n";
        let history = read(text).unwrap();
        assert_eq!(history.events[0].value, Some(Value::Null));
        assert_eq!(history.events[1].value, None);
        let mut out = Vec::new();
        write_history(&mut out, &history).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }

    #[test]
    fn an_unknown_type_names_the_line_and_the_field() {
        let text = "{\"index\":0,\"type\":\"invoke\",\"process\":1,\"f\":\"read\"}\n{\"index\":1,\"type\":\"done\",\"process\":1,\"f\":\"read\"}\n";
        assert_eq!(
            read(text).unwrap_err(),
            "h.jsonl:2: field \"type\": expected invoke|ok|fail|info, found \"done\""
        );
    }

    #[test]
    fn a_truncated_last_line_is_reported_as_truncated() {
        let text = "{\"index\":0,\"type\":\"invoke\",\"process\":1,\"f\":\"read\"}\n{\"index\":1,\"type\":\"ok\",\"proc";
        let error = read(text).unwrap_err();
        assert!(error.starts_with("h.jsonl:2: truncated JSON"), "{error}");
    }

    #[test]
    fn a_missing_or_skipped_index_is_an_error() {
        let text = "{\"index\":0,\"type\":\"invoke\",\"process\":1,\"f\":\"read\"}\n{\"index\":2,\"type\":\"ok\",\"process\":1,\"f\":\"read\"}\n";
        assert_eq!(
            read(text).unwrap_err(),
            "h.jsonl:2: field \"index\": expected 1 (indices are dense from 0), found 2"
        );
    }

    #[test]
    fn wrong_field_types_are_named() {
        let cases = [
            (
                r#"{"index":0,"type":"ok","process":[1],"f":"read"}"#,
                "process",
            ),
            (r#"{"index":0,"type":"ok","process":1,"f":7}"#, "f"),
            (
                r#"{"index":-1,"type":"ok","process":1,"f":"read"}"#,
                "index",
            ),
            (
                r#"{"index":0,"time":"soon","type":"ok","process":1,"f":"read"}"#,
                "time",
            ),
            (r#"{"index":0,"type":"ok","process":1}"#, "f"),
        ];
        for (line, field) in cases {
            let error = read(line).unwrap_err();
            assert!(
                error.starts_with(&format!("h.jsonl:1: field \"{field}\"")),
                "{error}"
            );
        }
    }

    #[test]
    fn a_header_of_another_version_is_refused() {
        let error = read("{\"helios_history\":2}\n").unwrap_err();
        assert_eq!(
            error,
            "h.jsonl:1: field \"helios_history\": unsupported version 2, expected 1"
        );
    }
}
