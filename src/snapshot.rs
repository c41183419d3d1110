//! `kctl snapshot`: the cluster's desired state at one etcd revision, as a
//! file that `restore` brings back onto a cluster (a fresh one, after the
//! old was lost). Pure: what a snapshot holds and how it reads back.
//!
//! It keeps what a user made — services with their portal IPs,
//! controllers, pods and which files applied them — and nothing that the
//! cluster observes or derives again by itself (minions, heartbeats,
//! statuses, endpoints, rule digests, events).

use crate::model::{Kind, ReplicationController};
use crate::state::checks::{self, RecordPolicy, Rejected};
use crate::state::{ClusterState, PodRecord, ServiceRecord};
use serde::{Deserialize, Serialize};

/// What the file says it is, so another JSON file is refused by name.
pub const SNAPSHOT_KIND: &str = "KctlSnapshot";
/// Bumped when the format changes; older kctl refuses newer files.
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSnapshot {
    pub kind: String,
    pub version: u32,
    /// The cluster it was taken of.
    pub cluster: String,
    /// etcd's revision of the last change it holds.
    pub revision: i64,
    /// Unix time it was taken.
    pub taken_at: u64,
    /// Where the services' portal IPs come from: a cluster it is restored
    /// onto must hand out the same range for them to keep their IPs.
    pub portal_net: ipnet::Ipv4Net,
    pub services: Vec<ServiceRecord>,
    pub controllers: Vec<ReplicationController>,
    pub pods: Vec<PodRecord>,
    #[serde(default)]
    pub owners: Vec<Owner>,
}

/// The set of files that last applied an object (for `apply --prune`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub kind: Kind,
    pub id: String,
    pub set: String,
}

impl ClusterSnapshot {
    /// The desired state of `state`, as a snapshot.
    pub fn of(
        state: &ClusterState,
        cluster: &str,
        portal_net: ipnet::Ipv4Net,
        revision: i64,
        taken_at: u64,
    ) -> ClusterSnapshot {
        ClusterSnapshot {
            kind: SNAPSHOT_KIND.into(),
            version: SNAPSHOT_VERSION,
            cluster: cluster.into(),
            revision,
            taken_at,
            portal_net,
            services: state.services.values().cloned().collect(),
            controllers: state.controllers.values().cloned().collect(),
            // A controller's pod mid-drain is on its way out (its
            // replacement runs); a bare one is mid-move and is kept, back
            // in service.
            pods: state
                .pods
                .values()
                .filter(|p| !p.draining || p.owner.is_none())
                .map(|p| PodRecord {
                    draining: false,
                    ..p.clone()
                })
                .collect(),
            owners: state
                .owners
                .iter()
                .map(|((kind, id), set)| Owner {
                    kind: *kind,
                    id: id.clone(),
                    set: set.clone(),
                })
                .collect(),
        }
    }

    /// Reads a snapshot file's text; says what is wrong with one that is
    /// not a snapshot kctl can read.
    pub fn parse(text: &str) -> Result<ClusterSnapshot, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if value["kind"] != SNAPSHOT_KIND {
            return Err(format!(
                "not a kctl snapshot (its kind is {}, not {SNAPSHOT_KIND})",
                value["kind"]
            ));
        }
        match value["version"].as_u64() {
            Some(v) if v == u64::from(SNAPSHOT_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "a snapshot of format {v}; this kctl reads format {SNAPSHOT_VERSION}"
                ))
            }
            None => return Err("the snapshot says no format version".into()),
        }
        serde_json::from_value(value).map_err(|e| format!("a damaged snapshot: {e}"))
    }

    /// What in the file must not be restored onto a cluster whose records
    /// must pass `policy` and whose minions are `minions`: a snapshot file
    /// is as untrusted as etcd, and is refused whole.
    pub fn problems(
        &self,
        policy: &RecordPolicy,
        minions: &[&crate::state::MinionRecord],
    ) -> Vec<Rejected> {
        let mut out = Vec::new();
        let mut refuse = |key: String, problem: Option<String>| {
            if let Some(reason) = problem {
                out.push(Rejected { key, reason });
            }
        };
        for (i, r) in self.services.iter().enumerate() {
            refuse(
                format!("services[{i}]"),
                checks::service_record_problem(r, minions, policy),
            );
        }
        for (i, rc) in self.controllers.iter().enumerate() {
            refuse(
                format!("controllers[{i}]"),
                checks::controller_problem(rc, policy),
            );
        }
        for (i, p) in self.pods.iter().enumerate() {
            refuse(format!("pods[{i}]"), checks::pod_problem(p, policy));
        }
        for (i, o) in self.owners.iter().enumerate() {
            let id = match o.kind {
                Kind::Service => crate::model::names::service_id_problem(&o.id)
                    .map(|p| format!("its id {:?} {p}", o.id)),
                _ => checks::object_id_problem(&o.id),
            };
            let set = o
                .set
                .chars()
                .any(char::is_control)
                .then(|| "its set name holds a control character".to_string());
            refuse(format!("owners[{i}]"), id.or(set));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_and_other_files_are_refused_by_name() {
        let state = ClusterState::default();
        let taken = ClusterSnapshot::of(&state, "demo", "10.0.0.0/24".parse().unwrap(), 7, 1);
        let text = serde_json::to_string(&taken).unwrap();
        assert_eq!(ClusterSnapshot::parse(&text).unwrap(), taken);
        assert!(ClusterSnapshot::parse("{")
            .unwrap_err()
            .starts_with("not JSON"));
        assert!(ClusterSnapshot::parse(r#"{"kind": "PodList"}"#)
            .unwrap_err()
            .contains("not a kctl snapshot"));
        let newer = text.replace("\"version\":1", "\"version\":2");
        assert!(ClusterSnapshot::parse(&newer)
            .unwrap_err()
            .contains("format 2"));
        let damaged = text.replace("\"revision\":7", "\"revision\":\"x\"");
        assert!(ClusterSnapshot::parse(&damaged)
            .unwrap_err()
            .contains("damaged"));
    }

    #[test]
    fn a_bare_pod_mid_move_is_kept_and_a_replaced_controller_pod_is_not() {
        let mut state = ClusterState::default();
        let pod = |id: &str, owner: Option<&str>| PodRecord {
            pod: crate::model::Pod {
                id: id.into(),
                labels: Default::default(),
                spec: Default::default(),
            },
            host: "minion-2".into(),
            owner: owner.map(str::to_string),
            draining: true,
        };
        for p in [pod("solo", None), pod("web-old", Some("web"))] {
            state.pods.insert(p.pod.id.clone(), p);
        }
        let taken = ClusterSnapshot::of(&state, "demo", "10.0.0.0/24".parse().unwrap(), 1, 1);
        assert_eq!(taken.pods.len(), 1);
        assert_eq!(taken.pods[0].pod.id, "solo");
        assert!(!taken.pods[0].draining, "back in service when restored");
    }

    /// A crafted file is refused whole, each bad record named by its place.
    #[test]
    fn a_crafted_snapshot_is_refused_with_each_bad_record_named() {
        let pod = |id: &str| PodRecord {
            pod: crate::model::Pod {
                id: id.into(),
                labels: Default::default(),
                spec: crate::model::PodSpec {
                    containers: vec![crate::model::Container {
                        name: "web".into(),
                        image: "nginx".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            },
            host: "minion-1".into(),
            owner: None,
            draining: false,
        };
        let mut state = ClusterState::default();
        state.pods.insert("solo".into(), pod("solo"));
        let net = "10.0.0.0/24".parse().unwrap();
        let policy = RecordPolicy {
            portal_net: Some(net),
            ..RecordPolicy::default()
        };
        let sound = ClusterSnapshot::of(&state, "demo", net, 1, 1);
        assert_eq!(sound.problems(&policy, &[]), []);
        let mut crafted = sound.clone();
        crafted.pods[0].pod.spec.containers[0].security.privileged = true;
        crafted.services.push(ServiceRecord {
            service: crate::model::Service {
                id: "web\" }\ntable ip evil {".into(),
                labels: Default::default(),
                selector: Default::default(),
                port: 80,
                container_port: None,
                protocol: Default::default(),
                portal_ip: None,
                external: false,
                public_ips: vec![],
                node_port: None,
            },
            portal_ip: "10.0.0.7".parse().unwrap(),
            node_port: None,
        });
        let problems = crafted.problems(&policy, &[]);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["services[0]", "pods[0]"], "{problems:?}");
        let lenient = RecordPolicy {
            allow_privileged: true,
            ..policy
        };
        assert_eq!(crafted.problems(&lenient, &[]).len(), 1);
    }
}
