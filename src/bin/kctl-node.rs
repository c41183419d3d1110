//! The minion-side helper. It runs the same converge routine as `kctl
//! apply`, with the local transport instead of SSH.

use clap::{Args, Parser, Subcommand};
use kctl::converge::RunContext;
use kctl::exec::LocalExec;
use kctl::ops::converge::{converge_locked, sync_rules_locked};
use kctl::store::Store;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "kctl-node", version, about = "kctl's helper on a minion")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which minion of which cluster this helper serves.
#[derive(Args)]
struct Node {
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
}

#[derive(Subcommand)]
enum Command {
    /// Run as the minion's daemon: heartbeat, converge, sync service rules,
    /// and, as the leader, move pods off dead minions.
    Run(Node),
    /// Make this minion's containers and service rules match etcd once, and
    /// record their status.
    Converge(Node),
}

async fn converge_once(node: Node) -> miette::Result<()> {
    let Node {
        cluster,
        minion,
        etcd,
        offline_images,
    } = node;
    let store = Store::connect(&etcd, &cluster).await?;
    let exec = LocalExec {
        name: minion.clone(),
    };
    let ctx = RunContext {
        cluster,
        offline_images,
        service_env: vec![],
    };
    let mut supervisor = kctl::converge::Supervisor::default();
    let report = converge_locked(
        &exec,
        &ctx,
        store.clone(),
        &minion,
        Duration::from_secs(30),
        &mut supervisor,
    )
    .await
    .map_err(|e| miette::miette!("{e}"))?;
    let rules = sync_rules_locked(&exec, store, &minion)
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    let desired = report.statuses.len();
    println!(
        "{minion}: {} pods, {} started, {} containers removed, {} failed, service rules {}",
        desired,
        report.started.len(),
        report.removed,
        report.failures.len(),
        if rules { "rewritten" } else { "up to date" }
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(node) => {
            kctl::node::run(kctl::node::NodeConfig {
                cluster: node.cluster,
                minion: node.minion,
                etcd: node.etcd,
                offline_images: node.offline_images,
            })
            .await;
            Ok(())
        }
        Command::Converge(node) => converge_once(node).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}
