//! `kctl down`: remove everything `up` made, also for a cluster that is
//! half-built or half-broken. Each step tolerates its target being gone.

use super::{report, require_root};
use crate::cluster::{ClusterDir, ProviderKind};
use crate::provider::host;
use crate::provider::local::{self, Layout};
use crate::ui::Ui;
use futures::future::join_all;

pub async fn down(ui: &Ui, name: &str) -> miette::Result<()> {
    let dir = ClusterDir::new(name)?;
    if !dir.dir.exists() {
        ui.out(format!("Cluster {name} does not exist; nothing to do."));
        return Ok(());
    }
    require_root("kctl down (local provider)")?;
    let config = dir.load()?;
    match config.provider {
        ProviderKind::Local => {}
    }
    let Some(net) = &config.local else {
        return Err(miette::miette!(
            "cluster record of {name} has no local network"
        ));
    };
    let layout = Layout {
        cluster: name.to_string(),
        slot: net.slot,
    };
    let count = config.minions.len();

    let task = ui.task(format!("removing {count} minions"));
    let indices: Vec<usize> = config
        .minions
        .iter()
        .filter_map(|m| Layout::index_of(&m.id))
        .collect();
    join_all(
        indices
            .iter()
            .map(|&i| local::remove_minion(&dir, &layout, i)),
    )
    .await;
    task.done(format!(
        "removed {count} minions (containers, dockerd, sshd, namespaces)"
    ));

    let task = ui.task("etcd and host network");
    local::stop_etcd(&dir).await;
    local::remove_host_network(&layout).await;
    local::remove_portal_route(&layout, config.portal_net).await;
    host::unmount_all_under(&dir.dir).await;
    std::fs::remove_dir_all(&dir.dir).map_err(report)?;
    task.done(format!(
        "removed etcd, bridge {}, routes for {}, {}",
        layout.bridge(),
        layout.cluster_cidr(),
        dir.dir.display()
    ));
    ui.out(format!("Cluster {name} is down; nothing of it is left."));
    Ok(())
}
