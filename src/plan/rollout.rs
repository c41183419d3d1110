//! The steps of a rolling update, as plans, and when a pod counts as
//! ready to carry traffic. Pure: `ops::rollout` runs them one pod at a
//! time, waiting on the cluster between steps.
//!
//! One step replaces one pod without losing capacity: a new pod of the
//! target template is added beside the controller's others (a surge),
//! it must be Running, pass its liveness probe and be in every service's
//! endpoints on every minion; then the old pod is drained (out of the
//! endpoints, still running until every minion's rules forget it) and
//! only then deleted.

use super::{Action, Change, Plan, PlanError, Planner, PodNamer};
use crate::model::{Kind, Pod, PodTemplate, ReplicationController};
use crate::services::{self, rules};
use crate::state::{ClusterState, PodPhase, PodRecord};
use ipnet::Ipv4Net;

/// One more pod of `template` for controller `rc`, placed by the
/// scheduler beside the pods it has, on `previous_host` (the minion of the
/// pod it replaces in place) when that fits as well as any. Unschedulable
/// when no minion has room (host ports taken on all of them, a writable
/// disk in use).
pub fn plan_surge(
    state: &ClusterState,
    rc: &ReplicationController,
    template: &PodTemplate,
    previous_host: Option<&str>,
    namer: &mut dyn PodNamer,
) -> Result<Plan, PlanError> {
    let mut planner = Planner::new(state, Ipv4Net::default());
    let id = planner.new_pod_id(&rc.id, namer);
    let pod = Pod {
        id,
        labels: template.labels.clone(),
        spec: template.spec.clone(),
    };
    if let Some(change) = planner.create_pod(pod, Some(&rc.id), previous_host, Action::Create) {
        planner.plan.changes.push(Change {
            kind: Kind::ReplicationController,
            id: rc.id.clone(),
            action: Action::Update,
            detail: "rolling update: a pod of the new template".into(),
            pods: vec![change],
            fields: vec![],
        });
    }
    planner.finish()
}

/// Whether every pod of the cordoned minions has a place elsewhere: the
/// plan that would move them all at once (it is carried out one pod at a
/// time). Unschedulable with the reasons when it does not fit.
pub fn plan_evacuation(state: &ClusterState, namer: &mut dyn PodNamer) -> Result<Plan, PlanError> {
    let mut planner = Planner::new(state, Ipv4Net::default());
    let leaving: Vec<PodRecord> = state
        .pods
        .values()
        .filter(|p| state.cordoned.contains(&p.host))
        .cloned()
        .collect();
    for pod in &leaving {
        let change = planner.delete_pod(pod);
        planner.plan.changes.push(change);
    }
    for pod in &leaving {
        let replacement = match &pod.owner {
            Some(rc) => Pod {
                id: planner.new_pod_id(rc, namer),
                ..pod.pod.clone()
            },
            None => pod.pod.clone(),
        };
        if let Some(change) =
            planner.create_pod(replacement, pod.owner.as_deref(), None, Action::Create)
        {
            planner.plan.changes.push(change);
        }
    }
    planner.finish()
}

/// Moves a bare pod off its minion under the same id, in one plan: its
/// record is deleted and put again on another minion, so no commit
/// leaves the cluster without it. Unschedulable when it fits nowhere.
pub fn plan_move(state: &ClusterState, pod: &str) -> Result<Plan, PlanError> {
    let mut planner = Planner::new(state, Ipv4Net::default());
    let Some(record) = state.pods.get(pod) else {
        return Ok(Plan::default());
    };
    let mut change = planner.delete_pod(record);
    if let Some(placed) = planner.create_pod(
        record.pod.clone(),
        record.owner.as_deref(),
        None,
        Action::Update,
    ) {
        change.action = Action::Update;
        change.detail = format!("moved from {} {}", record.host, placed.detail);
        planner.plan.changes.push(change);
    }
    planner.finish()
}

/// Takes `pod` out of its services' endpoints; it keeps running.
pub fn plan_drain(pod: &PodRecord) -> Plan {
    Plan {
        changes: vec![Change {
            kind: Kind::Pod,
            id: pod.pod.id.clone(),
            action: Action::Update,
            detail: "draining: out of its services' endpoints".into(),
            pods: vec![],
            fields: vec![],
        }],
        ops: vec![super::Op::PutPod(PodRecord {
            draining: true,
            ..pod.clone()
        })],
        unchanged: 0,
    }
}

/// Puts a drained pod back into its services' endpoints (its move did
/// not happen).
pub fn plan_undrain(pod: &PodRecord) -> Plan {
    Plan {
        changes: vec![Change {
            kind: Kind::Pod,
            id: pod.pod.id.clone(),
            action: Action::Update,
            detail: "back in its services' endpoints".into(),
            pods: vec![],
            fields: vec![],
        }],
        ops: vec![super::Op::PutPod(PodRecord {
            draining: false,
            ..pod.clone()
        })],
        unchanged: 0,
    }
}

/// Deletes a pod (drained before, or one that failed).
pub fn plan_remove(state: &ClusterState, pod: &str) -> Plan {
    let mut planner = Planner::new(state, Ipv4Net::default());
    if let Some(record) = state.pods.get(pod) {
        let change = planner.delete_pod(record);
        planner.plan.changes.push(change);
    }
    planner.plan
}

/// The controller's pods that are not of `template` yet, and not on
/// their way out, oldest id first.
pub fn pods_to_replace<'a>(
    state: &'a ClusterState,
    controller: &'a str,
    template: &PodTemplate,
) -> Vec<&'a PodRecord> {
    let mut pods: Vec<&PodRecord> = state
        .pods_owned_by(controller)
        .filter(|p| !p.draining && !is_of(p, template))
        .collect();
    pods.sort_by(|a, b| a.pod.id.cmp(&b.pod.id));
    pods
}

pub fn is_of(pod: &PodRecord, template: &PodTemplate) -> bool {
    pod.pod.spec == template.spec && pod.pod.labels == template.labels
}

/// Whether a pod can carry traffic, and if not, why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not yet; the reason says what is missing.
    NotYet(String),
    /// It will not be: deleted, or stopped for good.
    Failed(String),
}

/// Whether every Ready minion has the service rules the state asks for.
pub fn rules_everywhere(state: &ClusterState) -> bool {
    let digest = rules::digest(&rules::portals(state, &services::endpoints(state)));
    state
        .minions
        .keys()
        .filter(|m| state.ready(m))
        .all(|m| state.rule_digests.get(m) == Some(&digest))
}

/// A new pod is ready when it runs as specified with every container up,
/// has passed its liveness probes (if it has any), and is an endpoint of
/// every service that selects it, in the rules of every Ready minion.
pub fn readiness(state: &ClusterState, pod: &str) -> Readiness {
    let Some(record) = state.pods.get(pod) else {
        return Readiness::Failed(format!("pod {pod} was deleted"));
    };
    let Some(status) = state
        .statuses
        .get(pod)
        .filter(|s| s.spec_hash == record.spec_hash())
    else {
        return Readiness::NotYet(format!("pod {pod} has not started on {}", record.host));
    };
    if status.phase == PodPhase::Terminated {
        return Readiness::Failed(format!(
            "pod {pod} stopped: {}",
            status.message.as_deref().unwrap_or("terminated")
        ));
    }
    if status.phase != PodPhase::Running {
        return Readiness::NotYet(format!(
            "pod {pod} is {}{}",
            status.phase.as_str(),
            status
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    for spec in &record.pod.spec.containers {
        let Some(c) = status.containers.iter().find(|c| c.name == spec.name) else {
            return Readiness::NotYet(format!(
                "container {} of pod {pod} has not started",
                spec.name
            ));
        };
        if !c.running {
            let code = c
                .exit_code
                .map(|e| format!(" with code {e}"))
                .unwrap_or_default();
            return Readiness::NotYet(format!(
                "container {} of pod {pod} exited{code} ({} restart(s))",
                spec.name, c.restart_count
            ));
        }
        if spec.liveness_probe.is_some() && c.healthy != Some(true) {
            return Readiness::NotYet(match c.healthy {
                Some(false) => format!(
                    "the liveness probe of container {} of pod {pod} fails",
                    spec.name
                ),
                _ => format!(
                    "the liveness probe of container {} of pod {pod} has not passed yet",
                    spec.name
                ),
            });
        }
    }
    let endpoints = services::endpoints(state);
    for svc in state.services.values() {
        if !crate::model::selector_matches(&svc.service.selector, &record.pod.labels) {
            continue;
        }
        let recorded = state.endpoints.get(&svc.service.id);
        let listed = |eps: Option<&Vec<crate::state::Endpoint>>| {
            eps.is_some_and(|eps| eps.iter().any(|e| e.pod == pod))
        };
        if !listed(endpoints.get(&svc.service.id)) || !listed(recorded) {
            return Readiness::NotYet(format!(
                "pod {pod} is not yet an endpoint of service {}",
                svc.service.id
            ));
        }
    }
    if !rules_everywhere(state) {
        return Readiness::NotYet("the service rules are not yet on every minion".into());
    }
    Readiness::Ready
}

/// A draining pod may stop when no service's recorded endpoints list it
/// and every Ready minion's rules are current.
pub fn drained(state: &ClusterState, pod: &str) -> bool {
    let listed = state
        .endpoints
        .values()
        .any(|eps| eps.iter().any(|e| e.pod == pod));
    !listed && rules_everywhere(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, Labels, PodSpec, PortRef, Probe, ProbeAction, Service};
    use crate::state::{ContainerStatus, Endpoint, MinionRecord, PodStatus, ServiceRecord};

    /// `new01`, `new02`, ...: the first pod a test makes is `web-new01`.
    struct Fixed(u32);
    impl PodNamer for Fixed {
        fn suffix(&mut self) -> String {
            self.0 += 1;
            format!("new{:02}", self.0)
        }
    }

    fn template(image: &str, host_port: Option<u16>) -> PodTemplate {
        PodTemplate {
            labels: Labels::from([("name".to_string(), "web".to_string())]),
            spec: PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: image.into(),
                    ports: vec![crate::model::Port {
                        name: None,
                        container_port: 8080,
                        host_port,
                        protocol: crate::model::Protocol::Tcp,
                    }],
                    liveness_probe: Some(Probe {
                        action: ProbeAction::TcpSocket {
                            port: PortRef::Number(8080),
                        },
                        initial_delay_seconds: 0,
                        timeout_seconds: 1,
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            },
        }
    }

    /// Two minions, a controller of two pods of `v1`, one per minion,
    /// running and healthy, behind service `web`, rules current.
    fn cluster(host_port: Option<u16>) -> (ClusterState, ReplicationController) {
        let mut state = ClusterState::default();
        let rc = ReplicationController {
            id: "web".into(),
            labels: Labels::new(),
            replicas: 2,
            selector: template("v1", host_port).labels,
            template: template("v1", host_port),
        };
        for i in 1..=2u8 {
            let minion = format!("minion-{i}");
            state.minions.insert(
                minion.clone(),
                MinionRecord {
                    id: minion.clone(),
                    host_ip: std::net::Ipv4Addr::new(10, 1, 0, i),
                    pod_cidr: format!("10.1.{i}.0/24"),
                    ssh_port: 22,
                    ssh_user: "root".into(),
                },
            );
            state.heartbeats.insert(minion.clone());
            let pod = PodRecord {
                pod: Pod {
                    id: format!("web-old0{i}"),
                    labels: rc.template.labels.clone(),
                    spec: rc.template.spec.clone(),
                },
                host: minion,
                owner: Some("web".into()),
                draining: false,
            };
            run(&mut state, &pod, i, Some(true));
            state.pods.insert(pod.pod.id.clone(), pod);
        }
        state.controllers.insert("web".into(), rc.clone());
        state.services.insert(
            "web".into(),
            ServiceRecord {
                service: Service {
                    id: "web".into(),
                    labels: Labels::new(),
                    selector: rc.selector.clone(),
                    port: 80,
                    container_port: None,
                    protocol: crate::model::Protocol::Tcp,
                    portal_ip: None,
                    external: false,
                    public_ips: vec![],
                    node_port: None,
                },
                portal_ip: "10.0.0.1".parse().unwrap(),
                node_port: None,
            },
        );
        sync(&mut state);
        (state, rc)
    }

    fn run(state: &mut ClusterState, pod: &PodRecord, octet: u8, healthy: Option<bool>) {
        state.statuses.insert(
            pod.pod.id.clone(),
            PodStatus {
                host: pod.host.clone(),
                phase: PodPhase::Running,
                spec_hash: pod.spec_hash(),
                pod_ip: Some(std::net::Ipv4Addr::new(10, 1, octet, 2)),
                containers: vec![ContainerStatus {
                    name: "web".into(),
                    container_id: format!("c-{}", pod.pod.id),
                    running: true,
                    restart_count: 0,
                    exit_code: None,
                    healthy,
                }],
                message: None,
            },
        );
    }

    /// What the helpers do: record endpoints, write the rules everywhere.
    fn sync(state: &mut ClusterState) {
        state.endpoints = services::endpoints(state);
        let digest = rules::digest(&rules::portals(state, &state.endpoints));
        for m in state.minions.keys().cloned().collect::<Vec<_>>() {
            state.rule_digests.insert(m, digest.clone());
        }
    }

    fn commit(state: &mut ClusterState, plan: &Plan) {
        for op in &plan.ops {
            match op {
                super::super::Op::PutPod(p) => {
                    state.pods.insert(p.pod.id.clone(), p.clone());
                }
                super::super::Op::DeletePod(id) => {
                    state.pods.remove(id);
                    state.statuses.remove(id);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_new_pod_is_ready_only_when_running_healthy_and_served_everywhere() {
        let (mut state, rc) = cluster(None);
        let surge = plan_surge(&state, &rc, &template("v2", None), None, &mut Fixed(0)).unwrap();
        commit(&mut state, &surge);
        let new = "web-new01";
        assert!(
            matches!(readiness(&state, new), Readiness::NotYet(why) if why.contains("has not started"))
        );
        let record = state.pods[new].clone();
        run(&mut state, &record, 3, None);
        assert!(
            matches!(readiness(&state, new), Readiness::NotYet(why) if why.contains("has not passed yet"))
        );
        run(&mut state, &record, 3, Some(true));
        // Healthy, but the endpoints and rules do not list it yet.
        assert!(
            matches!(readiness(&state, new), Readiness::NotYet(why) if why.contains("endpoint of service web"))
        );
        state.endpoints = services::endpoints(&state);
        assert!(matches!(readiness(&state, new), Readiness::NotYet(why) if why.contains("rules")));
        sync(&mut state);
        assert_eq!(readiness(&state, new), Readiness::Ready);
        // Three pods of the controller now: the surge stays until the old
        // one is drained and removed.
        assert_eq!(state.pods_owned_by("web").count(), 3);
        assert_eq!(
            pods_to_replace(&state, "web", &template("v2", None))
                .iter()
                .map(|p| p.pod.id.as_str())
                .collect::<Vec<_>>(),
            ["web-old01", "web-old02"]
        );
    }

    #[test]
    fn an_evacuation_fits_or_says_why_not() {
        let (mut state, _) = cluster(None);
        state.cordoned.insert("minion-2".into());
        let plan = plan_evacuation(&state, &mut Fixed(0)).unwrap();
        assert_eq!(
            plan.render(),
            "  - pod web-old02 (on minion-2)\n  + pod web-new01 (on minion-1)\nPlan: 1 to add, 0 to change, 1 to destroy.\n"
        );
        let (mut state, _) = cluster(Some(80));
        state.cordoned.insert("minion-2".into());
        let err = plan_evacuation(&state, &mut Fixed(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("minion-2: minion is leaving the cluster"),
            "{err}"
        );
        assert!(err.contains("minion-1: hostPort 80/TCP is taken"), "{err}");
    }

    #[test]
    fn a_bare_pod_moves_in_one_plan_under_its_id() {
        let (mut state, _) = cluster(None);
        let mut bare = state.pods["web-old02"].clone();
        bare.owner = None;
        state.pods.insert(bare.pod.id.clone(), bare.clone());
        state.cordoned.insert("minion-2".into());
        let plan = plan_move(&state, "web-old02").unwrap();
        assert_eq!(
            plan.ops,
            [
                super::super::Op::DeletePod("web-old02".into()),
                super::super::Op::PutPod(PodRecord {
                    host: "minion-1".into(),
                    ..bare.clone()
                })
            ]
        );
        assert_eq!(
            plan.render(),
            "  ~ pod web-old02 (moved from minion-2 on minion-1)\nPlan: 0 to add, 1 to change, 0 to destroy.\n"
        );
        let stale = state.statuses["web-old02"].clone();
        commit(&mut state, &plan);
        assert_eq!(state.pods["web-old02"].host, "minion-1");
        // The old minion's helper, a round late, writes what it saw: that
        // is not the moved pod running.
        state.statuses.insert("web-old02".into(), stale);
        assert!(!state.pod_is_current(&state.pods["web-old02"]));
        // Nowhere to go: an error, and nothing planned.
        let (mut state, _) = cluster(Some(80));
        state.cordoned.insert("minion-2".into());
        let err = plan_move(&state, "web-old02").unwrap_err().to_string();
        assert!(err.contains("minion-1: hostPort 80/TCP is taken"), "{err}");
        assert_eq!(plan_move(&state, "no-such-pod").unwrap(), Plan::default());
    }

    #[test]
    fn a_drained_pod_leaves_the_endpoints_before_it_is_removed() {
        let (mut state, _) = cluster(None);
        let old = state.pods["web-old01"].clone();
        commit(&mut state, &plan_drain(&old));
        assert!(state.pods["web-old01"].draining);
        assert_eq!(
            state.pods["web-old01"].spec_hash(),
            old.spec_hash(),
            "containers stay"
        );
        assert!(
            !drained(&state, "web-old01"),
            "still in the recorded endpoints"
        );
        sync(&mut state);
        assert!(drained(&state, "web-old01"));
        assert_eq!(
            state.endpoints["web"],
            [Endpoint {
                ip: "10.1.2.2".parse().unwrap(),
                port: 8080,
                pod: "web-old02".into()
            }]
        );
        let remove = plan_remove(&state, "web-old01");
        commit(&mut state, &remove);
        assert!(!state.pods.contains_key("web-old01"));
    }

    #[test]
    fn no_room_for_a_surge_is_unschedulable_and_a_failed_pod_says_so() {
        let (mut state, rc) = cluster(Some(80));
        let err =
            plan_surge(&state, &rc, &template("v2", Some(80)), None, &mut Fixed(0)).unwrap_err();
        assert!(matches!(err, PlanError::Unschedulable(_)), "{err:?}");
        let record = state.pods["web-old01"].clone();
        state.statuses.get_mut("web-old01").unwrap().containers[0].running = false;
        state.statuses.get_mut("web-old01").unwrap().containers[0].exit_code = Some(1);
        assert!(
            matches!(readiness(&state, "web-old01"), Readiness::NotYet(why) if why.contains("exited with code 1"))
        );
        state.statuses.get_mut("web-old01").unwrap().phase = PodPhase::Terminated;
        assert!(matches!(
            readiness(&state, "web-old01"),
            Readiness::Failed(_)
        ));
        state.pods.remove(&record.pod.id);
        assert!(
            matches!(readiness(&state, "web-old01"), Readiness::Failed(why) if why.contains("deleted"))
        );
    }

    #[test]
    fn a_pod_writing_a_disk_is_replaced_in_place_on_its_own_minion() {
        let (mut state, mut rc) = cluster(None);
        let with_disk = |image: &str| {
            let mut t = template(image, None);
            t.spec.volumes = vec![crate::model::Volume {
                name: "data".into(),
                source: crate::model::VolumeSource::GcePersistentDisk {
                    pd_name: "pd-data".into(),
                    fs_type: "ext4".into(),
                    partition: None,
                    read_only: false,
                },
            }];
            t
        };
        // One replica, on minion-2, holding the disk.
        state.pods.remove("web-old01");
        rc.replicas = 1;
        rc.template = with_disk("v1");
        state.pods.get_mut("web-old02").unwrap().pod.spec = rc.template.spec.clone();
        let err = plan_surge(&state, &rc, &with_disk("v2"), None, &mut Fixed(0)).unwrap_err();
        assert!(matches!(err, PlanError::Unschedulable(_)), "{err:?}");
        // Old pod gone first: the new one goes where the disk is.
        let remove = plan_remove(&state, "web-old02");
        commit(&mut state, &remove);
        for _ in 0..4 {
            let surge = plan_surge(
                &state,
                &rc,
                &with_disk("v2"),
                Some("minion-2"),
                &mut Fixed(0),
            )
            .unwrap();
            let host = surge.ops.iter().find_map(|op| match op {
                crate::plan::Op::PutPod(p) => Some(p.host.clone()),
                _ => None,
            });
            assert_eq!(host.as_deref(), Some("minion-2"));
        }
    }

    #[test]
    fn a_controller_in_a_rolling_update_is_left_alone_by_the_leader_and_refused_to_apply() {
        let (mut state, rc) = cluster(None);
        // Mid-update: a pod of v2 beside the two of v1 (one more than replicas).
        let surge = plan_surge(&state, &rc, &template("v2", None), None, &mut Fixed(0)).unwrap();
        commit(&mut state, &surge);
        state.rollouts.insert(
            "web".into(),
            crate::state::Rollout {
                to: template("v2", None),
                by: "root@ws pid 1".into(),
                since: 0,
            },
        );
        let (plan, _) = super::super::plan_reconcile(&state, &mut Fixed(0));
        assert!(plan.is_empty(), "{}", plan.render());
        let err = super::super::plan_apply(
            &[crate::model::Object::ReplicationController(rc.clone())],
            &state,
            "10.0.0.0/24".parse().unwrap(),
            &mut Fixed(0),
        )
        .unwrap_err();
        assert!(
            matches!(err, PlanError::RolloutInProgress { .. }),
            "{err:?}"
        );
        let delete = super::super::plan_delete(
            &[(Kind::ReplicationController, "web".into())],
            &state,
            false,
        )
        .unwrap_err();
        assert!(
            matches!(delete, PlanError::RolloutInProgress { .. }),
            "{delete:?}"
        );
        // The update ended with its kctl: the leader brings the controller
        // back to its template and count, draining pods included.
        state.rollouts.clear();
        let old = state.pods["web-old01"].clone();
        commit(&mut state, &plan_drain(&old));
        let (plan, _) = super::super::plan_reconcile(&state, &mut Fixed(0));
        let text = plan.render();
        assert!(
            text.contains("- pod web-old01") && text.contains("- pod web-new01"),
            "{text}"
        );
    }
}
