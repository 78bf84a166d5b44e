//! The seed's sharding tests alone: `cargo test --test sharding`.
//! The same module is part of the whole suite, `cargo test --test distributed`.

mod sharding_tests;
