//! The operations behind each subcommand. They know nothing of clap: the
//! CLI parses arguments and calls one function here.

pub mod apply;
pub mod clusters;
pub mod converge;
pub mod describe;
pub mod disks;
pub mod down;
pub mod get;
pub mod image;
pub mod install;
pub mod load_balancers;
pub mod minion;
pub mod reach;
pub mod rollout;
pub mod run;
pub mod snapshot;
pub mod up;
pub mod version;

use crate::cluster::{ClusterConfig, ClusterDir, EtcdHost, ETCD_CLIENT_PORT};
use crate::converge::RunContext;
use crate::exec::ExecError;
use crate::ssh::{SshAuth, SshExec};
use crate::store::{MemberProblem, MemberSet, Store};

use miette::{miette, IntoDiagnostic};

/// How many minions one command works on at once: SSH logins (a key
/// exchange each, on this machine's CPU), forwarded Docker sockets,
/// converges and rule syncs. The rest wait their turn, so what a command
/// asks of this machine (processes, sockets, CPU) stays bounded however
/// large the cluster grows.
pub const MINIONS_IN_FLIGHT: usize = 16;

/// Runs `work` (one future per minion), at most `MINIONS_IN_FLIGHT` at a
/// time, each next one starting as soon as any finishes (a slow minion
/// holds up only its own place); the results in the order given.
pub async fn per_minion<F: std::future::Future>(
    work: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    use futures::stream::StreamExt;
    let mut done: Vec<(usize, F::Output)> = futures::stream::iter(
        work.into_iter()
            .enumerate()
            .map(|(i, f)| async move { (i, f.await) }),
    )
    .buffer_unordered(MINIONS_IN_FLIGHT)
    .collect()
    .await;
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, output)| output).collect()
}

/// An existing cluster: its record and the way to its state.
pub struct Cluster {
    pub dir: ClusterDir,
    pub config: ClusterConfig,
    /// The SSH sessions carrying the tunnels to etcd's members, where etcd
    /// runs on the cluster's machines; they live as long as this value.
    tunnels: tokio::sync::OnceCell<Tunnels>,
}

/// Tunnels from this machine's loopback to etcd's members, one through
/// each member's own host: any member whose host answers can serve, and
/// losing one host mid-command leaves the others' tunnels.
struct Tunnels {
    /// The member's index in `etcd_hosts`, the session and the local port.
    open: Vec<(usize, SshExec, u16)>,
    /// Members whose host could not be reached, and why.
    failed: Vec<(usize, String)>,
}

/// How long, once a majority of the tunnels is open, the others may take:
/// a host that is down must not hold every command up for SSH's connect
/// timeout.
const TUNNEL_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

async fn open_tunnels(hosts: &[EtcdHost], auth: &SshAuth) -> Tunnels {
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut pending: FuturesUnordered<_> = hosts
        .iter()
        .enumerate()
        .map(|(index, host)| {
            // Owned, so that connections still under way when the grace
            // ends can be finished (and closed) by a task of their own.
            let (target, auth) = (host.ssh_target(), auth.clone());
            async move {
                let opened = async {
                    let exec = SshExec::connect(&target, &auth).await?;
                    match exec.forward_local_port(ETCD_CLIENT_PORT).await {
                        Ok(port) => Ok((exec, port)),
                        Err(e) => {
                            exec.close().await;
                            Err(e)
                        }
                    }
                }
                .await;
                (index, opened)
            }
        })
        .collect();
    let mut tunnels = Tunnels {
        open: vec![],
        failed: vec![],
    };
    let majority = hosts.len() / 2 + 1;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match deadline {
            None => pending.next().await,
            Some(at) => match tokio::time::timeout_at(at, pending.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        let Some((index, opened)) = next else { break };
        match opened {
            Ok((exec, port)) => tunnels.open.push((index, exec, port)),
            Err(e) => tunnels.failed.push((index, e.to_string())),
        }
        if tunnels.open.len() >= majority {
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + TUNNEL_GRACE);
        }
    }
    if !pending.is_empty() {
        // Not left to linger as SSH masters nobody closes.
        tokio::spawn(async move {
            while let Some((_, opened)) = pending.next().await {
                if let Ok((exec, _)) = opened {
                    exec.close().await;
                }
            }
        });
    }
    let answered: Vec<usize> = tunnels
        .open
        .iter()
        .map(|t| t.0)
        .chain(tunnels.failed.iter().map(|f| f.0))
        .collect();
    for index in (0..hosts.len()).filter(|i| !answered.contains(i)) {
        tunnels.failed.push((
            index,
            format!(
                "SSH to {} gave no answer within {} ms of the others",
                hosts[index].ssh_host,
                TUNNEL_GRACE.as_millis()
            ),
        ));
    }
    tunnels.open.sort_by_key(|t| t.0);
    tunnels.failed.sort_by_key(|f| f.0);
    tunnels
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
            tunnels: tokio::sync::OnceCell::new(),
        }
    }

    fn tunnel_endpoint(&self, port: u16) -> String {
        let scheme = if self.config.etcd_tls() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{port}")
    }

    /// The endpoints this machine reaches etcd at: directly (local), or
    /// loopback ports forwarded over SSH to each member host's loopback.
    pub async fn etcd_endpoints(&self) -> miette::Result<Vec<String>> {
        let hosts = &self.config.etcd_hosts;
        if hosts.is_empty() {
            return Ok(self.config.etcd_endpoints.clone());
        }
        let tunnels = self
            .tunnels
            // Kept once any tunnel is open; with none, the next call tries again.
            .get_or_try_init(|| async {
                let auth = self.auth();
                let tunnels = open_tunnels(hosts, &auth).await;
                if !tunnels.open.is_empty() {
                    return Ok(tunnels);
                }
                let why: Vec<String> = tunnels.failed.iter().map(|(_, e)| e.clone()).collect();
                Err(match hosts.len() {
                    1 => miette!(
                        help = "etcd is reached through SSH to its host",
                        "{}",
                        why.join("\n")
                    ),
                    n => miette!(
                        help =
                            "etcd is reached through SSH to its members' hosts; is the cluster up?",
                        "none of the {n} etcd members' hosts answers over SSH:\n  {}",
                        why.join("\n  ")
                    ),
                })
            })
            .await?;
        Ok(tunnels
            .open
            .iter()
            .map(|(_, _, port)| self.tunnel_endpoint(*port))
            .collect())
    }

    /// Where this machine reaches member `index` of `etcd_hosts` (through
    /// the tunnel to its host), if that host answered.
    pub async fn member_endpoint(&self, index: usize) -> Option<String> {
        self.etcd_endpoints().await.ok()?;
        let tunnels = self.tunnels.get()?;
        tunnels
            .open
            .iter()
            .find(|(i, _, _)| *i == index)
            .map(|(_, _, port)| self.tunnel_endpoint(*port))
    }

    /// The members this machine reaches etcd at, named as the user knows
    /// them: by their hosts where etcd runs on the cluster's machines
    /// (with those SSH could not reach), else by their endpoints.
    async fn member_set(&self) -> miette::Result<MemberSet> {
        let endpoints = self.etcd_endpoints().await?;
        let hosts = &self.config.etcd_hosts;
        let Some(tunnels) = self.tunnels.get().filter(|_| hosts.len() > 1) else {
            return Ok(MemberSet::of(&endpoints));
        };
        let named = |index: usize| format!("{} ({})", hosts[index].name, hosts[index].ip);
        Ok(MemberSet {
            endpoints,
            names: tunnels.open.iter().map(|(i, _, _)| named(*i)).collect(),
            absent: tunnels
                .failed
                .iter()
                .map(|(i, why)| MemberProblem {
                    endpoint: named(*i),
                    problem: why.clone(),
                })
                .collect(),
        })
    }

    /// The workstation's certificate for etcd, where etcd speaks TLS.
    fn etcd_credentials(&self) -> miette::Result<Option<crate::pki::Credentials>> {
        if !self.config.etcd_tls() {
            return Ok(None);
        }
        Ok(Some(self.dir.pki().workstation()?))
    }

    pub async fn store(&self) -> miette::Result<Store> {
        let members = self.member_set().await?;
        let tls = self.etcd_credentials()?;
        Ok(Store::connect_to(members, &self.config.name, tls.as_ref())
            .await?
            .with_policy(self.config.record_policy()))
    }

    /// Like `store`, for an etcd that was just started.
    pub async fn store_waiting(&self, timeout: std::time::Duration) -> miette::Result<Store> {
        let members = self.member_set().await?;
        let tls = self.etcd_credentials()?;
        Ok(
            Store::connect_to_waiting(members, &self.config.name, tls.as_ref(), timeout)
                .await?
                .with_policy(self.config.record_policy()),
        )
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

    /// One SSH master connection per named minion, opened in parallel
    /// (`MINIONS_IN_FLIGHT` at a time).
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
        per_minion(connects).await
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

/// Says which records etcd holds that kctl left out (they failed the
/// checks every record read back passes), once each.
pub(crate) fn warn_rejected(ui: &crate::ui::Ui, store: &Store) {
    for r in store.new_rejections() {
        ui.warn(format!(
            "etcd holds a record kctl does not act on (not written by kctl, or by another version): {r}; `kctl delete --rejected` removes such records"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn one_slow_minion_holds_up_only_its_own_place() {
        let started = AtomicUsize::new(0);
        let work = (0..20u64).map(|i| {
            let started = &started;
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                // The first never finishes within the test's look.
                let pause = if i == 0 { 10_000 } else { 5 };
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
        });
        let all = per_minion(work);
        let looked = tokio::time::timeout(std::time::Duration::from_millis(300), all).await;
        assert!(looked.is_err(), "the slow one is still running");
        assert_eq!(started.load(Ordering::SeqCst), 20, "the others all ran");
    }

    #[tokio::test]
    async fn per_minion_work_is_bounded_and_keeps_its_order() {
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let work = (0..40).map(|i| {
            let (now, most) = (&now, &most);
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(running, Ordering::SeqCst);
                // Later ones finish first: the order must not follow that.
                tokio::time::sleep(std::time::Duration::from_millis(40 - i)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                i
            }
        });
        let done = per_minion(work).await;
        assert_eq!(done, (0..40).collect::<Vec<u64>>());
        assert_eq!(most.load(Ordering::SeqCst), MINIONS_IN_FLIGHT);
    }
}
