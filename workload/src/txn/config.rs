//! What defines a compute-workload run: the workload, the cluster's shape, the clients, the
//! faults and the deliberately broken modes, all driven by one seed.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::WorkloadError;
use crate::runner::{stream, MAX_CONCURRENCY, MAX_TIME};
use crate::schedule::NemesisTiming;

use super::schedule::{plan_txn_faults, PlannedTxnFault, TxnNemesisKind};

/// A workload that runs through compute nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnWorkload {
    /// Transactions of appends to lists and reads of lists (Elle's list-append).
    ListAppend,
    /// Transactions of writes and reads of registers (Elle's rw-register).
    RwRegister,
    /// Transfers between accounts on different shards, and reads of every balance.
    Bank,
    /// Writes through one compute node, reads of the same keys through the others.
    Cache,
}

impl TxnWorkload {
    /// Every compute workload.
    pub const ALL: [TxnWorkload; 4] = [
        TxnWorkload::ListAppend,
        TxnWorkload::RwRegister,
        TxnWorkload::Bank,
        TxnWorkload::Cache,
    ];

    /// The workload's name on the command line and in the history header.
    pub fn as_str(self) -> &'static str {
        match self {
            TxnWorkload::ListAppend => "list-append",
            TxnWorkload::RwRegister => "rw-register",
            TxnWorkload::Bank => "bank",
            TxnWorkload::Cache => "cache",
        }
    }

    /// The workload named `name`, if it is a compute workload.
    pub fn parse(name: &str) -> Option<TxnWorkload> {
        Self::ALL.into_iter().find(|w| w.as_str() == name)
    }
}

/// Deliberately broken cluster modes, each of which a checker must catch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxnUnsafe {
    /// Storage reads return other transactions' uncommitted intents (G1a, G1b).
    pub dirty_reads: bool,
    /// Compute nodes ignore invalidations (stale cached reads).
    pub skip_invalidation: bool,
    /// Commit goes shard by shard with no prepare and no commit record (half-applied
    /// transactions when a crash falls in between).
    pub no_2pc: bool,
}

impl TxnUnsafe {
    /// The modes that are on, by their command-line names.
    pub fn names(&self) -> Vec<String> {
        [
            (self.dirty_reads, "dirty-reads"),
            (self.skip_invalidation, "skip-invalidation"),
            (self.no_2pc, "no-2pc"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_owned())
        .collect()
    }
}

/// Everything that defines a compute-workload run. One `seed` drives every random choice.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnRunConfig {
    /// Which workload.
    pub workload: TxnWorkload,
    /// The fault kinds the nemesis chooses from; empty for none.
    pub nemesis: Vec<TxnNemesisKind>,
    /// How long clients invoke operations.
    pub time: Duration,
    /// The number of concurrent logical clients.
    pub concurrency: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// Storage nodes.
    pub storage_nodes: usize,
    /// Compute nodes; clients spread over them.
    pub compute_nodes: usize,
    /// Keys in use at once (list-append, rw-register, cache).
    pub key_count: usize,
    /// A list-append or rw-register key is retired after this many writes.
    pub max_writes_per_key: u32,
    /// The most micro-operations in one transaction.
    pub max_txn_len: usize,
    /// Bank accounts.
    pub accounts: usize,
    /// Each account's opening balance.
    pub initial_balance: i64,
    /// The chance that a bank operation reads every balance.
    pub read_fraction: f64,
    /// The share of cache clients that write (through compute node 0), at least one.
    pub writer_fraction: f64,
    /// The target rate of invocations, all clients together, per second.
    pub rate: f64,
    /// The bound on each operation.
    pub op_timeout: Duration,
    /// The bound on client invocations over the whole run.
    pub max_ops: u64,
    /// When faults start and how long they last.
    pub nemesis_timing: NemesisTiming,
    /// Deliberately broken modes.
    pub unsafe_modes: TxnUnsafe,
    /// Runs are written under `store_dir/<workload>/<timestamp>/`.
    pub store_dir: PathBuf,
}

impl TxnRunConfig {
    /// The defaults for `workload`.
    pub fn new(workload: TxnWorkload) -> TxnRunConfig {
        TxnRunConfig {
            workload,
            nemesis: TxnNemesisKind::ALL.to_vec(),
            time: Duration::from_secs(30),
            concurrency: 10,
            seed: 0,
            storage_nodes: 3,
            compute_nodes: 3,
            key_count: if workload == TxnWorkload::Cache { 5 } else { 8 },
            max_writes_per_key: 32,
            max_txn_len: 4,
            accounts: 5,
            initial_balance: 100,
            read_fraction: 0.3,
            writer_fraction: 0.25,
            rate: if workload == TxnWorkload::Cache {
                500.0
            } else {
                200.0
            },
            op_timeout: Duration::from_secs(5),
            max_ops: 2_000_000,
            nemesis_timing: NemesisTiming::default(),
            unsafe_modes: TxnUnsafe::default(),
            store_dir: PathBuf::from("store"),
        }
    }

    /// Refuses configurations that cannot run or would not be bounded.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let invalid = |message: String| Err(WorkloadError::InvalidConfig(message));
        if !(1..=9).contains(&self.storage_nodes) {
            return invalid(format!(
                "storage nodes must be in 1..=9, got {}",
                self.storage_nodes
            ));
        }
        let min_compute = if self.workload == TxnWorkload::Cache {
            2
        } else {
            1
        };
        if !(min_compute..=9).contains(&self.compute_nodes) {
            return invalid(format!(
                "compute nodes must be in {min_compute}..=9 for {}, got {}",
                self.workload.as_str(),
                self.compute_nodes
            ));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return invalid(format!(
                "concurrency must be in 1..={MAX_CONCURRENCY}, got {}",
                self.concurrency
            ));
        }
        if self.time.is_zero() || self.time > MAX_TIME {
            return invalid(format!("time must be in (0, 24h], got {:?}", self.time));
        }
        if !(1..=10_000).contains(&self.key_count) || self.max_writes_per_key == 0 {
            return invalid("key count must be in 1..=10000 and writes per key positive".into());
        }
        if self.workload == TxnWorkload::Cache && self.cache_writers() > self.key_count {
            return invalid(format!(
                "each cache writer owns its keys: {} writers need at least as many keys, got {}",
                self.cache_writers(),
                self.key_count
            ));
        }
        if !(1..=64).contains(&self.max_txn_len) {
            return invalid(format!(
                "transaction length must be in 1..=64, got {}",
                self.max_txn_len
            ));
        }
        if !(2..=1000).contains(&self.accounts) || self.initial_balance < 0 {
            return invalid("a bank needs 2..=1000 accounts and a non-negative balance".into());
        }
        for (name, fraction) in [
            ("read fraction", self.read_fraction),
            ("writer fraction", self.writer_fraction),
        ] {
            if !(0.0..=1.0).contains(&fraction) {
                return invalid(format!("{name} must be in [0, 1], got {fraction}"));
            }
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return invalid(format!("rate must be positive, got {}", self.rate));
        }
        if self.op_timeout.is_zero() {
            return invalid("op timeout must be positive".into());
        }
        if !self.nemesis_timing.is_ordered() {
            return invalid(format!(
                "nemesis timing ranges are inverted: {:?}",
                self.nemesis_timing
            ));
        }
        Ok(())
    }

    /// The healed phase at the end of the run.
    pub fn healed_phase(&self) -> Duration {
        crate::schedule::healed_phase(self.time)
    }

    /// The part of the run in which faults may be in effect.
    pub fn fault_phase(&self) -> Duration {
        self.time - self.healed_phase()
    }

    /// The run's fault schedule; the same for the same configuration.
    pub fn plan(&self) -> Vec<PlannedTxnFault> {
        plan_txn_faults(
            &mut stream(self.seed, 0),
            &self.nemesis,
            self.fault_phase(),
            self.nemesis_timing,
        )
    }

    /// The number of cache clients that write.
    pub fn cache_writers(&self) -> usize {
        ((self.concurrency as f64 * self.writer_fraction).round() as usize)
            .clamp(1, self.concurrency)
    }

    /// The compute node that client `index` talks to: writers of the cache workload use node
    /// 0 and its readers the others; every other workload spreads clients over all nodes.
    pub fn compute_node_of(&self, index: usize) -> usize {
        match self.workload {
            TxnWorkload::Cache if index < self.cache_writers() => 0,
            TxnWorkload::Cache => 1 + index % (self.compute_nodes - 1),
            _ => index % self.compute_nodes,
        }
    }

    /// The bank's total: what every read of all balances must sum to.
    pub fn bank_total(&self) -> i64 {
        self.accounts as i64 * self.initial_balance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_writers_use_one_node_and_readers_the_others() {
        let config = TxnRunConfig {
            concurrency: 8,
            ..TxnRunConfig::new(TxnWorkload::Cache)
        };
        assert_eq!(config.cache_writers(), 2);
        let nodes: Vec<usize> = (0..8).map(|i| config.compute_node_of(i)).collect();
        assert_eq!(nodes[..2], [0, 0]);
        assert!(nodes[2..].iter().all(|&n| n == 1 || n == 2), "{nodes:?}");
    }

    #[test]
    fn configurations_out_of_bounds_are_refused() {
        let refused = |config: TxnRunConfig| config.validate().unwrap_err().to_string();
        assert!(refused(TxnRunConfig {
            compute_nodes: 1,
            ..TxnRunConfig::new(TxnWorkload::Cache)
        })
        .contains("compute nodes"));
        assert!(refused(TxnRunConfig {
            accounts: 1,
            ..TxnRunConfig::new(TxnWorkload::Bank)
        })
        .contains("accounts"));
        for workload in TxnWorkload::ALL {
            TxnRunConfig::new(workload).validate().unwrap();
            assert_eq!(TxnWorkload::parse(workload.as_str()), Some(workload));
        }
    }
}
