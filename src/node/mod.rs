//! The node helper's daemon (`kctl-node run`): the loop that keeps one
//! minion, and with its peers the whole cluster, in the desired state while
//! nobody is watching.
//!
//! Every second, at once when desired state changes in etcd (a watch on
//! the generation key), and at once when one of the cluster's containers
//! exits (Docker's event stream), it: makes the minion's containers match etcd (the same
//! converge routine `apply` uses, over the local transport) and records what
//! runs; recomputes endpoints and brings the minion's service rules up to
//! date; and, if it is the cluster's leader, moves the pods of minions that
//! stopped heartbeating and keeps every controller at its replica count.
//! Leadership is a key on the leader's heartbeat lease: when the leader
//! dies, the key goes with it and another helper takes over.

use crate::converge::engine::EngineEvent;
use crate::converge::{
    converge_locked, record, settled, sync_rules_locked, update_endpoints, ContainerEngine,
    ConvergeEvent, EngineError, RunContext, Supervisor, Tee,
};
use crate::docker_api::DockerApi;
use crate::events::{event, Subject};
use crate::exec::LocalExec;
use crate::plan::{plan_reconcile, RandomNamer};
use crate::state::{PodPhase, PodStatus};
use crate::store::{jittered, Store, StoreError};
use futures::stream::{BoxStream, StreamExt};
use futures::FutureExt;
use std::time::Duration;
use tracing::{error, info, warn};

pub mod post_start;
pub mod probe;
pub mod renew;
pub mod signer;

const PERIOD: Duration = Duration::from_secs(1);

/// How long the container runtime may not answer before the minion says it
/// is NotReady: longer than a supervised dockerd takes to come back from a
/// crash, so a blip moves nothing.
const RUNTIME_GRACE: Duration = Duration::from_secs(2);

/// How often the helper checks that its minion's routes and rules are
/// still there (a few `iptables --check`, `nft list chain`, `ip link`).
const DRIFT_CHECK_PERIOD: Duration = Duration::from_secs(10);

/// What the helper says in its heartbeat while dockerd does not answer.
pub const RUNTIME_UNREACHABLE: &str = "container runtime unreachable";

/// Which minion of which cluster this helper serves.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub cluster: String,
    pub minion: String,
    pub etcd: Vec<String>,
    pub offline_images: bool,
    /// The minion's dockerd.
    pub docker_socket: std::path::PathBuf,
    /// Where the helper's etcd credentials are (TLS), if etcd speaks it.
    pub etcd_tls_dir: Option<std::path::PathBuf>,
    /// What records read back from etcd must pass before the helper acts
    /// on them.
    pub policy: crate::state::checks::RecordPolicy,
}

impl NodeConfig {
    /// Connects to etcd, with the credentials as they are on disk now.
    pub async fn connect(&self) -> Result<Store, StoreError> {
        let tls = match &self.etcd_tls_dir {
            Some(dir) => Some(
                crate::pki::read_node_credentials(dir)
                    .map_err(|e| StoreError::Credentials(e.to_string()))?,
            ),
            None => None,
        };
        let store = Store::connect(&self.etcd, &self.cluster, tls.as_ref()).await?;
        // Its rounds read a copy kept by a watch, not the whole state.
        Ok(store
            .with_source(&format!("kctl-node/{}", self.minion))
            .with_policy(self.policy)
            .cached())
    }
}

/// Why one life of the helper ended.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("heartbeat lost")]
    HeartbeatLost,
    #[error(transparent)]
    Docker(#[from] EngineError),
}

/// Logs one of the converge layer's events: what the helper did to its
/// minion and to the cluster's records.
pub fn log_event(event: ConvergeEvent) {
    match event {
        ConvergeEvent::PodFailed { .. }
        | ConvergeEvent::ProbeFailed { .. }
        | ConvergeEvent::EventsNotRecorded { .. } => warn!("{event}"),
        _ if event.is_detail() => tracing::debug!("{event}"),
        _ => info!("{event}"),
    }
}

/// Runs for as long as the process lives, reconnecting to etcd whenever it
/// is lost.
pub async fn run(node: NodeConfig) {
    info!(
        "kctl-node {} for {} of cluster {}",
        env!("CARGO_PKG_VERSION"),
        node.minion,
        node.cluster
    );
    // After a reboot the routes and rules are gone; after `kctl-node
    // setup` (which starts this helper) in the same boot they are all
    // there, and the whole restore again would only double the
    // bootstrap's cost.
    let exec = LocalExec {
        name: node.minion.clone(),
    };
    let program = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let intact = match saved_setup_request() {
        Some(text) => {
            crate::bootstrap::setup::bootstrapped_this_boot(&exec, &program).await
                && matches!(
                    crate::bootstrap::setup::drifted_here(&exec, &text).await,
                    Ok(false)
                )
        }
        None => true,
    };
    if !intact {
        restore_host(&node).await;
    }
    tokio::spawn(renew::keep_certificate_fresh(node.clone()));
    loop {
        let result = match node.connect().await {
            Ok(store) => serve(&node, store).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            error!("{e}; starting over");
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// What `kctl-node setup` kept beside this binary, if it did.
fn saved_setup_request() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let path = crate::bootstrap::setup::saved_request_path(exe.to_str()?);
    std::fs::read_to_string(path).ok()
}

/// Whether the minion's routes and rules look gone (cheap checks), so the
/// whole restore is worth running.
async fn host_drifted(exec: &LocalExec) -> bool {
    let Some(text) = saved_setup_request() else {
        return false;
    };
    match crate::bootstrap::setup::drifted_here(exec, &text).await {
        Ok(drifted) => drifted,
        Err(e) => {
            error!("checking the minion's rules: {e}");
            false
        }
    }
}

/// Bootstraps the minion again from what `kctl-node setup` kept beside this
/// binary: after a reboot the routes, forwarding and guard rules are gone
/// until then. Without the file (a helper started by hand) nothing happens.
/// True if anything had to be restored.
async fn restore_host(node: &NodeConfig) -> bool {
    let Some(text) = saved_setup_request() else {
        return false;
    };
    let exec = LocalExec {
        name: node.minion.clone(),
    };
    match crate::bootstrap::setup::restore_here(&exec, &text).await {
        Ok(true) => {
            info!("restored the minion's routes and rules (a reboot or someone else had removed them)");
            true
        }
        Ok(false) => false,
        Err(e) => {
            error!("restoring the minion's routes and rules: {e}");
            false
        }
    }
}

/// Whether the minion's service rules are gone: kctl's nftables table has
/// no portal chain (a reboot, or someone flushed the ruleset).
/// Whether the minion's service rules differ from what etcd says they
/// should be (someone changed them, or they are gone); says how.
async fn service_rules_drifted(
    exec: &LocalExec,
    expected: &[crate::services::rules::Portal],
) -> bool {
    match crate::converge::listed_rules(exec).await {
        Ok(listing) => {
            let drift = crate::services::rules::drift(expected, listing.as_deref());
            for line in &drift {
                warn!("service rules drifted: {line}; rewriting them");
            }
            !drift.is_empty()
        }
        Err(e) => {
            warn!("reading the service rules: {e}");
            false
        }
    }
}

/// One life of the helper: from taking a heartbeat lease until losing it.
async fn serve(node: &NodeConfig, mut store: Store) -> Result<(), NodeError> {
    // Docker and the watch first: a failure here returns before any
    // heartbeat task exists (a dropped task handle would not stop it).
    let docker = match DockerApi::connect(&node.minion, &node.docker_socket).await {
        Ok(docker) => docker,
        // The loop below says the minion is NotReady until dockerd answers.
        Err(_) => DockerApi::connect_lazily(&node.minion, &node.docker_socket)?,
    };
    let mut desired = store.watch_desired().await?;
    let mut exits = container_exits(&docker, &node.cluster);
    let heartbeat = store.start_heartbeat(&node.minion).await?;
    if let Err(e) = store
        .put_helper_version(&node.minion, &crate::state::HelperVersion::of_this_binary())
        .await
    {
        warn!("recording the helper's version: {e}");
    }
    let exec = LocalExec {
        name: node.minion.clone(),
    };
    let ctx = RunContext {
        cluster: node.cluster.clone(),
        offline_images: node.offline_images,
        service_env: vec![],
        starts_in_flight: crate::converge::pod_starts_here(),
    };
    let mut leading = false;
    let mut rules_written = false;
    let mut supervisor = Supervisor::default();
    // Since when dockerd has not answered, and whether the heartbeat says so.
    let mut runtime_down: Option<std::time::Instant> = None;
    let mut said_not_ready = false;
    let mut last_drift_check = std::time::Instant::now();
    let mut drift_check_period = jittered(DRIFT_CHECK_PERIOD);
    loop {
        if heartbeat.task.is_finished() {
            return Err(NodeError::HeartbeatLost);
        }
        // Each step logs its failure and the loop goes on: the next round
        // starts from etcd again.
        match docker.ping().await {
            Err(e) => {
                let since = *runtime_down.get_or_insert_with(std::time::Instant::now);
                if !said_not_ready && since.elapsed() >= RUNTIME_GRACE {
                    warn!("{RUNTIME_UNREACHABLE} ({e}): the minion is NotReady until it answers");
                    match store
                        .set_condition(&node.minion, heartbeat.lease, Some(RUNTIME_UNREACHABLE))
                        .await
                    {
                        Ok(()) => {
                            said_not_ready = true;
                            let not_ready = event(
                                Subject::Minion,
                                &node.minion,
                                "NotReady",
                                format!("{RUNTIME_UNREACHABLE}: {e}"),
                            );
                            if let Err(e) = store.record_events(&[not_ready]).await {
                                warn!("recording events: {e}");
                            }
                        }
                        Err(e) => error!("saying the minion is NotReady: {e}"),
                    }
                }
            }
            Ok(()) => {
                if said_not_ready {
                    match store
                        .set_condition(&node.minion, heartbeat.lease, None)
                        .await
                    {
                        Ok(()) => {
                            info!("the container runtime answers again: the minion is Ready");
                            said_not_ready = false;
                            let ready = event(
                                Subject::Minion,
                                &node.minion,
                                "Ready",
                                "the container runtime answers again".into(),
                            );
                            if let Err(e) = store.record_events(&[ready]).await {
                                warn!("recording events: {e}");
                            }
                        }
                        Err(e) => error!("saying the minion is Ready: {e}"),
                    }
                }
                runtime_down = None;
                // Most rounds find nothing to do: only those with work
                // take the minion's lock.
                let converged =
                    match settled(&docker, &ctx, &store, &node.minion, &supervisor).await {
                        Ok(Some(report)) => Ok(report),
                        _ => {
                            converge_locked(
                                &docker,
                                &exec,
                                &ctx,
                                &store,
                                &node.minion,
                                Duration::ZERO,
                                &mut supervisor,
                                &log_event,
                            )
                            .await
                        }
                    };
                match converged {
                    Ok(report) => {
                        let probes = Tee::new(&log_event);
                        post_start::run_after_restarts(
                            &docker,
                            &exec,
                            &report,
                            &mut supervisor,
                            &probes,
                        )
                        .await;
                        probe::run_probes(&docker, &exec, &report, &mut supervisor, &probes).await;
                        record(&store, probes.kept.take(), &log_event).await;
                    }
                    Err(e) => error!("converge: {e}"),
                }
            }
        }
        let portals = match update_endpoints(&mut store, &log_event).await {
            Ok((state, endpoints)) => Some(crate::services::rules::portals(&state, &endpoints)),
            Err(e) => {
                error!("endpoints: {e}");
                None
            }
        };
        // The first round of each life writes the rules whatever etcd's
        // digest says: a reboot wiped them, not the record. Every so often
        // the helper checks that its routes and rules are really there and
        // repairs what is not, so the digest never vouches for rules gone.
        let mut rewrite = !rules_written;
        let first_round = !rules_written;
        if runtime_down.is_none()
            && (first_round || last_drift_check.elapsed() >= drift_check_period)
        {
            if !first_round {
                // (At start, `run` has just restored the host.)
                if host_drifted(&exec).await {
                    rewrite |= restore_host(node).await;
                }
                if let Some(portals) = &portals {
                    rewrite |= service_rules_drifted(&exec, portals).await;
                }
            }
            last_drift_check = std::time::Instant::now();
            drift_check_period = jittered(DRIFT_CHECK_PERIOD);
            // Docker starts pods with a restart policy again by itself (at
            // boot, after a crash): their new bridge ports lack hairpin
            // mode, which the converge sets only for pods it started.
            match crate::converge::ensure_hairpin(&exec).await {
                Ok(ports) if !ports.is_empty() => log_event(ConvergeEvent::HairpinEnabled {
                    minion: node.minion.clone(),
                    ports,
                }),
                Ok(_) => {}
                Err(e) => error!("hairpin: {e}"),
            }
        }
        match sync_rules_locked(&exec, &store, &node.minion, rewrite, &log_event).await {
            Ok(_) => rules_written = true,
            Err(e) => error!("service rules: {e}"),
        }
        report_rejections(&store).await;
        match store.try_lead(&node.minion, heartbeat.lease).await {
            Ok(true) => {
                if !leading {
                    info!("{} leads the cluster now", node.minion);
                    leading = true;
                }
                if let Err(e) = lead(&mut store).await {
                    error!("leader: {e}");
                }
            }
            Ok(false) => leading = false,
            Err(e) => error!("leader election: {e}"),
        }
        // A watch that etcd ended (a compaction, a lost stream) is made
        // again; meanwhile the period alone drives the loop.
        if desired.ended() {
            warn!("the watch on desired state ended; watching again");
            if let Ok(again) = store.watch_desired().await {
                desired = again;
            }
        }
        // The next round comes after a period, or as soon as desired state
        // changes (a commit by `apply` or the leader), or a container exits.
        tokio::select! {
            _ = tokio::time::sleep(jittered(PERIOD)) => {}
            _ = desired.changed() => {}
            exit = exits.next() => {
                if exit.is_some() {
                    // One round for however many exits came at once (a
                    // deleted controller stops hundreds of containers).
                    while let Some(Some(_)) = exits.next().now_or_never() {}
                } else {
                    // dockerd restarted or the stream broke: subscribe
                    // again; the period carries the loop meanwhile.
                    if runtime_down.is_none() {
                        warn!("Docker's event stream ended; subscribing again");
                    }
                    exits = container_exits(&docker, &node.cluster);
                    tokio::time::sleep(PERIOD).await;
                }
            }
        }
    }
}

/// Records this helper left out (they failed their checks: written with a
/// minion's key, or by something other than kctl), logged and recorded as
/// events, once each.
async fn report_rejections(store: &Store) {
    let rejected = store.new_rejections();
    if rejected.is_empty() {
        return;
    }
    let events: Vec<_> = rejected
        .iter()
        .map(|r| {
            warn!("left out the record {r}");
            let (kind, id) = r.key.split_once('/').unwrap_or(("", &r.key));
            let subject = match kind {
                "services" | "endpoints" | "loadbalancers" => Subject::Service,
                "controllers" | "rollouts" => Subject::ReplicationController,
                "pods" | "status" => Subject::Pod,
                _ => Subject::Minion,
            };
            let id = id.strip_prefix("pods/").unwrap_or(id);
            // The id goes into the event's key: a crafted one is named by
            // its digest.
            let id = match crate::model::names::dns_subdomain_problem(id) {
                None => id.to_string(),
                Some(_) => format!("invalid-{}", crate::state::short_digest(id.as_bytes())),
            };
            event(
                subject,
                &id,
                "RecordRejected",
                format!("not acted on: the record {r}"),
            )
        })
        .collect();
    if let Err(e) = store.record_events(&events).await {
        warn!("recording events: {e}");
    }
}

/// The cluster's containers exiting on this minion, as Docker reports
/// them; ends when the stream fails.
fn container_exits(docker: &DockerApi, cluster: &str) -> BoxStream<'static, EngineEvent> {
    docker
        .events(cluster)
        .take_while(|event| {
            if let Err(e) = event {
                // The round that finds the stream ended says so.
                tracing::debug!("Docker's event stream: {e}");
            }
            std::future::ready(event.is_ok())
        })
        .filter_map(|event| std::future::ready(event.ok().filter(|e| e.action == "die")))
        .boxed()
}

/// The leader's round: replace controller pods of minions that are not
/// ready, restore vanished replicas, and mark bare pods on such minions
/// Terminated (they are not moved).
async fn lead(store: &mut Store) -> Result<(), StoreError> {
    let snapshot = store.snapshot().await?;
    let state = &snapshot.state;
    let (plan, unfit) = plan_reconcile(state, &mut RandomNamer);
    for u in &unfit {
        warn!("leader: {u}");
    }
    if !plan.is_empty() {
        match store.commit(&snapshot, &plan.ops).await {
            Ok(()) => {
                info!("leader:\n{}", plan.render().trim_end());
                let events = crate::events::of_plan(state, &plan.ops);
                if let Err(e) = store.record_events(&events).await {
                    warn!("recording events: {e}");
                }
            }
            // Someone changed the cluster meanwhile: the next round re-plans.
            Err(StoreError::Conflict) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    for pod in state.pods.values().filter(|p| p.owner.is_none()) {
        if state.heartbeats.contains(&pod.host) {
            continue;
        }
        let message = format!("minion {} is not ready", pod.host);
        let current = state.statuses.get(&pod.pod.id);
        if current.is_some_and(|s| {
            s.phase == PodPhase::Terminated && s.message.as_deref() == Some(&message)
        }) {
            continue;
        }
        let status = PodStatus {
            host: pod.host.clone(),
            phase: PodPhase::Terminated,
            spec_hash: pod.spec_hash(),
            pod_ip: current.and_then(|s| s.pod_ip),
            containers: vec![],
            message: Some(message),
        };
        store.put_status(&pod.pod.id, &status).await?;
    }
    Ok(())
}
