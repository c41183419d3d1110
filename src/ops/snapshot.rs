//! `kctl snapshot save|restore`: the cluster's objects to a file and back
//! (see `crate::snapshot` for what a snapshot holds).

use super::apply::{commit_planned, converge_applied};
use super::Cluster;
use crate::plan::restore::plan_restore;
use crate::snapshot::ClusterSnapshot;
use crate::ui::Ui;
use miette::miette;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
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
    write_whole(file, &text).map_err(|e| miette!("cannot write {}: {e}", file.display()))?;
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

/// Writes `text` beside `file` and renames it over: a crash leaves the old
/// file or the new one, never half of one. Only its owner may read it.
/// The file beside has a name nobody can guess and must not exist yet, so
/// nothing planted there (a link) is followed.
fn write_whole(file: &Path, text: &str) -> std::io::Result<()> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = file.with_file_name(format!(".{name}.{:016x}.partial", rand::random::<u64>()));
    let written = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)?;
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        out.sync_all()?;
        std::fs::rename(&partial, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written?;
    // The rename itself is durable once the directory is.
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
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
