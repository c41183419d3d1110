//! The operations behind each subcommand. They know nothing of clap: the
//! CLI parses arguments and calls one function here.

pub mod apply;
pub mod down;
pub mod get;
pub mod image;
pub mod up;

use crate::cluster::{ClusterConfig, ClusterDir};
use crate::converge::{self, MinionReport, RunContext};
use crate::exec::ExecError;
use crate::ssh::SshExec;
use crate::state::PodPhase;
use crate::store::Store;
use crate::ui::Ui;
use futures::future::join_all;
use miette::{miette, IntoDiagnostic};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long `apply` waits for new containers to run.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// An existing cluster: its record and the way to its state.
pub struct Cluster {
    pub dir: ClusterDir,
    pub config: ClusterConfig,
}

impl Cluster {
    pub fn open(name: &str) -> miette::Result<Cluster> {
        let dir = ClusterDir::new(name)?;
        let config = dir.load()?;
        Ok(Cluster { dir, config })
    }

    pub async fn store(&self) -> miette::Result<Store> {
        Ok(Store::connect(&self.config.etcd_endpoints, &self.config.name).await?)
    }

    pub fn run_context(&self) -> RunContext {
        RunContext {
            cluster: self.config.name.clone(),
            offline_images: self.config.offline_images,
        }
    }

    /// One SSH master connection per named minion, opened in parallel.
    pub async fn connect(&self, ids: &[String]) -> Vec<(String, Result<SshExec, ExecError>)> {
        let auth = self.dir.auth();
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

/// What converging a set of minions came to.
#[derive(Debug, Default)]
pub struct ConvergeOutcome {
    pub reports: BTreeMap<String, MinionReport>,
    /// Minions that could not be reached or converged, with why.
    pub unreachable: Vec<(String, String)>,
}

impl ConvergeOutcome {
    /// Lines describing every problem; empty when all went well.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .unreachable
            .iter()
            .map(|(m, e)| format!("{m}: {e}"))
            .collect();
        for (minion, report) in &self.reports {
            for (pod, why) in &report.failures {
                out.push(format!("pod {pod} on {minion} did not start: {why}"));
            }
            for (pod, status) in &report.statuses {
                if report.failures.iter().any(|(f, _)| f == pod) {
                    continue;
                }
                if status.phase != PodPhase::Running {
                    out.push(format!(
                        "pod {pod} on {minion} is {}: {}",
                        status.phase.as_str(),
                        status.message.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        out
    }
}

/// Brings the named minions to the desired state in etcd, all in parallel,
/// and records what it observed.
pub async fn converge_minions(
    ui: &Ui,
    cluster: &Cluster,
    store: &Store,
    minions: &BTreeSet<String>,
) -> miette::Result<ConvergeOutcome> {
    let mut outcome = ConvergeOutcome::default();
    if minions.is_empty() {
        return Ok(outcome);
    }
    let ids: Vec<String> = minions.iter().cloned().collect();
    let task = ui.task(format!("converging {} minion(s)", ids.len()));
    let ctx = cluster.run_context();
    let connections = cluster.connect(&ids).await;
    let work = connections.into_iter().map(|(id, conn)| {
        let ctx = ctx.clone();
        let store = store.clone();
        async move {
            let exec = match conn {
                Ok(exec) => exec,
                Err(e) => return (id, Err(e.to_string())),
            };
            let result = converge_locked(&exec, &ctx, store, &id).await;
            exec.close().await;
            (id, result)
        }
    });
    for (id, result) in join_all(work).await {
        match result {
            Ok(report) => {
                outcome.reports.insert(id, report);
            }
            Err(e) => outcome.unreachable.push((id, e)),
        }
    }
    if outcome.problems().is_empty() {
        task.done(format!("converged {}", ids.join(", ")));
    } else {
        task.fail(format!("converging {} had problems", ids.join(", ")));
    }
    Ok(outcome)
}

/// Converges one minion under its lock, from desired state read after the
/// lock was taken, and records the statuses it observed.
pub async fn converge_locked<E: crate::exec::Exec>(
    exec: &E,
    ctx: &RunContext,
    mut store: Store,
    minion: &str,
) -> Result<MinionReport, String> {
    let lock = store.lock_minion(minion).await.map_err(|e| e.to_string())?;
    let result = async {
        let state = store.snapshot().await.map_err(|e| e.to_string())?.state;
        let desired: Vec<_> = state.pods_on(minion).cloned().collect();
        let report = converge::converge_minion(exec, ctx, &desired, START_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        for (pod, status) in &report.statuses {
            store
                .put_status(pod, status)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(report)
    }
    .await;
    lock.release().await;
    result
}

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
