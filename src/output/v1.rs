//! Objects in today's `apiVersion: v1` shape, for `kctl get
//! --output-version v1`: what the decoder reads back as the same
//! objects (status is passed by on input; `clusterIP` asks for the
//! portal the service has).

use super::{container_json, pod_phase};
use crate::model::{Container, PodSpec, ReplicationController, VolumeSource};
use crate::state::{ClusterState, PodPhase, PodRecord, ServiceRecord};
use serde_json::{json, Value};

fn metadata(name: &str, labels: &crate::model::Labels) -> Value {
    if labels.is_empty() {
        json!({"name": name})
    } else {
        json!({"name": name, "labels": labels})
    }
}

/// v1beta1's container, moved to v1's names: `cpu` and `memory` become
/// `resources.limits`.
fn container(c: &Container) -> Value {
    let mut v = container_json(c);
    if let Some(o) = v.as_object_mut() {
        let cpu = o.remove("cpu");
        let memory = o.remove("memory");
        if cpu.is_some() || memory.is_some() {
            let mut limits = serde_json::Map::new();
            if let Some(cpu) = c.cpu {
                limits.insert("cpu".into(), json!(format!("{cpu}m")));
            }
            if let Some(memory) = c.memory {
                limits.insert("memory".into(), json!(memory.to_string()));
            }
            o.insert("resources".into(), json!({"limits": limits}));
        }
        o.remove("privileged");
        if let Some(policy) = c.image_pull_policy {
            o.insert("imagePullPolicy".into(), json!(policy.v1_name()));
        }
        // v1's `command` is the entrypoint; v1beta1's is v1's `args`.
        let entrypoint = o.remove("entrypoint");
        if let Some(args) = o.remove("command") {
            o.insert("args".into(), args);
        }
        if let Some(entrypoint) = entrypoint {
            o.insert("command".into(), entrypoint);
        }
        if let Some(context) = super::security_context_json(&c.security) {
            o.insert("securityContext".into(), context);
        }
    }
    v
}

fn pod_spec(spec: &PodSpec) -> Value {
    let mut v = json!({
        "restartPolicy": format!("{:?}", spec.restart_policy),
        "containers": spec.containers.iter().map(container).collect::<Vec<_>>(),
    });
    if !spec.volumes.is_empty() {
        let volumes: Vec<Value> = spec
            .volumes
            .iter()
            .map(|volume| match &volume.source {
                VolumeSource::EmptyDir => json!({"name": volume.name, "emptyDir": {}}),
                VolumeSource::HostDir { path } => {
                    json!({"name": volume.name, "hostPath": {"path": path}})
                }
                VolumeSource::GitRepo { .. } => {
                    json!({"name": volume.name, "gitRepo": super::git_repo_json(&volume.source)})
                }
                VolumeSource::GcePersistentDisk { .. } => json!({
                    "name": volume.name,
                    "gcePersistentDisk": super::disk_json(&volume.source),
                }),
            })
            .collect();
        v["volumes"] = json!(volumes);
    }
    v
}

/// v1's phase for kctl's: Waiting is Pending; Terminated is Succeeded
/// when every container exited 0, else Failed.
fn v1_phase(state: &ClusterState, p: &PodRecord, phase: PodPhase) -> &'static str {
    match phase {
        PodPhase::Waiting => "Pending",
        PodPhase::Running => "Running",
        PodPhase::Terminated => {
            let all_zero = state
                .statuses
                .get(&p.pod.id)
                .is_some_and(|s| s.containers.iter().all(|c| c.exit_code == Some(0)));
            if all_zero {
                "Succeeded"
            } else {
                "Failed"
            }
        }
    }
}

/// A list as v1 writes one: with its (empty) `metadata`.
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {}, "items": items})
}

/// The minion shows as `status.hostIP`: v1's `spec.nodeName` would ask
/// for a node when applied again, which kctl's scheduler decides.
pub fn pod(state: &ClusterState, p: &PodRecord) -> Value {
    let (phase, message) = pod_phase(state, p);
    let mut status = json!({"phase": v1_phase(state, p, phase)});
    if let Some(m) = state.minions.get(&p.host) {
        status["hostIP"] = json!(m.host_ip.to_string());
    }
    if let Some(ip) = state.statuses.get(&p.pod.id).and_then(|s| s.pod_ip) {
        status["podIP"] = json!(ip.to_string());
    }
    if let Some(message) = message {
        status["message"] = json!(message);
    }
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata(&p.pod.id, &p.pod.labels),
        "spec": pod_spec(&p.pod.spec),
        "status": status,
    })
}

pub fn controller(state: &ClusterState, rc: &ReplicationController) -> Value {
    json!({
        "kind": "ReplicationController",
        "apiVersion": "v1",
        "metadata": metadata(&rc.id, &rc.labels),
        "spec": {
            "replicas": rc.replicas,
            "selector": rc.selector,
            "template": {
                "metadata": {"labels": rc.template.labels},
                "spec": pod_spec(&rc.template.spec),
            },
        },
        "status": {"replicas": state.pods_owned_by(&rc.id).count()},
    })
}

pub fn service(r: &ServiceRecord) -> Value {
    service_in(&ClusterState::default(), r)
}

/// A service with what the cluster observed of it: its cloud load
/// balancer's address in `status.loadBalancer.ingress`.
pub fn service_in(state: &ClusterState, r: &ServiceRecord) -> Value {
    let s = &r.service;
    let mut port = json!({"port": s.port, "protocol": s.protocol.as_upper()});
    if let Some(target) = &s.container_port {
        port["targetPort"] = json!(target);
    }
    if let Some(node_port) = r.node_port {
        port["nodePort"] = json!(node_port);
    }
    let service_type = if s.external {
        "LoadBalancer"
    } else if r.node_port.is_some() {
        "NodePort"
    } else {
        "ClusterIP"
    };
    let mut v = json!({
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": metadata(&s.id, &s.labels),
        "spec": {
            "type": service_type,
            "clusterIP": r.portal_ip.to_string(),
            "selector": s.selector,
            "ports": [port],
        },
        // Endpoints are an object of their own in v1 (`kctl get endpoints`).
        "status": {"loadBalancer": {}},
    });
    if !s.public_ips.is_empty() {
        v["spec"]["externalIPs"] = json!(s.public_ips);
    }
    if let Some(ip) = super::load_balancer_ip(state, r) {
        v["status"]["loadBalancer"]["ingress"] = json!([{"ip": ip.to_string()}]);
    }
    v
}
