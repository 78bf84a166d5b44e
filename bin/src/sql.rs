//! `helios sql`: statements against a compute node of a cluster that `helios cluster up` started
//! (processes or Docker), printed as rows. Glue over `helios_cluster::process::ComputeClient`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use helios_cluster::process::{compute_process, ClusterManifest, ComputeClient};

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
    /// The statements, run in order: point SELECTs, INSERTs and UPDATEs by shard key.
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
        for statement in &args.statements {
            let result = match client.query(statement).await {
                Ok(result) => result,
                Err(error) => {
                    let outcome = if error.outcome_is_unknown() {
                        "outcome unknown"
                    } else {
                        "not applied"
                    };
                    eprintln!("{statement}: {error} ({outcome})");
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
        Ok(0)
    })
}
