//! The node helper's daemon (`kctl-node run`): the loop that keeps one
//! minion, and with its peers the whole cluster, in the desired state while
//! nobody is watching.
//!
//! Every second it: makes the minion's containers match etcd (the same
//! converge routine `apply` uses, over the local transport) and records what
//! runs; recomputes endpoints and brings the minion's service rules up to
//! date; and, if it is the cluster's leader, moves the pods of minions that
//! stopped heartbeating and keeps every controller at its replica count.
//! Leadership is a key on the leader's heartbeat lease: when the leader
//! dies, the key goes with it and another helper takes over.

use crate::converge::{RunContext, Supervisor};
use crate::exec::LocalExec;
use crate::ops::converge::{converge_locked, sync_rules_locked, update_endpoints};
use crate::plan::{plan_reconcile, RandomNamer};
use crate::state::{PodPhase, PodStatus};
use crate::store::{Store, StoreError};
use std::time::Duration;

pub mod probe;

const PERIOD: Duration = Duration::from_secs(1);

/// Which minion of which cluster this helper serves.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub cluster: String,
    pub minion: String,
    pub etcd: Vec<String>,
    pub offline_images: bool,
}

/// Runs for as long as the process lives, reconnecting to etcd whenever it
/// is lost.
pub async fn run(node: NodeConfig) {
    eprintln!(
        "kctl-node {} for {} of cluster {}",
        env!("CARGO_PKG_VERSION"),
        node.minion,
        node.cluster
    );
    loop {
        let result = match Store::connect(&node.etcd, &node.cluster).await {
            Ok(store) => serve(&node, store).await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            eprintln!("{e}; starting over");
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// One life of the helper: from taking a heartbeat lease until losing it.
async fn serve(node: &NodeConfig, mut store: Store) -> Result<(), String> {
    let heartbeat = store
        .start_heartbeat(&node.minion)
        .await
        .map_err(|e| e.to_string())?;
    let exec = LocalExec {
        name: node.minion.clone(),
    };
    let ctx = RunContext {
        cluster: node.cluster.clone(),
        offline_images: node.offline_images,
        service_env: vec![],
    };
    let mut leading = false;
    let mut supervisor = Supervisor::default();
    loop {
        if heartbeat.task.is_finished() {
            return Err("heartbeat lost".into());
        }
        // Each step logs its failure and the loop goes on: the next round
        // starts from etcd again.
        let converged = converge_locked(
            &exec,
            &ctx,
            store.clone(),
            &node.minion,
            Duration::ZERO,
            &mut supervisor,
        )
        .await;
        match converged {
            Ok(report) => probe::run_probes(&exec, &report, &mut supervisor).await,
            Err(e) => eprintln!("converge: {e}"),
        }
        if let Err(e) = update_endpoints(&mut store).await {
            eprintln!("endpoints: {e}");
        }
        if let Err(e) = sync_rules_locked(&exec, store.clone(), &node.minion).await {
            eprintln!("service rules: {e}");
        }
        match store.try_lead(&node.minion, heartbeat.lease).await {
            Ok(true) => {
                if !leading {
                    eprintln!("{} leads the cluster now", node.minion);
                    leading = true;
                }
                if let Err(e) = lead(&mut store).await {
                    eprintln!("leader: {e}");
                }
            }
            Ok(false) => leading = false,
            Err(e) => eprintln!("leader election: {e}"),
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// The leader's round: replace controller pods of minions that are not
/// ready, restore vanished replicas, and mark bare pods on such minions
/// Terminated (they are not moved).
async fn lead(store: &mut Store) -> Result<(), StoreError> {
    let snapshot = store.snapshot().await?;
    let state = &snapshot.state;
    let (plan, unfit) = plan_reconcile(state, &mut RandomNamer);
    for u in &unfit {
        eprintln!("leader: {u}");
    }
    if !plan.is_empty() {
        match store.commit(&snapshot, &plan.ops).await {
            Ok(()) => eprint!("leader:\n{}", plan.render()),
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
