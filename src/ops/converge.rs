//! Converging minions from the workstation: containers on the minions a
//! plan touched, then endpoints and service rules wherever they changed.
//! The per-minion work (under the minion's lock) is the converge layer's;
//! this opens the SSH connections, runs it on every minion in parallel and
//! shows its events on the terminal.

use super::{per_minion, Cluster};
use crate::converge::{
    converge_locked, listed_rules, sync_rules_locked, update_endpoints, ContainerEngine,
    ConvergeError, ConvergeEvent, MinionReport, Supervisor,
};
use crate::docker_api::DockerApi;
use crate::services::rules;
use crate::ssh::SshExec;
use crate::state::PodPhase;
use crate::store::Store;
use crate::ui::{Task, Ui};
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
    /// Persistent disks not attached or detached as they should be, with why.
    pub disk_problems: Vec<String>,
}

impl ConvergeOutcome {
    /// Lines describing every problem; empty when all went well.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .unreachable
            .iter()
            .map(|(m, e)| format!("{m}: {e}"))
            .chain(self.disk_problems.iter().cloned())
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
/// master connection per minion per kctl invocation, and through it, where
/// containers are converged, the minion's Docker API on a forwarded socket.
struct Connections<'a> {
    cluster: &'a Cluster,
    open: BTreeMap<String, SshExec>,
    docker: BTreeMap<String, DockerApi>,
}

impl<'a> Connections<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        Connections {
            cluster,
            open: BTreeMap::new(),
            docker: BTreeMap::new(),
        }
    }

    /// Reaches the Docker API of every open minion in `ids` that is not
    /// reached yet, in parallel; returns the failures.
    async fn ensure_docker(&mut self, ids: &BTreeSet<String>) -> Vec<(String, String)> {
        let config = &self.cluster.config;
        let reach = self
            .open
            .iter()
            .filter(|(id, _)| ids.contains(*id) && !self.docker.contains_key(*id))
            .map(|(id, exec)| async move {
                let minion = config.minion(id);
                let remote = minion
                    .map(|m| m.docker_socket.clone())
                    .unwrap_or_else(|| crate::docker_api::DEFAULT_SOCKET.into());
                let result = match exec.forward_unix_socket(&remote).await {
                    Ok(local) => DockerApi::connect(id, &local).await.map_err(|e| {
                        // sshd opens the socket with the login's rights.
                        match minion.map(|m| m.ssh_user.as_str()) {
                            Some(user) if user != "root" => format!(
                                "{e} (is {user} in the docker group there? `kctl up` puts it in)"
                            ),
                            _ => e.to_string(),
                        }
                    }),
                    Err(e) => Err(format!("forwarding Docker's socket {remote}: {e}")),
                };
                (id.clone(), result)
            });
        let mut failed = Vec::new();
        for (id, result) in per_minion(reach).await {
            match result {
                Ok(docker) => {
                    self.docker.insert(id, docker);
                }
                Err(e) => failed.push((id, e)),
            }
        }
        failed
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

/// Brings the named minions' containers to the desired state in etcd, all in
/// parallel, then updates endpoints and service rules on every minion whose
/// rules are out of date. Opens no connection when nothing is to be done.
///
/// With `refresh`, the service rules of every Ready minion are read back
/// and rewritten where they differ from etcd's (drift), whatever digest
/// etcd recorded for them.
pub async fn converge_minions(
    ui: &Ui,
    cluster: &Cluster,
    store: &Store,
    minions: &BTreeSet<String>,
    refresh: bool,
) -> miette::Result<ConvergeOutcome> {
    let mut outcome = ConvergeOutcome::default();
    let mut connections = Connections::new(cluster);
    if !minions.is_empty() {
        let task = ui.task(format!("converging {} minion(s)", minions.len()));
        outcome
            .unreachable
            .extend(connections.ensure(minions).await);
        outcome
            .unreachable
            .extend(connections.ensure_docker(minions).await);
        let ctx = cluster.run_context();
        let events = show_on(ui, &task, format!("converging {} minion(s)", minions.len()));
        let results = {
            let events = &events;
            let work = connections
                .docker
                .iter()
                .filter(|(id, _)| minions.contains(*id))
                .filter_map(|(id, docker)| Some((id, docker, connections.open.get(id)?)))
                .map(|(id, docker, exec)| {
                    let ctx = ctx.clone();
                    async move {
                        let mut supervisor = Supervisor::default();
                        let report = converge_locked(
                            docker,
                            exec,
                            &ctx,
                            store,
                            id,
                            START_TIMEOUT,
                            &mut supervisor,
                            events,
                        )
                        .await;
                        (id.clone(), report)
                    }
                });
            per_minion(work).await
        };
        // The progress line is the task's until it finishes.
        drop(events);
        for (id, result) in results {
            match result {
                Ok(report) => {
                    outcome.reports.insert(id, report);
                }
                Err(e) => outcome.unreachable.push((id, e.to_string())),
            }
        }
        let names: Vec<&str> = minions.iter().map(String::as_str).collect();
        if outcome.problems().is_empty() {
            task.done(format!("converged {}", names.join(", ")));
        } else {
            task.fail(format!("converging {} had problems", names.join(", ")));
        }
    }
    sync_services(ui, store, &mut connections, &mut outcome, refresh).await?;
    connections.close().await;
    Ok(outcome)
}

/// Where what a minion really runs differs from etcd: its containers and
/// its service rules, one sentence per difference.
#[derive(Debug, Default)]
pub struct MinionDrift {
    pub containers: Vec<String>,
    pub rules: Vec<String>,
    /// What of the minion's routes, chains, forwarding and hairpin ports
    /// is gone.
    pub network: Vec<String>,
    /// Why the minion could not be checked, if it could not.
    pub unreachable: Option<String>,
}

/// Compares what every Ready minion runs (containers through Docker's API,
/// rules through `nft list`, its network through `iptables --check`, `ip
/// route` and its bridge's ports) with the desired state in etcd. Changes
/// nothing.
pub async fn live_drift(
    cluster: &Cluster,
    state: &crate::state::ClusterState,
) -> BTreeMap<String, MinionDrift> {
    let ready: BTreeSet<String> = state
        .minions
        .keys()
        .filter(|m| state.ready(m))
        .cloned()
        .collect();
    let mut drift: BTreeMap<String, MinionDrift> = ready
        .iter()
        .map(|m| (m.clone(), MinionDrift::default()))
        .collect();
    let mut connections = Connections::new(cluster);
    let mut failed = connections.ensure(&ready).await;
    failed.extend(connections.ensure_docker(&ready).await);
    for (minion, why) in failed {
        drift.entry(minion).or_default().unreachable = Some(why);
    }
    let portals = rules::portals(state, &crate::services::endpoints(state));
    let checks = connections
        .docker
        .iter()
        .filter_map(|(id, docker)| Some((id, docker, connections.open.get(id)?)))
        .map(|(id, docker, exec)| {
            let portals = &portals;
            async move {
                let desired: Vec<_> = state.pods_on(id).cloned().collect();
                let containers = docker
                    .observe(&cluster.config.name)
                    .await
                    .map(|observed| {
                        crate::converge::describe_steps(&crate::converge::steps(
                            &desired, &observed,
                        ))
                    })
                    .map_err(|e| e.to_string());
                let rules = listed_rules(exec)
                    .await
                    .map(|listing| rules::drift(portals, listing.as_deref()))
                    .map_err(|e| e.to_string());
                let network = network_drift(exec, &cluster.config, id)
                    .await
                    .map_err(|e| e.to_string());
                (id.clone(), containers, rules, network)
            }
        });
    for (id, containers, rules, network) in per_minion(checks).await {
        let entry = drift.entry(id).or_default();
        match (containers, rules, network) {
            (Ok(containers), Ok(rules), Ok(network)) => {
                entry.containers = containers;
                entry.rules = rules;
                entry.network = network;
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => entry.unreachable = Some(e),
        }
    }
    connections.close().await;
    drift
}

/// What of a minion's network kctl keeps is gone: what the bootstrap
/// puts in place, and hairpin mode on the pod bridge's ports.
async fn network_drift<E: crate::exec::Exec>(
    exec: &E,
    cluster: &crate::cluster::ClusterConfig,
    minion: &str,
) -> Result<Vec<String>, crate::exec::ExecError> {
    let mut lines = crate::bootstrap::setup::network_drift(exec, cluster, minion).await?;
    for port in crate::converge::executor::pod_ports_without_hairpin(exec).await? {
        lines.push(format!("pod port {port} is not in hairpin mode"));
    }
    Ok(lines)
}

/// Recomputes every service's endpoints, records those that changed, and
/// rewrites the rules of every minion whose rules are out of date.
async fn sync_services(
    ui: &Ui,
    store: &Store,
    connections: &mut Connections<'_>,
    outcome: &mut ConvergeOutcome,
    refresh: bool,
) -> miette::Result<()> {
    let mut store = store.clone();
    let (state, endpoints) = update_endpoints(&mut store, &|event: ConvergeEvent| {
        ui.note(format!("  {event}"))
    })
    .await
    .map_err(|e| match e {
        // etcd's own diagnostic says what to do about it.
        ConvergeError::Store { source, .. } => miette::Report::new(source),
        e => miette::miette!("{e}"),
    })?;
    let portals = rules::portals(&state, &endpoints);
    let digest = rules::digest(&portals);
    let mut stale: BTreeSet<String> = state
        .minions
        .keys()
        .filter(|m| state.rule_digests.get(*m) != Some(&digest))
        .cloned()
        .collect();
    // Minions whose rules were changed behind etcd's back: rewritten
    // whatever their recorded digest says.
    let mut drifted = BTreeSet::new();
    if refresh {
        // (Minions whose rules are behind etcd are rewritten anyway.)
        let ready: BTreeSet<String> = state
            .minions
            .keys()
            .filter(|m| state.ready(m) && !stale.contains(*m))
            .cloned()
            .collect();
        outcome.unreachable.extend(connections.ensure(&ready).await);
        let checks = connections
            .open
            .iter()
            .filter(|(id, _)| ready.contains(*id))
            .map(|(id, exec)| {
                let portals = &portals;
                async move {
                    let listed = listed_rules(exec).await;
                    (
                        id.clone(),
                        listed.map(|l| rules::drift(portals, l.as_deref())),
                    )
                }
            });
        for (id, found) in per_minion(checks).await {
            match found {
                Ok(lines) if lines.is_empty() => {}
                Ok(lines) => {
                    for line in lines {
                        ui.note(format!("  drift on {id}: {line}"));
                    }
                    drifted.insert(id);
                }
                Err(e) => outcome.unreachable.push((id, e.to_string())),
            }
        }
        stale.extend(drifted.iter().cloned());
    }
    if stale.is_empty() {
        return Ok(());
    }
    let task = ui.task(format!("service rules on {} minion(s)", stale.len()));
    outcome.unreachable.extend(connections.ensure(&stale).await);
    let events = show_on(
        ui,
        &task,
        format!("service rules on {} minion(s)", stale.len()),
    );
    let results = {
        let (events, store, drifted) = (&events, &store, &drifted);
        let work = connections
            .open
            .iter()
            .filter(|(id, _)| stale.contains(*id))
            .map(|(id, exec)| async move {
                let rewrite = drifted.contains(id);
                (
                    id.clone(),
                    sync_rules_locked(exec, store, id, rewrite, events).await,
                )
            });
        per_minion(work).await
    };
    // The progress line is the task's until it finishes.
    drop(events);
    let mut failed = false;
    for (id, result) in results {
        match result {
            Ok(true) => outcome.rules_synced.push(id),
            Ok(false) => {}
            Err(e) => {
                failed = true;
                outcome.unreachable.push((id, e.to_string()));
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

/// Shows the converge layer's events: each change as a line of its own
/// (the same words the helper logs), and the latest on the task's progress
/// line; failures come again in the task's summary.
fn show_on<'a>(
    ui: &'a Ui,
    task: &'a Task,
    heading: String,
) -> impl Fn(ConvergeEvent) + Send + Sync + 'a {
    move |event| {
        if !event.is_detail() {
            ui.note(format!("  {event}"));
        }
        task.set(format!("{heading}: {event}"));
    }
}
