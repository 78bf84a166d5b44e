//! `helios sql`: statements against a compute node of a cluster that `helios cluster up` started
//! (processes or Docker), printed as rows. Glue over `helios_cluster::process::ComputeClient`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use helios_cluster::process::{
    compute_process, ClusterManifest, ComputeClient, ComputeClientError,
};

use crate::docker::DockerManifest;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The cluster directory given to `helios cluster up`.
    #[arg(long)]
    dir: PathBuf,
    /// Which compute node runs the statements.
    #[arg(long, default_value_t = 0)]
    compute: u32,
    /// Create TABLE keyed by COLUMN first (TABLE:COLUMN); may be repeated.
    #[arg(long, value_name = "TABLE:COLUMN")]
    create_table: Vec<String>,
    /// Run the statements in one transaction (read committed) and commit it: every write
    /// becomes visible on every shard, or none does.
    #[arg(long)]
    transaction: bool,
    /// With --transaction: roll the transaction back at the end instead of committing.
    #[arg(long, requires = "transaction")]
    rollback: bool,
    /// The statements, run in order: point SELECTs (FOR UPDATE in a transaction), INSERTs and
    /// UPDATEs by shard key.
    statements: Vec<String>,
}

pub fn run(args: SqlArgs) -> anyhow::Result<i32> {
    let addr = match DockerManifest::load(&args.dir)? {
        Some(docker) => docker
            .compute_ports
            .get(args.compute as usize)
            .map(|port| format!("127.0.0.1:{port}")),
        None => ClusterManifest::load(&args.dir)?
            .node(compute_process(args.compute))
            .map(|node| node.addr.clone()),
    };
    let Some(addr) = addr else {
        bail!(
            "{}: the cluster has no compute-{}",
            args.dir.display(),
            args.compute
        );
    };
    let client = ComputeClient::new(addr, Duration::from_secs(10));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        for spec in &args.create_table {
            let Some((table, column)) = spec.split_once(':') else {
                bail!("--create-table {spec:?}: expected TABLE:COLUMN");
            };
            client
                .create_table(table, column)
                .await
                .with_context(|| format!("create table {table}"))?;
            println!("created {table} keyed by {column}");
        }
        let transaction = if args.transaction {
            let tx = client.begin().await.context("begin")?;
            println!("transaction {}", tx.id());
            Some(tx)
        } else {
            None
        };
        for statement in &args.statements {
            let result = match &transaction {
                Some(tx) => tx.query(statement).await,
                None => client.query(statement).await,
            };
            let result = match result {
                Ok(result) => result,
                Err(error) => {
                    eprintln!("{statement}: {error} ({})", outcome(&error, "not applied"));
                    if let Some(tx) = transaction {
                        tx.rollback().await.context("rollback")?;
                        eprintln!("rolled back");
                    }
                    return Ok(1);
                }
            };
            for row in &result.rows {
                let columns: Vec<String> = row
                    .columns
                    .iter()
                    .map(|(column, value)| format!("{column}={value}"))
                    .collect();
                println!("{}", columns.join("  "));
            }
            if result.rows.is_empty() {
                println!("{} rows affected", result.rows_affected);
            }
        }
        match transaction {
            Some(tx) if args.rollback => {
                tx.rollback().await.context("rollback")?;
                println!("rolled back");
            }
            Some(tx) => match tx.commit().await {
                Ok(shards) => println!("committed on shards {shards:?}"),
                Err(error) => {
                    eprintln!("commit: {error} ({})", outcome(&error, "not committed"));
                    return Ok(1);
                }
            },
            None => {}
        }
        Ok(0)
    })
}

/// What a failed call did: `definite` when it certainly did nothing.
fn outcome(error: &ComputeClientError, definite: &'static str) -> &'static str {
    if error.outcome_is_unknown() {
        "outcome unknown"
    } else {
        definite
    }
}
