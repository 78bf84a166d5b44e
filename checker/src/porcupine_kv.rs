//! Porcupine's key-value histories: one EDN map per line, each naming a `:key`.
//!
//! `{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}` is read with the EDN
//! reader, one line at a time (so that memory is bounded by the line cap), and mapped to an
//! event exactly as a Jepsen EDN map is ([`crate::jepsen_edn::event_from_map`]). Line order is
//! the real-time order. What sets the format apart is the line discipline and the key: every
//! event must name one, since Porcupine's kv model is checked per key.

use crate::edn;
use crate::error::InputError;
use crate::history::Event;
use crate::jepsen_edn::event_from_map;
use crate::lines::Lines;
use serde_json::Value;
use std::io::{BufRead, Write};

/// Reads a Porcupine key-value history one event (one line) at a time.
#[derive(Debug)]
pub struct PorcupineKvReader<R> {
    lines: Lines<R>,
    next_index: u64,
    failed: bool,
}

impl<R: BufRead> PorcupineKvReader<R> {
    /// Events of the history in `reader`, which came from `file`.
    pub fn new(reader: R, file: &str) -> PorcupineKvReader<R> {
        PorcupineKvReader {
            lines: Lines::new(reader, file),
            next_index: 0,
            failed: false,
        }
    }

    fn read_event(&mut self) -> Result<Option<Event>, InputError> {
        while let Some(item) = self.lines.next() {
            let (line, text) = item?;
            let file = self.lines.file();
            let form = match edn::read_one(text.as_bytes(), line) {
                Ok(Some(form)) => form,
                Ok(None) => continue,
                Err(error) => return Err(error.into_input_error(file, None)),
            };
            let Value::Object(map) = form.value else {
                return Err(InputError::malformed(
                    file,
                    line,
                    None,
                    format!("expected one map per line, found {}", form.kind.describe()),
                ));
            };
            if !map.contains_key("key") {
                return Err(InputError::malformed(
                    file,
                    line,
                    Some("key"),
                    "missing; every operation of a key-value history names its key",
                ));
            }
            let event = event_from_map(file, line, self.next_index, map)?;
            self.next_index += 1;
            return Ok(Some(event));
        }
        if self.next_index == 0 {
            return Err(InputError::Empty {
                file: self.lines.file().to_string(),
            });
        }
        Ok(None)
    }
}

impl<R: BufRead> Iterator for PorcupineKvReader<R> {
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

/// Writes a history of string-valued operations in Porcupine's kv form, one event per line,
/// as the reader above reads it back. Nemesis events are left out: the form has none.
pub fn write_history<W: Write>(mut writer: W, events: &[Event]) -> std::io::Result<()> {
    for event in events.iter().filter(|event| !event.process.is_nemesis()) {
        let key = match &event.key {
            Some(Value::String(key)) => edn_string(key),
            Some(other) => edn_string(&other.to_string()),
            None => "nil".to_string(),
        };
        let value = match &event.value {
            Some(Value::String(text)) => edn_string(text),
            _ => "nil".to_string(),
        };
        writeln!(
            writer,
            "{{:process {}, :type :{}, :f :{}, :key {key}, :value {value}}}",
            event.process, event.kind, event.f
        )?;
    }
    writer.flush()
}

fn edn_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, Process};
    use serde_json::json;

    fn read(text: &str) -> Result<Vec<Event>, String> {
        PorcupineKvReader::new(text.as_bytes(), "kv.txt")
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_line_is_one_event_with_its_key() {
        let text = "{:process 0, :type :invoke, :f :append, :key \"0\", :value \"x 0 0 y\"}\n\n{:process 0, :type :ok, :f :get, :key \"5\", :value \"\"}\n";
        let events = read(text).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].index, events[0].line), (0, 1));
        assert_eq!((events[1].index, events[1].line), (1, 3));
        assert_eq!(events[0].kind, EventType::Invoke);
        assert_eq!(events[0].process, Process::Client(0));
        assert_eq!(events[0].f, "append");
        assert_eq!(events[0].key, Some(json!("0")));
        assert_eq!(events[0].value, Some(json!("x 0 0 y")));
        assert_eq!(events[1].value, Some(json!("")));
        assert!(events[1].extra.is_empty());
    }

    #[test]
    fn a_written_history_reads_back_as_the_same_events() {
        let text = "{:process 0, :type :invoke, :f :append, :key \"0\", :value \"x \\\"q\\\" y\"}\n{:process 0, :type :ok, :f :append, :key \"0\", :value \"x \\\"q\\\" y\"}\n{:process 1, :type :invoke, :f :get, :key \"0\", :value nil}\n";
        let events = read(text).unwrap();
        let mut written = Vec::new();
        write_history(&mut written, &events).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), text);
    }

    #[test]
    fn bad_lines_name_their_line_and_field() {
        let first = "{:process 0, :type :invoke, :f :get, :key \"1\", :value nil}\n";
        let cases = [
            ("{:process 0, :type :done, :f :get, :key \"1\"}", "kv.txt:2: field \"type\": expected invoke|ok|fail|info, found \"done\""),
            ("{:process 0, :type :ok, :f :get, :value nil}", "kv.txt:2: field \"key\": missing; every operation of a key-value history names its key"),
            ("{:process 0, :type :ok, :key \"1\"}", "kv.txt:2: field \"f\": missing; expected a keyword or a string"),
            ("[:process 0]", "kv.txt:2: expected one map per line, found a vector"),
            ("{:process 0, :type :ok, :f :get, :key \"1\", :val", "kv.txt:2: unexpected end of input inside a map opened on line 2; was the file cut short?"),
            ("{:process 0} {:process 1}", "kv.txt:2: expected one form, found '{' after it"),
        ];
        for (line, expected) in cases {
            assert_eq!(
                read(&format!("{first}{line}\n")).unwrap_err(),
                expected,
                "{line}"
            );
        }
        assert_eq!(
            read("\n; nothing\n").unwrap_err(),
            "kv.txt: empty history: no events"
        );
    }
}
