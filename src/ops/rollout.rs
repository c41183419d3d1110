//! `kctl rollingupdate`: a controller's pods moved to a new template one
//! at a time, never below the replica count of pods that serve (see
//! `plan::rollout` for one step). A new pod that does not become ready
//! stops the update, and the pods replaced so far are rolled back the
//! same way.
//!
//! While it runs, the controller carries a mark in etcd on this
//! process's lease: `apply` refuses to change it and the leader leaves it
//! alone. If this kctl dies, the mark expires within 15 s and the leader
//! brings the controller back to the template etcd holds (the old one,
//! unless the update had finished).

use super::apply::commit_planned;
use super::Cluster;
use crate::events::{event, Subject};
use crate::model::{Kind, PodTemplate, ReplicationController};
use crate::plan::rollout::{self as steps, Readiness};
use crate::plan::{Action, Change, Op, Plan, PlanError, RandomNamer};
use crate::state::ClusterState;
use crate::store::{LeasedMark, Store, StoreError};
use crate::ui::{Task, Ui};
use miette::miette;
use std::time::{Duration, Instant};

/// How long a new pod must stay ready (same restart count) before an old
/// one goes: a container that starts and crashes looks ready for a moment.
const MIN_READY: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(250);
/// After the rules of every minion have forgotten a draining pod, how long
/// its connections in flight get to finish.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the controller's pods are to become.
#[derive(Clone)]
pub enum Target {
    /// The same template with another image for one container.
    Image {
        image: String,
        container: Option<String>,
    },
    /// A controller from a file, of the same id.
    Controller(ReplicationController),
}

#[derive(Debug, Clone, Copy)]
pub struct RolloutOptions {
    /// The pause between one pod's replacement and the next.
    pub update_period: Duration,
    /// How long a new pod may take to become ready.
    pub timeout: Duration,
}

/// The controller as it is to be after the update. Pure.
pub fn updated_controller(
    current: &ReplicationController,
    target: Target,
) -> miette::Result<ReplicationController> {
    match target {
        Target::Image { image, container } => {
            let containers = &current.template.spec.containers;
            let index = match (&container, containers.len()) {
                (Some(name), _) => {
                    containers
                        .iter()
                        .position(|c| &c.name == name)
                        .ok_or_else(|| {
                            miette!(
                                help = format!(
                                    "its containers: {}",
                                    containers
                                        .iter()
                                        .map(|c| c.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                                "the pod template of {} has no container {name:?}",
                                current.id
                            )
                        })?
                }
                (None, 1) => 0,
                (None, n) => {
                    return Err(super::usage_error(
                        &format!(
                            "the pod template of {} has {n} containers: name one with -c",
                            current.id
                        ),
                        "kctl rollingupdate rc ID --image IMAGE -c CONTAINER",
                    ))
                }
            };
            let mut updated = current.clone();
            updated.template.spec.containers[index].image = image;
            Ok(updated)
        }
        Target::Controller(new) => {
            if new.id != current.id {
                return Err(miette!(
                    help = "a rolling update keeps the controller's id; to run another controller, `kctl apply` it",
                    "the file holds replicationController {}, not {}",
                    new.id,
                    current.id
                ));
            }
            Ok(new)
        }
    }
}

fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "a workstation".into());
    format!("kctl of {user}@{host}, pid {}", std::process::id())
}

pub async fn rolling_update(
    ui: &Ui,
    name: &str,
    id: &str,
    target: Target,
    options: RolloutOptions,
) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let mut store = cluster.store().await?;
    let marked = mark_controller(&mut store, id, &who(), |rc| {
        let current = rc.ok_or_else(|| {
            miette!(
                help = "`kctl get rc` lists them",
                "replicationController {id:?} not found in cluster {name}"
            )
        })?;
        let wanted = updated_controller(current, target.clone())?;
        if wanted.template == current.template {
            if wanted != *current {
                return Err(miette!(
                    help = "`kctl apply -f FILE` changes the rest (a count, labels)",
                    "the pod template of {id} is unchanged: nothing to roll out, and the file's other changes are not applied"
                ));
            }
            return Ok(None);
        }
        Ok(Some((wanted.template.clone(), current.clone())))
    })
    .await?;
    let Some((mark, current)) = marked else {
        ui.out(format!(
            "replicationController {id} runs this template already: nothing to roll out"
        ));
        return Ok(());
    };
    // The controller cannot change while marked: this is what etcd holds.
    let wanted = updated_controller(&current, target.clone())?;
    let fields = crate::plan::fields::changes(&current.template, &wanted.template);
    let lines: Vec<String> = fields.iter().map(|f| format!("    {f}")).collect();
    ui.out(format!(
        "Rolling update of replicationController {id}, one pod at a time, {}s apart:\n{}",
        options.update_period.as_secs_f64(),
        lines.join("\n")
    ));
    record(&store, id, "RollingUpdate", "started".into()).await;
    match roll(
        ui,
        &cluster,
        &mut store,
        &mark,
        &current,
        &wanted.template,
        &options,
    )
    .await
    {
        Ok(replaced) => {
            let result = commit_planned(ui, &mut store, false, false, |s| {
                finish_plan(s, id, &target)
            })
            .await;
            mark.end().await;
            result?;
            let message = format!("finished: {replaced} pod(s) replaced");
            record(&store, id, "RollingUpdate", message.clone()).await;
            ui.out(format!(
                "replicationController {id} updated: {replaced} pod(s) replaced."
            ));
            Ok(())
        }
        Err(failure) => {
            ui.warn(format!("{failure}; rolling back to the previous template"));
            record(
                &store,
                id,
                "RollingUpdate",
                format!("failed: {failure}; rolling back"),
            )
            .await;
            let back = roll(
                ui,
                &cluster,
                &mut store,
                &mark,
                &current,
                &current.template,
                &options,
            )
            .await;
            mark.end().await;
            match back {
                Ok(_) => {
                    record(&store, id, "RolledBack", "every pod runs the previous template".into())
                        .await;
                    Err(miette!(
                        help = format!("`kctl describe rc {id}` shows its events; `kctl logs POD` what the new pods said"),
                        "rolling update of {id} failed: {failure}; rolled back, every pod runs the previous template"
                    ))
                }
                Err(again) => Err(miette!(
                    help = format!("`kctl describe rc {id}` shows its pods; run the rolling update again, or `kctl apply` the controller"),
                    "rolling update of {id} failed: {failure}; the rollback failed too: {again}"
                )),
            }
        }
    }
}

/// Moves every pod off the `leaving` minions, which get no new pods
/// from now on: a controller's pods one at a time, each replacement
/// ready before the old pod is drained and removed (under the
/// controller's rolling-update mark, so the leader does not count the
/// extra pod as surplus); a bare pod is drained, then deleted and put
/// elsewhere under its id in one commit. Returns the cordons, to be held
/// until the minions are gone. On failure the minions stay, back in
/// service.
pub async fn evacuate(
    ui: &Ui,
    cluster: &Cluster,
    leaving: &[String],
) -> miette::Result<LeasedMark> {
    let mut store = cluster.store().await?;
    let cordons = store.cordon(leaving).await?;
    match move_all(ui, cluster, &mut store, &cordons, leaving).await {
        Ok(()) => Ok(cordons),
        Err(e) => {
            cordons.end().await;
            Err(e)
        }
    }
}

async fn move_all(
    ui: &Ui,
    cluster: &Cluster,
    store: &mut Store,
    cordons: &LeasedMark,
    leaving: &[String],
) -> miette::Result<()> {
    let options = RolloutOptions {
        update_period: Duration::ZERO,
        timeout: Duration::from_secs(120),
    };
    let on_leaving = |p: &crate::state::PodRecord| leaving.contains(&p.host);
    let cordoned = || {
        if cordons.holds() {
            Ok(())
        } else {
            Err("the minions' cordons in etcd were lost (is etcd reachable?)".to_string())
        }
    };
    let state = store.snapshot().await?.state;
    // All or nothing: every pod must have a place before the first moves.
    steps::plan_evacuation(&state, &mut RandomNamer).map_err(|e| {
        miette!(
            help = "the minions stay; fewer replicas or no hostPort would make room",
            "the pods of {} do not fit on the other minions:\n{e}",
            leaving.join(", ")
        )
    })?;
    let controllers: std::collections::BTreeSet<String> = state
        .pods
        .values()
        .filter(|p| on_leaving(p))
        .filter_map(|p| p.owner.clone())
        .collect();
    for id in controllers {
        let by = format!("{} moving pods off {}", who(), leaving.join(", "));
        let marked = mark_controller(store, &id, &by, |rc| {
            Ok(rc.map(|rc| (rc.template.clone(), rc.clone())))
        })
        .await?;
        let Some((mark, rc)) = marked else {
            continue;
        };
        let moved = async {
            loop {
                cordoned()?;
                let state = snapshot(store).await?;
                // A move stopped half-way left its old pod draining; its
                // replacement was ready before the drain began.
                let drained: Vec<String> = state
                    .pods_owned_by(&id)
                    .filter(|p| on_leaving(p) && p.draining)
                    .map(|p| p.pod.id.clone())
                    .collect();
                for pod in &drained {
                    drain_and_remove(ui, store, pod).await?;
                }
                let Some(old) = state
                    .pods_owned_by(&id)
                    .find(|p| on_leaving(p) && !p.draining)
                    .map(|p| (p.pod.id.clone(), p.host.clone()))
                else {
                    return Ok::<(), String>(());
                };
                let task = ui.task(format!("moving pod {} off {}", old.0, old.1));
                // No room for both at once (a writable disk, host ports):
                // the old pod goes first, one short meanwhile.
                let in_place = matches!(
                    steps::plan_surge(&state, &rc, &rc.template, None, &mut RandomNamer),
                    Err(PlanError::Unschedulable(_))
                );
                if in_place {
                    drain_and_remove(ui, store, &old.0).await?;
                }
                let from = in_place.then_some(old.1.as_str());
                match add_pod(
                    ui,
                    cluster,
                    store,
                    &rc,
                    &rc.template,
                    &options,
                    &task,
                    "",
                    from,
                )
                .await
                {
                    Ok(new) => {
                        if !in_place {
                            drain_and_remove(ui, store, &old.0).await?;
                        }
                        task.done(format!(
                            "pod {} of {id} moved off {}: {new} serves instead",
                            old.0, old.1
                        ));
                    }
                    Err(why) => {
                        task.fail(format!("pod {} could not move", old.0));
                        return Err(why);
                    }
                }
            }
        }
        .await;
        mark.end().await;
        moved.map_err(|why| {
            miette!(
                help = "the minions stay; `kctl get minions` and `kctl describe rc` show why",
                "cannot move the pods of {id} off {}: {why}",
                leaving.join(", ")
            )
        })?;
    }
    let state = store.snapshot().await?.state;
    let bare: Vec<crate::state::PodRecord> = state
        .pods
        .values()
        .filter(|p| on_leaving(p) && p.owner.is_none())
        .cloned()
        .collect();
    for pod in bare {
        cordoned().map_err(|e| miette!("{e}"))?;
        let task = ui.task(format!("moving pod {} off {}", pod.pod.id, pod.host));
        // Room first: a pod is drained only if it can go somewhere.
        steps::plan_move(
            &snapshot(store).await.map_err(|e| miette!("{e}"))?,
            &pod.pod.id,
        )
        .map_err(|e| miette!("pod {} has no place to go: {e}", pod.pod.id))?;
        drain(ui, store, &pod.pod.id)
            .await
            .map_err(|e| miette!("{e}"))?;
        // Deleted and put elsewhere in one commit: no moment without it.
        let moved = commit_planned(ui, store, false, false, |s| {
            steps::plan_move(s, &pod.pod.id)
        })
        .await;
        let plan = match moved {
            Ok((plan, _)) => plan,
            Err(e) => {
                // Back into service where it runs.
                let _ = commit_planned(ui, store, false, false, |s| {
                    Ok(s.pods
                        .get(&pod.pod.id)
                        .filter(|p| p.draining)
                        .map(steps::plan_undrain)
                        .unwrap_or_default())
                })
                .await;
                task.fail(format!("pod {} could not move", pod.pod.id));
                return Err(e);
            }
        };
        let to = plan.ops.iter().find_map(|op| match op {
            Op::PutPod(p) => Some(p.host.clone()),
            _ => None,
        });
        if !pod.pod.spec.disks().is_empty() {
            let minions = std::iter::once(pod.host.clone())
                .chain(to.clone())
                .collect();
            super::disks::follow_pods(ui, cluster, store, &minions)
                .await
                .map_err(|e| miette!("{e}"))?;
        }
        task.done(format!(
            "pod {} moved off {} (started again on {})",
            pod.pod.id,
            pod.host,
            to.as_deref().unwrap_or("another minion")
        ));
    }
    Ok(())
}

/// The controller as the update leaves it, planned against the state at
/// the end (a file may change more than the template, e.g. the count):
/// `--image` sets the image in what etcd holds then; a file replaces the
/// controller as written. The mark kept others from changing it; if it
/// was lost and the controller went or lost the container, that is an
/// error rather than a silent success.
fn finish_plan(state: &ClusterState, id: &str, target: &Target) -> Result<Plan, PlanError> {
    let now = state
        .controllers
        .get(id)
        .ok_or_else(|| PlanError::NotFound {
            kind: Kind::ReplicationController,
            id: id.to_string(),
        })?;
    let wanted =
        updated_controller(now, target.clone()).map_err(|e| PlanError::ChangedDuringRollout {
            controller: id.to_string(),
            why: e.to_string(),
        })?;
    if wanted == *now {
        return Ok(Plan::default());
    }
    Ok(Plan {
        changes: vec![Change {
            kind: Kind::ReplicationController,
            id: wanted.id.clone(),
            action: Action::Update,
            detail: "the new pod template".into(),
            pods: vec![],
            fields: crate::plan::fields::changes(now, &wanted),
        }],
        ops: vec![Op::PutController(wanted)],
        unchanged: 0,
    })
}

/// Takes the rolling-update mark of controller `id` against a fresh
/// snapshot, read again while other commits land in between. `decide`
/// sees the controller as it is then and returns the template its pods
/// are to get, with what the caller keeps of it, or `None` for nothing
/// to do (no mark taken).
async fn mark_controller<T>(
    store: &mut Store,
    id: &str,
    by: &str,
    decide: impl Fn(Option<&ReplicationController>) -> miette::Result<Option<(PodTemplate, T)>>,
) -> miette::Result<Option<(LeasedMark, T)>> {
    for _ in 0..super::apply::COMMIT_ATTEMPTS {
        let base = store.snapshot().await?;
        let Some((to, kept)) = decide(base.state.controllers.get(id))? else {
            return Ok(None);
        };
        let rollout = crate::state::Rollout {
            to,
            by: by.to_string(),
            since: crate::output::unix_now(),
        };
        match store.begin_rollout(&base, id, &rollout).await {
            Ok(mark) => return Ok(Some((mark, kept))),
            Err(StoreError::Conflict) => super::apply::conflict_pause().await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

async fn record(store: &Store, rc: &str, reason: &str, message: String) {
    let _ = store
        .record_events(&[event(Subject::ReplicationController, rc, reason, message)])
        .await;
}

/// Replaces every pod of `rc` not of template `to`, one at a time.
/// Returns how many; a failure says which pod and why.
async fn roll(
    ui: &Ui,
    cluster: &Cluster,
    store: &mut Store,
    mark: &LeasedMark,
    rc: &ReplicationController,
    to: &PodTemplate,
    options: &RolloutOptions,
) -> Result<usize, String> {
    let mut replaced = 0;
    loop {
        if !mark.holds() {
            return Err("the update's mark in etcd was lost (is etcd reachable?)".into());
        }
        let state = snapshot(store).await?;
        // A step stopped half-way leaves a pod draining: it goes first.
        let draining: Vec<String> = state
            .pods_owned_by(&rc.id)
            .filter(|p| p.draining)
            .map(|p| p.pod.id.clone())
            .collect();
        for pod in draining {
            drain_and_remove(ui, store, &pod).await?;
        }
        let state = snapshot(store).await?;
        let todo = steps::pods_to_replace(&state, &rc.id, to);
        let Some((old, old_host)) = todo.first().map(|p| (p.pod.id.clone(), p.host.clone())) else {
            // A pod replaced in place whose successor failed leaves the
            // controller short: make it whole again.
            while snapshot(store).await?.pods_owned_by(&rc.id).count() < rc.replicas as usize {
                let task = ui.task(format!("adding a pod to {}", rc.id));
                match add_pod(ui, cluster, store, rc, to, options, &task, "", None).await {
                    Ok(new) => task.done(format!("pod {new} ready and serving")),
                    Err(why) => {
                        task.fail(format!("no pod of {} became ready", rc.id));
                        return Err(why);
                    }
                }
            }
            return Ok(replaced);
        };
        let step = format!("[{}/{}]", replaced + 1, replaced + todo.len());
        let task = ui.task(format!("{step} replacing pod {old}"));
        // With no room for one more pod (host ports taken everywhere), the
        // old pod goes first and the service runs one short meanwhile.
        // (So does a pod writing a persistent disk: GCE attaches it
        // read-write to one instance, for one pod.)
        let in_place = matches!(
            steps::plan_surge(&state, rc, to, None, &mut RandomNamer),
            Err(PlanError::Unschedulable(_))
        );
        if in_place {
            ui.note(format!(
                "  no minion has room for one more pod of {}: replacing {old} in place, one pod short meanwhile",
                rc.id
            ));
            drain_and_remove(ui, store, &old).await?;
        }
        // In place, on its minion when it fits there (a disk stays put).
        let stay = in_place.then_some(old_host.as_str());
        let new = match add_pod(ui, cluster, store, rc, to, options, &task, &step, stay).await {
            Ok(new) => new,
            Err(why) => {
                task.fail(format!("{step} no pod of the template became ready"));
                return Err(why);
            }
        };
        if !in_place {
            task.set(format!("{step} pod {new} ready; draining {old}"));
            drain_and_remove(ui, store, &old).await?;
        }
        task.done(format!(
            "{step} pod {new} ready and serving; pod {old} removed"
        ));
        replaced += 1;
        let state = snapshot(store).await?;
        if !steps::pods_to_replace(&state, &rc.id, to).is_empty() {
            tokio::time::sleep(options.update_period).await;
        }
    }
}

/// Adds one pod of template `to` to `rc` and waits until it is ready;
/// one that does not become ready is removed again, and the reason
/// returned.
#[allow(clippy::too_many_arguments)]
async fn add_pod(
    ui: &Ui,
    cluster: &Cluster,
    store: &mut Store,
    rc: &ReplicationController,
    to: &PodTemplate,
    options: &RolloutOptions,
    task: &Task,
    step: &str,
    replaced_on: Option<&str>,
) -> Result<String, String> {
    let (plan, _) = commit_planned(ui, store, false, false, |s| {
        steps::plan_surge(s, rc, to, replaced_on, &mut RandomNamer)
    })
    .await
    .map_err(|e| format!("no place for a pod of the template: {e}"))?;
    let Some((new, host)) = plan.ops.iter().find_map(|op| match op {
        Op::PutPod(p) => Some((p.pod.id.clone(), p.host.clone())),
        _ => None,
    }) else {
        return Err("the plan made no pod".into());
    };
    // A disk the pod uses follows it from the minion of the pod it
    // replaces (the helpers have no gcloud).
    if !to.spec.disks().is_empty() {
        let minions = std::iter::once(host.clone())
            .chain(replaced_on.map(str::to_string))
            .collect();
        // What went wrong shows; whether the pod serves is the wait's to say
        // (and a pod that does not is removed below).
        if let Err(why) = super::disks::follow_pods(ui, cluster, store, &minions).await {
            ui.note(format!("  {why}"));
        }
    }
    task.set(format!(
        "{step} pod {new} on {host}: waiting until it is ready"
    ));
    if let Err(why) = wait_ready(store, &new, options.timeout, task, step).await {
        task.set(format!(
            "{step} pod {new} on {host} did not become ready: removing it"
        ));
        // What the minion said about it, if anything: a failed start, a
        // failing probe.
        let said = store
            .events(Some(Subject::Pod), Some(&new))
            .await
            .unwrap_or_default()
            .into_iter()
            .rev()
            .find(|e| matches!(e.reason.as_str(), "Failed" | "Unhealthy" | "Restarted"))
            .map(|e| format!(" ({}: {})", e.reason, e.message))
            .unwrap_or_default();
        // The failed pod goes; the others still serve.
        drain_and_remove(ui, store, &new).await?;
        return Err(format!(
            "pod {new} did not become ready within {}s: {why}{said}",
            options.timeout.as_secs()
        ));
    }
    Ok(new)
}

async fn snapshot(store: &mut Store) -> Result<ClusterState, String> {
    store
        .snapshot()
        .await
        .map(|s| s.state)
        .map_err(|e| e.to_string())
}

/// Waits until `pod` is ready and stays so for [`MIN_READY`] without a
/// restart; the last reason it was not, if it never is.
async fn wait_ready(
    store: &mut Store,
    pod: &str,
    timeout: Duration,
    task: &Task,
    step: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut ready_since: Option<(Instant, u32)> = None;
    let mut last = String::from("it never started");
    loop {
        let state = snapshot(store).await?;
        let restarts: u32 = state
            .statuses
            .get(pod)
            .map_or(0, |s| s.containers.iter().map(|c| c.restart_count).sum());
        match steps::readiness(&state, pod) {
            Readiness::Ready => match ready_since {
                Some((since, count)) if count == restarts => {
                    if since.elapsed() >= MIN_READY {
                        return Ok(());
                    }
                }
                _ => ready_since = Some((Instant::now(), restarts)),
            },
            Readiness::NotYet(why) => {
                task.set(format!("{step} {why}"));
                last = why;
                ready_since = None;
            }
            Readiness::Failed(why) => return Err(why),
        }
        if Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Takes `pod` out of its services, waits until every minion's rules
/// have forgotten it (and a moment for connections in flight), then
/// deletes it.
async fn drain_and_remove(ui: &Ui, store: &mut Store, pod: &str) -> Result<(), String> {
    drain(ui, store, pod).await?;
    commit_planned(ui, store, false, false, |s| Ok(steps::plan_remove(s, pod)))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Takes `pod` out of its services and waits until every minion's rules
/// have forgotten it, and a moment for connections in flight; it still
/// runs.
async fn drain(ui: &Ui, store: &mut Store, pod: &str) -> Result<(), String> {
    let state = snapshot(store).await?;
    let Some(record) = state.pods.get(pod).cloned() else {
        return Ok(());
    };
    if !record.draining {
        commit_planned(ui, store, false, false, |s| {
            Ok(match s.pods.get(pod) {
                Some(p) => steps::plan_drain(p),
                None => Plan::default(),
            })
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let state = snapshot(store).await?;
        if steps::drained(&state, pod) {
            break;
        }
        if Instant::now() > deadline {
            ui.warn(format!(
                "pod {pod} still in some minion's rules after {}s: removing it anyway",
                DRAIN_TIMEOUT.as_secs()
            ));
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    tokio::time::sleep(DRAIN_GRACE).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, Labels, PodSpec};

    fn rc(containers: &[&str]) -> ReplicationController {
        ReplicationController {
            id: "web".into(),
            labels: Labels::new(),
            replicas: 2,
            selector: Labels::new(),
            template: PodTemplate {
                labels: Labels::new(),
                spec: PodSpec {
                    containers: containers
                        .iter()
                        .map(|n| Container {
                            name: n.to_string(),
                            image: "v1".into(),
                            ..Container::default()
                        })
                        .collect(),
                    ..PodSpec::default()
                },
            },
        }
    }

    fn image(image: &str, container: Option<&str>) -> Target {
        Target::Image {
            image: image.into(),
            container: container.map(str::to_string),
        }
    }

    #[test]
    fn the_finish_applies_the_target_to_the_controller_as_etcd_holds_it_then() {
        let mut state = ClusterState::default();
        let mut now = rc(&["web"]);
        now.replicas = 5; // changed since the update read it
        state.controllers.insert("web".into(), now);
        let plan = finish_plan(&state, "web", &image("v2", None)).unwrap();
        let [Op::PutController(finished)] = plan.ops.as_slice() else {
            panic!("{plan:?}");
        };
        assert_eq!(finished.replicas, 5);
        assert_eq!(finished.template.spec.containers[0].image, "v2");
        // Already so: nothing to write.
        state.controllers.insert("web".into(), finished.clone());
        assert!(finish_plan(&state, "web", &image("v2", None))
            .unwrap()
            .is_empty());
        // Gone, or no longer holding the container: an error, not a
        // silent success.
        assert!(matches!(
            finish_plan(&state, "web", &image("v2", Some("log"))),
            Err(PlanError::ChangedDuringRollout { .. })
        ));
        assert!(matches!(
            finish_plan(&ClusterState::default(), "web", &image("v2", None)),
            Err(PlanError::NotFound { .. })
        ));
    }

    #[test]
    fn the_image_goes_to_the_only_or_the_named_container() {
        let one = updated_controller(&rc(&["web"]), image("v2", None)).unwrap();
        assert_eq!(one.template.spec.containers[0].image, "v2");
        let two = updated_controller(&rc(&["web", "log"]), image("v2", Some("log"))).unwrap();
        assert_eq!(two.template.spec.containers[0].image, "v1");
        assert_eq!(two.template.spec.containers[1].image, "v2");
        let ambiguous = updated_controller(&rc(&["web", "log"]), image("v2", None)).unwrap_err();
        assert!(crate::cli::is_usage_error(&ambiguous));
        assert!(updated_controller(&rc(&["web"]), image("v2", Some("db"))).is_err());
        let other = ReplicationController {
            id: "api".into(),
            ..rc(&["web"])
        };
        assert!(updated_controller(&rc(&["web"]), Target::Controller(other)).is_err());
    }
}
