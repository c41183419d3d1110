//! Installing kctl on a cluster's machines, whichever provider made them:
//! etcd on its host, then every minion bootstrapped and given its helper in
//! parallel over SSH, then registered in etcd; done when every helper
//! heartbeats. `up` of every provider and `minion start` end here.

use super::{report, Cluster};
use crate::bootstrap::{self, etcd};
use crate::cluster::ClusterConfig;
use crate::pki::{Credentials, Renewed};
use crate::ssh::SshExec;
use crate::state::MinionRecord;
use crate::ui::Ui;
use futures::future::join_all;
use std::time::Duration;

/// How long a freshly started helper may take to heartbeat. Generous:
/// small cloud VMs are slow.
const HEARTBEAT_WAIT: Duration = Duration::from_secs(30);

/// The addresses etcd serves at, from its endpoints (`https://IP:PORT`).
fn etcd_ips(config: &ClusterConfig) -> Vec<std::net::IpAddr> {
    config
        .etcd_endpoints
        .iter()
        .filter_map(|e| crate::cluster::endpoint_addr(e))
        .map(|a| std::net::IpAddr::V4(*a.ip()))
        .collect()
}

/// Makes the cluster's CA and certificates, or renews those that need it.
/// Returns what it made.
pub fn ensure_certificates(ui: &Ui, cluster: &Cluster) -> miette::Result<Renewed> {
    let config = &cluster.config;
    if !config.etcd_tls() {
        return Ok(Renewed::default());
    }
    let task = ui.task("certificates");
    let minions: Vec<String> = config.minions.iter().map(|m| m.id.clone()).collect();
    let renewed = cluster.dir.pki().ensure(
        &config.name,
        &etcd_ips(config),
        &minions,
        time::OffsetDateTime::now_utc(),
    )?;
    task.done(if renewed.made.is_empty() {
        "certificates valid".to_string()
    } else {
        let made: Vec<String> = renewed
            .made
            .iter()
            .map(|(stem, why)| format!("{stem} ({why})"))
            .collect();
        format!("made certificates: {}", made.join(", "))
    });
    Ok(renewed)
}

/// Bootstraps the named minions (all when `only` is None). Returns true if
/// anything changed.
pub async fn install(ui: &Ui, cluster: &Cluster, only: Option<&[String]>) -> miette::Result<bool> {
    let config = &cluster.config;
    let auth = cluster.auth();
    // Where etcd runs on this machine (local provider), `up` made the
    // certificates before starting it.
    let renewed = match &config.etcd_host {
        Some(_) => ensure_certificates(ui, cluster)?,
        None => Renewed::default(),
    };
    let mut changed = !renewed.made.is_empty();
    let pki = cluster.dir.pki();
    let binary = super::helper_binary()?;

    if let Some(host) = &config.etcd_host {
        let task = ui.task(format!("etcd on {}", host.name));
        let exec = SshExec::connect(&host.ssh_target(), &auth)
            .await
            .map_err(report)?;
        let minion_ips: Vec<_> = config.minions.iter().map(|m| m.host_ip).collect();
        let credentials = pki.etcd()?;
        let result = etcd::install_etcd(
            &exec,
            &config.name,
            host,
            &minion_ips,
            &credentials,
            &binary,
        )
        .await;
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
    let credentials: Vec<Option<Credentials>> = minions
        .iter()
        .map(|m| config.etcd_tls().then(|| pki.minion(&m.id)).transpose())
        .collect::<Result<_, _>>()?;
    let boots = minions.iter().zip(&credentials).map(|(m, credentials)| {
        let auth = auth.clone();
        let binary = &binary;
        async move {
            let exec = SshExec::connect(&m.ssh_target(), &auth).await?;
            let result =
                bootstrap::setup_minion(&exec, config, &m.id, binary, credentials.as_ref()).await;
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
