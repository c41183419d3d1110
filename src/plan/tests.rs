use super::*;
use crate::model::{
    Container, Labels, NodePort, PodSpec, PodTemplate, Port, Protocol, RestartPolicy,
};
use crate::state::MinionRecord;

struct CountingNamer(u32);

impl PodNamer for CountingNamer {
    fn suffix(&mut self) -> String {
        self.0 += 1;
        format!("n{:04}", self.0)
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn spec(image: &str, host_port: Option<u16>) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "tomcat".into(),
            image: image.into(),
            ports: vec![Port {
                name: None,
                container_port: 8080,
                host_port,
                protocol: Protocol::Tcp,
            }],
            ..Default::default()
        }],
        restart_policy: RestartPolicy::Always,
        volumes: vec![],
    }
}

fn tomcat_rc(replicas: u32) -> ReplicationController {
    let l = labels(&[("name", "tomcatCluster")]);
    ReplicationController {
        id: "tomcatController".into(),
        labels: l.clone(),
        replicas,
        selector: l.clone(),
        template: PodTemplate {
            labels: l,
            spec: spec("tutum/tomcat", Some(80)),
        },
    }
}

fn cluster(minions: usize) -> ClusterState {
    let mut state = ClusterState::default();
    for i in 1..=minions {
        let id = format!("minion-{i}");
        state.minions.insert(
            id.clone(),
            MinionRecord {
                id,
                host_ip: std::net::Ipv4Addr::new(10, 101, 0, 10 + i as u8),
                pod_cidr: format!("10.101.{i}.0/24"),
                ssh_port: 22,
                ssh_user: "root".into(),
            },
        );
        state.heartbeats.insert(format!("minion-{i}"));
    }
    state
}

/// Applies a plan's ops to a state, as the store would.
fn commit(state: &mut ClusterState, plan: &Plan) {
    for op in &plan.ops {
        match op {
            Op::PutService(s) => {
                state.services.insert(s.service.id.clone(), s.clone());
            }
            Op::DeleteService(id) => {
                state.services.remove(id);
            }
            Op::PutController(rc) => {
                state.controllers.insert(rc.id.clone(), rc.clone());
            }
            Op::DeleteController(id) => {
                state.controllers.remove(id);
            }
            Op::PutPod(p) => {
                state.pods.insert(p.pod.id.clone(), p.clone());
            }
            Op::DeletePod(id) => {
                state.pods.remove(id);
            }
            Op::PutOwner(kind, id, set) => {
                state.owners.insert((*kind, id.clone()), set.clone());
            }
        }
    }
}

fn plan_apply_in(
    objects: &[Object],
    state: &ClusterState,
    namer: &mut dyn PodNamer,
) -> Result<Plan, PlanError> {
    plan_apply(objects, state, "10.0.0.0/24".parse().unwrap(), namer)
}

fn hosts(state: &ClusterState) -> Vec<String> {
    let mut h: Vec<String> = state.pods.values().map(|p| p.host.clone()).collect();
    h.sort();
    h
}

#[test]
fn controller_expands_into_spread_pods() {
    let mut state = cluster(2);
    let plan = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(2))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    assert_eq!(plan.counts(), (3, 0, 0));
    commit(&mut state, &plan);
    assert_eq!(hosts(&state), ["minion-1", "minion-2"]);
    assert!(state.pods.contains_key("tomcatcontroller-n0001"));
    assert!(state
        .pods
        .values()
        .all(|p| p.owner.as_deref() == Some("tomcatController")));
    let text = plan.render();
    assert!(text.contains("+ replicationController tomcatController (2 replicas)"));
    assert!(text.contains("      + pod tomcatcontroller-n0001 (on minion-1)"));
    assert!(text.ends_with("Plan: 3 to add, 0 to change, 0 to destroy.\n"));
}

#[test]
fn reapply_is_a_no_op() {
    let mut state = cluster(2);
    let objects = [
        Object::ReplicationController(tomcat_rc(2)),
        Object::Service(Service {
            id: "tomcat".into(),
            labels: Labels::new(),
            selector: labels(&[("name", "tomcatCluster")]),
            port: 8080,
            container_port: None,
            protocol: Protocol::Tcp,
            portal_ip: None,
            external: false,
            public_ips: vec![],
            node_port: None,
        }),
    ];
    let first = plan_apply_in(&objects, &state, &mut CountingNamer(0)).unwrap();
    commit(&mut state, &first);
    let second = plan_apply_in(&objects, &state, &mut CountingNamer(100)).unwrap();
    assert!(second.is_empty());
    assert_eq!(second.unchanged, 2);
    assert_eq!(second.render(), "No changes. 2 objects are up to date.\n");
}

#[test]
fn scaling_up_and_down() {
    let mut state = cluster(3);
    let mut namer = CountingNamer(0);
    let p = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(2))],
        &state,
        &mut namer,
    )
    .unwrap();
    commit(&mut state, &p);
    let up = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(3))],
        &state,
        &mut namer,
    )
    .unwrap();
    assert_eq!(up.counts(), (1, 1, 0));
    assert!(up.render().contains("replicas 2 → 3"));
    commit(&mut state, &up);
    assert_eq!(hosts(&state), ["minion-1", "minion-2", "minion-3"]);
    let down = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(1))],
        &state,
        &mut namer,
    )
    .unwrap();
    assert_eq!(down.counts(), (0, 1, 2));
    commit(&mut state, &down);
    assert_eq!(state.pods.len(), 1);
    assert_eq!(state.controllers["tomcatController"].replicas, 1);
}

#[test]
fn template_change_replaces_all_pods() {
    let mut state = cluster(2);
    let mut namer = CountingNamer(0);
    let p = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(2))],
        &state,
        &mut namer,
    )
    .unwrap();
    commit(&mut state, &p);
    let before: Vec<String> = state.pods.keys().cloned().collect();
    let mut rc = tomcat_rc(2);
    rc.template.spec.containers[0].image = "tutum/tomcat:8".into();
    let p = plan_apply_in(&[Object::ReplicationController(rc)], &state, &mut namer).unwrap();
    assert_eq!(p.counts(), (2, 1, 2));
    assert!(p.render().contains("pod template changed: replaces 2 pods"));
    commit(&mut state, &p);
    assert_eq!(state.pods.len(), 2);
    assert!(state.pods.keys().all(|k| !before.contains(k)));
    // The old pods' host ports are freed for the new ones.
    assert_eq!(hosts(&state), ["minion-1", "minion-2"]);
}

#[test]
fn too_many_host_port_replicas_fail_whole_plan() {
    let state = cluster(2);
    let svc = Object::Service(Service {
        id: "tomcat".into(),
        labels: Labels::new(),
        selector: labels(&[("name", "x")]),
        port: 80,
        container_port: None,
        protocol: Protocol::Tcp,
        portal_ip: None,
        external: false,
        public_ips: vec![],
        node_port: None,
    });
    let err = plan_apply_in(
        &[svc, Object::ReplicationController(tomcat_rc(3))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("fits on no minion"), "{text}");
    assert!(text.contains("hostPort 80/TCP is taken"), "{text}");
}

#[test]
fn bare_pod_change_replaces_in_place() {
    let mut state = cluster(2);
    let pod = Pod {
        id: "web".into(),
        labels: labels(&[("app", "web")]),
        spec: spec("img:1", Some(80)),
    };
    let p = plan_apply_in(&[Object::Pod(pod.clone())], &state, &mut CountingNamer(0)).unwrap();
    commit(&mut state, &p);
    let host = state.pods["web"].host.clone();
    let mut changed = pod.clone();
    changed.spec.containers[0].image = "img:2".into();
    let p = plan_apply_in(&[Object::Pod(changed)], &state, &mut CountingNamer(0)).unwrap();
    assert_eq!(p.counts(), (0, 1, 0));
    assert_eq!(p.ops.len(), 2, "delete then put");
    commit(&mut state, &p);
    assert_eq!(state.pods["web"].host, host, "same host port, same minion");
    assert_eq!(state.pods["web"].pod.spec.containers[0].image, "img:2");
}

#[test]
fn pod_id_owned_by_controller_is_refused() {
    let mut state = cluster(1);
    let p = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(1))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    let pod = Pod {
        id: "tomcatcontroller-n0001".into(),
        labels: Labels::new(),
        spec: spec("x", None),
    };
    let err = plan_apply_in(&[Object::Pod(pod)], &state, &mut CountingNamer(0)).unwrap_err();
    assert!(matches!(err, PlanError::OwnedPod { .. }));
}

#[test]
fn delete_controller_takes_its_pods() {
    let mut state = cluster(2);
    let p = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(2))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    let d = plan_delete(
        &[(Kind::ReplicationController, "tomcatController".into())],
        &state,
        false,
    )
    .unwrap();
    assert_eq!(d.counts(), (0, 0, 3));
    commit(&mut state, &d);
    assert!(state.pods.is_empty() && state.controllers.is_empty());
}

#[test]
fn delete_missing_is_an_error_unless_ignored() {
    let state = cluster(1);
    let target = [(Kind::Service, "nope".to_string())];
    assert!(matches!(
        plan_delete(&target, &state, false),
        Err(PlanError::NotFound { .. })
    ));
    assert!(plan_delete(&target, &state, true).unwrap().is_empty());
}

#[test]
fn controller_pod_ids_are_dns_labels() {
    let long = "A".repeat(63);
    let prefix = controller_pod_prefix(&long);
    assert_eq!(prefix.len(), 57);
    assert_eq!(prefix, "a".repeat(57));
    let mut namer = RandomNamer;
    let s = namer.suffix();
    assert_eq!(s.len(), 5);
    assert!(s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
}

fn svc(id: &str, port: u16) -> Object {
    Object::Service(Service {
        id: id.into(),
        labels: Labels::new(),
        selector: labels(&[("name", id)]),
        port,
        container_port: None,
        protocol: Protocol::Tcp,
        portal_ip: None,
        external: false,
        public_ips: vec![],
        node_port: None,
    })
}

#[test]
fn services_get_distinct_portals_kept_for_life() {
    let mut state = cluster(1);
    let p = plan_apply_in(&[svc("a", 80), svc("b", 80)], &state, &mut CountingNamer(0)).unwrap();
    commit(&mut state, &p);
    let a = state.services["a"].portal_ip;
    let b = state.services["b"].portal_ip;
    assert_eq!(a.to_string(), "10.0.0.1");
    assert_eq!(b.to_string(), "10.0.0.2");
    assert!(p.render().contains("+ service a (portal 10.0.0.1:80)"));
    // Changing the port keeps the portal IP.
    let p = plan_apply_in(&[svc("a", 8080)], &state, &mut CountingNamer(0)).unwrap();
    commit(&mut state, &p);
    assert_eq!(state.services["a"].portal_ip, a);
    assert_eq!(state.services["a"].service.port, 8080);
    // A deleted service's IP is free again.
    let d = plan_delete(&[(Kind::Service, "a".into())], &state, false).unwrap();
    commit(&mut state, &d);
    let p = plan_apply_in(&[svc("c", 80)], &state, &mut CountingNamer(0)).unwrap();
    commit(&mut state, &p);
    assert_eq!(state.services["c"].portal_ip, a);
}

fn svc_asking(id: &str, ip: &str) -> Object {
    match svc(id, 80) {
        Object::Service(s) => Object::Service(Service {
            portal_ip: Some(ip.parse().unwrap()),
            ..s
        }),
        _ => unreachable!(),
    }
}

#[test]
fn a_service_gets_the_portal_it_asks_for_if_free_and_keeps_it() {
    let mut state = cluster(1);
    // Asked for by a later service of the same apply: not handed out first.
    let p = plan_apply_in(
        &[svc("a", 80), svc_asking("b", "10.0.0.1")],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    assert_eq!(state.services["b"].portal_ip.to_string(), "10.0.0.1");
    assert_eq!(state.services["a"].portal_ip.to_string(), "10.0.0.2");
    // The record holds the portal, not the request: applying the same
    // again, or what `get` prints, changes nothing.
    assert_eq!(state.services["b"].service.portal_ip, None);
    let p = plan_apply_in(
        &[svc_asking("b", "10.0.0.1"), svc_asking("a", "10.0.0.2")],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    assert!(p.is_empty(), "{}", p.render());
    // Taken, outside the range, or another than the service has: refused.
    let err = plan_apply_in(
        &[svc_asking("c", "10.0.0.2")],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service c asks for portal IP 10.0.0.2, which a has"
    );
    for outside in ["10.1.0.9", "10.0.0.255", "10.0.0.0"] {
        let err =
            plan_apply_in(&[svc_asking("c", outside)], &state, &mut CountingNamer(0)).unwrap_err();
        assert!(
            err.to_string()
                .contains("which is no address of the portal range 10.0.0.0/24"),
            "{err}"
        );
    }
    let err = plan_apply_in(
        &[svc_asking("b", "10.0.0.9")],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap_err();
    assert!(matches!(err, PlanError::PortalIpFixed { .. }), "{err}");
    assert!(err.help().unwrap().contains("keeps its portal IP for life"));
    // Two new services asking for one address: the second is refused.
    let err = plan_apply_in(
        &[svc_asking("c", "10.0.0.7"), svc_asking("d", "10.0.0.7")],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("which another service of this apply has"),
        "{err}"
    );
}

#[test]
fn portal_exhaustion_is_a_clear_error() {
    let state = cluster(1);
    let objects = [svc("a", 80), svc("b", 80), svc("c", 80)];
    let err = plan_apply(
        &objects,
        &state,
        "10.0.0.0/30".parse().unwrap(),
        &mut CountingNamer(0),
    )
    .unwrap_err();
    assert!(
        matches!(err, PlanError::PortalsExhausted { ref service, .. } if service == "c"),
        "{err}"
    );
    assert!(err.to_string().contains("10.0.0.0/30"));
    assert!(err.help().unwrap().contains("--portal-net"));
}

#[test]
fn not_ready_minion_gets_no_new_pods() {
    let mut state = cluster(2);
    state.heartbeats.remove("minion-1");
    let p = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(1))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    assert_eq!(hosts(&state), ["minion-2"]);
    let err = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(2))],
        &state,
        &mut CountingNamer(9),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("minion-1: minion is not ready"),
        "{err}"
    );
}

/// A minion whose runtime does not answer gets no new pods, but keeps
/// those it has: their containers may well still serve, and a supervised
/// dockerd is back in a moment.
#[test]
fn a_minion_without_its_runtime_gets_no_new_pods_and_keeps_its_own() {
    let mut state = cluster(2);
    let p = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(2))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    assert_eq!(hosts(&state), ["minion-1", "minion-2"]);
    state
        .not_ready
        .insert("minion-1".into(), "container runtime unreachable".into());
    assert!(!state.ready("minion-1") && state.ready("minion-2"));
    let (moves, unfit) = plan_reconcile(&state, &mut CountingNamer(5));
    assert!(moves.is_empty() && unfit.is_empty(), "{moves:?}");
    // A third replica (host port 80, taken on minion-2) fits nowhere now.
    let err = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(3))],
        &state,
        &mut CountingNamer(9),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("minion-1: minion is not ready"),
        "{err}"
    );
}

#[test]
fn reconcile_moves_controller_pods_off_dead_minions() {
    let mut state = cluster(3);
    let p = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(2))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    // A healthy cluster needs nothing.
    assert!(plan_reconcile(&state, &mut CountingNamer(50)).0.is_empty());
    let dead = state.pods.values().next().unwrap().clone();
    state.heartbeats.remove(&dead.host);
    let (r, unfit) = plan_reconcile(&state, &mut CountingNamer(50));
    assert!(unfit.is_empty());
    assert_eq!(r.counts(), (1, 1, 1), "{}", r.render());
    assert!(
        r.render()
            .contains("replaces 1 pods of minions that are not ready"),
        "{}",
        r.render()
    );
    commit(&mut state, &r);
    assert_eq!(state.pods.len(), 2);
    assert!(
        state.pods.values().all(|p| p.host != dead.host),
        "{:?}",
        hosts(&state)
    );
    // hostPort 80: the replacement went to the one minion without a replica.
    let mut h = hosts(&state);
    h.dedup();
    assert_eq!(h.len(), 2);
}

#[test]
fn reconcile_restores_vanished_pods_and_leaves_bare_pods() {
    let mut state = cluster(3);
    let bare = Pod {
        id: "bare".into(),
        labels: Labels::new(),
        spec: spec("img", None),
    };
    let p = plan_apply_in(
        &[
            Object::ReplicationController(tomcat_rc(2)),
            Object::Pod(bare),
        ],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    let bare_host = state.pods["bare"].host.clone();
    assert_eq!(bare_host, "minion-3", "the least loaded minion");
    state.heartbeats.remove(&bare_host);
    let gone = state
        .pods_owned_by("tomcatController")
        .next()
        .unwrap()
        .pod
        .id
        .clone();
    state.pods.remove(&gone);
    let (r, unfit) = plan_reconcile(&state, &mut CountingNamer(70));
    assert!(unfit.is_empty());
    assert_eq!(r.counts(), (1, 1, 0), "{}", r.render());
    commit(&mut state, &r);
    assert_eq!(state.pods_owned_by("tomcatController").count(), 2);
    assert_eq!(
        state.pods["bare"].host, bare_host,
        "a bare pod is not moved"
    );
}

#[test]
fn reconcile_returns_a_drained_bare_pod_to_service_once_its_minion_is_not_cordoned() {
    let mut state = cluster(2);
    let bare = Pod {
        id: "bare".into(),
        labels: Labels::new(),
        spec: spec("img", None),
    };
    let p = plan_apply_in(&[Object::Pod(bare)], &state, &mut CountingNamer(0)).unwrap();
    commit(&mut state, &p);
    let host = state.pods["bare"].host.clone();
    state.pods.get_mut("bare").unwrap().draining = true;
    // Its move is under way: left alone.
    state.cordoned.insert(host.clone());
    assert!(plan_reconcile(&state, &mut CountingNamer(0)).0.is_empty());
    // The cordon's lease expired with the kctl that moved it.
    state.cordoned.clear();
    let (r, _) = plan_reconcile(&state, &mut CountingNamer(0));
    assert_eq!(r.counts(), (0, 1, 0), "{}", r.render());
    commit(&mut state, &r);
    assert!(!state.pods["bare"].draining);
    assert_eq!(state.pods["bare"].host, host);
}

#[test]
fn reconcile_reports_what_fits_nowhere() {
    let mut state = cluster(2);
    let p = plan_apply_in(
        &[Object::ReplicationController(tomcat_rc(2))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    state.heartbeats.remove("minion-1");
    let (r, unfit) = plan_reconcile(&state, &mut CountingNamer(80));
    // The lost pod is deleted; its replacement has nowhere to go (hostPort).
    assert_eq!(r.counts().2, 1);
    assert_eq!(unfit.len(), 1);
}

/// What `apply` and `diff` print for a plan that creates, changes field
/// by field, and replaces.
#[test]
fn plan_text_snapshot() {
    let mut state = cluster(3);
    let bare = Object::Pod(Pod {
        id: "db".into(),
        labels: labels(&[("name", "db")]),
        spec: spec("postgres:9", None),
    });
    let first = [
        svc("tomcat", 8080),
        Object::ReplicationController(tomcat_rc(2)),
        bare,
    ];
    let created = plan_apply_in(&first, &state, &mut CountingNamer(0)).unwrap();
    commit(&mut state, &created);
    let mut changed_rc = tomcat_rc(3);
    changed_rc.template.spec.containers[0].image = "tutum/tomcat:8".into();
    let mut changed_pod = spec("postgres:9", None);
    changed_pod.containers[0].env.push(crate::model::EnvVar {
        name: "MODE".into(),
        value: "replica".into(),
    });
    let second = [
        svc("tomcat", 8081),
        Object::ReplicationController(changed_rc),
        Object::Pod(Pod {
            id: "db".into(),
            labels: labels(&[("name", "db")]),
            spec: changed_pod,
        }),
    ];
    let changed = plan_apply_in(&second, &state, &mut CountingNamer(100)).unwrap();
    commit(&mut state, &changed);
    let unchanged = plan_apply_in(&second, &state, &mut CountingNamer(200)).unwrap();
    let text = [
        "$ kctl apply (first)".to_string(),
        created.render(),
        "$ kctl apply (changed)".to_string(),
        changed.render(),
        "$ kctl apply (again)".to_string(),
        unchanged.render(),
    ]
    .join("\n");
    crate::output::snapshots::assert_snapshot("plan", &text);
}

#[test]
fn prune_deletes_only_what_the_set_owns_and_the_files_dropped() {
    let mut state = cluster(2);
    let first = [
        svc("web", 80),
        svc("old", 81),
        Object::ReplicationController(tomcat_rc(1)),
    ];
    let plan = plan_apply_in(&first, &state, &mut CountingNamer(0)).unwrap();
    commit(&mut state, &plan);
    for (kind, id) in [
        (Kind::Service, "web"),
        (Kind::Service, "old"),
        (Kind::ReplicationController, "tomcatController"),
    ] {
        state.owners.insert((kind, id.into()), "files:/a".into());
    }
    // Another set's service, and one applied from no set at all.
    let others = [svc("theirs", 82), svc("adhoc", 83)];
    let plan = plan_apply_in(&others, &state, &mut CountingNamer(10)).unwrap();
    commit(&mut state, &plan);
    state
        .owners
        .insert((Kind::Service, "theirs".into()), "files:/b".into());

    let second = [svc("web", 80)];
    assert_eq!(
        prunable(&second, &state, "files:/a"),
        [
            (Kind::Service, "old".to_string()),
            (Kind::ReplicationController, "tomcatController".to_string())
        ]
    );
    let plan = plan_apply_pruning(
        &second,
        &state,
        "10.0.0.0/24".parse().unwrap(),
        &mut CountingNamer(20),
        "files:/a",
    )
    .unwrap();
    let text = plan.render();
    assert!(
        text.contains("- service old (pruned: no longer in the files)"),
        "{text}"
    );
    assert!(
        text.contains("- replicationController tomcatController (and its 1 pods; pruned"),
        "{text}"
    );
    assert!(
        !text.contains("theirs") && !text.contains("adhoc"),
        "{text}"
    );
    // Without a set (plain apply), nothing is pruned.
    assert!(plan_apply_in(&second, &state, &mut CountingNamer(30))
        .unwrap()
        .is_empty());
}

fn svc_node_port(id: &str, node_port: NodePort) -> Object {
    match svc(id, 80) {
        Object::Service(s) => Object::Service(Service {
            node_port: Some(node_port),
            ..s
        }),
        _ => unreachable!(),
    }
}

#[test]
fn node_ports_are_given_from_the_range_kept_and_never_shared() {
    let mut state = cluster(1);
    // A port named by a later service of the same apply is not given first.
    let p = plan_apply_in(
        &[
            svc_node_port("a", NodePort::Any),
            svc_node_port("b", NodePort::Port(30000)),
            svc("c", 80),
        ],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    assert_eq!(state.services["b"].node_port, Some(30000));
    assert_eq!(state.services["a"].node_port, Some(30001));
    assert_eq!(state.services["c"].node_port, None);
    assert!(p.render().contains("node port 30001"), "{}", p.render());
    // Applying the same again changes nothing; the port is kept for life
    // while the service asks for any.
    let same = plan_apply_in(
        &[
            svc_node_port("a", NodePort::Any),
            svc_node_port("b", NodePort::Port(30000)),
        ],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    assert!(same.is_empty(), "{}", same.render());
    // Naming the port it got, as `get` prints it, is no change either.
    let named = plan_apply_in(
        &[svc_node_port("a", NodePort::Port(30001))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    assert!(named.is_empty(), "{}", named.render());
    // Another service may not take one that is held...
    let err = plan_apply_in(
        &[svc_node_port("d", NodePort::Port(30001))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service d asks for node port 30001, which service a has"
    );
    assert!(err.help().unwrap().contains("leave `nodePort` out"));
    // ...but a service may move to a free one, and gives its old one up.
    let p = plan_apply_in(
        &[svc_node_port("a", NodePort::Port(32767))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    assert_eq!(state.services["a"].node_port, Some(32767));
    let p = plan_apply_in(
        &[svc_node_port("e", NodePort::Any)],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    assert_eq!(state.services["e"].node_port, Some(30001));
    // A service that stops asking gives its port back.
    let p = plan_apply_in(&[svc("b", 80)], &state, &mut CountingNamer(0)).unwrap();
    commit(&mut state, &p);
    assert_eq!(state.services["b"].node_port, None);
}

#[test]
fn a_port_of_the_minions_leads_to_one_service_only() {
    let mut state = cluster(1);
    let published = match svc("lb", 30080) {
        Object::Service(s) => Object::Service(Service {
            external: true,
            ..s
        }),
        _ => unreachable!(),
    };
    let p = plan_apply_in(
        std::slice::from_ref(&published),
        &state,
        &mut CountingNamer(0),
    )
    .unwrap();
    commit(&mut state, &p);
    let err = plan_apply_in(
        &[svc_node_port("np", NodePort::Port(30080))],
        &state,
        &mut CountingNamer(0),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service np would answer on the minions' TCP port 30080, which service lb takes there"
    );
    // In one apply too, whatever the order.
    let err = plan_apply_in(
        &[
            svc_node_port("np", NodePort::Port(30081)),
            svc("lb2", 30081),
        ]
        .into_iter()
        .map(|o| match o {
            Object::Service(s) if s.id == "lb2" => Object::Service(Service {
                external: true,
                ..s
            }),
            o => o,
        })
        .collect::<Vec<_>>(),
        &state,
        &mut CountingNamer(0),
    )
    .unwrap_err();
    assert!(matches!(err, PlanError::MachinePortTaken { .. }), "{err}");
    // Another free port is fine.
    assert!(plan_apply_in(
        &[svc_node_port("np", NodePort::Port(30082))],
        &state,
        &mut CountingNamer(0)
    )
    .is_ok());
}
