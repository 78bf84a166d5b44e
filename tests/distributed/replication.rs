//! The seed's replication tests alone: `cargo test --test replication`.
//! The same module is part of the whole suite, `cargo test --test distributed`.

mod replication_tests;
