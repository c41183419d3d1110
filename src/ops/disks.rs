//! Persistent disks on GCE clusters, around converging the minions: as
//! v0.5's kubelet had its GCE provider attach a pod's `persistentDisk` to
//! the pod's minion before the pod started and detach it once no pod
//! there used it, here the workstation does, for the pods in etcd:
//!
//! 1. attaches every wanted disk nothing stands in the way of;
//! 2. converges the minions (those whose disk waits for a detach elsewhere
//!    are left for step 4, so their pods do not fail first, unless two
//!    minions wait for each other);
//! 3. detaches what no pod wants from minions that converged and run no
//!    pod of the disk any more, or whose instance is not running (a
//!    minion that did not answer keeps its disks until it does);
//! 4. attaches what waited, and converges those minions.
//!
//! Only disks pods name, before or after the change, on the record's
//! minions, are touched; a step that fails fails the command. Nothing
//! happens, and no gcloud call is made, on other providers or when no pod
//! before or after uses a disk. A pod the helper reschedules
//! onto another minion (its own went down) waits for its disk until the
//! next `kctl apply`: the helper has no gcloud.

use super::converge::{converge_minions, ConvergeOutcome};
use super::Cluster;
use crate::converge::disk_volumes::{block_devices, device_path};
use crate::model::Object;
use crate::plan::Op;
use crate::provider::gce::disks::{self, Attachment, DiskStep};
use crate::provider::gce::{GcloudProcess, Names};
use crate::state::ClusterState;
use crate::store::Store;
use crate::ui::Ui;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a minion may take to show a disk just attached: GCE's call
/// returns once the disk is attached, udev links the device after.
const DEVICE_WAIT: Duration = Duration::from_secs(30);

/// Whether any pod of `state` uses a persistent disk (pure).
pub fn uses_disks(state: &ClusterState) -> bool {
    state.pods.values().any(|p| !p.pod.spec.disks().is_empty())
}

/// The attachments the pods of `state` want (pure): per disk and minion
/// instance, read-only when every use there is.
pub fn wanted(state: &ClusterState, names: &Names) -> Vec<Attachment> {
    let mut modes: BTreeMap<(String, String), bool> = BTreeMap::new();
    for record in state.pods.values() {
        let Some(instance) = names.minion_instance(&record.host) else {
            continue;
        };
        for used in record.pod.spec.disks() {
            let read_only = modes
                .entry((used.disk.clone(), instance.clone()))
                .or_insert(true);
            *read_only &= used.read_only;
        }
    }
    modes
        .into_iter()
        .map(|((disk, instance), read_only)| Attachment {
            disk,
            instance,
            read_only,
        })
        .collect()
}

/// The pods of `state` once `ops` are committed (pure): what `apply
/// --dry-run` shows the disk steps for.
pub fn pods_after(state: &ClusterState, ops: &[Op]) -> ClusterState {
    let mut after = ClusterState {
        pods: state.pods.clone(),
        ..ClusterState::default()
    };
    for op in ops {
        match op {
            Op::PutPod(record) => {
                after.pods.insert(record.pod.id.clone(), record.clone());
            }
            Op::DeletePod(id) => {
                after.pods.remove(id);
            }
            _ => {}
        }
    }
    after
}

/// The disk steps a plan that leaves the pods of `after` would take, as
/// `apply --dry-run` prints them (one `instances list`; none when no pod
/// before or after uses a disk). GCE only.
pub async fn show_planned(
    ui: &Ui,
    cluster: &Cluster,
    before: &ClusterState,
    after: &ClusterState,
) -> miette::Result<()> {
    let Some(record) = &cluster.config.gce else {
        return Ok(());
    };
    if !uses_disks(before) && !uses_disks(after) {
        return Ok(());
    }
    let names = Names::new(&cluster.dir.name, &record.zone)?;
    let g = GcloudProcess::new();
    let minions = super::load_balancers::minion_instances(cluster, &names);
    let mut ours = disk_names(before);
    ours.extend(disk_names(after));
    let mut found = disks::discover(&g, &record.project, &names)
        .await?
        .attachments;
    found.retain(|a| ours.contains(&a.disk) && minions.contains(&a.instance));
    let plan = disks::plan(&wanted(after, &names), &found);
    if !plan.is_empty() {
        show(ui, &record.project, &names, &plan);
    }
    Ok(())
}

/// The plan's disk steps, as part of the plan printed.
fn show(ui: &Ui, project: &str, names: &Names, plan: &disks::DiskPlan) {
    let lines: Vec<String> = plan.steps().map(|s| format!("  {}", s.line())).collect();
    ui.out(format!(
        "Disks (GCE {project}, {}):\n{}",
        names.zone,
        lines.join("\n")
    ));
}

/// The disks `objects` use (pure).
fn named_disks(objects: &[Object]) -> BTreeSet<String> {
    objects
        .iter()
        .flat_map(|o| match o {
            Object::Pod(p) => p.spec.disks(),
            Object::ReplicationController(rc) => rc.template.spec.disks(),
            Object::Service(_) => vec![],
        })
        .map(|d| d.disk)
        .collect()
}

/// Refuses, before anything changes, disks that cannot serve the
/// cluster: missing in its zone, or attached outside it. One `describe`
/// per disk the files name; none without.
pub async fn check(cluster: &Cluster, objects: &[Object]) -> miette::Result<()> {
    let Some(record) = &cluster.config.gce else {
        return Ok(());
    };
    let disk_names = named_disks(objects);
    if disk_names.is_empty() {
        return Ok(());
    }
    let names = Names::new(&cluster.dir.name, &record.zone)?;
    let instances = super::load_balancers::minion_instances(cluster, &names);
    let g = GcloudProcess::new();
    let mut problems = vec![];
    for disk in &disk_names {
        let facts = disks::describe(&g, &record.project, &names, disk).await?;
        if let Some(why) = disks::disk_problem(facts.as_ref(), &names, &instances) {
            problems.push(format!("persistent disk {disk} {why}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(miette::miette!(
            help = "nothing was changed",
            "{}",
            problems.join("\n")
        ))
    }
}

/// The minions whose disk is still attached to another instance (pure):
/// they wait for its detach, so their pods do not fail first; unless
/// that instance's minion waits too (two pods trading places), or it is
/// the same instance (a mode change): then they converge at once.
fn waiting_minions(
    plan: &disks::DiskPlan,
    found: &[Attachment],
    minion_of: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let blocked: BTreeMap<String, Vec<String>> = plan
        .attach_later
        .iter()
        .filter_map(|step| {
            let DiskStep::Attach(a) = step else {
                return None;
            };
            let by: Vec<String> = found
                .iter()
                .filter(|f| f.disk == a.disk && f.instance != a.instance)
                .filter_map(|f| minion_of.get(&f.instance).cloned())
                .collect();
            Some((minion_of.get(&a.instance)?.clone(), by))
        })
        .filter(|(_, by)| !by.is_empty())
        .collect();
    blocked
        .iter()
        .filter(|(_, by)| by.iter().all(|b| !blocked.contains_key(b)))
        .map(|(m, _)| m.clone())
        .collect()
}

/// The disks the pods of `state` use (pure).
pub fn disk_names(state: &ClusterState) -> BTreeSet<String> {
    state
        .pods
        .values()
        .flat_map(|p| p.pod.spec.disks())
        .map(|d| d.disk)
        .collect()
}

/// [`converge_minions`], with the disks of a GCE cluster attached and
/// detached around it (the module's steps). `disks_before`: the disks
/// pods used before the change being converged (one may need a detach
/// though no pod uses it now). Only those disks, and those the pods use
/// now, on the record's minions, are kctl's to touch.
pub async fn converge_with_disks(
    ui: &Ui,
    cluster: &Cluster,
    store: &Store,
    minions: &BTreeSet<String>,
    refresh: bool,
    disks_before: &BTreeSet<String>,
) -> miette::Result<ConvergeOutcome> {
    let Some(record) = &cluster.config.gce else {
        return converge_minions(ui, cluster, store, minions, refresh).await;
    };
    let state = store.clone().snapshot().await?.state;
    let mut ours = disk_names(&state);
    ours.extend(disks_before.iter().cloned());
    if ours.is_empty() {
        return converge_minions(ui, cluster, store, minions, refresh).await;
    }
    let names = Names::new(&cluster.dir.name, &record.zone)?;
    let project = record.project.as_str();
    let g = GcloudProcess::new();
    let minion_of: BTreeMap<String, String> = cluster
        .config
        .minions
        .iter()
        .filter_map(|m| Some((names.minion_instance(&m.id)?, m.id.clone())))
        .collect();
    let judge = |mut d: disks::Discovered| {
        d.attachments
            .retain(|a| ours.contains(&a.disk) && minion_of.contains_key(&a.instance));
        d
    };
    let want = wanted(&state, &names);
    let found = judge(disks::discover(&g, project, &names).await?);
    let plan = disks::plan(&want, &found.attachments);
    if plan.is_empty() {
        return converge_minions(ui, cluster, store, minions, refresh).await;
    }
    show(ui, project, &names, &plan);
    let minion = |step: &DiskStep| minion_of.get(step.instance()).cloned();
    let waiting = waiting_minions(&plan, &found.attachments, &minion_of);
    let mut first: BTreeSet<String> = minions.clone();
    // (A minion that is down is not tried.)
    first.extend(plan.steps().filter_map(minion).filter(|m| state.ready(m)));
    first.retain(|m| !waiting.contains(m));

    let mut failed = vec![];
    if !plan.attach_now.is_empty() {
        let task = ui.task("attaching disks");
        let progress = |line: &str| task.set(line.to_string());
        let results = disks::run(&g, project, &names, &plan.attach_now, &progress).await;
        failed.extend(wait_for_devices(cluster, &minion_of, &results).await);
        failed.extend(report_failures(results));
        task.done(format!("{} disk(s) attached", plan.attach_now.len()));
    }
    let mut outcome = converge_minions(ui, cluster, store, &first, refresh).await?;

    // Only from instances where nothing uses the disk any more: a disk
    // pulled from under a running container loses what it had not
    // written. That is a minion converged just now with no pod of the
    // disk running there, or an instance that is not running at all.
    let unconverged: BTreeSet<&String> = outcome.unreachable.iter().map(|(m, _)| m).collect();
    let runs_a_user = |m: &String, disk: &str| {
        state.pods_on(m).any(|p| {
            p.pod.spec.disks().iter().any(|d| d.disk == disk)
                && outcome
                    .reports
                    .get(m)
                    .and_then(|r| r.statuses.get(&p.pod.id))
                    .is_some_and(|s| s.phase == crate::state::PodPhase::Running)
        })
    };
    let mut detachable: Vec<DiskStep> = vec![];
    for step in &plan.detach {
        let DiskStep::Detach { disk, instance } = step else {
            continue;
        };
        let Some(m) = minion(step) else { continue };
        let stopped = found.stopped.contains(instance);
        let converged = first.contains(&m) && !unconverged.contains(&m);
        if stopped || (converged && !runs_a_user(&m, disk)) {
            detachable.push(step.clone());
        } else if converged {
            failed.push(format!(
                "{disk} stays attached to {instance}: a pod there still uses it (delete that pod, then `kctl apply` again)"
            ));
        } else {
            failed.push(format!(
                "{disk} stays attached to {instance}: {m} did not converge, so its containers may still use it (run `kctl apply` again once it answers)"
            ));
        }
    }
    let mut second = waiting.clone();
    if !detachable.is_empty() {
        let task = ui.task("detaching disks");
        let progress = |line: &str| task.set(line.to_string());
        failed.extend(report_failures(
            disks::run(&g, project, &names, &detachable, &progress).await,
        ));
        task.done(format!("{} disk(s) detached", detachable.len()));
    }
    if !plan.attach_later.is_empty() {
        let task = ui.task("attaching disks freed elsewhere");
        let progress = |line: &str| task.set(line.to_string());
        let found = judge(disks::discover(&g, project, &names).await?);
        let then = disks::plan(&want, &found.attachments);
        let results = disks::run(&g, project, &names, &then.attach_now, &progress).await;
        failed.extend(wait_for_devices(cluster, &minion_of, &results).await);
        failed.extend(report_failures(results));
        second.extend(then.attach_now.iter().filter_map(minion));
        for step in &then.attach_later {
            failed.push(format!(
                "{}: not done, the disk is still attached elsewhere",
                step.line().trim_start_matches("+ ")
            ));
        }
        task.done(format!("{} disk(s) attached", then.attach_now.len()));
    }
    if !second.is_empty() {
        let then = converge_minions(ui, cluster, store, &second, false).await?;
        outcome.unreachable.retain(|(m, _)| !second.contains(m));
        outcome.unreachable.extend(then.unreachable);
        outcome.reports.extend(then.reports);
        outcome.rules_synced.extend(then.rules_synced);
    }
    // The command fails with them: a disk left where it should not be
    // is not retried once no pod names it.
    outcome
        .disk_problems
        .extend(failed.into_iter().map(|line| format!("disk {line}")));
    Ok(outcome)
}

/// After a rolling update or an evacuation put a pod that uses a disk on
/// another minion (or in place of one): converges `minions` with the
/// disks following their pods. GCE only; what went wrong, as one line.
pub async fn follow_pods(
    ui: &Ui,
    cluster: &Cluster,
    store: &Store,
    minions: &BTreeSet<String>,
) -> Result<(), String> {
    if cluster.config.gce.is_none() {
        return Ok(());
    }
    let before = disk_names(
        &store
            .clone()
            .snapshot()
            .await
            .map_err(|e| e.to_string())?
            .state,
    );
    let outcome = converge_with_disks(ui, cluster, store, minions, false, &before)
        .await
        .map_err(|e| format!("{e}"))?;
    let problems = outcome.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Waits until each minion a disk was attached to shows its device, for
/// at most [`DEVICE_WAIT`]; what never showed, as problem lines.
async fn wait_for_devices(
    cluster: &Cluster,
    minion_of: &BTreeMap<String, String>,
    results: &BTreeMap<DiskStep, Result<(), crate::provider::gce::GceError>>,
) -> Vec<String> {
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (step, result) in results {
        if let (DiskStep::Attach(a), Ok(())) = (step, result) {
            if let Some(minion) = minion_of.get(&a.instance) {
                paths
                    .entry(minion.clone())
                    .or_default()
                    .push(device_path(&a.disk, None));
            }
        }
    }
    let ids: Vec<String> = paths.keys().cloned().collect();
    let waits = cluster.connect(&ids).await.into_iter().map(|(id, exec)| {
        let wanted = paths.get(&id).cloned().unwrap_or_default();
        async move {
            let exec = match exec {
                Ok(exec) => exec,
                Err(e) => return vec![format!("on {id}: not checked: {e}")],
            };
            let deadline = Instant::now() + DEVICE_WAIT;
            let missing = loop {
                let present = block_devices(&exec, &wanted).await.unwrap_or_default();
                let missing: Vec<String> = wanted
                    .iter()
                    .filter(|p| !present.contains(*p))
                    .cloned()
                    .collect();
                if missing.is_empty() || Instant::now() > deadline {
                    break missing;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            exec.close().await;
            missing
                .into_iter()
                .map(|path| {
                    format!(
                        "on {id}: {path} did not appear within {} s of the attach",
                        DEVICE_WAIT.as_secs()
                    )
                })
                .collect()
        }
    });
    futures::future::join_all(waits)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The failed steps' lines, each with why.
fn report_failures(
    results: BTreeMap<DiskStep, Result<(), crate::provider::gce::GceError>>,
) -> Vec<String> {
    results
        .into_iter()
        .filter_map(|(step, result)| {
            let e = result.err()?;
            Some(format!(
                "{}: {e}",
                step.line()
                    .trim_start_matches("+ ")
                    .trim_start_matches("- ")
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Pod, PodSpec, Volume, VolumeSource};
    use crate::state::PodRecord;

    fn pod(id: &str, host: &str, disks: &[(&str, bool)]) -> PodRecord {
        let volumes = disks
            .iter()
            .enumerate()
            .map(|(i, (disk, read_only))| Volume {
                name: format!("v{i}"),
                source: VolumeSource::GcePersistentDisk {
                    pd_name: disk.to_string(),
                    fs_type: "ext4".into(),
                    partition: None,
                    read_only: *read_only,
                },
            })
            .collect();
        PodRecord {
            pod: Pod {
                id: id.into(),
                labels: Default::default(),
                spec: PodSpec {
                    volumes,
                    ..Default::default()
                },
            },
            host: host.into(),
            owner: None,
            draining: false,
        }
    }

    #[test]
    fn a_minion_waits_for_a_disk_held_elsewhere_but_two_trading_places_do_not() {
        let at = |disk: &str, n: usize| Attachment {
            disk: disk.into(),
            instance: format!("i{n}"),
            read_only: false,
        };
        let minion_of: BTreeMap<String, String> = (1..=3)
            .map(|n| (format!("i{n}"), format!("minion-{n}")))
            .collect();
        // a moves from 1 to 2: minion-2 waits for minion-1's detach.
        let found = vec![at("a", 1)];
        let plan = disks::plan(&[at("a", 2)], &found);
        assert_eq!(
            waiting_minions(&plan, &found, &minion_of),
            BTreeSet::from(["minion-2".to_string()])
        );
        // a from 1 to 2 and b from 2 to 1: neither may wait for the other.
        let found = vec![at("a", 1), at("b", 2)];
        let plan = disks::plan(&[at("a", 2), at("b", 1)], &found);
        assert_eq!(plan.attach_later.len(), 2, "{plan:?}");
        assert_eq!(waiting_minions(&plan, &found, &minion_of), BTreeSet::new());
    }

    #[test]
    fn pods_want_their_disks_on_their_minions_instances() {
        let names = Names::new("demo", "us-central1-b").unwrap();
        let mut state = ClusterState::default();
        for p in [
            pod("a", "minion-1", &[("data", false)]),
            pod("b", "minion-2", &[("logs", true)]),
            pod("c", "minion-2", &[("logs", false)]),
            pod("d", "minion-3", &[("logs", true)]),
            pod("e", "minion-3", &[]),
        ] {
            state.pods.insert(p.pod.id.clone(), p);
        }
        assert!(uses_disks(&state));
        let at = |disk: &str, n: usize, read_only| Attachment {
            disk: disk.into(),
            instance: format!("kctl-demo-minion-{n}"),
            read_only,
        };
        assert_eq!(
            wanted(&state, &names),
            vec![
                at("data", 1, false),
                at("logs", 2, false),
                at("logs", 3, true)
            ]
        );
        state.pods.retain(|id, _| id == "e");
        assert!(!uses_disks(&state));
    }
}
