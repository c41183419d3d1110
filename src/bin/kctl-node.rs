//! The minion-side helper. It runs the same converge routine as `kctl
//! apply`, with the local transport instead of SSH.

use clap::{Args, Parser, Subcommand};
use kctl::converge::{converge_locked, sync_rules_locked, RunContext, Supervisor};
use kctl::docker_api::DockerApi;
use kctl::exec::LocalExec;
use kctl::node::log_event;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

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
    /// The minion's dockerd socket.
    #[arg(long, default_value = kctl::docker_api::DEFAULT_SOCKET)]
    docker_socket: std::path::PathBuf,
    /// The directory with the CA's certificate and this helper's own
    /// (ca.crt, node.crt, node.key), when etcd speaks TLS.
    #[arg(long)]
    etcd_tls_dir: Option<std::path::PathBuf>,
    /// The cluster's portal range: a service record whose portal lies
    /// outside it is not acted on.
    #[arg(long)]
    portal_net: Option<ipnet::Ipv4Net>,
    /// Act on pods that bind sensitive host directories (`kctl up
    /// --allow-host-dir`).
    #[arg(long)]
    allow_host_dir: bool,
    /// Act on privileged pods (`kctl up --allow-privileged`).
    #[arg(long)]
    allow_privileged: bool,
}

impl Node {
    fn config(self) -> kctl::node::NodeConfig {
        kctl::node::NodeConfig {
            cluster: self.cluster,
            minion: self.minion,
            etcd: self.etcd,
            offline_images: self.offline_images,
            docker_socket: self.docker_socket,
            etcd_tls_dir: self.etcd_tls_dir,
            policy: kctl::state::checks::RecordPolicy {
                allow_host_dir: self.allow_host_dir,
                allow_privileged: self.allow_privileged,
                portal_net: self.portal_net,
            },
        }
    }
}

/// What the renewal signer beside an etcd member needs.
#[derive(Args)]
struct Signer {
    #[arg(long)]
    cluster: String,
    /// etcd client URL(s).
    #[arg(long, required = true)]
    etcd: Vec<String>,
    /// The cluster CA's certificate.
    #[arg(long)]
    ca_cert: std::path::PathBuf,
    /// The cluster CA's key.
    #[arg(long)]
    ca_key: std::path::PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run as the minion's daemon: heartbeat, converge, sync service rules,
    /// and, as the leader, move pods off dead minions.
    Run(Node),
    /// Make this minion's containers and service rules match etcd once, and
    /// record their status.
    Converge(Node),
    /// Prepare this minion for its cluster and start its helper, as `kctl
    /// up` asks: reads the request (JSON) on stdin, prints `changed` or
    /// `unchanged`. Run by kctl over SSH, as root.
    #[command(hide = true)]
    Setup,
    /// Sign the helpers' certificate renewals with the cluster's CA: runs
    /// beside each etcd member, as `kctl up` installs it.
    #[command(hide = true)]
    Sign(Signer),
    /// Run a program and start it again whenever it exits, until SIGTERM:
    /// the helper's (and etcd's) supervisor where systemd is not.
    #[command(hide = true)]
    Supervise(kctl::supervise::SuperviseArgs),
}

async fn setup() -> miette::Result<()> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| miette::miette!("reading the request: {e}"))?;
    let request = kctl::bootstrap::SetupRequest::parse(&input)
        .map_err(|e| miette::miette!("the request: {e}"))?;
    let exec = LocalExec {
        name: request.minion.clone(),
    };
    let answer = kctl::bootstrap::setup::setup_here(&exec, &request)
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    println!("{answer}");
    Ok(())
}

async fn converge_once(node: Node) -> miette::Result<()> {
    let node = node.config();
    let store = node.connect().await?;
    let kctl::node::NodeConfig {
        cluster,
        minion,
        offline_images,
        docker_socket,
        ..
    } = node;
    let docker = DockerApi::connect(&minion, &docker_socket)
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    let exec = LocalExec {
        name: minion.clone(),
    };
    let ctx = RunContext {
        cluster,
        offline_images,
        service_env: vec![],
        starts_in_flight: kctl::converge::pod_starts_here(),
    };
    let mut supervisor = Supervisor::default();
    let report = converge_locked(
        &docker,
        &exec,
        &ctx,
        &store,
        &minion,
        Duration::from_secs(30),
        &mut supervisor,
        &log_event,
    )
    .await
    .map_err(|e| miette::miette!("converge: {e}"))?;
    let rules = sync_rules_locked(&exec, &store, &minion, false, &log_event)
        .await
        .map_err(|e| miette::miette!("service rules: {e}"))?;
    // The command's result, on stdout; the log went to stderr.
    let summary = format!(
        "{minion}: {} pods, {} started, {} containers removed, {} failed, service rules {}\n",
        report.statuses.len(),
        report.started.len(),
        report.removed,
        report.failures.len(),
        if rules { "rewritten" } else { "up to date" }
    );
    std::io::stdout()
        .write_all(summary.as_bytes())
        .map_err(|e| miette::miette!("writing the summary: {e}"))
}

/// The helper's log: levels and timestamps, on stderr (the service's log
/// file). `RUST_LOG` overrides the default: kctl at info, other crates at warn.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("warn,kctl=info,kctl_node=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

// One thread: the helper mostly waits, and a runtime thread per core (each
// with its own malloc arena) costs memory on every minion.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    init_logging();
    let result = match Cli::parse().command {
        Command::Run(node) => {
            kctl::node::run(node.config()).await;
            Ok(())
        }
        Command::Converge(node) => converge_once(node).await,
        Command::Sign(signer) => {
            kctl::node::signer::run(kctl::node::signer::SignerConfig {
                cluster: signer.cluster,
                etcd: signer.etcd,
                ca_cert: signer.ca_cert,
                ca_key: signer.ca_key,
            })
            .await;
            Ok(())
        }
        Command::Setup => setup().await,
        Command::Supervise(args) => return kctl::supervise::supervise(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            tracing::error!("{report:?}");
            ExitCode::FAILURE
        }
    }
}
