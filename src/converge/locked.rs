//! A minion's converge as `kctl apply` and `kctl-node` both run it: under
//! the minion's etcd lock, from state read after the lock was taken, so
//! concurrent kctl processes (and the node helper) never interleave on one
//! minion. The results go back to the store.

use super::engine::ContainerEngine;
use super::error::{ConvergeError, MinionStage, StoreStage};
use super::event::{ConvergeEvent, EventSink, Tee};
use super::executor::{self, MinionReport};
use super::{RunContext, Supervisor};
use crate::exec::Exec;
use crate::services::{self, rules};
use crate::state::{ClusterState, Endpoint, PodStatus};
use crate::store::Store;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Takes `minion`'s lock, reads the cluster's state, runs `work` on it with
/// a store of its own, and releases the lock whatever `work` came to.
pub async fn with_minion_locked<T, F, Fut>(
    store: &Store,
    minion: &str,
    work: F,
) -> Result<T, ConvergeError>
where
    F: FnOnce(Store, ClusterState) -> Fut,
    Fut: Future<Output = Result<T, ConvergeError>>,
{
    let lock = store
        .lock_minion(minion)
        .await
        .map_err(ConvergeError::store(Some(minion), StoreStage::Lock))?;
    let result = async {
        let mut store = store.clone();
        // A helper's copy of the state must hold what the lock's last
        // holder committed (an apply that started pods here).
        store
            .sync_copy()
            .await
            .map_err(ConvergeError::store(Some(minion), StoreStage::Snapshot))?;
        let state = store
            .snapshot()
            .await
            .map_err(ConvergeError::store(Some(minion), StoreStage::Snapshot))?
            .state;
        work(store, state).await
    }
    .await;
    lock.release().await;
    result
}

/// The cluster's state as `store` reads it (a helper: from its copy).
async fn state_of(store: &Store, minion: &str) -> Result<ClusterState, ConvergeError> {
    Ok(store
        .clone()
        .snapshot()
        .await
        .map_err(ConvergeError::store(Some(minion), StoreStage::Snapshot))?
        .state)
}

/// The report of a converge of `minion` that would find nothing to do: no
/// container to start, remove or restart, and every status as recorded.
/// It only reads (the state as `store` has it, the containers as `engine`
/// lists them), so it takes no lock, and an idle helper's round costs etcd
/// nothing. None when there is work, which `converge_locked` then does
/// from state read under the lock. A copy of the state that lags a commit
/// only puts the work off to the round that commit wakes.
pub async fn settled<D: ContainerEngine>(
    engine: &D,
    ctx: &RunContext,
    store: &Store,
    minion: &str,
    supervisor: &Supervisor,
) -> Result<Option<MinionReport>, ConvergeError> {
    let state = state_of(store, minion).await?;
    let observed = engine
        .observe(&ctx.cluster)
        .await
        .map_err(ConvergeError::engine(minion, MinionStage::Observe))?;
    Ok(settled_report(&state, minion, &observed, supervisor))
}

/// `settled`'s judgement (pure): the report of a converge with nothing to
/// do, or None.
pub fn settled_report(
    state: &ClusterState,
    minion: &str,
    observed: &[super::docker::Observed],
    supervisor: &Supervisor,
) -> Option<MinionReport> {
    let desired: Vec<_> = state.pods_on(minion).cloned().collect();
    if !super::plan::steps(&desired, observed).is_empty() {
        return None;
    }
    let mut statuses = super::plan::statuses(&desired, observed, supervisor);
    for (pod, status) in statuses.iter_mut() {
        if let Some(old) = state.statuses.get(pod) {
            keep_what_this_process_cannot_see(status, old);
        }
    }
    if statuses
        .iter()
        .any(|(pod, status)| state.statuses.get(pod) != Some(status))
    {
        return None;
    }
    Some(MinionReport {
        statuses,
        desired,
        ..MinionReport::default()
    })
}

/// Converges one minion's containers under its lock, from desired state read
/// after the lock was taken, and records the statuses it observed.
#[allow(clippy::too_many_arguments)]
pub async fn converge_locked<D: ContainerEngine, E: Exec>(
    engine: &D,
    exec: &E,
    ctx: &RunContext,
    store: &Store,
    minion: &str,
    wait: Duration,
    supervisor: &mut Supervisor,
    events: &dyn EventSink,
) -> Result<MinionReport, ConvergeError> {
    with_minion_locked(store, minion, |mut store, state| async move {
        let desired: Vec<_> = state.pods_on(minion).cloned().collect();
        let ctx = RunContext {
            service_env: services::service_env(state.services.values()),
            ..ctx.clone()
        };
        let tee = Tee::new(events);
        let converged =
            executor::converge_minion(engine, exec, &ctx, &desired, wait, supervisor, &tee).await;
        record(&store, tee.kept.take(), events).await;
        let mut report = converged?;
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
        let mut restarts = Vec::new();
        for (pod, status) in changed {
            store
                .put_status(pod, status)
                .await
                .map_err(ConvergeError::store(Some(minion), StoreStage::Statuses))?;
            restarts.extend(crate::events::of_status(
                pod,
                state.statuses.get(pod),
                status,
            ));
            events.emit(ConvergeEvent::StatusRecorded {
                minion: minion.to_string(),
                pod: pod.clone(),
                phase: status.phase.as_str(),
            });
        }
        if let Err(e) = store.record_events(&restarts).await {
            events.emit(ConvergeEvent::EventsNotRecorded {
                message: e.to_string(),
            });
        }
        Ok(report)
    })
    .await
}

/// Brings a minion's service rules up to date under its lock; true if they
/// had to be rewritten. The digest recorded in etcd says what was last
/// written; `rewrite` writes them whatever it says (a helper's first round
/// after a reboot, which wipes the table but not the record).
pub async fn sync_rules_locked<E: Exec>(
    exec: &E,
    store: &Store,
    minion: &str,
    rewrite: bool,
    events: &dyn EventSink,
) -> Result<bool, ConvergeError> {
    // Most rounds find the rules as recorded: that needs no lock.
    if !rewrite {
        let state = state_of(store, minion).await?;
        let portals = rules::portals(&state, &services::endpoints(&state));
        if state.rule_digests.get(minion) == Some(&rules::digest(&portals)) {
            return Ok(false);
        }
    }
    with_minion_locked(store, minion, |mut store, state| async move {
        let portals = rules::portals(&state, &services::endpoints(&state));
        let digest = rules::digest(&portals);
        if !rewrite && state.rule_digests.get(minion) == Some(&digest) {
            return Ok(false);
        }
        executor::sync_rules(exec, &portals).await?;
        store
            .put_rule_digest(minion, &digest)
            .await
            .map_err(ConvergeError::store(Some(minion), StoreStage::RuleDigest))?;
        events.emit(ConvergeEvent::RulesSynced {
            minion: minion.to_string(),
        });
        Ok(true)
    })
    .await
}

/// Recomputes every service's endpoints from a fresh snapshot and records
/// those that changed; returns the snapshot's state and the endpoints.
pub async fn update_endpoints(
    store: &mut Store,
    events: &dyn EventSink,
) -> Result<(ClusterState, BTreeMap<String, Vec<Endpoint>>), ConvergeError> {
    let state = store
        .snapshot()
        .await
        .map_err(ConvergeError::store(None, StoreStage::Snapshot))?
        .state;
    let endpoints = services::endpoints(&state);
    let tee = Tee::new(events);
    let events = &tee;
    for (service, eps) in &endpoints {
        if state.endpoints.get(service) != Some(eps) {
            store
                .put_endpoints(service, eps)
                .await
                .map_err(ConvergeError::store(None, StoreStage::Endpoints))?;
            events.emit(ConvergeEvent::EndpointsChanged {
                service: service.clone(),
                endpoints: eps.len(),
            });
        }
    }
    record(store, tee.kept.take(), tee.inner).await;
    Ok((state, endpoints))
}

/// Records in etcd the events worth keeping of those given; a failure
/// to record is itself an event, and fails nothing.
pub async fn record(store: &Store, happened: Vec<ConvergeEvent>, events: &dyn EventSink) {
    let recorded: Vec<_> = happened
        .iter()
        .filter_map(crate::events::of_converge)
        .collect();
    if let Err(e) = store.record_events(&recorded).await {
        events.emit(ConvergeEvent::EventsNotRecorded {
            message: e.to_string(),
        });
    }
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
