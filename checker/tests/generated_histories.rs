//! The generated hard histories in `histories/generated/`: each file is what
//! `helios_checker::synth::hard` makes from the shape and seed below, byte for byte, and each
//! gets its expected verdict. `HELIOS_REGENERATE=1 cargo test -p helios-checker --test
//! generated_histories` writes the files again after a change to the generator.

use helios_checker::check::{check_file, CheckOptions};
use helios_checker::history::History;
use helios_checker::synth::hard::{kv_history, many_info_history, KvHistoryConfig, ManyInfoConfig};
use helios_checker::{jsonl, porcupine_kv, Verdict};
use std::path::{Path, PathBuf};

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories/generated")
}

/// One generated file: its name, how it is made, its model and its verdict.
struct Generated {
    name: &'static str,
    history: History,
    model: &'static str,
    expected: Verdict,
}

fn kv(name: &'static str, config: KvHistoryConfig) -> Generated {
    let expected = if config.violation {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    Generated {
        name,
        history: kv_history(&config),
        model: "kv",
        expected,
    }
}

fn many_info(name: &'static str, config: ManyInfoConfig) -> Generated {
    let expected = if config.violation {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    Generated {
        name,
        history: many_info_history(&config),
        model: "register(nil)",
        expected,
    }
}

/// Every generated file. The shapes are documented in `synth::hard`.
fn generated() -> Vec<Generated> {
    let c50 = KvHistoryConfig {
        seed: 50,
        ..KvHistoryConfig::default()
    };
    // All on one key: about 20 operations in flight on it at any time, twice Porcupine's c50.
    let one_key = KvHistoryConfig {
        n_ops: 600,
        n_keys: 1,
        clients: 20,
        seed: 51,
        ..KvHistoryConfig::default()
    };
    let info = ManyInfoConfig {
        seed: 30,
        ..ManyInfoConfig::default()
    };
    vec![
        kv("kv-c50-ok.txt", c50.clone()),
        kv(
            "kv-c50-bad.txt",
            KvHistoryConfig {
                violation: true,
                ..c50
            },
        ),
        kv("kv-c20-one-key-ok.txt", one_key.clone()),
        kv(
            "kv-c20-one-key-bad.txt",
            KvHistoryConfig {
                violation: true,
                ..one_key
            },
        ),
        many_info("register-many-info-ok.jsonl", info.clone()),
        many_info(
            "register-many-info-bad.jsonl",
            ManyInfoConfig {
                violation: true,
                ..info
            },
        ),
    ]
}

fn render(generated: &Generated) -> Vec<u8> {
    let mut bytes = Vec::new();
    if generated.name.ends_with(".txt") {
        porcupine_kv::write_history(&mut bytes, &generated.history.events).unwrap();
    } else {
        jsonl::write_history(&mut bytes, &generated.history).unwrap();
    }
    bytes
}

#[test]
fn the_committed_files_are_what_the_generator_makes() {
    let regenerate = std::env::var_os("HELIOS_REGENERATE").is_some();
    for generated in generated() {
        let path = folder().join(generated.name);
        let bytes = render(&generated);
        if regenerate {
            std::fs::create_dir_all(folder()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed =
            std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(
            committed == bytes,
            "{} differs from what the generator makes; run with HELIOS_REGENERATE=1",
            path.display()
        );
    }
}

#[test]
fn each_generated_file_gets_its_verdict() {
    for generated in generated() {
        let path = folder().join(generated.name);
        let options = CheckOptions {
            model: Some(generated.model.to_string()),
            ..CheckOptions::default()
        };
        let report = check_file(&path, &options).unwrap();
        assert_eq!(
            report.verdict, generated.expected,
            "{}: {report:?}",
            generated.name
        );
    }
}
