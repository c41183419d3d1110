//! The minion-side helper. It runs the same converge routine as `kctl
//! apply`, with the local transport instead of SSH.

use clap::{Parser, Subcommand};
use kctl::converge::{self, RunContext};
use kctl::exec::LocalExec;
use kctl::store::Store;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "kctl-node", version, about = "kctl's helper on a minion")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make this minion's containers match etcd once, and record their status.
    Converge {
        #[arg(long)]
        cluster: String,
        /// This minion's id as `kctl get minions` lists it.
        #[arg(long)]
        minion: String,
        /// etcd client URL(s).
        #[arg(long, required = true)]
        etcd: Vec<String>,
        /// Never pull images (no registry reachable).
        #[arg(long)]
        offline_images: bool,
    },
}

async fn converge_once(
    cluster: String,
    minion: String,
    etcd: Vec<String>,
    offline_images: bool,
) -> miette::Result<()> {
    let mut store = Store::connect(&etcd, &cluster).await?;
    let state = store.snapshot().await?.state;
    let desired: Vec<_> = state.pods_on(&minion).cloned().collect();
    let exec = LocalExec {
        name: minion.clone(),
    };
    let ctx = RunContext {
        cluster,
        offline_images,
    };
    let report = converge::converge_minion(&exec, &ctx, &desired, Duration::from_secs(30))
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    for (pod, status) in &report.statuses {
        store.put_status(pod, status).await?;
    }
    println!(
        "{minion}: {} pods, {} started, {} containers removed, {} failed",
        desired.len(),
        report.started.len(),
        report.removed,
        report.failures.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Converge {
            cluster,
            minion,
            etcd,
            offline_images,
        } => converge_once(cluster, minion, etcd, offline_images).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}
