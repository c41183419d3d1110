//! Installing kctl on a cluster's machines, whichever provider made them:
//! etcd on its host, then every minion bootstrapped and given its helper in
//! parallel over SSH, then registered in etcd; done when every helper
//! heartbeats. `up` of every provider and `minion start` end here.

use super::{report, Cluster};
use crate::bootstrap::{self, etcd};
use crate::ssh::SshExec;
use crate::state::MinionRecord;
use crate::ui::Ui;
use futures::future::join_all;
use std::time::Duration;

/// How long a freshly started helper may take to heartbeat. Generous:
/// small cloud VMs are slow.
const HEARTBEAT_WAIT: Duration = Duration::from_secs(30);

/// Bootstraps the named minions (all when `only` is None). Returns true if
/// anything changed.
pub async fn install(ui: &Ui, cluster: &Cluster, only: Option<&[String]>) -> miette::Result<bool> {
    let config = &cluster.config;
    let auth = cluster.auth();
    let mut changed = false;

    if let Some(host) = &config.etcd_host {
        let task = ui.task(format!("etcd on {}", host.name));
        let exec = SshExec::connect(&host.ssh_target(), &auth)
            .await
            .map_err(report)?;
        let minion_ips: Vec<_> = config.minions.iter().map(|m| m.host_ip).collect();
        let result = etcd::install_etcd(&exec, &config.name, host, &minion_ips).await;
        exec.close().await;
        changed |= result.map_err(report)?;
        task.done(format!("etcd at {} on {}", host.endpoint(), host.name));
    }

    let minions: Vec<_> = config
        .minions
        .iter()
        .filter(|m| only.is_none_or(|ids| ids.contains(&m.id)))
        .collect();
    let task = ui.task(format!("bootstrap {} minions over SSH", minions.len()));
    let binary = super::helper_binary()?;
    let boots = minions.iter().map(|m| {
        let auth = auth.clone();
        let binary = &binary;
        async move {
            let exec = SshExec::connect(&m.ssh_target(), &auth).await?;
            let result = bootstrap::setup_minion(&exec, config, &m.id, binary).await;
            exec.close().await;
            result
        }
    });
    let mut failures = vec![];
    for result in join_all(boots).await {
        match result {
            Ok(c) => changed |= c,
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        return Err(miette::miette!("{}", failures.join("\n")));
    }
    task.done(format!(
        "{} minions bootstrapped (pod network, routes, forwarding rules, pause image, kctl-node)",
        minions.len()
    ));

    let mut store = cluster.store_waiting(Duration::from_secs(20)).await?;
    let registered = store.snapshot().await?.state.minions;
    for m in &minions {
        let record = MinionRecord {
            id: m.id.clone(),
            host_ip: m.host_ip,
            pod_cidr: m.pod_cidr.clone(),
            ssh_port: m.ssh_port,
            ssh_user: m.ssh_user.clone(),
        };
        if registered.get(&m.id) != Some(&record) {
            store.put_minion(&record).await?;
            changed = true;
        }
    }

    let task = ui.task("waiting for every minion's heartbeat");
    let ids: Vec<&str> = minions.iter().map(|m| m.id.as_str()).collect();
    super::wait_for_heartbeats(&mut store, &ids, HEARTBEAT_WAIT).await?;
    task.done(format!("{} minions Ready", ids.len()));
    Ok(changed)
}
