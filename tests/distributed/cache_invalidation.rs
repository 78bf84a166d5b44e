//! The seed's cache invalidation tests alone: `cargo test --test cache_invalidation`.
//! The same module is part of the whole suite, `cargo test --test distributed`.

mod cache_tests;
