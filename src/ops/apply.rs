//! `kctl apply` and `kctl delete`: read and validate all input first, plan
//! against one etcd snapshot, show the plan, commit it in one guarded
//! transaction (re-planning if someone else changed the cluster meanwhile),
//! then converge exactly the minions the plan touched.

use super::converge::ConvergeOutcome;
use super::Cluster;
use crate::manifest;
use crate::model::{Kind, Object};
use crate::plan::{self, Op, Plan, PlanError, RandomNamer};
use crate::state::ClusterState;
use crate::store::{Snapshot, Store, StoreError};
use crate::ui::Ui;
use miette::miette;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// How often an apply re-plans when others commit first. Each conflict
/// means another change went in, so many concurrent applies all finish;
/// a short random pause keeps them from colliding in lockstep.
pub(crate) const COMMIT_ATTEMPTS: usize = 30;
const MOST_CONFLICT_PAUSE_MS: u64 = 200;

fn plan_report(e: PlanError) -> miette::Report {
    match e.help() {
        Some(help) => miette!(help = help, "{e}"),
        None => miette!("{e}"),
    }
}

/// Plans with `make_plan` and commits, re-planning on a conflict. Returns
/// the committed plan and the snapshot it was made from.
async fn plan_and_commit(
    ui: &Ui,
    store: &mut Store,
    dry_run: bool,
    make_plan: impl Fn(&ClusterState) -> Result<Plan, PlanError>,
) -> miette::Result<(Plan, Snapshot)> {
    commit_planned(ui, store, dry_run, true, make_plan).await
}

/// `plan_and_commit` that prints the plan only if `show`: the steps of a
/// rolling update say what they do in their own words.
pub(crate) async fn commit_planned(
    ui: &Ui,
    store: &mut Store,
    dry_run: bool,
    show: bool,
    make_plan: impl Fn(&ClusterState) -> Result<Plan, PlanError>,
) -> miette::Result<(Plan, Snapshot)> {
    let mut shown: Option<String> = if show { None } else { Some(String::new()) };
    for _ in 0..COMMIT_ATTEMPTS {
        let snapshot = store.snapshot().await?;
        super::warn_rejected(ui, store);
        let plan = make_plan(&snapshot.state).map_err(plan_report)?;
        let text = if show { plan.render() } else { String::new() };
        if shown.as_deref() != Some(text.as_str()) {
            if shown.is_some() {
                ui.note("The cluster changed while planning; the plan is now:");
            }
            ui.out(&text);
            shown = Some(text);
        }
        if dry_run || plan.is_empty() {
            return Ok((plan, snapshot));
        }
        match store.commit(&snapshot, &plan.ops).await {
            Ok(()) => {
                let events = crate::events::of_plan(&snapshot.state, &plan.ops);
                if let Err(e) = store.record_events(&events).await {
                    ui.warn(format!("events not recorded: {e}"));
                }
                return Ok((plan, snapshot));
            }
            Err(StoreError::Conflict) => conflict_pause().await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

/// A random pause before planning again after a lost commit race, so
/// that racing writers do not collide again in step.
pub(crate) async fn conflict_pause() {
    let pause = rand::random_range(10..MOST_CONFLICT_PAUSE_MS);
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
}

/// The minions a committed plan changes: where pods were put, and where
/// deleted pods were.
fn touched_minions(plan: &Plan, before: &ClusterState) -> BTreeSet<String> {
    plan.ops
        .iter()
        .filter_map(|op| match op {
            Op::PutPod(p) => Some(p.host.clone()),
            Op::DeletePod(id) => before.pods.get(id).map(|p| p.host.clone()),
            _ => None,
        })
        .collect()
}

/// Minions where a pod the user named is not yet running as specified
/// (an earlier apply that failed half-way): converge those too, so running
/// `apply` again finishes the job.
fn lagging_minions(state: &ClusterState, objects: &[Object]) -> BTreeSet<String> {
    state
        .pods
        .values()
        .filter(|p| names_pod(objects, p) && !state.pod_is_current(p))
        .map(|p| p.host.clone())
        .collect()
}

/// Whether `pod` is one of `objects` or a pod of one of their controllers.
fn names_pod(objects: &[Object], pod: &crate::state::PodRecord) -> bool {
    objects.iter().any(|o| match o {
        Object::Pod(p) => p.id == pod.pod.id,
        Object::ReplicationController(rc) => pod.owner.as_deref() == Some(rc.id.as_str()),
        Object::Service(_) => false,
    })
}

fn finish(ui: &Ui, outcome: &ConvergeOutcome) -> miette::Result<()> {
    for report in outcome.reports.values() {
        for (pod, status) in &report.statuses {
            if status.phase == crate::state::PodPhase::Running {
                let ip = status.pod_ip.map(|ip| ip.to_string()).unwrap_or_default();
                ui.note(format!("  pod {pod} running ({ip})"));
            }
        }
    }
    let problems = outcome.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(miette!(
            help = "`kctl get pods` shows the state; fix the cause and run the command again",
            "{}",
            problems.join("\n")
        ))
    }
}

/// `kctl resize rc ID N`: the controller as it is, with `replicas` N,
/// planned and converged as `apply` would.
pub async fn resize(ui: &Ui, name: &str, id: &str, replicas: u32) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let mut store = cluster.store().await?;
    let portal_net = cluster.config.portal_net;
    let resized = |state: &ClusterState| -> Result<Vec<Object>, PlanError> {
        let rc = state
            .controllers
            .get(id)
            .ok_or_else(|| PlanError::NotFound {
                kind: Kind::ReplicationController,
                id: id.to_string(),
            })?;
        Ok(vec![Object::ReplicationController(
            crate::model::ReplicationController {
                replicas,
                ..rc.clone()
            },
        )])
    };
    let (plan, before) = plan_and_commit(ui, &mut store, false, |state| {
        plan::plan_apply(&resized(state)?, state, portal_net, &mut RandomNamer)
    })
    .await?;
    let objects = resized(&before.state).map_err(plan_report)?;
    converge_applied(ui, &cluster, &mut store, &plan, &before, &objects, false).await
}

/// `kctl validate`: checks manifests the way `apply` does, as a set, with
/// no cluster at all (for CI); says what they hold.
pub fn validate(ui: &Ui, paths: &[PathBuf], reading: manifest::LoadOptions) -> miette::Result<()> {
    let loaded = manifest::load_paths(paths, reading)?;
    for warning in loaded.warnings {
        ui.note(format!("{:?}", miette::Report::new(warning)));
    }
    let objects: Vec<String> = loaded
        .objects
        .iter()
        .map(|o| format!("{} {}", o.kind(), o.id()))
        .collect();
    ui.out(format!(
        "{} objects valid: {}",
        objects.len(),
        objects.join(", ")
    ));
    Ok(())
}

/// The plan's refusal of a portal IP or node port a manifest asked for, as
/// an error where the manifest wrote it.
fn cluster_refusal(loaded: &manifest::Loaded, e: &PlanError) -> Option<manifest::ManifestError> {
    let (service, what) = match e {
        PlanError::PortalIpFixed { service, .. }
        | PlanError::PortalIpUnavailable { service, .. } => {
            (service, manifest::ClusterChecked::PortalIp)
        }
        PlanError::NodePortTaken { service, .. } => (service, manifest::ClusterChecked::NodePort),
        _ => return None,
    };
    loaded.cluster_refusal(service, what, e.to_string(), e.help())
}

/// The first image a container asks to pull at every start, if any.
fn always_pulled(objects: &[crate::model::Object]) -> Option<&str> {
    use crate::model::{Object, PullPolicy};
    objects
        .iter()
        .flat_map(|o| match o {
            Object::Pod(p) => p.spec.containers.as_slice(),
            Object::ReplicationController(rc) => rc.template.spec.containers.as_slice(),
            Object::Service(_) => &[],
        })
        .find(|c| c.image_pull_policy == Some(PullPolicy::Always))
        .map(|c| c.image.as_str())
}

/// Manifests are read for a cluster: what its record allows (`kctl up
/// --allow-host-dir`, `--allow-privileged`) is no error. Without a record, the defaults: the
/// error about the missing cluster comes where it is opened.
pub fn as_cluster_allows(name: &str, reading: manifest::LoadOptions) -> manifest::LoadOptions {
    let record = crate::cluster::ClusterDir::new(name)
        .ok()
        .filter(|dir| dir.exists())
        .and_then(|dir| dir.load().ok());
    match record {
        Some(config) => manifest::LoadOptions {
            allow_host_dir: config.allow_host_dir,
            allow_privileged: config.allow_privileged,
            // Only GCE instances can have a GCE persistent disk attached.
            disks_unavailable_on: (config.gce.is_none()).then_some(config.provider.name()),
            ..reading
        },
        None => reading,
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// Read back what the minions run and repair drift now.
    pub refresh: bool,
    /// Delete what this set of files applied before and holds no more.
    pub prune: bool,
}

/// The name of the set of files an apply reads, recorded as the owner of
/// each object it applies: the files' and directories' full paths. None
/// for standard input, which has no name.
pub fn set_name(paths: &[PathBuf]) -> Option<String> {
    let mut full: Vec<String> = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            return None;
        }
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        full.push(path.display().to_string());
    }
    full.sort();
    full.dedup();
    Some(format!("files:{}", full.join(",")))
}

pub async fn apply(
    ui: &Ui,
    name: &str,
    paths: &[PathBuf],
    reading: manifest::LoadOptions,
    options: ApplyOptions,
) -> miette::Result<()> {
    let loaded = manifest::load_paths(paths, as_cluster_allows(name, reading))?;
    let set = set_name(paths);
    if options.prune && set.is_none() {
        return Err(super::usage_error(
            "--prune needs files: standard input is no set whose objects kctl could recognise later",
            "kctl apply -f DIR --prune",
        ));
    }
    apply_loaded(ui, name, loaded, set.as_deref(), options).await
}

/// `apply` of objects already loaded and validated (files, `kctl run`);
/// `set` names the files they came from, if any.
pub async fn apply_loaded(
    ui: &Ui,
    name: &str,
    mut loaded: manifest::Loaded,
    set: Option<&str>,
    options: ApplyOptions,
) -> miette::Result<()> {
    let dry_run = options.dry_run;
    for warning in std::mem::take(&mut loaded.warnings) {
        ui.note(format!("{:?}", miette::Report::new(warning)));
    }
    let cluster = Cluster::open(name)?;
    if cluster.config.offline_images {
        if let Some(image) = always_pulled(&loaded.objects) {
            ui.warn(format!(
                "imagePullPolicy Always: the minions of cluster {name} cannot pull, so they run the {image} that `kctl image load` put there"
            ));
        }
    }
    super::load_balancers::check(&cluster, &loaded.objects)?;
    super::disks::check(&cluster, &loaded.objects).await?;
    let mut store = cluster.store().await?;
    let portal_net = cluster.config.portal_net;
    let pruned_set = if options.prune { set } else { None };
    // A portal IP the cluster cannot give is the manifest's error, at its line.
    let refused_at_site = std::cell::RefCell::new(None);
    let planned = plan_and_commit(ui, &mut store, dry_run, |state| {
        let plan = match pruned_set {
            Some(set) => {
                plan::plan_apply_pruning(&loaded.objects, state, portal_net, &mut RandomNamer, set)
            }
            None => plan::plan_apply(&loaded.objects, state, portal_net, &mut RandomNamer),
        };
        if let Err(e) = &plan {
            *refused_at_site.borrow_mut() = cluster_refusal(&loaded, e);
        }
        plan
    })
    .await;
    let (plan, before) = match (planned, refused_at_site.into_inner()) {
        (Err(_), Some(error)) => return Err(miette::Report::new(error)),
        (planned, _) => planned?,
    };
    let objects = loaded.objects;
    // The cloud's part of the plan (GCE load balancers): shown with it,
    // made before the minions converge so the address is in their rules.
    let services = super::load_balancers::services_after(&before.state, &plan.ops);
    let recording = (!dry_run).then_some(&mut store);
    super::load_balancers::converge(ui, &cluster, recording, &before.state, &services, dry_run)
        .await?;
    if dry_run {
        let after = super::disks::pods_after(&before.state, &plan.ops);
        return super::disks::show_planned(ui, &cluster, &before.state, &after).await;
    }
    if let Some(set) = set {
        // This set owns what it applied (the last apply of an object owns it).
        let claimed: Vec<(Kind, String)> = objects
            .iter()
            .map(|o| (o.kind(), o.id().to_string()))
            .filter(|key| before.state.owners.get(key).map(String::as_str) != Some(set))
            .collect();
        store.set_owners(set, &claimed).await?;
    }
    converge_applied(
        ui,
        &cluster,
        &mut store,
        &plan,
        &before,
        &objects,
        options.refresh,
    )
    .await
}

/// `kctl diff`: the plan `apply` would carry out, field by field, and with
/// `live`, where the minions' containers and rules differ from etcd.
/// Returns whether anything differs.
pub async fn diff(
    ui: &Ui,
    name: &str,
    paths: &[PathBuf],
    reading: manifest::LoadOptions,
    live: bool,
    prune: bool,
) -> miette::Result<bool> {
    let mut loaded = manifest::load_paths(paths, as_cluster_allows(name, reading))?;
    let set = set_name(paths).filter(|_| prune).unwrap_or_default();
    for warning in std::mem::take(&mut loaded.warnings) {
        ui.note(format!("{:?}", miette::Report::new(warning)));
    }
    let cluster = Cluster::open(name)?;
    let mut store = cluster.store().await?;
    let state = store.snapshot().await?.state;
    let plan = plan::plan_apply_pruning(
        &loaded.objects,
        &state,
        cluster.config.portal_net,
        &mut RandomNamer,
        &set,
    )
    .map_err(|e| match cluster_refusal(&loaded, &e) {
        Some(error) => miette::Report::new(error),
        None => plan_report(e),
    })?;
    ui.out(plan.render().trim_end());
    let mut differs = !plan.is_empty();
    if live {
        let task = ui.task("reading what the minions run");
        let drift = super::converge::live_drift(&cluster, &state).await;
        task.done(format!("read {} minion(s)", drift.len()));
        let mut lines = Vec::new();
        for (minion, d) in &drift {
            if let Some(why) = &d.unreachable {
                lines.push(format!("  ? {minion}: not checked: {why}"));
            }
            for line in d.containers.iter().chain(&d.rules).chain(&d.network) {
                lines.push(format!("  ~ {minion}: {line}"));
            }
        }
        if lines.is_empty() {
            ui.out("Live: every minion runs what etcd holds.");
        } else {
            differs = true;
            ui.out(format!(
                "Live: the minions differ from etcd (`kctl apply --refresh` repairs this now; each minion's helper does within 10 s):\n{}",
                lines.join("\n")
            ));
        }
    }
    Ok(differs)
}

/// After `apply` (or `resize`) committed `plan` made from `before`:
/// converges the minions it touched and those still behind on `objects`.
/// With `refresh` (`apply --refresh`), also every minion running a pod
/// of `objects`, and the service rules of every Ready minion are read
/// back: what drifted from etcd is repaired.
pub(crate) async fn converge_applied(
    ui: &Ui,
    cluster: &Cluster,
    store: &mut Store,
    plan: &Plan,
    before: &Snapshot,
    objects: &[Object],
    refresh: bool,
) -> miette::Result<()> {
    let older = crate::state::older_helpers(&before.state);
    if !older.is_empty() {
        ui.warn(format!(
            "{} run(s) an older kctl-node, which may take minion locks elsewhere: until `kctl up` replaces it, it and this kctl could converge a minion at the same time",
            older.join(", ")
        ));
    }
    let mut minions = touched_minions(plan, &before.state);
    let after = if plan.is_empty() {
        before.state.clone()
    } else {
        store.snapshot().await?.state
    };
    // Finish what an earlier apply left undone.
    minions.extend(lagging_minions(&after, objects));
    if refresh {
        minions.extend(
            after
                .pods
                .values()
                .filter(|p| names_pod(objects, p) && after.ready(&p.host))
                .map(|p| p.host.clone()),
        );
    }
    let outcome = super::disks::converge_with_disks(
        ui,
        cluster,
        store,
        &minions,
        refresh,
        &super::disks::disk_names(&before.state),
    )
    .await?;
    finish(ui, &outcome)
}

/// What `kctl delete` removes: objects named in files, or one by kind and id.
pub enum DeleteTarget {
    Files(Vec<PathBuf>),
    Objects(Kind, Vec<String>),
    /// Every object of the kind whose labels match.
    Selected(Kind, crate::selector::Selector),
    /// The records etcd holds that kctl does not act on.
    Rejected,
}

/// The objects of `kind` whose labels `selector` matches (pure).
pub fn selected(
    state: &ClusterState,
    kind: Kind,
    selector: &crate::selector::Selector,
) -> Vec<(Kind, String)> {
    let ids: Vec<String> = match kind {
        Kind::Pod => state
            .pods
            .values()
            // (A controller's pods among them are replaced, as kubectl's are.)
            .filter(|p| selector.matches(&p.pod.labels))
            .map(|p| p.pod.id.clone())
            .collect(),
        Kind::ReplicationController => state
            .controllers
            .values()
            .filter(|c| selector.matches(&c.labels))
            .map(|c| c.id.clone())
            .collect(),
        Kind::Service => state
            .services
            .values()
            .filter(|s| selector.matches(&s.service.labels))
            .map(|s| s.service.id.clone())
            .collect(),
    };
    ids.into_iter().map(|id| (kind, id)).collect()
}

pub async fn delete(
    ui: &Ui,
    name: &str,
    target: DeleteTarget,
    ignore_not_found: bool,
) -> miette::Result<()> {
    if matches!(target, DeleteTarget::Rejected) {
        return delete_rejected(ui, name).await;
    }
    let named: Vec<(Kind, String)> = match &target {
        // Only the ids count: what the cluster allows does not.
        DeleteTarget::Files(paths) => {
            manifest::load_paths(paths, manifest::LoadOptions::permissive())?
                .objects
                .iter()
                .map(|o| (o.kind(), o.id().to_string()))
                .collect()
        }
        DeleteTarget::Objects(kind, ids) => ids.iter().map(|id| (*kind, id.clone())).collect(),
        DeleteTarget::Selected(..) | DeleteTarget::Rejected => vec![],
    };
    let cluster = Cluster::open(name)?;
    let mut store = cluster.store().await?;
    let (plan, before) = plan_and_commit(ui, &mut store, false, |state| match &target {
        // Chosen from the same snapshot the plan is made from.
        DeleteTarget::Selected(kind, selector) => {
            plan::plan_delete(&selected(state, *kind, selector), state, false)
        }
        _ => plan::plan_delete(&named, state, ignore_not_found),
    })
    .await?;
    let services = super::load_balancers::services_after(&before.state, &plan.ops);
    super::load_balancers::converge(
        ui,
        &cluster,
        Some(&mut store),
        &before.state,
        &services,
        false,
    )
    .await?;
    let minions = touched_minions(&plan, &before.state);
    let outcome = super::disks::converge_with_disks(
        ui,
        &cluster,
        &store,
        &minions,
        false,
        &super::disks::disk_names(&before.state),
    )
    .await?;
    finish(ui, &outcome)
}

/// Removes the records etcd holds that fail kctl's checks (written by
/// something else than kctl, or by another version): nothing acts on them,
/// and this is how they go without etcdctl.
async fn delete_rejected(ui: &Ui, name: &str) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let mut store = cluster.store().await?;
    let snapshot = store.snapshot().await?;
    // Said here, one by one: not as warnings of what is about to go.
    let _ = store.new_rejections();
    for r in &snapshot.rejected {
        ui.out(format!("  - {r}\n"));
    }
    let removed = store.delete_rejected(&snapshot.rejected).await?;
    ui.note(match removed {
        0 => "etcd holds no record kctl does not act on".to_string(),
        1 => "removed 1 record kctl did not act on".to_string(),
        n => format!("removed {n} records kctl did not act on"),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_named_by_its_files_full_paths_in_any_order() {
        let here = std::env::current_dir().unwrap();
        let a = set_name(&[PathBuf::from("Cargo.toml"), PathBuf::from("src")]).unwrap();
        let b = set_name(&[here.join("src"), here.join("Cargo.toml")]).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("files:/"), "{a}");
        assert_eq!(set_name(&[PathBuf::from("-")]), None);
    }
}
