//! Records read back are untrusted. Anyone holding one minion's key can
//! write etcd, and anyone can hand a user a snapshot file; what they hold
//! reaches root-run rule scripts, Docker's privileges and bind mounts on
//! every minion. So every record passes the rules a manifest passes
//! (`model::names`, the `*_problem` checks of `model`, the cluster's
//! `--allow-*` choices) before anything uses it, and one that fails is
//! left out whole and reported, never half-used.

use super::{ClusterState, Endpoint, MinionRecord, PodRecord, PodStatus, ServiceRecord};
use crate::model::names::{
    dns_label_problem, dns_subdomain_problem, image_problem, is_c_identifier, is_capability_name,
    minion_id_problem, service_id_problem, user_name_problem, MAX_LABEL_LEN,
};
use crate::model::{
    disk_volume_problem, git_directory_problem, git_repository_problem, git_revision_problem,
    mount_path_problem, probe_host_problem, probe_path_problem, sensitive_host_path, Labels,
    PodSpec, PortRef, ProbeAction, ReplicationController, Service, VolumeSource,
    CONTROL_PLANE_PORTS, NODE_PORT_RANGE,
};
use std::collections::HashSet;
use std::net::Ipv4Addr;

pub use crate::model::RecordPolicy;

/// A record left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rejected {
    /// Where it was read: its etcd key below the cluster's prefix
    /// (`services/web`), or its place in a snapshot file.
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is as untrusted as the record: quoted, its control
        // characters escaped.
        write!(f, "{:?}: {}", self.key, self.reason)
    }
}

/// The id of a pod or controller (a DNS subdomain, as v0.5 checked).
pub fn object_id_problem(id: &str) -> Option<String> {
    dns_subdomain_problem(id).map(|p| format!("its id {id:?} {p}"))
}

/// Label keys and values: what a terminal and a selector can take.
pub fn labels_problem(labels: &Labels) -> Option<String> {
    labels.iter().find_map(|(key, value)| {
        if key.is_empty() || key.len() > 317 || key.chars().any(char::is_whitespace) {
            Some(format!(
                "label key {key:?} is empty, too long or holds a space"
            ))
        } else if key.chars().chain(value.chars()).any(char::is_control) {
            Some(format!("label {key:?} holds a control character"))
        } else if value.len() > 1024 {
            Some(format!("label {key:?} has a value longer than 1024 bytes"))
        } else {
            None
        }
    })
}

/// An address a rule may send a service's traffic to or take it from.
fn ordinary(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_link_local())
}

fn port_ref_problem(port: &PortRef) -> Option<String> {
    match port {
        PortRef::Number(0) => Some("names port 0".into()),
        PortRef::Number(_) => None,
        PortRef::Name(name) => {
            dns_label_problem(name, MAX_LABEL_LEN).map(|p| format!("port name {name:?} {p}"))
        }
    }
}

/// Why a pod's spec must not run on this cluster, if it must not.
pub fn pod_spec_problem(spec: &PodSpec, policy: &RecordPolicy) -> Option<String> {
    let mut volumes = HashSet::new();
    for volume in &spec.volumes {
        if let Some(p) = dns_label_problem(&volume.name, MAX_LABEL_LEN) {
            return Some(format!("volume name {:?} {p}", volume.name));
        }
        if !volumes.insert(volume.name.as_str()) {
            return Some(format!("volume {:?} is named twice", volume.name));
        }
        let problem = match &volume.source {
            VolumeSource::EmptyDir => None,
            VolumeSource::HostDir { path } => mount_path_problem(path)
                .map(|p| format!("its path {p}"))
                .or_else(|| {
                    sensitive_host_path(path)
                        .filter(|_| !policy.allow_host_dir)
                        .map(|s| {
                            format!("it binds {s}, which this cluster does not allow (`kctl up --allow-host-dir`)")
                        })
                }),
            VolumeSource::GitRepo {
                repository,
                revision,
                directory,
            } => git_repository_problem(repository)
                .map(|p| format!("its repository {p}"))
                .or_else(|| {
                    revision
                        .as_deref()
                        .and_then(git_revision_problem)
                        .map(|p| format!("its revision {p}"))
                })
                .or_else(|| {
                    directory
                        .as_deref()
                        .and_then(git_directory_problem)
                        .map(|p| format!("its directory {p}"))
                }),
            VolumeSource::GcePersistentDisk {
                pd_name,
                fs_type,
                partition,
                ..
            } => disk_volume_problem(pd_name, fs_type, *partition),
        };
        if let Some(problem) = problem {
            return Some(format!("volume {:?}: {problem}", volume.name));
        }
    }
    let mut names = HashSet::new();
    let mut host_ports = HashSet::new();
    for c in &spec.containers {
        let problem = container_problem(c, &volumes, &mut host_ports, policy);
        if let Some(p) = dns_label_problem(&c.name, MAX_LABEL_LEN) {
            return Some(format!("container name {:?} {p}", c.name));
        }
        if !names.insert(c.name.as_str()) {
            return Some(format!("container {:?} is named twice", c.name));
        }
        if let Some(problem) = problem {
            return Some(format!("container {:?}: {problem}", c.name));
        }
    }
    None
}

fn container_problem(
    c: &crate::model::Container,
    volumes: &HashSet<&str>,
    host_ports: &mut HashSet<(u16, crate::model::Protocol)>,
    policy: &RecordPolicy,
) -> Option<String> {
    if let Some(p) = image_problem(&c.image) {
        return Some(format!("image {:?} {p}", c.image));
    }
    for port in &c.ports {
        if port.container_port == 0 {
            return Some("a port is 0".into());
        }
        if let Some(name) = &port.name {
            if let Some(p) = dns_label_problem(name, MAX_LABEL_LEN) {
                return Some(format!("port name {name:?} {p}"));
            }
        }
        if let Some(host_port) = port.host_port {
            if host_port == 0 || CONTROL_PLANE_PORTS.contains(&host_port) {
                return Some(format!(
                    "host port {host_port} is 0 or one the machines need (sshd, etcd)"
                ));
            }
            if !host_ports.insert((host_port, port.protocol)) {
                return Some(format!("host port {host_port} is taken twice"));
            }
        }
    }
    if let Some(env) = c.env.iter().find(|e| !is_c_identifier(&e.name)) {
        return Some(format!(
            "environment variable name {:?} is invalid",
            env.name
        ));
    }
    if let Some(probe) = &c.liveness_probe {
        let problem = match &probe.action {
            ProbeAction::HttpGet { path, port, host } => probe_path_problem(path)
                .map(|p| format!("its path {p}"))
                .or_else(|| port_ref_problem(port))
                .or_else(|| {
                    host.as_deref()
                        .and_then(probe_host_problem)
                        .map(|p| format!("its host {p}"))
                }),
            ProbeAction::TcpSocket { port } => port_ref_problem(port),
            ProbeAction::Exec { command } => command
                .is_empty()
                .then(|| "its command is empty".to_string()),
        };
        if let Some(problem) = problem {
            return Some(format!("liveness probe: {problem}"));
        }
    }
    for (what, hook) in [("postStart", &c.post_start), ("preStop", &c.pre_stop)] {
        if let Some(problem) = hook.as_ref().and_then(|h| h.problem()) {
            return Some(format!("{what} hook: {problem}"));
        }
    }
    let mut mount_paths = HashSet::new();
    for mount in &c.volume_mounts {
        if !volumes.contains(mount.name.as_str()) {
            return Some(format!(
                "it mounts volume {:?}, which the pod has not",
                mount.name
            ));
        }
        if let Some(p) = mount_path_problem(&mount.mount_path) {
            return Some(format!("mount path {:?} {p}", mount.mount_path));
        }
        if !mount_paths.insert(mount.mount_path.as_str()) {
            return Some(format!("mount path {:?} is used twice", mount.mount_path));
        }
    }
    let security = &c.security;
    if security.is_privileged() && !policy.allow_privileged {
        return Some(
            "it is privileged or adds capabilities, which this cluster does not allow (`kctl up --allow-privileged`)"
                .into(),
        );
    }
    if let Some(bad) = security
        .capabilities_add
        .iter()
        .find(|n| !is_capability_name(n, false))
        .or_else(|| {
            security
                .capabilities_drop
                .iter()
                .find(|n| !is_capability_name(n, true))
        })
    {
        return Some(format!("{bad:?} is no capability name"));
    }
    if security.run_as_non_root && matches!(security.run_as_user, None | Some(0)) {
        return Some("runAsNonRoot without a user id other than 0".into());
    }
    None
}

pub fn pod_problem(record: &PodRecord, policy: &RecordPolicy) -> Option<String> {
    let pod = &record.pod;
    object_id_problem(&pod.id)
        .or_else(|| minion_id_problem(&record.host))
        .or_else(|| record.owner.as_deref().and_then(object_id_problem))
        .or_else(|| labels_problem(&pod.labels))
        .or_else(|| pod_spec_problem(&pod.spec, policy))
}

pub fn controller_problem(rc: &ReplicationController, policy: &RecordPolicy) -> Option<String> {
    object_id_problem(&rc.id)
        .or_else(|| labels_problem(&rc.labels))
        .or_else(|| labels_problem(&rc.selector))
        .or_else(|| labels_problem(&rc.template.labels))
        .or_else(|| pod_spec_problem(&rc.template.spec, policy))
}

/// A service's own fields, as a manifest's are checked.
pub fn service_problem(s: &Service) -> Option<String> {
    if let Some(p) = service_id_problem(&s.id) {
        return Some(format!("its id {:?} {p}", s.id));
    }
    if s.port == 0 {
        return Some("its port is 0".into());
    }
    let on_machines = s.external || !s.public_ips.is_empty();
    if on_machines && CONTROL_PLANE_PORTS.contains(&s.port) {
        return Some(format!(
            "it takes port {} on the machines' own addresses, which they need (sshd, etcd)",
            s.port
        ));
    }
    if let Some(ip) = s.public_ips.iter().find(|ip| !ordinary(**ip)) {
        return Some(format!("public IP {ip} is no ordinary address"));
    }
    if let Some(crate::model::NodePort::Port(n)) = s.node_port {
        if !NODE_PORT_RANGE.contains(&n) {
            return Some(format!("node port {n} is outside {NODE_PORT_RANGE:?}"));
        }
    }
    s.container_port
        .as_ref()
        .and_then(port_ref_problem)
        .or_else(|| labels_problem(&s.labels))
        .or_else(|| labels_problem(&s.selector))
}

/// A service record: the service, and the portal and node port it was
/// given, which must stay off the machines' own addresses and ports.
pub fn service_record_problem(
    record: &ServiceRecord,
    minions: &[&MinionRecord],
    policy: &RecordPolicy,
) -> Option<String> {
    if let Some(problem) = service_problem(&record.service) {
        return Some(problem);
    }
    let portal = record.portal_ip;
    let on_a_machine = minions.iter().any(|m| {
        m.host_ip == portal
            || m.pod_cidr
                .parse::<ipnet::Ipv4Net>()
                .is_ok_and(|net| net.contains(&portal))
    });
    let outside = policy.portal_net.is_some_and(|net| !net.contains(&portal));
    if !ordinary(portal) || on_a_machine || outside {
        return Some(format!(
            "its portal IP {portal} is not one of the cluster's portal range"
        ));
    }
    match record.node_port {
        Some(n) if !NODE_PORT_RANGE.contains(&n) => {
            Some(format!("node port {n} is outside {NODE_PORT_RANGE:?}"))
        }
        _ => None,
    }
}

/// A user name as sshd and `useradd --badname` take it (no ssh option,
/// no `@`, no space).
pub fn minion_problem(m: &MinionRecord) -> Option<String> {
    if let Some(p) = minion_id_problem(&m.id) {
        return Some(p);
    }
    if !ordinary(m.host_ip) && !m.host_ip.is_loopback() {
        return Some(format!("host IP {} is no ordinary address", m.host_ip));
    }
    if m.pod_cidr.parse::<ipnet::Ipv4Net>().is_err() {
        return Some(format!("pod range {:?} is no IPv4 network", m.pod_cidr));
    }
    if m.ssh_port == 0 {
        return Some("ssh port 0".into());
    }
    user_name_problem(&m.ssh_user)
}

fn endpoint_problem(e: &Endpoint) -> Option<String> {
    if !ordinary(e.ip) || e.port == 0 {
        return Some(format!("endpoint {}:{} is no pod's address", e.ip, e.port));
    }
    object_id_problem(&e.pod)
}

fn status_problem(s: &PodStatus) -> Option<String> {
    if !s.host.is_empty() {
        if let Some(p) = minion_id_problem(&s.host) {
            return Some(p);
        }
    }
    if let Some(ip) = s.pod_ip.filter(|ip| !ordinary(*ip)) {
        return Some(format!("pod IP {ip} is no pod's address"));
    }
    s.containers.iter().find_map(|c| {
        dns_label_problem(&c.name, MAX_LABEL_LEN)
            .map(|p| format!("container name {:?} {p}", c.name))
    })
}

/// Whether a key's id matches the id its record holds: a record filed
/// under another id would let a name be used for a different object.
fn filed_as(key_id: &str, id: &str) -> Option<String> {
    (key_id != id).then(|| format!("the record holds id {id:?}, not its key's"))
}

/// `state` with every record that fails its checks left out, and what was
/// left out. Records that depend on others (statuses, endpoints) are
/// checked on their own; what is left out of one map never breaks
/// another.
pub fn checked(mut state: ClusterState, policy: &RecordPolicy) -> (ClusterState, Vec<Rejected>) {
    let mut rejected = Vec::new();
    let mut keep = |kind: &str, id: &str, problem: Option<String>| match problem {
        Some(reason) => {
            rejected.push(Rejected {
                key: format!("{kind}/{id}"),
                reason,
            });
            false
        }
        None => true,
    };
    state.minions.retain(|id, m| {
        let problem = minion_problem(m).or_else(|| filed_as(id, &m.id));
        keep("minions", id, problem)
    });
    let minions: Vec<&MinionRecord> = state.minions.values().collect();
    state.services.retain(|id, r| {
        let problem =
            service_record_problem(r, &minions, policy).or_else(|| filed_as(id, &r.service.id));
        keep("services", id, problem)
    });
    state.controllers.retain(|id, rc| {
        let problem = controller_problem(rc, policy).or_else(|| filed_as(id, &rc.id));
        keep("controllers", id, problem)
    });
    state.pods.retain(|id, p| {
        let problem = pod_problem(p, policy).or_else(|| filed_as(id, &p.pod.id));
        keep("pods", id, problem)
    });
    state.statuses.retain(|id, s| {
        let problem = object_id_problem(id).or_else(|| status_problem(s));
        keep("status/pods", id, problem)
    });
    state.endpoints.retain(|id, eps| {
        let problem = service_id_problem(id)
            .map(|p| format!("service id {id:?} {p}"))
            .or_else(|| eps.iter().find_map(endpoint_problem));
        keep("endpoints", id, problem)
    });
    state.load_balancers.retain(|id, lb| {
        let problem = service_id_problem(id)
            .map(|p| format!("service id {id:?} {p}"))
            .or_else(|| (!lb.usable()).then(|| format!("address {} is unusable", lb.ip)));
        keep("loadbalancers", id, problem)
    });
    state.rollouts.retain(|id, r| {
        let problem = object_id_problem(id)
            .or_else(|| labels_problem(&r.to.labels))
            .or_else(|| pod_spec_problem(&r.to.spec, policy));
        keep("rollouts", id, problem)
    });
    // Records that name a minion only in their key.
    macro_rules! by_minion {
        ($map:expr, $kind:literal) => {
            $map.retain(|id, _| keep($kind, id, minion_id_problem(id)));
        };
    }
    by_minion!(state.rule_digests, "rules");
    by_minion!(state.helper_versions, "versions");
    by_minion!(state.last_seen, "seen");
    by_minion!(state.not_ready, "heartbeats");
    state
        .heartbeats
        .retain(|id| keep("heartbeats", id, minion_id_problem(id)));
    state
        .cordoned
        .retain(|id| keep("cordoned", id, minion_id_problem(id)));
    rejected.sort();
    rejected.dedup();
    (state, rejected)
}

#[cfg(test)]
mod tests;
