//! The seed's distributed transaction tests alone: `cargo test --test transactions`.
//! The same module is part of the whole suite, `cargo test --test distributed`.

mod transactions_tests;
