//! Bad input of every kind, in every format, gives a typed error naming file, line and field: never a panic.

use helios_checker::format::{self, Format};
use helios_checker::InputError;
use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How one format writes a two-event history, so that each case can break its second event.
struct Dialect {
    format: Format,
    file: &'static str,
    /// Everything up to and including the first (valid) event's line.
    first: &'static str,
    /// What closes the history after the last event (EDN's `]`).
    close: &'static str,
}

const DIALECTS: [Dialect; 4] = [
    Dialect {
        format: Format::Jsonl,
        file: "bad.jsonl",
        first: "{\"index\":0,\"type\":\"invoke\",\"process\":0,\"f\":\"read\",\"value\":null}\n",
        close: "",
    },
    Dialect {
        format: Format::JepsenEdn,
        file: "bad.edn",
        first: "[{:process 0, :type :invoke, :f :read, :value nil}\n",
        close: "]\n",
    },
    Dialect {
        format: Format::JepsenLog,
        file: "bad.log",
        first: "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n",
        close: "",
    },
    Dialect {
        format: Format::PorcupineKv,
        file: "bad.txt",
        first: "{:process 0, :type :invoke, :f :read, :key \"k\", :value nil}\n",
        close: "",
    },
];

impl Dialect {
    /// The second event's line, cut around its value: (text before the value, text after it).
    fn second(&self, kind: &str, f: Option<&str>) -> (String, String) {
        match self.format {
            Format::Jsonl => {
                let f = f.map(|f| format!(",\"f\":\"{f}\"")).unwrap_or_default();
                (
                    format!("{{\"index\":1,\"type\":\"{kind}\",\"process\":0{f},\"value\":"),
                    "}\n".into(),
                )
            }
            Format::JepsenEdn | Format::PorcupineKv => {
                let f = f.map(|f| format!(", :f :{f}")).unwrap_or_default();
                let key = if self.format == Format::PorcupineKv {
                    ", :key \"k\""
                } else {
                    ""
                };
                (
                    format!("{{:process 0, :type :{kind}{f}{key}, :value "),
                    "}\n".into(),
                )
            }
            Format::JepsenLog => {
                let f = f.map(|f| format!("\t:{f}")).unwrap_or_default();
                (format!("INFO  jepsen.util - 0\t:{kind}{f}\t"), "\n".into())
            }
        }
    }

    /// A whole history whose second event has this type, `f` and value text.
    fn history(&self, kind: &str, f: Option<&str>, value: &str) -> Vec<u8> {
        let (before, after) = self.second(kind, f);
        format!("{}{before}{value}{after}{}", self.first, self.close).into_bytes()
    }
}

/// Reads everything from `reader`, forcing `format` or detecting it, and returns the error.
fn error_of(reader: impl Read + Send + 'static, file: &str, format: Option<Format>) -> InputError {
    let reader = Box::new(BufReader::with_capacity(64 * 1024, reader));
    let outcome = format::from_reader(reader, file, format)
        .and_then(|source| source.events.collect::<Result<Vec<_>, _>>());
    match outcome {
        Ok(events) => panic!(
            "{file} ({format:?}): expected an error, read {} events",
            events.len()
        ),
        Err(error) => error,
    }
}

/// Checks the error both with the format forced and detected.
fn assert_error(dialect: &Dialect, input: &[u8], line: u64, field: Option<&str>, contains: &str) {
    for format in [Some(dialect.format), None] {
        let error = error_of(std::io::Cursor::new(input.to_vec()), dialect.file, format);
        let message = error.to_string();
        let context = format!("{} ({format:?}): {message}", dialect.format.name());
        assert!(matches!(error, InputError::Malformed { .. }), "{context}");
        assert!(
            message.starts_with(&format!("{}:{line}: ", dialect.file)),
            "{context}"
        );
        if let Some(field) = field {
            assert!(
                message.contains(&format!("field \"{field}\": ")),
                "{context}"
            );
        }
        assert!(message.contains(contains), "{context}");
    }
}

#[test]
fn an_empty_file_is_an_empty_history_in_every_format() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("empty.edn");
    std::fs::write(&path, b"").expect("write the empty file");
    for format in [
        None,
        Some(Format::Jsonl),
        Some(Format::JepsenEdn),
        Some(Format::JepsenLog),
        Some(Format::PorcupineKv),
    ] {
        let error = format::read_all(&path, format).expect_err("an empty file is an error");
        assert!(
            matches!(error, InputError::Empty { .. }),
            "{format:?}: {error}"
        );
        assert_eq!(
            error.to_string(),
            format!("{}: empty history: no events", path.display())
        );
    }
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let error =
        format::open(std::path::Path::new("/nonexistent/h.edn"), None).expect_err("no such file");
    assert!(matches!(error, InputError::Io { .. }));
    assert!(
        error.to_string().starts_with("/nonexistent/h.edn: "),
        "{error}"
    );
}

#[test]
fn a_truncated_last_event_names_its_line() {
    for dialect in &DIALECTS {
        let (before, _) = dialect.second("ok", Some("cas"));
        let input = format!("{}{before}[3", dialect.first);
        let field = (dialect.format == Format::JepsenLog).then_some("value");
        let expected = if dialect.format == Format::Jsonl {
            "truncated JSON"
        } else {
            "unexpected end of input"
        };
        assert_error(dialect, input.as_bytes(), 2, field, expected);
    }
}

#[test]
fn an_unknown_type_names_its_line_and_the_type_field() {
    for dialect in &DIALECTS {
        let input = dialect.history("done", Some("read"), "3");
        assert_error(dialect, &input, 2, Some("type"), "done");
    }
}

#[test]
fn an_event_without_f_names_its_line_and_the_f_field() {
    for dialect in &DIALECTS {
        let input = dialect.history("ok", None, "3");
        // A log line has no field names, so a missing `f` shows as a value in its place.
        let expected = if dialect.format == Format::JepsenLog {
            "expected a keyword such as :read, found \"3\""
        } else {
            "missing"
        };
        assert_error(dialect, &input, 2, Some("f"), expected);
    }
}

#[test]
fn binary_garbage_names_its_line() {
    for dialect in &DIALECTS {
        let mut input = dialect.first.as_bytes().to_vec();
        input.extend_from_slice(b"\x00\xff\xfe\xfd\x80 garbage \x01\x02\n");
        let error = error_of(
            std::io::Cursor::new(input),
            dialect.file,
            Some(dialect.format),
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}:2: ", dialect.file)),
            "{error}"
        );
    }
    let garbage: Vec<u8> = (0..=255u8).rev().cycle().take(4096).collect();
    let error = error_of(std::io::Cursor::new(garbage), "garbage.bin", None);
    assert!(matches!(error, InputError::UnknownFormat { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("garbage.bin: unrecognised history format: the input looks binary"),
        "{error}"
    );
}

#[test]
fn brackets_nested_a_hundred_thousand_deep_are_refused_without_overflowing_the_stack() {
    let deep = "[".repeat(100_000);
    for dialect in &DIALECTS {
        let input = dialect.history("ok", Some("read"), &deep);
        let field = (dialect.format == Format::JepsenLog).then_some("value");
        let expected = if dialect.format == Format::Jsonl {
            "recursion limit"
        } else {
            "nesting deeper than 256 levels"
        };
        assert_error(dialect, &input, 2, field, expected);
    }
    let edn = &DIALECTS[1];
    for nested in [
        "{:a ".repeat(100_000),
        "#{".repeat(100_000),
        "#_".repeat(100_000),
        "#tag ".repeat(100_000),
    ] {
        assert_error(
            edn,
            format!("[{nested}").as_bytes(),
            1,
            None,
            "nesting deeper than 256 levels",
        );
    }
}

/// A reader that counts the bytes it hands out, to show that a reader gave up early.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.read.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

#[test]
fn a_100_mb_line_fails_at_the_line_cap_without_reading_it_all() {
    const HUNDRED_MB: u64 = 100 * 1024 * 1024;
    for dialect in &DIALECTS {
        for format in [Some(dialect.format), None] {
            let (before, after) = dialect.second("ok", Some("read"));
            let head = format!("{}{before}\"", dialect.first).into_bytes();
            let tail = format!("\"{after}{}", dialect.close).into_bytes();
            // The line is generated as it is read: the test never holds 100 MB either.
            let line = std::io::Cursor::new(head)
                .chain(std::io::repeat(b'a').take(HUNDRED_MB))
                .chain(std::io::Cursor::new(tail));
            let read = Arc::new(AtomicU64::new(0));
            let started = std::time::Instant::now();
            let error = error_of(
                Counting {
                    inner: line,
                    read: read.clone(),
                },
                dialect.file,
                format,
            );
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{}:2: ", dialect.file)),
                "{message}"
            );
            assert!(message.contains("longer than 16 MiB"), "{message}");
            let read = read.load(Ordering::Relaxed);
            assert!(
                read < 17 * 1024 * 1024,
                "{}: read {read} bytes before giving up",
                dialect.file
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{}: too slow",
                dialect.file
            );
        }
    }
}

#[test]
fn a_header_only_jsonl_file_is_empty_and_a_json_object_without_type_is_unknown() {
    let error = error_of(
        std::io::Cursor::new(b"{\"helios_history\":1}\n".to_vec()),
        "h.jsonl",
        None,
    );
    assert!(matches!(error, InputError::Empty { .. }), "{error}");
    let error = error_of(
        std::io::Cursor::new(b"{\"results\":{}}\n".to_vec()),
        "results.json",
        None,
    );
    assert!(matches!(error, InputError::UnknownFormat { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("the input starts with \"{\\\"results\\\":{}}\""),
        "{error}"
    );
}
