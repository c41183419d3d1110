//! Converging minions from the workstation: containers on the minions a
//! plan touched, then endpoints and service rules wherever they changed.
//! Each minion is worked on under its etcd lock, from state read after the
//! lock was taken, so concurrent kctl processes (and the node helper) never
//! interleave on one minion.

use super::Cluster;
use crate::converge::Supervisor;
use crate::converge::{self, MinionReport, RunContext};
use crate::exec::Exec;
use crate::services::{self, rules};
use crate::ssh::SshExec;
use crate::state::{ClusterState, Endpoint, PodPhase, PodStatus};
use crate::store::{Store, StoreError};
use crate::ui::Ui;
use futures::future::join_all;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long `apply` waits for new containers to run.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What converging a set of minions came to.
#[derive(Debug, Default)]
pub struct ConvergeOutcome {
    pub reports: BTreeMap<String, MinionReport>,
    /// Minions that could not be reached or converged, with why.
    pub unreachable: Vec<(String, String)>,
    /// Minions whose service rules were rewritten.
    pub rules_synced: Vec<String>,
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

/// SSH connections opened on demand and kept for the whole command: one
/// master connection per minion per kctl invocation.
struct Connections<'a> {
    cluster: &'a Cluster,
    open: BTreeMap<String, SshExec>,
}

impl<'a> Connections<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        Connections {
            cluster,
            open: BTreeMap::new(),
        }
    }

    /// Opens what is not open yet, in parallel; returns the failures.
    async fn ensure(&mut self, ids: &BTreeSet<String>) -> Vec<(String, String)> {
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !self.open.contains_key(*id))
            .cloned()
            .collect();
        let mut failed = Vec::new();
        for (id, result) in self.cluster.connect(&missing).await {
            match result {
                Ok(exec) => {
                    self.open.insert(id, exec);
                }
                Err(e) => failed.push((id, e.to_string())),
            }
        }
        failed
    }

    async fn close(self) {
        join_all(self.open.into_values().map(SshExec::close)).await;
    }
}

/// Converges one minion's containers under its lock, from desired state read
/// after the lock was taken, and records the statuses it observed.
pub async fn converge_locked<E: Exec>(
    exec: &E,
    ctx: &RunContext,
    mut store: Store,
    minion: &str,
    wait: Duration,
    supervisor: &mut Supervisor,
) -> Result<MinionReport, String> {
    let lock = store.lock_minion(minion).await.map_err(|e| e.to_string())?;
    let result = async {
        let state = store.snapshot().await.map_err(|e| e.to_string())?.state;
        let desired: Vec<_> = state.pods_on(minion).cloned().collect();
        let ctx = RunContext {
            service_env: services::service_env(state.services.values()),
            ..ctx.clone()
        };
        let mut report = converge::converge_minion(exec, &ctx, &desired, wait, supervisor)
            .await
            .map_err(|e| e.to_string())?;
        for (pod, status) in report.statuses.iter_mut() {
            if let Some(old) = state.statuses.get(pod) {
                keep_what_this_process_cannot_see(status, old);
            }
        }
        // Only what changed: an idle minion writes nothing.
        let changed = report
            .statuses
            .iter()
            .filter(|(pod, status)| state.statuses.get(*pod) != Some(*status));
        for (pod, status) in changed {
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

/// Recomputes every service's endpoints from a fresh snapshot and records
/// those that changed; returns the snapshot's state and the endpoints.
pub async fn update_endpoints(
    store: &mut Store,
) -> Result<(ClusterState, BTreeMap<String, Vec<Endpoint>>), StoreError> {
    let state = store.snapshot().await?.state;
    let endpoints = services::endpoints(&state);
    for (service, eps) in &endpoints {
        if state.endpoints.get(service) != Some(eps) {
            store.put_endpoints(service, eps).await?;
        }
    }
    Ok((state, endpoints))
}

/// `apply` does not probe and does not know the helper's restarts: for the
/// same containers, keep the last probe verdict and the higher count.
fn keep_what_this_process_cannot_see(status: &mut PodStatus, old: &PodStatus) {
    for c in &mut status.containers {
        if let Some(o) = old
            .containers
            .iter()
            .find(|o| o.container_id == c.container_id)
        {
            c.restart_count = c.restart_count.max(o.restart_count);
            if c.healthy.is_none() {
                c.healthy = o.healthy;
            }
        }
    }
}

/// Brings a minion's service rules up to date under its lock; true if they
/// had to be rewritten.
pub async fn sync_rules_locked<E: Exec>(
    exec: &E,
    mut store: Store,
    minion: &str,
) -> Result<bool, String> {
    let lock = store.lock_minion(minion).await.map_err(|e| e.to_string())?;
    let result = async {
        let state = store.snapshot().await.map_err(|e| e.to_string())?.state;
        let portals = rules::portals(&state, &services::endpoints(&state));
        let digest = rules::digest(&portals);
        if state.rule_digests.get(minion) == Some(&digest) {
            return Ok(false);
        }
        converge::sync_rules(exec, &portals)
            .await
            .map_err(|e| e.to_string())?;
        store
            .put_rule_digest(minion, &digest)
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }
    .await;
    lock.release().await;
    result
}

/// Brings the named minions' containers to the desired state in etcd, all in
/// parallel, then updates endpoints and service rules on every minion whose
/// rules are out of date. Opens no connection when nothing is to be done.
pub async fn converge_minions(
    ui: &Ui,
    cluster: &Cluster,
    store: &Store,
    minions: &BTreeSet<String>,
) -> miette::Result<ConvergeOutcome> {
    let mut outcome = ConvergeOutcome::default();
    let mut connections = Connections::new(cluster);
    if !minions.is_empty() {
        let task = ui.task(format!("converging {} minion(s)", minions.len()));
        outcome
            .unreachable
            .extend(connections.ensure(minions).await);
        let ctx = cluster.run_context();
        let work = connections
            .open
            .iter()
            .filter(|(id, _)| minions.contains(*id))
            .map(|(id, exec)| {
                let (ctx, store) = (ctx.clone(), store.clone());
                async move {
                    let mut supervisor = Supervisor::default();
                    let report =
                        converge_locked(exec, &ctx, store, id, START_TIMEOUT, &mut supervisor)
                            .await;
                    (id.clone(), report)
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
        let names: Vec<&str> = minions.iter().map(String::as_str).collect();
        if outcome.problems().is_empty() {
            task.done(format!("converged {}", names.join(", ")));
        } else {
            task.fail(format!("converging {} had problems", names.join(", ")));
        }
    }
    sync_services(ui, store, &mut connections, &mut outcome).await?;
    connections.close().await;
    Ok(outcome)
}

/// Recomputes every service's endpoints, records those that changed, and
/// rewrites the rules of every minion whose rules are out of date.
async fn sync_services(
    ui: &Ui,
    store: &Store,
    connections: &mut Connections<'_>,
    outcome: &mut ConvergeOutcome,
) -> miette::Result<()> {
    let mut store = store.clone();
    let (state, endpoints) = update_endpoints(&mut store).await?;
    let digest = rules::digest(&rules::portals(&state, &endpoints));
    let stale: BTreeSet<String> = state
        .minions
        .keys()
        .filter(|m| state.rule_digests.get(*m) != Some(&digest))
        .cloned()
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let task = ui.task(format!("service rules on {} minion(s)", stale.len()));
    outcome.unreachable.extend(connections.ensure(&stale).await);
    let work = connections
        .open
        .iter()
        .filter(|(id, _)| stale.contains(*id))
        .map(|(id, exec)| {
            let store = store.clone();
            async move { (id.clone(), sync_rules_locked(exec, store, id).await) }
        });
    let mut failed = false;
    for (id, result) in join_all(work).await {
        match result {
            Ok(true) => outcome.rules_synced.push(id),
            Ok(false) => {}
            Err(e) => {
                failed = true;
                outcome
                    .unreachable
                    .push((id, format!("service rules: {e}")));
            }
        }
    }
    if failed {
        task.fail("service rules failed on some minions");
    } else {
        task.done(format!(
            "service rules up to date on {}",
            stale.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}
