//! Services, as pure functions of cluster state: portal IP allocation,
//! endpoints, the environment variables containers get, and (in `rules`)
//! the nftables rules every minion carries.

pub mod rules;

use crate::model::{EnvVar, PodSpec, PortRef, Service};
use crate::state::{ClusterState, Endpoint, ServiceRecord};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The lowest address of `range` that no service holds, skipping the
/// network and broadcast addresses. `None` when the range is full.
pub fn allocate_portal(range: Ipv4Net, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    range.hosts().find(|ip| !used.contains(ip))
}

/// The port a service's traffic goes to in one pod: the service's
/// `containerPort` (a number, or the name of a port of the pod), or else the
/// first port of the pod's first container.
pub fn target_port(service: &Service, spec: &PodSpec) -> Option<u16> {
    match &service.container_port {
        Some(PortRef::Number(n)) => Some(*n),
        Some(PortRef::Name(name)) => spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
        None => spec
            .containers
            .first()
            .and_then(|c| c.ports.first())
            .map(|p| p.container_port),
    }
}

/// Every service's endpoints: the running pods that match its selector, at
/// their pod IP and target port, sorted.
pub fn endpoints(state: &ClusterState) -> BTreeMap<String, Vec<Endpoint>> {
    state
        .services
        .values()
        .map(|record| {
            let svc = &record.service;
            let mut eps: Vec<Endpoint> = state
                .pods_matching(&svc.selector)
                .filter(|p| state.pod_is_current(p) && !p.draining)
                // A pod on a minion that stopped heartbeating is not served,
                // whatever its last status said.
                .filter(|p| state.heartbeats.contains(&p.host))
                // A pod failing its liveness probe is out until it passes.
                .filter(|p| !state.pod_is_unhealthy(p))
                .filter_map(|p| {
                    let ip = state.statuses.get(&p.pod.id)?.pod_ip?;
                    let port = target_port(svc, &p.pod.spec)?;
                    Some(Endpoint {
                        ip,
                        port,
                        pod: p.pod.id.clone(),
                    })
                })
                .collect();
            eps.sort();
            (svc.id.clone(), eps)
        })
        .collect()
}

/// `web-db` → `WEB_DB`: the prefix of a service's variables.
pub fn env_prefix(id: &str) -> String {
    id.to_ascii_uppercase().replace('-', "_")
}

/// The variables a container started now gets, for every service: the
/// Kubernetes ones (`NAME_SERVICE_HOST`, `NAME_SERVICE_PORT`) and the
/// Docker-links ones (`NAME_PORT`, `NAME_PORT_<port>_TCP`, …).
pub fn service_env<'a>(services: impl IntoIterator<Item = &'a ServiceRecord>) -> Vec<EnvVar> {
    let mut env = Vec::new();
    for record in services {
        let svc = &record.service;
        let name = env_prefix(&svc.id);
        let ip = record.portal_ip.to_string();
        let port = svc.port.to_string();
        let proto = svc.protocol.as_lower();
        let url = format!("{proto}://{ip}:{port}");
        let link = format!("{name}_PORT_{port}_{}", svc.protocol.as_upper());
        let mut add = |k: String, v: String| env.push(EnvVar { name: k, value: v });
        add(format!("{name}_SERVICE_HOST"), ip.clone());
        add(format!("{name}_SERVICE_PORT"), port.clone());
        add(format!("{name}_PORT"), url.clone());
        add(link.clone(), url);
        add(format!("{link}_PROTO"), proto.to_string());
        add(format!("{link}_PORT"), port);
        add(format!("{link}_ADDR"), ip);
    }
    env
}

#[cfg(test)]
mod tests;
