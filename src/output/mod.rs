//! What `kctl get` prints: v0.5-style tables, and the objects in their
//! v1beta1 JSON shape inside list objects. Pure functions of the state.

pub mod describe;
#[cfg(test)]
pub(crate) mod snapshots;
pub mod v1;

use crate::model::{
    format_labels, Container, PodSpec, ProbeAction, ReplicationController, RestartPolicy,
    SecurityContext, VolumeSource,
};
use crate::state::{ClusterState, Endpoint, MinionRecord, PodPhase, PodRecord, ServiceRecord};
use serde_json::{json, Map, Value};
use tabled::builder::Builder;
use tabled::settings::Style;

/// A minion and whether it answers.
#[derive(Debug, Clone)]
pub struct MinionView<'a> {
    pub record: &'a MinionRecord,
    pub ready: bool,
    /// Why it is not ready, when its helper says so.
    pub reason: Option<String>,
    /// Unix time of the last heartbeat.
    pub last_seen: Option<u64>,
    /// The helper's version and binary digest, as it recorded them.
    pub helper: Option<String>,
    /// How many pods are bound to it.
    pub pods: usize,
    /// On its way out of the cluster: no new pods go there.
    pub leaving: bool,
}

/// Unix time in seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl<'a> MinionView<'a> {
    /// The minion as the state knows it.
    pub fn of(state: &ClusterState, record: &'a MinionRecord) -> MinionView<'a> {
        let id = &record.id;
        MinionView {
            record,
            // Ready while its helper's heartbeat lease lives and says the
            // minion can run pods.
            ready: state.ready(id),
            reason: state.not_ready.get(id).cloned(),
            last_seen: state.last_seen.get(id).copied(),
            helper: state
                .helper_versions
                .get(id)
                .map(|v| format!("{} ({})", v.version, v.sha256)),
            pods: state.pods_on(id).count(),
            leaving: state.cordoned.contains(id),
        }
    }
}

fn seconds_ago(then: Option<u64>, now: u64) -> String {
    match then {
        Some(t) => format!("{}s ago", now.saturating_sub(t)),
        None => "never".into(),
    }
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut builder = Builder::default();
    builder.push_record(header.iter().map(|h| h.to_string()));
    for row in rows {
        builder.push_record(row);
    }
    let mut table = builder.build();
    table.with(Style::blank());
    let mut text = table.to_string();
    // Style::blank pads every cell by one space: drop the padding before
    // the first column and after the last, as kubectl prints.
    text = text
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect::<Vec<_>>()
        .join("\n");
    text.push('\n');
    text
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

pub(crate) fn pod_phase(state: &ClusterState, pod: &PodRecord) -> (PodPhase, Option<String>) {
    match state.statuses.get(&pod.pod.id) {
        // What another minion saw is not this pod (moved under its id).
        Some(s) if s.spec_hash == pod.spec_hash() && (s.host.is_empty() || s.host == pod.host) => {
            (s.phase, s.message.clone())
        }
        _ => (PodPhase::Waiting, Some("not yet started".into())),
    }
}

/// `kctl get pods`; `wide` adds the containers, their restarts and the
/// owning controller.
pub fn pods_table(state: &ClusterState, pods: &[&PodRecord], wide: bool) -> String {
    let rows = pods
        .iter()
        .map(|p| {
            let host_ip = state
                .minions
                .get(&p.host)
                .map(|m| format!("{}/{}", p.host, m.host_ip))
                .unwrap_or_else(|| p.host.clone());
            let (phase, _) = pod_phase(state, p);
            let status = state.statuses.get(&p.pod.id);
            let pod_ip = status
                .and_then(|s| s.pod_ip)
                .map(|ip| ip.to_string())
                .unwrap_or_default();
            let mut row = vec![
                p.pod.id.clone(),
                p.pod.spec.images().join(","),
                host_ip,
                or_none(format_labels(&p.pod.labels)),
                // Out of its services' endpoints, on its way out.
                if p.draining {
                    format!("{},Draining", phase.as_str())
                } else {
                    phase.as_str().to_string()
                },
                or_none(pod_ip),
            ];
            if wide {
                let names: Vec<&str> = p
                    .pod
                    .spec
                    .containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                let restarts: u32 = status
                    .filter(|s| s.spec_hash == p.spec_hash())
                    .map_or(0, |s| s.containers.iter().map(|c| c.restart_count).sum());
                row.push(names.join(","));
                row.push(restarts.to_string());
                row.push(p.owner.clone().unwrap_or_else(|| "<none>".into()));
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "IMAGE(S)", "HOST", "LABELS", "STATUS", "POD IP"];
    if wide {
        header.extend(["CONTAINER(S)", "RESTARTS", "CONTROLLER"]);
    }
    table(&header, rows)
}

/// `kctl get rc`; `wide` adds the containers and the minions the pods run on.
pub fn controllers_table(
    state: &ClusterState,
    rcs: &[&ReplicationController],
    wide: bool,
) -> String {
    let rows = rcs
        .iter()
        .map(|rc| {
            let running = state
                .pods_owned_by(&rc.id)
                .filter(|p| pod_phase(state, p).0 == PodPhase::Running)
                .count();
            let mut row = vec![
                rc.id.clone(),
                rc.template.spec.images().join(","),
                format_labels(&rc.selector),
                format!("{}/{}", running, rc.replicas),
            ];
            if wide {
                let names: Vec<&str> = rc
                    .template
                    .spec
                    .containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                let mut hosts: Vec<&str> = state
                    .pods_owned_by(&rc.id)
                    .map(|p| p.host.as_str())
                    .collect();
                hosts.sort();
                hosts.dedup();
                row.push(names.join(","));
                row.push(or_none(hosts.join(",")));
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "IMAGE(S)", "SELECTOR", "REPLICAS"];
    if wide {
        header.extend(["CONTAINER(S)", "MINIONS"]);
    }
    table(&header, rows)
}

/// The address of a service's cloud load balancer, if it has one (a
/// record left by a service that no longer asks for one does not count).
pub fn load_balancer_ip(state: &ClusterState, r: &ServiceRecord) -> Option<std::net::Ipv4Addr> {
    r.service
        .external
        .then(|| state.load_balancers.get(&r.service.id))
        .flatten()
        .map(|lb| lb.ip)
}

/// Where a service answers from outside the cluster: its load balancer's
/// address and `publicIPs`; `<minions>` when it is published on the
/// minions' own addresses only.
fn external_addresses(state: &ClusterState, r: &ServiceRecord) -> String {
    let mut addresses: Vec<String> = load_balancer_ip(state, r)
        .into_iter()
        .chain(r.service.public_ips.iter().copied())
        .map(|ip| ip.to_string())
        .collect();
    if addresses.is_empty() && r.service.external {
        addresses.push("<minions>".into());
    }
    or_none(addresses.join(","))
}

/// `kctl get services`; `wide` adds the container port and the endpoints.
pub fn services_table(state: &ClusterState, services: &[&ServiceRecord], wide: bool) -> String {
    let rows = services
        .iter()
        .map(|r| {
            let s = &r.service;
            let mut row = vec![
                s.id.clone(),
                or_none(format_labels(&s.labels)),
                format_labels(&s.selector),
                r.portal_ip.to_string(),
                external_addresses(state, r),
                // As kubectl writes a node port: `80:30080/TCP`.
                match r.node_port {
                    Some(node_port) => format!("{}:{node_port}/{}", s.port, s.protocol.as_upper()),
                    None => format!("{}/{}", s.port, s.protocol.as_upper()),
                },
                endpoints_of(state, &s.id).len().to_string(),
            ];
            if wide {
                row.push(
                    s.container_port
                        .as_ref()
                        .map_or("<first>".to_string(), |p| p.to_string()),
                );
                row.push(or_none(endpoint_addresses(state, &s.id).join(",")));
            }
            row
        })
        .collect();
    let mut header = vec![
        "NAME",
        "LABELS",
        "SELECTOR",
        "IP",
        "EXTERNAL IP",
        "PORT",
        "ENDPOINTS",
    ];
    if wide {
        header.extend(["CONTAINER PORT", "ENDPOINT ADDRESSES"]);
    }
    table(&header, rows)
}

fn endpoints_of<'a>(state: &'a ClusterState, service: &str) -> &'a [Endpoint] {
    state
        .endpoints
        .get(service)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn endpoint_addresses(state: &ClusterState, service: &str) -> Vec<String> {
    endpoints_of(state, service)
        .iter()
        .map(|e| format!("{}:{}", e.ip, e.port))
        .collect()
}

pub fn endpoints_table(state: &ClusterState, services: &[&ServiceRecord]) -> String {
    let rows = services
        .iter()
        .map(|r| {
            vec![
                r.service.id.clone(),
                or_none(endpoint_addresses(state, &r.service.id).join(",")),
            ]
        })
        .collect();
    table(&["NAME", "ENDPOINTS"], rows)
}

pub fn endpoints_json(state: &ClusterState, r: &ServiceRecord) -> Value {
    json!({
        "kind": "Endpoints",
        "apiVersion": "v1beta1",
        "id": r.service.id,
        "endpoints": endpoint_addresses(state, &r.service.id),
    })
}

/// `kctl get minions`; `now`: unix seconds, what LAST SEEN counts from;
/// `wide` adds the helper's version and how many pods the minion has.
pub fn minions_table(minions: &[MinionView], now: u64, wide: bool) -> String {
    let rows = minions
        .iter()
        .map(|m| {
            let mut row = vec![
                m.record.id.clone(),
                m.record.host_ip.to_string(),
                m.record.pod_cidr.clone(),
                match &m.reason {
                    Some(reason) => format!("{} ({reason})", minion_status(m)),
                    None => minion_status(m),
                },
                seconds_ago(m.last_seen, now),
            ];
            if wide {
                row.push(m.helper.clone().unwrap_or_else(|| "<unknown>".into()));
                row.push(m.pods.to_string());
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "ADDRESS", "POD RANGE", "STATUS", "LAST SEEN"];
    if wide {
        header.extend(["KCTL-NODE", "PODS"]);
    }
    table(&header, rows)
}

/// Ready or NotReady, and `,Leaving` while it takes no new pods (as
/// kubectl's `,SchedulingDisabled`).
fn minion_status(m: &MinionView) -> String {
    let ready = if m.ready { "Ready" } else { "NotReady" };
    if m.leaving {
        format!("{ready},Leaving")
    } else {
        ready.to_string()
    }
}

// ---- v1beta1 JSON ----

pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "v1beta1", "items": items})
}

pub(crate) fn container_json(c: &Container) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(c.name));
    o.insert("image".into(), json!(c.image));
    if !c.entrypoint.is_empty() {
        o.insert("entrypoint".into(), json!(c.entrypoint));
    }
    if !c.command.is_empty() {
        o.insert("command".into(), json!(c.command));
    }
    if let Some(dir) = &c.working_dir {
        o.insert("workingDir".into(), json!(dir));
    }
    if !c.ports.is_empty() {
        let ports: Vec<Value> = c
            .ports
            .iter()
            .map(|p| {
                let mut port = Map::new();
                if let Some(name) = &p.name {
                    port.insert("name".into(), json!(name));
                }
                port.insert("containerPort".into(), json!(p.container_port));
                if let Some(hp) = p.host_port {
                    port.insert("hostPort".into(), json!(hp));
                }
                port.insert("protocol".into(), json!(p.protocol.as_upper()));
                Value::Object(port)
            })
            .collect();
        o.insert("ports".into(), Value::Array(ports));
    }
    if !c.env.is_empty() {
        let env: Vec<Value> = c
            .env
            .iter()
            .map(|e| json!({"name": e.name, "value": e.value}))
            .collect();
        o.insert("env".into(), Value::Array(env));
    }
    if let Some(cpu) = c.cpu {
        o.insert("cpu".into(), json!(cpu));
    }
    if let Some(mem) = c.memory {
        o.insert("memory".into(), json!(mem));
    }
    if let Some(probe) = &c.liveness_probe {
        let mut p = Map::new();
        let (key, action) = match &probe.action {
            ProbeAction::HttpGet { path, port, host } => {
                let mut a = json!({"path": path, "port": port});
                if let Some(h) = host {
                    a["host"] = json!(h);
                }
                ("httpGet", a)
            }
            ProbeAction::TcpSocket { port } => ("tcpSocket", json!({"port": port})),
            ProbeAction::Exec { command } => ("exec", json!({"command": command})),
        };
        p.insert(key.into(), action);
        p.insert(
            "initialDelaySeconds".into(),
            json!(probe.initial_delay_seconds),
        );
        p.insert("timeoutSeconds".into(), json!(probe.timeout_seconds));
        o.insert("livenessProbe".into(), Value::Object(p));
    }
    if !c.volume_mounts.is_empty() {
        let mounts: Vec<Value> = c
            .volume_mounts
            .iter()
            .map(|m| {
                let mut mount = json!({"name": m.name, "mountPath": m.mount_path});
                if m.read_only {
                    mount["readOnly"] = json!(true);
                }
                mount
            })
            .collect();
        o.insert("volumeMounts".into(), Value::Array(mounts));
    }
    let hook = |hook: &crate::model::Hook| match hook {
        crate::model::Hook::Exec(argv) => json!({"exec": {"command": argv}}),
        crate::model::Hook::HttpGet(get) => {
            let mut a = json!({"path": get.path, "port": get.port});
            if let Some(h) = &get.host {
                a["host"] = json!(h);
            }
            json!({"httpGet": a})
        }
    };
    let mut lifecycle = Map::new();
    if let Some(post_start) = &c.post_start {
        lifecycle.insert("postStart".into(), hook(post_start));
    }
    if let Some(pre_stop) = &c.pre_stop {
        lifecycle.insert("preStop".into(), hook(pre_stop));
    }
    if !lifecycle.is_empty() {
        o.insert("lifecycle".into(), Value::Object(lifecycle));
    }
    if let Some(policy) = c.image_pull_policy {
        o.insert(
            "imagePullPolicy".into(),
            json!(format!("Pull{}", policy.v1_name())),
        );
    }
    // v1beta1 spells only `privileged`; the rest is v1's `securityContext`,
    // which kctl also reads in v1beta1 files.
    let only_privileged = SecurityContext {
        privileged: true,
        ..SecurityContext::default()
    };
    if c.security == only_privileged {
        o.insert("privileged".into(), json!(true));
    } else if let Some(context) = security_context_json(&c.security) {
        o.insert("securityContext".into(), context);
    }
    Value::Object(o)
}

/// v1's `securityContext` of a container, unless it asks for nothing.
pub(crate) fn security_context_json(security: &SecurityContext) -> Option<Value> {
    if security.is_default() {
        return None;
    }
    let mut o = Map::new();
    if security.privileged {
        o.insert("privileged".into(), json!(true));
    }
    if let Some(uid) = security.run_as_user {
        o.insert("runAsUser".into(), json!(uid));
    }
    if security.run_as_non_root {
        o.insert("runAsNonRoot".into(), json!(true));
    }
    if security.read_only_root_filesystem {
        o.insert("readOnlyRootFilesystem".into(), json!(true));
    }
    if let Some(escalation) = security.allow_privilege_escalation {
        o.insert("allowPrivilegeEscalation".into(), json!(escalation));
    }
    let mut capabilities = Map::new();
    if !security.capabilities_add.is_empty() {
        capabilities.insert("add".into(), json!(security.capabilities_add));
    }
    if !security.capabilities_drop.is_empty() {
        capabilities.insert("drop".into(), json!(security.capabilities_drop));
    }
    if !capabilities.is_empty() {
        o.insert("capabilities".into(), Value::Object(capabilities));
    }
    Some(Value::Object(o))
}

/// A gitRepo volume's fields, the same in v1beta1 and v1.
pub(crate) fn git_repo_json(source: &VolumeSource) -> Value {
    let VolumeSource::GitRepo {
        repository,
        revision,
        directory,
    } = source
    else {
        return Value::Null;
    };
    let mut v = json!({"repository": repository});
    if let Some(revision) = revision {
        v["revision"] = json!(revision);
    }
    if let Some(directory) = directory {
        v["directory"] = json!(directory);
    }
    v
}

/// A persistent disk volume's fields, the same in v1beta1 (`persistentDisk`)
/// and v1 (`gcePersistentDisk`).
pub(crate) fn disk_json(source: &VolumeSource) -> Value {
    let VolumeSource::GcePersistentDisk {
        pd_name,
        fs_type,
        partition,
        read_only,
    } = source
    else {
        return Value::Null;
    };
    let mut v = json!({"pdName": pd_name, "fsType": fs_type});
    if let Some(partition) = partition {
        v["partition"] = json!(partition);
    }
    if *read_only {
        v["readOnly"] = json!(true);
    }
    v
}

/// A pod's volumes in v1beta1's shape (`source: {emptyDir: {}}`).
fn volumes_json(spec: &PodSpec) -> Vec<Value> {
    spec.volumes
        .iter()
        .map(|v| {
            let source = match &v.source {
                VolumeSource::EmptyDir => json!({"emptyDir": {}}),
                VolumeSource::HostDir { path } => json!({"hostDir": {"path": path}}),
                VolumeSource::GitRepo { .. } => json!({"gitRepo": git_repo_json(&v.source)}),
                VolumeSource::GcePersistentDisk { .. } => {
                    json!({"persistentDisk": disk_json(&v.source)})
                }
            };
            json!({"name": v.name, "source": source})
        })
        .collect()
}

fn manifest_json(id: &str, spec: &PodSpec) -> Value {
    let policy = match spec.restart_policy {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "onFailure",
        RestartPolicy::Never => "never",
    };
    let mut manifest = json!({
        "version": "v1beta1",
        "id": id,
        "containers": spec.containers.iter().map(container_json).collect::<Vec<_>>(),
        "restartPolicy": {policy: {}},
    });
    if !spec.volumes.is_empty() {
        manifest["volumes"] = json!(volumes_json(spec));
    }
    manifest
}

pub fn pod_json(state: &ClusterState, p: &PodRecord) -> Value {
    let (phase, message) = pod_phase(state, p);
    let status = state.statuses.get(&p.pod.id);
    let mut current = Map::new();
    current.insert("status".into(), json!(phase.as_str()));
    current.insert("host".into(), json!(p.host));
    if let Some(m) = state.minions.get(&p.host) {
        current.insert("hostIP".into(), json!(m.host_ip.to_string()));
    }
    if let Some(ip) = status.and_then(|s| s.pod_ip) {
        current.insert("podIP".into(), json!(ip.to_string()));
    }
    if let Some(msg) = message {
        current.insert("message".into(), json!(msg));
    }
    if p.draining {
        current.insert("draining".into(), json!(true));
    }
    if let Some(s) = status {
        let info: Map<String, Value> = s
            .containers
            .iter()
            .map(|c| {
                let state = if c.running {
                    json!({"running": {}})
                } else {
                    json!({"termination": {"exitCode": c.exit_code}})
                };
                let mut info = json!({"state": state, "restartCount": c.restart_count,
                           "containerID": format!("docker://{}", c.container_id)});
                if let Some(healthy) = c.healthy {
                    info["healthy"] = json!(healthy);
                }
                (c.name.clone(), info)
            })
            .collect();
        current.insert("info".into(), Value::Object(info));
    }
    let mut pod = json!({
        "kind": "Pod",
        "apiVersion": "v1beta1",
        "id": p.pod.id,
        "labels": p.pod.labels,
        "desiredState": {"manifest": manifest_json(&p.pod.id, &p.pod.spec), "host": p.host},
        "currentState": Value::Object(current),
    });
    if let Some(owner) = &p.owner {
        // v1beta1 has no owner field; an annotation says which controller.
        pod["annotations"] = json!({"kctl.io/replicationController": owner});
    }
    pod
}

pub fn controller_json(state: &ClusterState, rc: &ReplicationController) -> Value {
    let current = state.pods_owned_by(&rc.id).count();
    json!({
        "kind": "ReplicationController",
        "apiVersion": "v1beta1",
        "id": rc.id,
        "labels": rc.labels,
        "desiredState": {
            "replicas": rc.replicas,
            "replicaSelector": rc.selector,
            "podTemplate": {
                "desiredState": {"manifest": manifest_json(&rc.id.to_ascii_lowercase(), &rc.template.spec)},
                "labels": rc.template.labels,
            },
        },
        "currentState": {"replicas": current},
    })
}

pub fn service_json(state: &ClusterState, r: &ServiceRecord) -> Value {
    let s = &r.service;
    let mut v = json!({
        "kind": "Service",
        "apiVersion": "v1beta1",
        "id": s.id,
        "port": s.port,
        "protocol": s.protocol.as_upper(),
        "labels": s.labels,
        "selector": s.selector,
        "portalIP": r.portal_ip.to_string(),
        // Not a field of v1beta1's Service (it had a separate Endpoints
        // object, which `kctl get endpoints` shows); here for convenience.
        "endpoints": endpoint_addresses(state, &s.id),
    });
    if let Some(cp) = &s.container_port {
        v["containerPort"] = json!(cp);
    }
    if s.external {
        v["createExternalLoadBalancer"] = json!(true);
    }
    if !s.public_ips.is_empty() {
        v["publicIPs"] = json!(s.public_ips);
    }
    if let Some(node_port) = r.node_port {
        // Not a v1beta1 field either (NodePort came with v1beta3); read
        // back by kctl, so that this output applies unchanged.
        v["nodePort"] = json!(node_port);
    }
    v
}

/// An event as v1beta1 wrote one: the object it is about, why, when.
pub fn event_json(e: &crate::events::Event) -> Value {
    let kind = match e.subject {
        crate::events::Subject::Pod => "Pod",
        crate::events::Subject::ReplicationController => "ReplicationController",
        crate::events::Subject::Service => "Service",
        crate::events::Subject::Minion => "Minion",
    };
    let timestamp = rfc3339(e.time_ms);
    json!({"kind": "Event", "apiVersion": "v1beta1",
           "involvedObject": {"kind": kind, "id": e.id},
           "reason": e.reason, "message": e.message, "source": e.source,
           "timestamp": timestamp})
}

/// Unix milliseconds as an RFC 3339 time, as Kubernetes prints times.
fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// An object as a watch prints it once it is gone: as it last was, with
/// a `deletionTimestamp` as Kubernetes sets one (in `metadata` for v1,
/// beside the id for v1beta1). Reading it back ignores that field.
pub fn deleted(object: &Value, now_ms: u64) -> Value {
    let mut object = object.clone();
    let stamp = Value::String(rfc3339(now_ms));
    match object.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(metadata) => {
            metadata.insert("deletionTimestamp".into(), stamp);
        }
        None => {
            if let Some(top) = object.as_object_mut() {
                top.insert("deletionTimestamp".into(), stamp);
            }
        }
    }
    object
}

pub fn minion_json(m: &MinionView) -> Value {
    json!({
        "kind": "Minion",
        "apiVersion": "v1beta1",
        "id": m.record.id,
        "hostIP": m.record.host_ip.to_string(),
        "podCIDR": m.record.pod_cidr,
        "status": if m.ready { "Ready" } else { "NotReady" },
        "reason": m.reason,
        "leaving": m.leaving,
        "lastSeen": m.last_seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, Pod, Port, Protocol};

    #[test]
    fn a_deleted_object_carries_a_deletion_timestamp_where_its_version_keeps_metadata() {
        let ms = 1_764_000_000_123;
        let v1beta1 = deleted(&json!({"kind": "Pod", "id": "web"}), ms);
        assert_eq!(v1beta1["deletionTimestamp"], "2025-11-24T16:00:00.123Z");
        assert_eq!(v1beta1["id"], "web");
        let v1 = deleted(&json!({"kind": "Pod", "metadata": {"name": "web"}}), ms);
        assert_eq!(
            v1["metadata"]["deletionTimestamp"],
            "2025-11-24T16:00:00.123Z"
        );
        assert!(v1.get("deletionTimestamp").is_none());
    }
    use crate::state::PodStatus;

    fn state_with_pod() -> (ClusterState, PodRecord) {
        let mut state = ClusterState::default();
        state.minions.insert(
            "minion-1".into(),
            MinionRecord {
                id: "minion-1".into(),
                host_ip: "10.101.0.11".parse().unwrap(),
                pod_cidr: "10.101.1.0/24".into(),
                ssh_port: 22,
                ssh_user: "root".into(),
            },
        );
        let pod = PodRecord {
            pod: Pod {
                id: "web-abcde".into(),
                labels: Labels::from([("name".to_string(), "web".to_string())]),
                spec: PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: "nginx".into(),
                        ports: vec![Port {
                            name: None,
                            container_port: 80,
                            host_port: None,
                            protocol: Protocol::Tcp,
                        }],
                        ..Default::default()
                    }],
                    restart_policy: RestartPolicy::Always,
                    volumes: vec![],
                },
            },
            host: "minion-1".into(),
            owner: Some("web".into()),
            draining: false,
        };
        state.pods.insert(pod.pod.id.clone(), pod.clone());
        state.statuses.insert(
            pod.pod.id.clone(),
            PodStatus {
                host: String::new(),
                phase: PodPhase::Running,
                spec_hash: pod.spec_hash(),
                pod_ip: Some("10.101.1.2".parse().unwrap()),
                containers: vec![],
                message: None,
            },
        );
        (state, pod)
    }

    /// Service `web` at 10.0.0.7:8080, to the pods' port named `http`,
    /// published on the minions and on one more address.
    fn web_service(pod: &PodRecord, protocol: Protocol) -> ServiceRecord {
        ServiceRecord {
            service: crate::model::Service {
                id: "web".into(),
                labels: Labels::new(),
                selector: pod.pod.labels.clone(),
                port: 8080,
                container_port: Some(crate::model::PortRef::Name("http".into())),
                protocol,
                portal_ip: None,
                external: true,
                public_ips: vec!["192.0.2.10".parse().unwrap()],
                node_port: None,
            },
            portal_ip: "10.0.0.7".parse().unwrap(),
            node_port: None,
        }
    }

    /// Service `np` on node port 30080, which it asked for as any.
    fn node_port_service(pod: &PodRecord) -> ServiceRecord {
        let mut record = web_service(pod, Protocol::Tcp);
        record.service.id = "np".into();
        record.service.external = false;
        record.service.public_ips.clear();
        record.service.node_port = Some(crate::model::NodePort::Any);
        record.node_port = Some(30080);
        record
    }

    /// An emptyDir, a host directory and a repository, mounted,
    /// a replaced entrypoint and a locked-down security context.
    fn with_volumes(spec: &mut PodSpec) {
        spec.containers[0].entrypoint = vec!["/bin/serve".into()];
        spec.containers[0].post_start = Some(crate::model::Hook::Exec(vec![
            "touch".into(),
            "/tmp/started".into(),
        ]));
        spec.containers[0].image_pull_policy = Some(crate::model::PullPolicy::Never);
        spec.containers[0].pre_stop =
            Some(crate::model::Hook::HttpGet(crate::model::HttpGetHook {
                path: "/quit".into(),
                port: crate::model::PortRef::Number(80),
                host: None,
            }));
        spec.containers[0].security = SecurityContext {
            run_as_user: Some(1000),
            run_as_non_root: true,
            read_only_root_filesystem: true,
            capabilities_drop: vec!["ALL".into()],
            allow_privilege_escalation: Some(false),
            ..SecurityContext::default()
        };
        use crate::model::{Volume, VolumeMount};
        spec.volumes = vec![
            Volume {
                name: "data".into(),
                source: VolumeSource::EmptyDir,
            },
            Volume {
                name: "site".into(),
                source: VolumeSource::HostDir {
                    path: "/srv/site".into(),
                },
            },
            Volume {
                name: "code".into(),
                source: VolumeSource::GitRepo {
                    repository: "https://example.com/site.git".into(),
                    revision: Some("v1".into()),
                    directory: Some(".".into()),
                },
            },
        ];
        spec.containers[0].volume_mounts = vec![
            VolumeMount {
                name: "code".into(),
                mount_path: "/code".into(),
                read_only: true,
            },
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                read_only: false,
            },
            VolumeMount {
                name: "site".into(),
                mount_path: "/usr/share/nginx/html".into(),
                read_only: true,
            },
        ];
    }

    /// Kubernetes' own published schemas, through kubernetes-validate (from
    /// PyPI; `scripts/setup` installs it): what `get --output-version v1`
    /// prints, lists included, is valid v1 with no property v1 lacks.
    #[test]
    fn v1_output_passes_kubernetes_schemas_strictly() {
        // Its Python API: the command line cannot name an object without
        // `metadata.name`, which v1 lists have not.
        let python = std::env::var("KCTL_SCHEMA_PYTHON")
            .unwrap_or_else(|_| "/var/cache/kctl-test/pyvenv/bin/python".to_string());
        assert!(
            std::path::Path::new(&python).exists(),
            "{python} is missing: scripts/setup installs kubernetes-validate there"
        );
        const CHECK: &str = "import sys, yaml, kubernetes_validate\n\
            doc = yaml.safe_load(open(sys.argv[1]))\n\
            print(kubernetes_validate.validate(doc, '1.37', strict=True))\n";
        let (mut state, pod) = state_with_pod();
        let mut spec = pod.pod.spec.clone();
        with_volumes(&mut spec);
        spec.containers[0].command = vec!["--port".into(), "80".into()];
        spec.containers[0].env = vec![crate::model::EnvVar {
            name: "MODE".into(),
            value: "prod".into(),
        }];
        spec.containers[0].cpu = Some(250);
        spec.containers[0].memory = Some(64 << 20);
        spec.containers[0].liveness_probe = Some(crate::model::Probe {
            action: ProbeAction::HttpGet {
                path: "/healthz".into(),
                port: crate::model::PortRef::Number(80),
                host: None,
            },
            initial_delay_seconds: 5,
            timeout_seconds: 1,
        });
        let full = PodRecord {
            pod: Pod {
                spec: spec.clone(),
                ..pod.pod.clone()
            },
            ..pod.clone()
        };
        let rc = ReplicationController {
            id: "web".into(),
            labels: pod.pod.labels.clone(),
            replicas: 2,
            selector: pod.pod.labels.clone(),
            template: crate::model::PodTemplate {
                labels: pod.pod.labels.clone(),
                spec,
            },
        };
        let service = web_service(&pod, Protocol::Tcp);
        state.services.insert("web".into(), service.clone());
        let objects = [
            v1::pod(&state, &full),
            v1::pod(&state, &pod),
            v1::controller(&state, &rc),
            v1::service(&service),
            v1::service(&node_port_service(&pod)),
            v1::list(
                "PodList",
                vec![v1::pod(&state, &full), v1::pod(&state, &pod)],
            ),
            v1::list(
                "ReplicationControllerList",
                vec![v1::controller(&state, &rc)],
            ),
            v1::list("ServiceList", vec![v1::service(&service)]),
        ];
        let dir = std::env::temp_dir().join(format!("kctl-v1-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let validate = |name: &str, value: &Value| {
            let path = dir.join(name);
            std::fs::write(&path, serde_yaml_ng::to_string(value).unwrap()).unwrap();
            let out = std::process::Command::new(&python)
                .args(["-c", CHECK])
                .arg(&path)
                .output()
                .unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), said)
        };
        for (i, object) in objects.iter().enumerate() {
            let (valid, said) = validate(&format!("object-{i}.yaml"), object);
            assert!(
                valid,
                "{said}\n{}",
                serde_yaml_ng::to_string(object).unwrap()
            );
        }
        // The check can fail: what kctl printed before (`status.host`, a
        // service's `status.endpoints`) is refused, inside a list too.
        let mut old = v1::pod(&state, &pod);
        old["status"]["host"] = json!("minion-1");
        let old_list = v1::list("PodList", vec![old.clone()]);
        let (valid, said) = validate("old.yaml", &old);
        assert!(!valid && said.contains("host"), "{said}");
        let (valid, said) = validate("old-list.yaml", &old_list);
        assert!(!valid, "{said}");
        let mut old_service = v1::service(&service);
        old_service["status"] = json!({"endpoints": ["10.244.1.2:80"]});
        let (valid, said) = validate("old-service.yaml", &old_service);
        assert!(!valid, "{said}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `--output-version v1` prints what reads back as the same objects.
    #[test]
    fn v1_printed_objects_apply_again_unchanged() {
        use crate::manifest::{parse_sources, Source};
        use crate::model::Object;
        let (mut state, pod) = state_with_pod();
        let mut spec = pod.pod.spec.clone();
        spec.containers[0].cpu = Some(250);
        spec.containers[0].memory = Some(64 << 20);
        spec.containers[0].command = vec!["serve".into(), "--port".into(), "80".into()];
        spec.restart_policy = RestartPolicy::OnFailure;
        with_volumes(&mut spec);
        let bare = PodRecord {
            owner: None,
            pod: Pod {
                spec,
                ..pod.pod.clone()
            },
            ..pod.clone()
        };
        let rc = ReplicationController {
            id: "web".into(),
            labels: Labels::new(),
            replicas: 3,
            selector: pod.pod.labels.clone(),
            template: crate::model::PodTemplate {
                labels: pod.pod.labels.clone(),
                spec: pod.pod.spec.clone(),
            },
        };
        let service = web_service(&pod, Protocol::Udp);
        state.services.insert("web".into(), service.clone());
        let printed = [
            (v1::pod(&state, &bare), Object::Pod(bare.pod.clone())),
            (
                v1::controller(&state, &rc),
                Object::ReplicationController(rc.clone()),
            ),
            (
                v1::service(&service),
                Object::Service(crate::model::Service {
                    // What `get` prints asks for the portal it has.
                    portal_ip: Some(service.portal_ip),
                    ..service.service.clone()
                }),
            ),
            (
                v1::service(&node_port_service(&pod)),
                Object::Service(crate::model::Service {
                    id: "np".into(),
                    portal_ip: Some(service.portal_ip),
                    // ...and the node port it has.
                    node_port: Some(crate::model::NodePort::Port(30080)),
                    external: false,
                    public_ips: vec![],
                    protocol: Protocol::Tcp,
                    ..service.service.clone()
                }),
            ),
        ];
        for (json, object) in &printed {
            assert_eq!(json["apiVersion"], "v1");
            let text = serde_yaml_ng::to_string(json).unwrap();
            let loaded = parse_sources(
                &[Source {
                    name: "<stdin>".into(),
                    text: text.clone(),
                }],
                Default::default(),
            )
            .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
            assert_eq!(&loaded.objects, std::slice::from_ref(object), "{text}");
        }
    }

    /// What `get -o json|yaml` prints reads back as the same objects, and
    /// starts with `kind` and `apiVersion`.
    #[test]
    fn printed_objects_apply_again_unchanged() {
        use crate::manifest::{parse_sources, Source};
        use crate::model::Object;
        let (mut state, pod) = state_with_pod();
        let mut bare = PodRecord {
            owner: None,
            draining: false,
            ..pod.clone()
        };
        with_volumes(&mut bare.pod.spec);
        let rc = ReplicationController {
            id: "web".into(),
            labels: Labels::from([("name".to_string(), "web".to_string())]),
            replicas: 2,
            selector: Labels::from([("name".to_string(), "web".to_string())]),
            template: crate::model::PodTemplate {
                labels: pod.pod.labels.clone(),
                spec: pod.pod.spec.clone(),
            },
        };
        let service = ServiceRecord {
            service: crate::model::Service {
                id: "web".into(),
                labels: Labels::new(),
                selector: Labels::from([("name".to_string(), "web".to_string())]),
                port: 8080,
                container_port: Some(crate::model::PortRef::Number(80)),
                protocol: Protocol::Tcp,
                portal_ip: None,
                external: false,
                public_ips: vec![],
                node_port: None,
            },
            portal_ip: "10.0.0.7".parse().unwrap(),
            node_port: None,
        };
        state.services.insert("web".into(), service.clone());
        let printed = [
            (pod_json(&state, &bare), Object::Pod(bare.pod.clone())),
            (
                controller_json(&state, &rc),
                Object::ReplicationController(rc.clone()),
            ),
            (
                service_json(&state, &service),
                Object::Service(crate::model::Service {
                    // What `get` prints asks for the portal it has.
                    portal_ip: Some(service.portal_ip),
                    ..service.service.clone()
                }),
            ),
            (
                service_json(&state, &node_port_service(&pod)),
                Object::Service(crate::model::Service {
                    portal_ip: Some("10.0.0.7".parse().unwrap()),
                    node_port: Some(crate::model::NodePort::Port(30080)),
                    ..node_port_service(&pod).service
                }),
            ),
        ];
        for (json, object) in &printed {
            let keys: Vec<&String> = json.as_object().unwrap().keys().take(3).collect();
            assert_eq!(keys, ["kind", "apiVersion", "id"]);
            for text in [
                serde_json::to_string_pretty(json).unwrap(),
                serde_yaml_ng::to_string(json).unwrap(),
            ] {
                let source = Source {
                    name: "<stdin>".into(),
                    text: text.clone(),
                };
                let loaded = parse_sources(&[source], Default::default())
                    .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
                assert_eq!(&loaded.objects, std::slice::from_ref(object), "{text}");
            }
        }
        // A list, as `get rc -o yaml` prints it, reads back too.
        let list_text = serde_yaml_ng::to_string(&list(
            "ReplicationControllerList",
            vec![printed[1].0.clone()],
        ))
        .unwrap();
        let loaded = parse_sources(
            &[Source {
                name: "<stdin>".into(),
                text: list_text,
            }],
            Default::default(),
        )
        .unwrap();
        assert_eq!(loaded.objects, [printed[1].1.clone()]);
    }

    #[test]
    fn pods_table_has_v05_columns() {
        let (state, pod) = state_with_pod();
        let text = pods_table(&state, &[&pod], false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("NAME "),
            "no leading blank: {:?}",
            lines[0]
        );
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "IMAGE(S)", "HOST", "LABELS", "STATUS", "POD", "IP"]
        );
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "web-abcde",
                "nginx",
                "minion-1/10.101.0.11",
                "name=web",
                "Running",
                "10.101.1.2"
            ]
        );
    }

    #[test]
    fn stale_status_shows_waiting() {
        let (mut state, pod) = state_with_pod();
        state.statuses.get_mut("web-abcde").unwrap().spec_hash = "old".into();
        let v = pod_json(&state, &pod);
        assert_eq!(v["currentState"]["status"], "Waiting");
        // Seen running on another minion: not this pod, moved under its id.
        let (mut state, pod) = state_with_pod();
        state.statuses.get_mut("web-abcde").unwrap().host = "minion-3".into();
        assert_eq!(pod_json(&state, &pod)["currentState"]["status"], "Waiting");
    }

    #[test]
    fn a_draining_pod_says_so() {
        let (mut state, mut pod) = state_with_pod();
        pod.draining = true;
        state.pods.insert(pod.pod.id.clone(), pod.clone());
        assert_eq!(pod_json(&state, &pod)["currentState"]["draining"], true);
        assert!(pods_table(&state, &[&pod], false).contains("Running,Draining"));
    }

    #[test]
    fn pod_json_is_v1beta1() {
        let (state, pod) = state_with_pod();
        let v = list("PodList", vec![pod_json(&state, &pod)]);
        assert_eq!(v["kind"], "PodList");
        let item = &v["items"][0];
        assert_eq!(item["kind"], "Pod");
        assert_eq!(item["currentState"]["status"], "Running");
        assert_eq!(item["currentState"]["host"], "minion-1");
        assert_eq!(item["currentState"]["hostIP"], "10.101.0.11");
        assert_eq!(item["currentState"]["podIP"], "10.101.1.2");
        let c = &item["desiredState"]["manifest"]["containers"][0];
        assert_eq!(c["ports"][0]["containerPort"], 80);
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(
            item["desiredState"]["manifest"]["restartPolicy"],
            json!({"always": {}})
        );
    }
}
