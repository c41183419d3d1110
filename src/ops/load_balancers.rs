//! Cloud load balancers for services with `createExternalLoadBalancer`
//! (v1 `type: LoadBalancer`), on GCE clusters only: after `apply`,
//! `delete` and `up`, what exists in the project is made to match the
//! services in etcd, and each forwarding rule's address is recorded in
//! etcd, where the minions' packet rules pick it up. Other providers
//! publish such services on the minions' own addresses and need nothing
//! here.

use super::Cluster;
use crate::model::Protocol;
use crate::plan::Op;
use crate::provider::gce::{lb, GcloudProcess, Names};
use crate::state::{ClusterState, LoadBalancerStatus, ServiceRecord};
use crate::store::Store;
use crate::ui::Ui;
use std::collections::BTreeMap;

/// The services as they are once `ops` are committed on `state` (pure).
pub fn services_after(state: &ClusterState, ops: &[Op]) -> BTreeMap<String, ServiceRecord> {
    let mut services = state.services.clone();
    for op in ops {
        match op {
            Op::PutService(record) => {
                services.insert(record.service.id.clone(), record.clone());
            }
            Op::DeleteService(id) => {
                services.remove(id);
            }
            _ => {}
        }
    }
    services
}

/// The load balancers `services` want (pure).
pub fn desired(services: &BTreeMap<String, ServiceRecord>) -> Vec<lb::LoadBalancer> {
    services
        .values()
        .filter(|r| r.service.external)
        .map(|r| lb::LoadBalancer {
            service: r.service.id.clone(),
            port: r.service.port,
            protocol: match r.service.protocol {
                Protocol::Tcp => lb::LbProtocol::Tcp,
                Protocol::Udp => lb::LbProtocol::Udp,
            },
        })
        .collect()
}

/// Refuses, before anything changes, a service whose load balancer GCE
/// could not make (pure: names and ports only). Other providers need none.
pub fn check(cluster: &Cluster, objects: &[crate::model::Object]) -> miette::Result<()> {
    let Some(record) = &cluster.config.gce else {
        return Ok(());
    };
    let names = Names::new(&cluster.dir.name, &record.zone)?;
    let services: BTreeMap<String, ServiceRecord> = objects
        .iter()
        .filter_map(|o| match o {
            crate::model::Object::Service(s) => Some((
                s.id.clone(),
                ServiceRecord {
                    service: s.clone(),
                    portal_ip: std::net::Ipv4Addr::UNSPECIFIED,
                    node_port: None,
                },
            )),
            _ => None,
        })
        .collect();
    for lb in desired(&services) {
        lb::validate(&names, &lb)?;
    }
    Ok(())
}

/// The GCE instance of each minion of the record ("minion-2" ->
/// "kctl-C-minion-2").
pub(super) fn minion_instances(cluster: &Cluster, names: &Names) -> Vec<String> {
    cluster
        .config
        .minions
        .iter()
        .filter_map(|m| names.minion_instance(&m.id))
        .collect()
}

/// The cloud's side of a plan that leaves the cluster with `services`:
/// on a GCE cluster, reads what exists, prints the gcloud steps (as part
/// of the plan), and unless `dry_run` runs them and records the addresses
/// in etcd. Nothing that changes anything runs when all is as it should
/// be. A no-op on other providers.
pub async fn converge(
    ui: &Ui,
    cluster: &Cluster,
    store: Option<&mut Store>,
    recorded: &ClusterState,
    services: &BTreeMap<String, ServiceRecord>,
    dry_run: bool,
) -> miette::Result<()> {
    let Some(record) = &cluster.config.gce else {
        return Ok(());
    };
    let want = desired(services);
    // Nothing wanted and nothing recorded: no gcloud call at all (a
    // cluster that never had a load balancer pays nothing for this). A
    // record stays until its cloud resources are gone, so a teardown that
    // failed is tried again by the next apply; `down` finds any others.
    if want.is_empty() && recorded.load_balancers.is_empty() {
        return Ok(());
    }
    let names = Names::new(&cluster.dir.name, &record.zone)?;
    let g = GcloudProcess::new();
    let found = lb::discover(&g, &record.project, &names).await?;
    let steps = lb::plan(&names, &want, &minion_instances(cluster, &names), &found)?;
    if !steps.is_empty() {
        let lines: Vec<String> = steps.iter().map(|s| format!("  {}", s.line())).collect();
        ui.out(format!(
            "Cloud (GCE {}, {}):\n{}",
            record.project,
            names.region,
            lines.join("\n")
        ));
    }
    if dry_run {
        return Ok(());
    }
    let addresses = if steps.is_empty() {
        lb::addresses(&found)
    } else {
        let task = ui.task("load balancers");
        let progress = |line: &str| task.set(line.to_string());
        lb::run(&g, &record.project, &names, &steps, &progress).await?;
        let addresses = lb::addresses(&lb::discover(&g, &record.project, &names).await?);
        task.done(format!(
            "{} load balancer(s): {}",
            addresses.len(),
            addresses
                .iter()
                .map(|(s, ip)| format!("{s} {ip}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        addresses
    };
    let Some(store) = store else {
        return Ok(());
    };
    for lb in &want {
        let status = addresses
            .get(&lb.service)
            .map(|ip| LoadBalancerStatus { ip: *ip });
        if recorded.load_balancers.get(&lb.service) != status.as_ref() {
            store
                .put_load_balancer(&lb.service, status.as_ref())
                .await?;
        }
    }
    for service in recorded.load_balancers.keys() {
        if !want.iter().any(|lb| &lb.service == service) {
            store.put_load_balancer(service, None).await?;
        }
    }
    Ok(())
}
