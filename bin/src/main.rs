//! The `helios` command line: thin glue over the checker and workload libraries.

mod check;
mod cluster;
mod docker;
mod node;
mod run;
mod sql;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Helios: a correctness lab for distributed databases.
#[derive(Debug, Parser)]
#[command(name = "helios", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check recorded histories: exit 0 valid, 1 invalid, 2 unknown, 3 unreadable input or bad usage.
    Check(check::CheckArgs),
    /// Start the embedded cluster, run a workload with faults, record the history and check it.
    Run(run::RunArgs),
    /// Run one node of a real cluster as this process, until SIGTERM (exit 0).
    Node(node::NodeArgs),
    /// A local cluster of node processes: up, status, down.
    Cluster(cluster::ClusterArgs),
    /// Run SQL statements on a compute node of a local cluster.
    Sql(sql::SqlArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // Help and version are not errors; every other usage error exits 3, like bad input.
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(3),
            };
        }
    };
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Run(args) => run::run(args),
        Command::Node(args) => node::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Sql(args) => sql::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(3)),
        Err(error) => {
            eprintln!("helios: {error:#}");
            ExitCode::from(3)
        }
    }
}
