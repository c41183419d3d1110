//! `kctl minion stop|start`: a minion's power cut on demand, and its boot
//! (local provider), to see and test what happens when a machine dies.

use super::converge::converge_minions;
use super::install::install;
use super::{require_root, Cluster};
use crate::provider::local::{self, Layout};
use crate::ui::Ui;
use miette::miette;
use std::collections::BTreeSet;

fn local_minion(cluster: &Cluster, minion: &str) -> miette::Result<(Layout, usize)> {
    let slot = cluster
        .config
        .local
        .as_ref()
        .map(|l| l.slot)
        .ok_or_else(|| miette!("kctl minion stop/start works on local clusters only"))?;
    let index = cluster
        .config
        .minion(minion)
        .and_then(|m| Layout::index_of(&m.id))
        .ok_or_else(|| {
            let names: Vec<&str> = cluster
                .config
                .minions
                .iter()
                .map(|m| m.id.as_str())
                .collect();
            miette!(
                help = format!("minions: {}", names.join(", ")),
                "no minion {minion:?}"
            )
        })?;
    let layout = Layout {
        cluster: cluster.config.name.clone(),
        slot,
    };
    Ok((layout, index))
}

/// Kills every process of the minion at once — sshd, dockerd, containerd,
/// the containers — with no clean shutdown. Its namespace, disk and
/// addresses stay, as a powered-off machine's would.
pub async fn stop(ui: &Ui, name: &str, minion: &str) -> miette::Result<()> {
    require_root("kctl minion stop")?;
    let cluster = Cluster::open(name)?;
    let (layout, index) = local_minion(&cluster, minion)?;
    let task = ui.task(format!("power cut on {minion}"));
    local::kill_minion(&layout, index).await;
    task.done(format!("{minion} is off"));
    Ok(())
}

/// Boots the minion again with its old identity (address, host key, disk),
/// then converges it: pods that moved away while it was off are removed,
/// its own pods run again, its service rules are brought up to date.
pub async fn start(ui: &Ui, name: &str, minion: &str) -> miette::Result<()> {
    require_root("kctl minion start")?;
    let cluster = Cluster::open(name)?;
    let (layout, index) = local_minion(&cluster, minion)?;
    let task = ui.task(format!("booting {minion}"));
    local::ensure_minion(&cluster.dir, &layout, index, cluster.config.portal_net).await?;
    task.done(format!("{minion} is booted"));
    install(ui, &cluster, Some(&[minion.to_string()])).await?;
    let store = cluster.store().await?;
    let outcome = converge_minions(
        ui,
        &cluster,
        &store,
        &BTreeSet::from([minion.to_string()]),
        false,
    )
    .await?;
    let problems = outcome.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(miette!("{}", problems.join("\n")))
    }
}
