//! Properties of the readers: no input makes them panic, and EDN that we print reads back.

use helios_checker::edn;
use helios_checker::format::{self, Format};
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::path::Path;

/// Reads `input` to the end with every forced format and with detection. Errors are fine;
/// a panic fails the property.
fn read_every_way(input: &[u8]) {
    let formats = [
        None,
        Some(Format::Jsonl),
        Some(Format::JepsenEdn),
        Some(Format::JepsenLog),
        Some(Format::PorcupineKv),
    ];
    for format in formats {
        let reader = Box::new(std::io::Cursor::new(input.to_vec()));
        if let Ok(source) = format::from_reader(reader, "fuzz", format) {
            let mut count = 0u64;
            for item in source.events {
                match item {
                    Ok(event) => {
                        assert_eq!(event.index, count, "indices are dense");
                        count += 1;
                    }
                    Err(error) => {
                        assert!(
                            error.to_string().starts_with("fuzz"),
                            "errors name the file: {error}"
                        );
                    }
                }
            }
        }
    }
}

/// The start of one corpus history of each format, as seeds for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories");
    [
        "porcupine-etcd/etcd_000.log",
        "porcupine-kv/c01-ok.txt",
        "knossos/cas-register/bad/bad-analysis.edn",
        "knossos/multi-register/good/multi-register.edn",
        "elle/si-without-g-single.edn",
        "knossos/cas-register/bad/rethink-fail-minimal.edn",
    ]
    .iter()
    .map(|path| {
        let mut bytes = std::fs::read(root.join(path)).expect("corpus file is readable");
        bytes.truncate(3000);
        bytes
    })
    .collect()
}

/// One edit of a byte string, at a position taken modulo its length.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        length: usize,
    },
    /// Inserts EDN/JSON punctuation, which reaches deeper into the parsers than random bytes.
    Punctuate {
        at: usize,
        byte: u8,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let punctuation = prop::sample::select(b"[](){}#_;:\"\\,\n \t0-.eNM/".to_vec());
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..64usize).prop_map(|(at, length)| Mutation::Delete { at, length }),
        (any::<usize>(), punctuation).prop_map(|(at, byte)| Mutation::Punctuate { at, byte }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let position = |at: usize, bytes: &Vec<u8>| at % (bytes.len() + 1);
    match mutation {
        Mutation::Flip { at, mask } => {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] ^= mask;
            }
        }
        Mutation::Truncate { at } => bytes.truncate(position(*at, bytes)),
        Mutation::Insert {
            at,
            bytes: inserted,
        } => {
            let at = position(*at, bytes);
            bytes.splice(at..at, inserted.iter().copied());
        }
        Mutation::Delete { at, length } => {
            let at = position(*at, bytes);
            let end = (at + length).min(bytes.len());
            bytes.drain(at..end);
        }
        Mutation::Punctuate { at, byte } => {
            let at = position(*at, bytes);
            bytes.insert(at, *byte);
        }
    }
}

/// A JSON value that EDN can express and that reads back equal to itself.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "[a-z\"\\\\\n\t]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z][a-z0-9.\\-]{0,6}(/[a-z]{1,4})?", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Prints `value` as EDN, choosing among equivalent spellings with `style`.
fn print_edn(value: &Value, style: u64, out: &mut String) {
    let blank = match style % 4 {
        0 => " ",
        1 => ", ",
        2 => " ; note\n",
        _ => "\n\t #_ :gone ",
    };
    match value {
        Value::Null => out.push_str("nil"),
        Value::Bool(flag) => out.push_str(&flag.to_string()),
        Value::Number(number) => match number.as_f64().filter(|_| number.is_f64()) {
            Some(float) => out.push_str(&format!("{float:?}")),
            None => out.push_str(&number.to_string()),
        },
        Value::String(text) => {
            out.push_str(&serde_json::to_string(text).expect("strings serialise"))
        }
        Value::Array(items) => {
            let (open, close) = if style.is_multiple_of(3) {
                ("(", ")")
            } else {
                ("[", "]")
            };
            out.push_str(open);
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push_str(blank);
                }
                print_edn(item, style / 3 + position as u64, out);
            }
            out.push_str(close);
        }
        Value::Object(map) => {
            out.push('{');
            for (position, (key, item)) in map.iter().enumerate() {
                if position > 0 {
                    out.push_str(blank);
                }
                if style.is_multiple_of(2) {
                    out.push(':');
                    out.push_str(key);
                } else {
                    out.push_str(&serde_json::to_string(key).expect("strings serialise"));
                }
                out.push(' ');
                print_edn(item, style / 2 + position as u64, out);
            }
            out.push('}');
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_make_a_reader_panic(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        read_every_way(&input);
    }

    #[test]
    fn mutated_corpus_histories_never_make_a_reader_panic(
        seed in 0..6usize,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut input = seeds().swap_remove(seed);
        for mutation in &mutations {
            apply(&mut input, mutation);
        }
        read_every_way(&input);
    }

    #[test]
    fn printed_edn_reads_back_as_the_same_value(value in value(), style in any::<u64>()) {
        let mut text = String::new();
        print_edn(&value, style, &mut text);
        let form = edn::read_one(text.as_bytes(), 1);
        let read = match form {
            Ok(Some(form)) => form.value,
            other => return Err(TestCaseError::fail(format!("{text}: {other:?}"))),
        };
        prop_assert_eq!(read, value, "{}", text);
    }
}
