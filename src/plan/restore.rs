//! What `kctl snapshot restore` writes: a snapshot's objects onto a
//! cluster that holds none, services keeping their portal IPs and pods
//! their ids. Pure.

use super::{Action, Change, Op, Plan, PlanError, Planner};
use crate::model::Kind;
use crate::snapshot::ClusterSnapshot;
use crate::state::ClusterState;
use ipnet::Ipv4Net;

/// The plan that puts `snapshot` onto a cluster in `state`: every service
/// with its portal IP, every controller, every pod under its id (on its
/// old minion when that one is here and can take it, else where the
/// scheduler puts it). All or nothing, as one commit.
pub fn plan_restore(
    snapshot: &ClusterSnapshot,
    state: &ClusterState,
    portal_net: Ipv4Net,
) -> Result<Plan, PlanError> {
    let held: Vec<String> = [
        (state.services.len(), "service"),
        (state.controllers.len(), "replicationController"),
        (state.pods.len(), "pod"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}(s)"))
    .collect();
    if !held.is_empty() {
        return Err(PlanError::NotEmpty(held.join(", ")));
    }
    if let Some(s) = snapshot
        .services
        .iter()
        .find(|s| !portal_net.contains(&s.portal_ip))
    {
        return Err(PlanError::PortalOutside {
            service: s.service.id.clone(),
            ip: s.portal_ip,
            range: portal_net,
            from: snapshot.portal_net,
        });
    }
    let mut planner = Planner::new(state, portal_net);
    for record in &snapshot.services {
        planner.plan.ops.push(Op::PutService(record.clone()));
        planner.plan.changes.push(Change {
            kind: Kind::Service,
            id: record.service.id.clone(),
            action: Action::Create,
            detail: format!("portal {}:{}", record.portal_ip, record.service.port),
            pods: vec![],
            fields: vec![],
        });
    }
    for rc in &snapshot.controllers {
        planner.plan.ops.push(Op::PutController(rc.clone()));
        let pods = snapshot
            .pods
            .iter()
            .filter(|p| p.owner.as_deref() == Some(rc.id.as_str()))
            .filter_map(|p| {
                planner.create_pod(p.pod.clone(), Some(&rc.id), Some(&p.host), Action::Create)
            })
            .collect();
        planner.plan.changes.push(Change {
            kind: Kind::ReplicationController,
            id: rc.id.clone(),
            action: Action::Create,
            detail: format!("{} replicas", rc.replicas),
            pods,
            fields: vec![],
        });
    }
    for p in snapshot.pods.iter().filter(|p| p.owner.is_none()) {
        if let Some(change) = planner.create_pod(p.pod.clone(), None, Some(&p.host), Action::Create)
        {
            planner.plan.changes.push(change);
        }
    }
    // Which files applied what, for objects the snapshot holds.
    let held = |kind: Kind, id: &str| match kind {
        Kind::Service => snapshot.services.iter().any(|s| s.service.id == id),
        Kind::ReplicationController => snapshot.controllers.iter().any(|rc| rc.id == id),
        Kind::Pod => snapshot.pods.iter().any(|p| p.pod.id == id),
    };
    for owner in snapshot.owners.iter().filter(|o| held(o.kind, &o.id)) {
        planner.plan.ops.push(Op::PutOwner(
            owner.kind,
            owner.id.clone(),
            owner.set.clone(),
        ));
    }
    planner.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, Labels, Pod, PodSpec, PodTemplate, Port, Protocol, Service};
    use crate::state::{MinionRecord, PodRecord, ServiceRecord};

    fn state(minions: &[&str]) -> ClusterState {
        let mut state = ClusterState::default();
        for (i, id) in minions.iter().enumerate() {
            state.minions.insert(
                id.to_string(),
                MinionRecord {
                    id: id.to_string(),
                    host_ip: format!("10.1.0.{}", 11 + i).parse().unwrap(),
                    pod_cidr: format!("10.1.{}.0/24", i + 1),
                    ssh_port: 22,
                    ssh_user: "root".into(),
                },
            );
            state.heartbeats.insert(id.to_string());
        }
        state
    }

    fn pod(id: &str, host: &str, owner: Option<&str>, host_port: Option<u16>) -> PodRecord {
        PodRecord {
            pod: Pod {
                id: id.into(),
                labels: Labels::from([("name".to_string(), "web".to_string())]),
                spec: PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: "web".into(),
                        ports: vec![Port {
                            name: None,
                            container_port: 8080,
                            host_port,
                            protocol: Protocol::Tcp,
                        }],
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                },
            },
            host: host.into(),
            owner: owner.map(str::to_string),
            draining: false,
        }
    }

    fn snapshot() -> ClusterSnapshot {
        let mut old = state(&["minion-1", "minion-2", "minion-3"]);
        let template = PodTemplate {
            labels: Labels::from([("name".to_string(), "web".to_string())]),
            spec: pod("x", "", None, None).pod.spec,
        };
        old.controllers.insert(
            "web".into(),
            crate::model::ReplicationController {
                id: "web".into(),
                labels: Labels::new(),
                replicas: 2,
                selector: template.labels.clone(),
                template,
            },
        );
        for p in [
            pod("web-a", "minion-1", Some("web"), None),
            pod("web-b", "minion-3", Some("web"), None),
            pod("solo", "minion-2", None, Some(80)),
        ] {
            old.pods.insert(p.pod.id.clone(), p);
        }
        old.services.insert(
            "web".into(),
            ServiceRecord {
                service: Service {
                    id: "web".into(),
                    labels: Labels::new(),
                    selector: Labels::from([("name".to_string(), "web".to_string())]),
                    port: 80,
                    container_port: None,
                    protocol: Protocol::Tcp,
                    portal_ip: None,
                    external: false,
                    public_ips: vec![],
                    node_port: None,
                },
                portal_ip: "10.1.128.7".parse().unwrap(),
                node_port: None,
            },
        );
        old.owners.insert(
            (Kind::ReplicationController, "web".into()),
            "files:/m".into(),
        );
        let mut taken = ClusterSnapshot::of(&old, "demo", "10.1.128.0/17".parse().unwrap(), 42, 0);
        // An owner of an object the snapshot does not hold is not restored.
        taken.owners.push(crate::snapshot::Owner {
            kind: Kind::Pod,
            id: "gone".into(),
            set: "files:/m".into(),
        });
        taken
    }

    #[test]
    fn a_restore_keeps_portals_and_ids_and_places_pods_whose_minion_is_gone() {
        let net: Ipv4Net = "10.1.128.0/17".parse().unwrap();
        // The new cluster has two minions: minion-3's pod goes elsewhere.
        let fresh = state(&["minion-1", "minion-2"]);
        let plan = plan_restore(&snapshot(), &fresh, net).unwrap();
        let mut hosts = std::collections::BTreeMap::new();
        for op in &plan.ops {
            match op {
                Op::PutService(s) => assert_eq!(s.portal_ip.to_string(), "10.1.128.7"),
                Op::PutPod(p) => {
                    hosts.insert(p.pod.id.clone(), p.host.clone());
                }
                _ => {}
            }
        }
        assert_eq!(hosts["web-a"], "minion-1", "kept where it was");
        assert_eq!(hosts["solo"], "minion-2", "kept where it was");
        assert_eq!(hosts["web-b"], "minion-2", "spread, its minion is gone");
        assert_eq!(plan.counts(), (5, 0, 0), "{}", plan.render());
        let owners: Vec<&Op> = plan
            .ops
            .iter()
            .filter(|op| matches!(op, Op::PutOwner(..)))
            .collect();
        assert_eq!(
            owners,
            [&Op::PutOwner(
                Kind::ReplicationController,
                "web".into(),
                "files:/m".into()
            )]
        );
    }

    #[test]
    fn a_restore_goes_only_onto_an_empty_cluster_with_the_same_portal_range() {
        let net: Ipv4Net = "10.1.128.0/17".parse().unwrap();
        let mut busy = state(&["minion-1"]);
        busy.pods
            .insert("x".into(), pod("x", "minion-1", None, None));
        assert_eq!(
            plan_restore(&snapshot(), &busy, net)
                .unwrap_err()
                .to_string(),
            "cluster already holds 1 pod(s): a snapshot is restored onto a cluster without objects"
        );
        let other: Ipv4Net = "10.2.128.0/17".parse().unwrap();
        assert!(matches!(
            plan_restore(&snapshot(), &state(&["minion-1"]), other),
            Err(PlanError::PortalOutside { .. })
        ));
        // A host port taken twice on the only minion: nothing fits, nothing
        // is planned.
        let mut two_solos = snapshot();
        two_solos.pods.push(PodRecord {
            pod: Pod {
                id: "solo-2".into(),
                ..two_solos.pods[0].pod.clone()
            },
            ..pod("solo-2", "minion-2", None, Some(80))
        });
        assert!(matches!(
            plan_restore(&two_solos, &state(&["minion-1"]), net),
            Err(PlanError::Unschedulable(_))
        ));
    }
}
