//! The seed's Raft consensus tests alone: `cargo test --test raft_consensus`.
//! The same modules are part of the whole suite, `cargo test --test distributed`.

mod raft_consensus_tests;
mod raft_history;
