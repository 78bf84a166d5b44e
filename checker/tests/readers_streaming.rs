//! The readers stream: a large generated history is read one element at a time, never held whole.
//!
//! `cargo test --release -p helios-checker --test readers_streaming -- --ignored --nocapture`
//! prints each reader's throughput.

use helios_checker::format::{self, Format};
use helios_checker::jepsen_edn::JepsenEdnReader;
use std::io::Read;
use std::time::Instant;

/// A history generated as it is read: `open`, then `count` lines from `line`, then `close`.
struct Generated<F> {
    line: F,
    count: u64,
    next: u64,
    pending: Vec<u8>,
    at: usize,
    close: &'static str,
    closed: bool,
}

impl<F: FnMut(u64) -> String> Generated<F> {
    fn new(open: &str, count: u64, line: F, close: &'static str) -> Generated<F> {
        Generated {
            line,
            count,
            next: 0,
            pending: open.as_bytes().to_vec(),
            at: 0,
            close,
            closed: false,
        }
    }
}

impl<F: FnMut(u64) -> String> Read for Generated<F> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.pending.len() {
            self.pending.clear();
            self.at = 0;
            if self.next < self.count {
                while self.next < self.count && self.pending.len() < 64 * 1024 {
                    self.pending
                        .extend_from_slice((self.line)(self.next).as_bytes());
                    self.next += 1;
                }
            } else if !self.closed {
                self.closed = true;
                self.pending.extend_from_slice(self.close.as_bytes());
            } else {
                return Ok(0);
            }
        }
        let length = buffer.len().min(self.pending.len() - self.at);
        buffer[..length].copy_from_slice(&self.pending[self.at..self.at + length]);
        self.at += length;
        Ok(length)
    }
}

fn edn_operation(i: u64) -> String {
    format!(
        " {{:index {i}, :time {}, :type :ok, :process {}, :f :txn, :value [[:append {} {i}] [:r 9 [1 2 3]]]}}\n",
        i * 1000,
        i % 10,
        i % 100
    )
}

#[test]
fn a_50_mb_edn_vector_is_read_one_element_at_a_time() {
    let count = 600_000;
    // A thousand distinct operations, cycled, keep the generator cheap in a debug build.
    let operations: Vec<String> = (0..1000).map(edn_operation).collect();
    let history = Generated::new(
        "[",
        count,
        |i| operations[(i % 1000) as usize].clone(),
        "]\n",
    );
    let mut reader = JepsenEdnReader::new(history, "big.edn");
    let mut read = 0u64;
    for event in reader.by_ref() {
        let event = event.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(event.index, read);
        assert_eq!(event.line, read + 1);
        read += 1;
    }
    assert_eq!(read, count);
    let bytes: u64 = operations.iter().map(|o| o.len() as u64).sum::<u64>() * (count / 1000);
    assert!(
        bytes > 50_000_000,
        "the history is about 50 MB, was {bytes}"
    );
    // The reader held one element at a time: the largest is about a hundred bytes.
    let largest = reader.largest_element_bytes();
    assert!(largest < 200, "largest element spanned {largest} bytes");
}

/// Reads a history of `count` lines in `format`, generated in memory beforehand, and prints MB/s.
fn measure(format: Format, open: &str, count: u64, line: fn(u64) -> String, close: &'static str) {
    let mut history = Vec::new();
    Generated::new(open, count, line, close)
        .read_to_end(&mut history)
        .expect("generates");
    let bytes = history.len() as u64;
    let started = Instant::now();
    let reader = std::io::BufReader::with_capacity(256 * 1024, std::io::Cursor::new(history));
    let source = format::from_reader(Box::new(reader), "gen", Some(format)).expect("opens");
    let events = source
        .events
        .inspect(|e| assert!(e.is_ok(), "{e:?}"))
        .count() as u64;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(events, count);
    println!(
        "{:<13} {:>6.0} MB in {seconds:>5.2} s: {:>6.1} MB/s, {:>5.2} M events/s",
        format.name(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / seconds,
        events as f64 / 1e6 / seconds
    );
}

#[test]
#[ignore = "a benchmark: run in release with --ignored --nocapture"]
fn reader_throughput() {
    measure(Format::JepsenEdn, "[", 2_000_000, edn_operation, "]\n");
    measure(
        Format::JepsenLog,
        "",
        4_000_000,
        |i| {
            format!(
                "INFO  jepsen.util - {}\t:ok\t:cas\t[{} {}]\n",
                i % 10,
                i % 5,
                i % 7
            )
        },
        "",
    );
    measure(
        Format::PorcupineKv,
        "",
        2_000_000,
        |i| {
            format!(
                "{{:process {}, :type :ok, :f :append, :key \"{}\", :value \"x {i} 0 y\"}}\n",
                i % 10,
                i % 10
            )
        },
        "",
    );
    measure(
        Format::Jsonl,
        "",
        2_000_000,
        |i| {
            format!("{{\"index\":{i},\"type\":\"ok\",\"process\":{},\"f\":\"txn\",\"value\":[[\"append\",9,{i}],[\"r\",9,[1,2,3]]]}}\n", i % 10)
        },
        "",
    );
}
