//! What kctl keeps in etcd, as plain data: the records of a cluster and a
//! consistent snapshot of all of them. Pure types; `store` moves them.

pub mod checks;

use crate::model::{Labels, Pod, ReplicationController, Service};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A machine that runs pods. Written by `kctl up` (and later its helper).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MinionRecord {
    pub id: String,
    pub host_ip: Ipv4Addr,
    /// The minion's pod range, e.g. `10.101.1.0/24`.
    pub pod_cidr: String,
    pub ssh_port: u16,
    pub ssh_user: String,
}

/// A service as applied, with the portal IP it was given (kept for the
/// life of the service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    pub service: Service,
    pub portal_ip: Ipv4Addr,
    /// The node port it was given, when it asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// A service's external load balancer as the cloud made it (observed, as
/// endpoints are): the address its forwarding rule got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    pub ip: Ipv4Addr,
}

impl LoadBalancerStatus {
    /// Whether the address may go into the minions' rules: read back from
    /// etcd, it is checked again (no 0.0.0.0, loopback, multicast or
    /// broadcast address takes a service's traffic).
    pub fn usable(&self) -> bool {
        let ip = self.ip;
        !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
    }
}

/// One pod behind a service: where connections to the portal go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub pod: String,
}

/// A pod as scheduled: the desired state of one pod on one minion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub pod: Pod,
    /// The minion it is bound to.
    pub host: String,
    /// The replication controller that owns it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// On its way out (a rolling update replaced it): out of its services'
    /// endpoints, still running until every minion's rules forgot it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

impl PodRecord {
    /// A digest of everything that, when changed, means the pod's containers
    /// must be replaced. Containers carry it as a label so converge can tell
    /// a stale container from a current one without asking etcd.
    pub fn spec_hash(&self) -> String {
        spec_hash(&self.pod)
    }
}

pub fn spec_hash(pod: &Pod) -> String {
    let bytes = serde_json::to_vec(&(&pod.labels, &pod.spec)).unwrap_or_default();
    short_digest(&bytes)
}

/// The first 12 hex digits of a SHA-256: enough to tell versions apart.
pub fn short_digest(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PodPhase {
    #[default]
    Waiting,
    Running,
    Terminated,
}

impl PodPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Waiting => "Waiting",
            PodPhase::Running => "Running",
            PodPhase::Terminated => "Terminated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    pub container_id: String,
    pub running: bool,
    pub restart_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The last liveness probe's verdict; none before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

/// What was last observed of a pod on its minion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// The minion it was observed on: a pod moved under its id (off a
    /// leaving minion) must not count as running on the old one's word.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub phase: PodPhase,
    /// The spec version the observation is of (see `PodRecord::spec_hash`).
    pub spec_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Everything kctl knows of one cluster, read at one etcd revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    pub minions: BTreeMap<String, MinionRecord>,
    pub services: BTreeMap<String, ServiceRecord>,
    pub controllers: BTreeMap<String, ReplicationController>,
    pub pods: BTreeMap<String, PodRecord>,
    pub statuses: BTreeMap<String, PodStatus>,
    /// Per service, as last computed (derived from services and statuses).
    pub endpoints: BTreeMap<String, Vec<Endpoint>>,
    /// Per service with a cloud load balancer, its external address.
    pub load_balancers: BTreeMap<String, LoadBalancerStatus>,
    /// Per minion, the digest of the service rules last written there.
    pub rule_digests: BTreeMap<String, String>,
    /// Minions whose helper's heartbeat lease is alive.
    pub heartbeats: std::collections::BTreeSet<String>,
    /// Minions whose helper heartbeats but says the minion cannot run pods
    /// now, and why (its container runtime does not answer).
    pub not_ready: BTreeMap<String, String>,
    /// Per minion, what its helper says it is: version and binary digest.
    pub helper_versions: BTreeMap<String, HelperVersion>,
    /// Per minion, unix time of the helper's last heartbeat.
    pub last_seen: BTreeMap<String, u64>,
    /// Controllers in a rolling update, which neither `apply` nor the
    /// leader touch meanwhile.
    pub rollouts: BTreeMap<String, Rollout>,
    /// Minions on their way out of the cluster (`up --minions` fewer):
    /// they get no new pods, and theirs are moved.
    pub cordoned: std::collections::BTreeSet<String>,
    /// Which set of files (`apply`) last applied each object: what
    /// `apply --prune` may delete.
    pub owners: BTreeMap<(crate::model::Kind, String), String>,
}

/// A rolling update in progress: kept on the lease of the `kctl` that
/// runs it, so it ends with that process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The template the controller's pods are being moved to.
    pub to: crate::model::PodTemplate,
    /// Who runs it, for messages: `user@host pid N`.
    pub by: String,
    /// Unix time it began.
    pub since: u64,
}

/// A helper's version, as it records it when it starts: kctl's version
/// and the first digits of its binary's SHA-256 (builds of one version
/// differ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperVersion {
    pub version: String,
    pub sha256: String,
    /// What the helper shares with kctl (see `HELPER_PROTOCOL`); helpers
    /// from before it was recorded read as 0.
    #[serde(default)]
    pub protocol: u32,
}

/// What a helper and kctl must agree on to share a cluster: where a
/// minion's lock lives. 1: under the cluster's prefix (before the helpers
/// kept a copy of the state); 2: under `/kctl-locks/`. A helper of an
/// older protocol and this kctl would take different locks and could
/// converge one minion at once, until `kctl up` replaces the helper.
pub const HELPER_PROTOCOL: u32 = 2;

/// The minions whose helper (as it recorded itself) speaks an older
/// protocol than this kctl (pure).
pub fn older_helpers(state: &ClusterState) -> Vec<String> {
    state
        .helper_versions
        .iter()
        .filter(|(minion, v)| v.protocol < HELPER_PROTOCOL && state.minions.contains_key(*minion))
        .map(|(minion, _)| minion.clone())
        .collect()
}

impl HelperVersion {
    /// This binary's.
    pub fn of_this_binary() -> HelperVersion {
        let sha256 = std::env::current_exe()
            .ok()
            .and_then(|exe| crate::bootstrap::helper::sha256_file(&exe).ok())
            .map(|digest| digest[..12].to_string())
            .unwrap_or_else(|| "unknown".into());
        HelperVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            sha256,
            protocol: HELPER_PROTOCOL,
        }
    }
    /// The helper kctl would install from `binary`.
    pub fn of_file(binary: &std::path::Path) -> std::io::Result<HelperVersion> {
        Ok(HelperVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            sha256: crate::bootstrap::helper::sha256_file(binary)?[..12].to_string(),
            protocol: HELPER_PROTOCOL,
        })
    }
}

/// What a helper says in its heartbeat when its minion cannot run pods:
/// the heartbeat key's value (empty while all is well).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinionCondition {
    pub reason: String,
}

impl ClusterState {
    /// Ready: its helper heartbeats and says it can run pods. Only ready
    /// minions get new pods.
    pub fn ready(&self, minion: &str) -> bool {
        self.heartbeats.contains(minion) && !self.not_ready.contains_key(minion)
    }

    /// Ready and not on its way out: may get new pods.
    pub fn schedulable(&self, minion: &str) -> bool {
        self.ready(minion) && !self.cordoned.contains(minion)
    }

    pub fn pods_on<'a>(&'a self, minion: &'a str) -> impl Iterator<Item = &'a PodRecord> + 'a {
        self.pods.values().filter(move |p| p.host == minion)
    }

    pub fn pods_owned_by<'a>(&'a self, controller: &'a str) -> impl Iterator<Item = &'a PodRecord> {
        self.pods
            .values()
            .filter(move |p| p.owner.as_deref() == Some(controller))
    }

    /// Pods whose labels match `selector`.
    pub fn pods_matching<'a>(
        &'a self,
        selector: &'a Labels,
    ) -> impl Iterator<Item = &'a PodRecord> {
        self.pods
            .values()
            .filter(move |p| crate::model::selector_matches(selector, &p.pod.labels))
    }

    /// True when a liveness probe of one of the pod's containers failed last.
    pub fn pod_is_unhealthy(&self, pod: &PodRecord) -> bool {
        self.statuses
            .get(&pod.pod.id)
            .is_some_and(|s| s.containers.iter().any(|c| c.healthy == Some(false)))
    }

    /// True when the pod's last observation is of its current spec and all
    /// its containers run: nothing for converge to do.
    pub fn pod_is_current(&self, pod: &PodRecord) -> bool {
        self.statuses.get(&pod.pod.id).is_some_and(|s| {
            (s.host == pod.host || s.host.is_empty())
                && s.phase == PodPhase::Running
                && s.spec_hash == pod.spec_hash()
                && s.containers.len() == pod.pod.spec.containers.len()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_of_an_older_protocol_are_named() {
        let mut state = ClusterState::default();
        for m in ["minion-1", "minion-2", "gone"] {
            state.helper_versions.insert(
                m.into(),
                HelperVersion {
                    version: "0.1.0".into(),
                    sha256: "abc".into(),
                    protocol: if m == "minion-2" { HELPER_PROTOCOL } else { 0 },
                },
            );
        }
        for m in ["minion-1", "minion-2"] {
            state.minions.insert(
                m.into(),
                MinionRecord {
                    id: m.into(),
                    host_ip: "10.0.0.1".parse().unwrap(),
                    pod_cidr: "10.244.1.0/24".into(),
                    ssh_port: 22,
                    ssh_user: "root".into(),
                },
            );
        }
        // A record from before the protocol was written reads as 0.
        let old: HelperVersion =
            serde_json::from_str(r#"{"version":"0.1.0","sha256":"abc"}"#).unwrap();
        assert_eq!(old.protocol, 0);
        assert_eq!(older_helpers(&state), ["minion-1"]);
    }
}
