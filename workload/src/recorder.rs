//! The history recorder: assigns each event its index and time and appends it to `history.jsonl`.
//!
//! Events are appended in the order the recorder observes them. The index and the time are both
//! taken under one lock at that moment, so the file order is the real-time order, indices are dense
//! and times never decrease.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::error::WorkloadError;
use crate::history::{Event, EventDraft};

/// Appends events to a JSON Lines history and keeps them in memory for the run's figures.
#[derive(Debug)]
pub struct Recorder {
    /// The run's time origin: every event's `time` is measured from here.
    start: Instant,
    path: PathBuf,
    inner: Mutex<RecorderInner>,
}

#[derive(Debug)]
struct RecorderInner {
    writer: BufWriter<File>,
    /// Invariant: equals `events.len()`.
    next_index: u64,
    /// Invariant: `events[i].index == i` and times are non-decreasing.
    events: Vec<Event>,
    /// The first write error; once set, nothing more is written and `finish` reports it.
    write_error: Option<std::io::Error>,
}

impl Recorder {
    /// Creates `path`, writes the header line, and starts the clock at `start`.
    ///
    /// The header is any serializable value, so that each workload writes its own fields (see
    /// [`crate::history::HistoryHeader`] and [`crate::set_runner::SetHistoryHeader`]).
    pub fn create(
        path: &Path,
        header: &impl Serialize,
        start: Instant,
    ) -> Result<Recorder, WorkloadError> {
        let io_error = |source| WorkloadError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(io_error)?;
        let mut writer = BufWriter::new(file);
        let line = serde_json::to_string(header).expect("a history header always serializes");
        writeln!(writer, "{line}").map_err(io_error)?;
        Ok(Recorder {
            start,
            path: path.to_owned(),
            inner: Mutex::new(RecorderInner {
                writer,
                next_index: 0,
                events: Vec::new(),
                write_error: None,
            }),
        })
    }

    /// The run's time origin.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records one event now and returns it with its index and time.
    pub fn record(&self, draft: EventDraft) -> Event {
        let mut inner = self.inner.lock().expect("recorder lock poisoned");
        // The time is read under the lock, so that index order and time order agree.
        let time_ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let event = Event {
            index: inner.next_index,
            time_ns,
            event_type: draft.event_type,
            process: draft.process,
            f: draft.f,
            key: draft.key,
            value: draft.value,
            node: draft.node,
            error: draft.error,
        };
        inner.next_index += 1;
        if inner.write_error.is_none() {
            let line = serde_json::to_string(&event).expect("a history event always serializes");
            if let Err(error) = writeln!(inner.writer, "{line}") {
                inner.write_error = Some(error);
            }
        }
        inner.events.push(event.clone());
        event
    }

    /// The number of events recorded so far.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .expect("recorder lock poisoned")
            .events
            .len()
    }

    /// Whether no event has been recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flushes the file and returns every recorded event, in order.
    pub fn finish(self) -> Result<Vec<Event>, WorkloadError> {
        let inner = self.inner.into_inner().expect("recorder lock poisoned");
        let io_error = |source| WorkloadError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(error) = inner.write_error {
            return Err(io_error(error));
        }
        let mut writer = inner.writer;
        writer.flush().map_err(io_error)?;
        writer.get_ref().sync_all().map_err(io_error)?;
        Ok(inner.events)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::history::{EventType, Function, HistoryHeader, Process, HISTORY_FORMAT_VERSION};

    fn header() -> HistoryHeader {
        HistoryHeader {
            helios_history: HISTORY_FORMAT_VERSION,
            workload: "register".to_owned(),
            seed: 42,
            nodes: vec!["m0".to_owned(), "m1".to_owned()],
            model: "cas-register(nil)".to_owned(),
            keys: vec!["k0".to_owned()],
            concurrency: 4,
            nemesis: vec![],
            unsafe_stale_reads: false,
        }
    }

    fn read_invoke(process: u64) -> EventDraft {
        EventDraft {
            event_type: EventType::Invoke,
            process: Process::Client(process),
            f: Function::Read,
            key: Some("k0".to_owned()),
            value: serde_json::Value::Null,
            node: None,
            error: None,
        }
    }

    #[test]
    fn recorder_writes_valid_json_lines_with_dense_indices_and_monotonic_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Arc::new(Recorder::create(&path, &header(), Instant::now()).unwrap());

        // Four threads record concurrently, as clients and the nemesis do.
        let threads: Vec<_> = (0..4)
            .map(|process| {
                let recorder = Arc::clone(&recorder);
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        recorder.record(read_invoke(process));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let events = Arc::into_inner(recorder).unwrap().finish().unwrap();
        assert_eq!(events.len(), 1000);

        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let first: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(first["helios_history"], 1);
        assert_eq!(first["seed"], 42);
        let mut previous_time = 0;
        let mut count = 0;
        for (expected_index, line) in lines.enumerate() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["index"].as_u64(), Some(expected_index as u64));
            let time = value["time"].as_u64().unwrap();
            assert!(time >= previous_time, "time went backwards at {line}");
            previous_time = time;
            assert_eq!(value["type"], "invoke");
            count += 1;
        }
        assert_eq!(count, 1000);
    }

    #[test]
    fn recorder_returns_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::create(&path, &header(), Instant::now()).unwrap();
        let event = recorder.record(read_invoke(0));
        assert_eq!(event.index, 0);
        assert_eq!(recorder.len(), 1);
        let events = recorder.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert_eq!(line, serde_json::to_string(&events[0]).unwrap());
    }
}
