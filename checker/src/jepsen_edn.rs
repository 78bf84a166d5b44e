//! Jepsen EDN histories (Knossos, Elle, `history.edn`): EDN maps turned into [`Event`]s, streamed.
//!
//! The file is a vector or a list of operation maps, or a bare sequence of them. The order in
//! the file is the history's real-time order, so events are indexed densely from 0 in file
//! order; Jepsen's own `:index` is kept as `extra["source_index"]`. The mapping of one map to
//! an event, [`event_from_map`], is shared with the Porcupine key-value reader.

use crate::edn::ElementReader;
use crate::error::InputError;
use crate::history::{Event, EventType, Process};
use serde_json::{Map, Value};
use std::io::Read;

/// Reads a Jepsen EDN history one event at a time; the whole file is never held.
#[derive(Debug)]
pub struct JepsenEdnReader<R> {
    elements: ElementReader<R>,
    file: String,
    next_index: u64,
    failed: bool,
}

impl<R: Read> JepsenEdnReader<R> {
    /// Events of the EDN history in `reader`, which came from `file`.
    pub fn new(reader: R, file: &str) -> JepsenEdnReader<R> {
        JepsenEdnReader {
            elements: ElementReader::new(reader),
            file: file.to_string(),
            next_index: 0,
            failed: false,
        }
    }

    /// The most input any one element has spanned so far: a bound on what the reader held.
    pub fn largest_element_bytes(&self) -> u64 {
        self.elements.largest_element_bytes()
    }

    fn read_event(&mut self) -> Result<Option<Event>, InputError> {
        let form = match self.elements.next_element() {
            Ok(Some(form)) => form,
            Ok(None) if self.next_index == 0 => {
                return Err(InputError::Empty {
                    file: self.file.clone(),
                })
            }
            Ok(None) => return Ok(None),
            Err(error) => return Err(error.into_input_error(&self.file, None)),
        };
        let Value::Object(map) = form.value else {
            return Err(InputError::malformed(
                &self.file,
                form.line,
                None,
                format!(
                    "expected a map as a history element, found {}",
                    form.kind.describe()
                ),
            ));
        };
        let event = event_from_map(&self.file, form.line, self.next_index, map)?;
        self.next_index += 1;
        Ok(Some(event))
    }
}

impl<R: Read> Iterator for JepsenEdnReader<R> {
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

/// Turns one operation map (keys already without their colons) into an event.
///
/// `:type`, `:process` and `:f` are required; `:value`, `:key`, `:error`, `:node` and `:tx`
/// fill their fields; `:time` becomes the time when it is a non-negative integer; `:index`
/// is kept as `source_index`, and every other key goes to `extra`.
pub fn event_from_map(
    file: &str,
    line: u64,
    index: u64,
    mut map: Map<String, Value>,
) -> Result<Event, InputError> {
    let bad =
        |field: &str, message: String| InputError::malformed(file, line, Some(field), message);
    let types = "invoke|ok|fail|info";
    let kind = match map.remove("type") {
        None => return Err(bad("type", format!("missing; expected {types}"))),
        Some(Value::String(name)) => match EventType::parse(&name) {
            Some(kind) => kind,
            None => return Err(bad("type", format!("expected {types}, found {name:?}"))),
        },
        Some(other) => return Err(bad("type", format!("expected {types}, found {other}"))),
    };
    let process = match map.remove("process") {
        None => {
            return Err(bad(
                "process",
                "missing; expected an integer or a name".into(),
            ))
        }
        Some(Value::Number(number)) if number.is_u64() => {
            Process::Client(number.as_u64().unwrap_or_default())
        }
        Some(Value::String(name)) if !name.is_empty() => Process::Named(name),
        Some(other) => {
            return Err(bad(
                "process",
                format!("expected a non-negative integer or a name, found {other}"),
            ))
        }
    };
    let f = match map.remove("f") {
        None => return Err(bad("f", "missing; expected a keyword or a string".into())),
        Some(Value::String(name)) if !name.is_empty() => name,
        Some(other) => {
            return Err(bad(
                "f",
                format!("expected a keyword or a string, found {other}"),
            ))
        }
    };
    let mut event = Event::new(index, kind, process, f);
    event.line = line;
    event.value = map.remove("value");
    event.key = map.remove("key");
    event.error = map.remove("error");
    event.tx = map.remove("tx");
    match map.remove("node") {
        None | Some(Value::Null) => {}
        Some(Value::String(node)) => event.node = Some(node),
        Some(other) => return Err(bad("node", format!("expected a string, found {other}"))),
    }
    match map.remove("time") {
        Some(Value::Number(time)) if time.is_u64() => event.time = time.as_u64(),
        Some(other) => {
            map.insert("time".to_string(), other);
        }
        None => {}
    }
    if let Some(source_index) = map.remove("index") {
        map.insert("source_index".to_string(), source_index);
    }
    event.extra = map;
    Ok(event)
}

/// Reads a whole EDN history from an in-memory string, for tests and small files.
pub fn read_str(text: &str, file: &str) -> Result<Vec<Event>, InputError> {
    JepsenEdnReader::new(text.as_bytes(), file).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Result<Vec<Event>, String> {
        read_str(text, "h.edn").map_err(|e| e.to_string())
    }

    #[test]
    fn knossos_maps_become_events_with_dense_indices_and_source_lines() {
        let text = "; This used to expose a bug\n[{:process 4, :type :invoke, :f :write, :value 2}\n {:process 4, :type :ok, :f :write, :value 2}\n {:process :nemesis, :type :info, :f :kill, :value nil}]\n";
        let events = read(text).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events.iter().map(|e| (e.index, e.line)).collect::<Vec<_>>(),
            vec![(0, 2), (1, 3), (2, 4)]
        );
        assert_eq!(events[0].kind, EventType::Invoke);
        assert_eq!(events[0].process, Process::Client(4));
        assert_eq!(events[0].f, "write");
        assert_eq!(events[0].value, Some(json!(2)));
        assert_eq!(events[2].process, Process::nemesis());
        assert_eq!(events[2].value, Some(Value::Null));
    }

    #[test]
    fn fields_are_mapped_and_everything_else_is_kept() {
        let text = "{:index 41, :time 7, :type :ok, :process 9, :f :txn, :value [[:append 6 2] [:r 9 [2]]], :node \"n1\", :error [:timeout nil], :key :k, :tx 3, :custom #{1}}";
        let event = &read(text).unwrap()[0];
        assert_eq!(event.index, 0);
        assert_eq!(event.time, Some(7));
        assert_eq!(event.value, Some(json!([["append", 6, 2], ["r", 9, [2]]])));
        assert_eq!(event.node.as_deref(), Some("n1"));
        assert_eq!(event.error, Some(json!(["timeout", null])));
        assert_eq!(event.key, Some(json!("k")));
        assert_eq!(event.tx, Some(json!(3)));
        assert_eq!(event.extra.get("source_index"), Some(&json!(41)));
        assert_eq!(event.extra.get("custom"), Some(&json!([1])));
        assert_eq!(event.extra.len(), 2);
    }

    #[test]
    fn a_time_that_is_not_a_non_negative_integer_is_kept_in_extra() {
        let event = &read("[{:time -5 :type :ok :process 1 :f :read}]").unwrap()[0];
        assert_eq!(event.time, None);
        assert_eq!(event.extra.get("time"), Some(&json!(-5)));
    }

    #[test]
    fn bad_fields_are_errors_naming_line_and_field() {
        let cases = [
            (
                "[{:process 1 :type :invoke :f :read}\n {:process 1 :type :done :f :read}]",
                "h.edn:2: field \"type\": expected invoke|ok|fail|info, found \"done\"",
            ),
            (
                "[{:process 1 :f :read}]",
                "h.edn:1: field \"type\": missing; expected invoke|ok|fail|info",
            ),
            (
                "[{:process 1 :type 3 :f :read}]",
                "h.edn:1: field \"type\": expected invoke|ok|fail|info, found 3",
            ),
            (
                "[{:process 1 :type :ok}]",
                "h.edn:1: field \"f\": missing; expected a keyword or a string",
            ),
            (
                "[{:process 1 :type :ok :f [1]}]",
                "h.edn:1: field \"f\": expected a keyword or a string, found [1]",
            ),
            (
                "[{:type :ok :f :read}]",
                "h.edn:1: field \"process\": missing; expected an integer or a name",
            ),
            (
                "[{:process -1 :type :ok :f :read}]",
                "h.edn:1: field \"process\": expected a non-negative integer or a name, found -1",
            ),
            (
                "[{:process 1 :type :ok :f :read :node 3}]",
                "h.edn:1: field \"node\": expected a string, found 3",
            ),
            (
                "[{:process 1 :type :ok :f :read}\n [:not :a :map]]",
                "h.edn:2: expected a map as a history element, found a vector",
            ),
            ("", "h.edn: empty history: no events"),
            ("[]", "h.edn: empty history: no events"),
        ];
        for (text, expected) in cases {
            assert_eq!(read(text).unwrap_err(), expected, "{text}");
        }
    }

    #[test]
    fn the_reader_stops_after_the_first_error() {
        let mut reader = JepsenEdnReader::new(
            &b"[{:process 1 :type :bad :f :r} {:process 1 :type :ok :f :r}]"[..],
            "h.edn",
        );
        assert!(reader.next().unwrap().is_err());
        assert!(reader.next().is_none());
    }
}
