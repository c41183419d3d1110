//! The operations behind each subcommand. They know nothing of clap: the
//! CLI parses arguments and calls one function here.

pub mod apply;
pub mod clusters;
pub mod converge;
pub mod describe;
pub mod down;
pub mod get;
pub mod image;
pub mod install;
pub mod minion;
pub mod reach;
pub mod rollout;
pub mod run;
pub mod snapshot;
pub mod up;
pub mod version;

use crate::cluster::{ClusterConfig, ClusterDir, ETCD_CLIENT_PORT};
use crate::converge::RunContext;
use crate::exec::ExecError;
use crate::ssh::SshExec;
use crate::store::Store;
use futures::future::join_all;
use miette::{miette, IntoDiagnostic};

/// An existing cluster: its record and the way to its state.
pub struct Cluster {
    pub dir: ClusterDir,
    pub config: ClusterConfig,
    /// The SSH session carrying the tunnel to etcd, where there is one;
    /// the tunnel lives as long as this value.
    tunnel: tokio::sync::OnceCell<(SshExec, u16)>,
}

impl Cluster {
    pub fn open(name: &str) -> miette::Result<Cluster> {
        let dir = ClusterDir::new(name)?;
        let config = dir.load()?;
        Ok(Cluster::new(dir, config))
    }

    pub fn new(dir: ClusterDir, config: ClusterConfig) -> Cluster {
        Cluster {
            dir,
            config,
            tunnel: tokio::sync::OnceCell::new(),
        }
    }

    /// The endpoints this machine reaches etcd at: directly (local), or a
    /// loopback port forwarded over SSH to the etcd host's loopback.
    pub async fn etcd_endpoints(&self) -> miette::Result<Vec<String>> {
        let Some(host) = &self.config.etcd_host else {
            return Ok(self.config.etcd_endpoints.clone());
        };
        let (_, port) = self
            .tunnel
            .get_or_try_init(|| async {
                let exec = SshExec::connect(&host.ssh_target(), &self.auth()).await?;
                let port = exec.forward_local_port(ETCD_CLIENT_PORT).await?;
                Ok::<_, ExecError>((exec, port))
            })
            .await
            .map_err(|e| miette!(help = "etcd is reached through SSH to its host", "{e}"))?;
        let scheme = if self.config.etcd_tls() {
            "https"
        } else {
            "http"
        };
        Ok(vec![format!("{scheme}://127.0.0.1:{port}")])
    }

    /// The workstation's certificate for etcd, where etcd speaks TLS.
    fn etcd_credentials(&self) -> miette::Result<Option<crate::pki::Credentials>> {
        if !self.config.etcd_tls() {
            return Ok(None);
        }
        Ok(Some(self.dir.pki().workstation()?))
    }

    pub async fn store(&self) -> miette::Result<Store> {
        let endpoints = self.etcd_endpoints().await?;
        let tls = self.etcd_credentials()?;
        Ok(Store::connect(&endpoints, &self.config.name, tls.as_ref()).await?)
    }

    /// Like `store`, for an etcd that was just started.
    pub async fn store_waiting(&self, timeout: std::time::Duration) -> miette::Result<Store> {
        let endpoints = self.etcd_endpoints().await?;
        let tls = self.etcd_credentials()?;
        Ok(Store::connect_waiting(&endpoints, &self.config.name, tls.as_ref(), timeout).await?)
    }

    pub fn auth(&self) -> crate::ssh::SshAuth {
        self.dir.auth(&self.config)
    }

    pub fn run_context(&self) -> RunContext {
        RunContext {
            cluster: self.config.name.clone(),
            offline_images: self.config.offline_images,
            service_env: vec![],
            starts_in_flight: crate::converge::POD_STARTS_IN_FLIGHT,
        }
    }

    /// One SSH master connection per named minion, opened in parallel.
    pub async fn connect(&self, ids: &[String]) -> Vec<(String, Result<SshExec, ExecError>)> {
        let auth = self.auth();
        let connects = ids.iter().map(|id| {
            let auth = auth.clone();
            let target = self.config.minion(id).map(|m| m.ssh_target());
            async move {
                let result = match target {
                    Some(t) => SshExec::connect(&t, &auth).await,
                    None => Err(ExecError::Transport {
                        target: id.clone(),
                        message: "not in the cluster record".into(),
                    }),
                };
                (id.clone(), result)
            }
        });
        join_all(connects).await
    }
}

/// The `kctl-node` binary that `up` installs on minions: the one built
/// beside this `kctl`.
pub fn helper_binary() -> miette::Result<std::path::PathBuf> {
    let me = std::env::current_exe().into_diagnostic()?;
    let helper = me.with_file_name("kctl-node");
    if helper.is_file() {
        Ok(helper)
    } else {
        Err(miette!(
            help = "build both binaries (`cargo build --bins`) or install them side by side",
            "kctl-node not found at {}",
            helper.display()
        ))
    }
}

/// Waits until every named minion's helper heartbeats.
pub async fn wait_for_heartbeats(
    store: &mut Store,
    minions: &[&str],
    timeout: std::time::Duration,
) -> miette::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let state = store.snapshot().await?.state;
        let missing: Vec<&str> = minions
            .iter()
            .copied()
            .filter(|m| !state.heartbeats.contains(*m))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(miette!(
                help = "the helper's log is kctl-node.log in the minion's helper directory",
                "no heartbeat from {} after {}s",
                missing.join(", "),
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A command line kctl cannot act on. `kctl` exits with status 2 for it,
/// as for the usage errors clap finds, so scripts tell a wrong invocation
/// from a failure of the cluster (status 1).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
    #[help]
    pub help: Option<String>,
}

pub fn usage_error(message: &str, help: &str) -> miette::Report {
    UsageError {
        message: message.to_string(),
        help: Some(help.to_string()),
    }
    .into()
}

/// A command kctl ran for the user (`exec`, `ssh`, `logs`) ended with this
/// status: kctl exits with it too, and prints nothing of its own.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the command exited with status {0}")]
pub struct CommandExited(pub i32);

/// An error to report as usual, with an exit status of its own (`kctl
/// diff` exits 2 on any trouble, as diff(1) does).
#[derive(Debug, thiserror::Error)]
#[error("{report}")]
pub struct FailedWith {
    pub code: u8,
    pub report: miette::Report,
}

impl miette::Diagnostic for FailedWith {}

/// Turns any displayable error into a report.
pub fn report(e: impl std::fmt::Display) -> miette::Report {
    miette!("{e}")
}

pub fn require_root(what: &str) -> miette::Result<()> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .into_diagnostic()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    if uid == "0" {
        Ok(())
    } else {
        Err(miette!(
            help = "run it as root, e.g. with sudo",
            "{what} needs root: it makes network namespaces, links and routes"
        ))
    }
}
