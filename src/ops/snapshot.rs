//! `kctl snapshot save|restore`: the cluster's objects to a file and back
//! (see `crate::snapshot` for what a snapshot holds).

use super::apply::{commit_planned, converge_applied};
use super::Cluster;
use crate::plan::restore::plan_restore;
use crate::snapshot::ClusterSnapshot;
use crate::ui::Ui;
use miette::miette;
use std::path::Path;

pub async fn save(ui: &Ui, name: &str, file: &Path) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let mut store = cluster.store().await?;
    let read = store.snapshot().await?;
    let snapshot = ClusterSnapshot::of(
        &read.state,
        name,
        cluster.config.portal_net,
        read.revision(),
        crate::output::unix_now(),
    );
    let text = serde_json::to_string_pretty(&snapshot).map_err(super::report)?;
    crate::files::write_private(file, (text + "\n").as_bytes())
        .map_err(|e| miette!("cannot write {}: {e}", file.display()))?;
    ui.out(format!(
        "Saved {} service(s), {} replicationController(s), {} pod(s) of cluster {name} (revision {}) to {}.",
        snapshot.services.len(),
        snapshot.controllers.len(),
        snapshot.pods.len(),
        snapshot.revision,
        file.display()
    ));
    Ok(())
}

pub async fn restore(ui: &Ui, name: &str, file: &Path) -> miette::Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| miette!("cannot read {}: {e}", file.display()))?;
    let snapshot = ClusterSnapshot::parse(&text).map_err(|why| {
        miette!(
            help = "`kctl snapshot save FILE` writes one",
            "{}: {why}",
            file.display()
        )
    })?;
    let cluster = Cluster::open(name)?;
    let portal_net = cluster.config.portal_net;
    let mut store = cluster.store().await?;
    let minions = store.snapshot().await?.state.minions;
    let problems = snapshot.problems(
        &cluster.config.record_policy(),
        &minions.values().collect::<Vec<_>>(),
    );
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        return Err(miette!(
            help = "a snapshot file is checked as a manifest is; nothing was restored",
            "{} holds records this cluster does not take:\n{}",
            file.display(),
            list.join("\n")
        ));
    }
    ui.note(format!(
        "Restoring cluster {}'s objects as of revision {} onto cluster {name}:",
        snapshot.cluster, snapshot.revision
    ));
    let (plan, before) = commit_planned(ui, &mut store, false, true, |state| {
        plan_restore(&snapshot, state, portal_net)
    })
    .await?;
    converge_applied(ui, &cluster, &mut store, &plan, &before, &[], false).await
}
