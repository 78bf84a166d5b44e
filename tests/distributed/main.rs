//! The seed's distributed correctness suite: `cargo test --test distributed`.
//! One module per seed section; each area's tests live in their own files.

// Section 1: Raft consensus (RAFT-001..005).
mod raft_consensus_tests;
mod raft_history;

// Section 2: sharding and rebalancing (SHARD-001..004).
mod sharding_tests;

// Section 3: replication and failover (REP-001..005).
mod replication_tests;

// Section 4: cache invalidation (CACHE-001..002).
mod cache_tests;

// Section 5: distributed transactions (TX-001..003).
mod transactions_tests;
