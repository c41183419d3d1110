//! Snapshot tests of what a person reads: `get` tables, `describe`,
//! `get events`. The expected text lives in tests/golden/output/;
//! `KCTL_BLESS=1 cargo test --lib snapshots` rewrites it, to be reviewed
//! in the diff like any code.

use super::describe::{
    describe_controller, describe_minion, describe_pod, describe_service, events_table,
};
use super::*;
use crate::events::{event, Event, Subject};
use crate::model::{EnvVar, Labels, Pod, PodTemplate, Port, PortRef, Probe, Protocol, Service};
use crate::state::{ContainerStatus, HelperVersion, PodStatus};

/// 2026-11-28 12:00:00 UTC, in milliseconds: "now" for every snapshot.
const NOW_MS: u64 = 1_795_867_200_000;

pub fn assert_snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/output")
        .join(format!("{name}.txt"));
    if std::env::var_os("KCTL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no snapshot {}: KCTL_BLESS=1 writes it", path.display()));
    assert!(
        actual == expected,
        "snapshot {name} differs (KCTL_BLESS=1 rewrites it, then review the diff)\n--- expected\n{expected}--- actual\n{actual}"
    );
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn web_container() -> Container {
    Container {
        name: "web".into(),
        image: "tutum/tomcat".into(),
        ports: vec![Port {
            name: Some("http".into()),
            container_port: 8080,
            host_port: Some(80),
            protocol: Protocol::Tcp,
        }],
        env: vec![EnvVar {
            name: "ROLE".into(),
            value: "server".into(),
        }],
        liveness_probe: Some(Probe {
            action: ProbeAction::HttpGet {
                path: "/healthz".into(),
                port: PortRef::Name("http".into()),
                host: None,
            },
            initial_delay_seconds: 5,
            timeout_seconds: 1,
        }),
        ..Container::default()
    }
}

/// A cluster of two minions (one NotReady), a controller of two pods (one
/// running and healthy, one waiting), a bare pod of two containers whose
/// sidecar crashed, a service with one endpoint, and their events.
fn fixture() -> (ClusterState, Vec<Event>) {
    let mut state = ClusterState::default();
    for (i, ready) in [(1, true), (2, false), (3, true)] {
        let id = format!("minion-{i}");
        state.minions.insert(
            id.clone(),
            MinionRecord {
                id: id.clone(),
                host_ip: format!("10.101.0.1{i}").parse().unwrap(),
                pod_cidr: format!("10.101.{i}.0/24"),
                ssh_port: 22,
                ssh_user: "root".into(),
            },
        );
        state.heartbeats.insert(id.clone());
        if !ready {
            state
                .not_ready
                .insert(id.clone(), "the container runtime does not answer".into());
        }
        state.last_seen.insert(id.clone(), NOW_MS / 1000 - 3 * i);
        state.helper_versions.insert(
            id,
            HelperVersion {
                version: "0.1.0".into(),
                sha256: "0123456789ab".into(),
                protocol: crate::state::HELPER_PROTOCOL,
            },
        );
    }
    // An interrupted `kctl up --minions 2` left minion-3 cordoned.
    state.cordoned.insert("minion-3".into());
    let template = PodTemplate {
        labels: labels(&[("name", "web"), ("tier", "front")]),
        spec: PodSpec {
            containers: vec![web_container()],
            restart_policy: RestartPolicy::Always,
            volumes: vec![],
        },
    };
    let rc = ReplicationController {
        id: "web".into(),
        labels: labels(&[("name", "web")]),
        replicas: 2,
        selector: labels(&[("name", "web")]),
        template: template.clone(),
    };
    state.controllers.insert("web".into(), rc);
    for (id, host, running) in [
        ("web-4x2kq", "minion-1", true),
        ("web-9pz7m", "minion-2", false),
    ] {
        let record = PodRecord {
            pod: Pod {
                id: id.into(),
                labels: template.labels.clone(),
                spec: template.spec.clone(),
            },
            host: host.into(),
            owner: Some("web".into()),
            draining: false,
        };
        if running {
            state.statuses.insert(
                id.into(),
                PodStatus {
                    host: String::new(),
                    phase: PodPhase::Running,
                    spec_hash: record.spec_hash(),
                    pod_ip: Some("10.101.1.2".parse().unwrap()),
                    containers: vec![ContainerStatus {
                        name: "web".into(),
                        container_id: "5a7bea2c0f7112ffee".into(),
                        running: true,
                        restart_count: 0,
                        exit_code: None,
                        healthy: Some(true),
                    }],
                    message: None,
                },
            );
        }
        state.pods.insert(id.into(), record);
    }
    let duo = PodRecord {
        pod: Pod {
            id: "duo".into(),
            labels: labels(&[("name", "duo")]),
            spec: PodSpec {
                containers: vec![
                    Container {
                        name: "app".into(),
                        image: "tutum/tomcat".into(),
                        ..Container::default()
                    },
                    Container {
                        name: "sidecar".into(),
                        image: "busybox".into(),
                        command: vec!["sh".into(), "-c".into(), "exit 3".into()],
                        memory: Some(64 << 20),
                        ..Container::default()
                    },
                ],
                restart_policy: RestartPolicy::OnFailure,
                volumes: vec![],
            },
        },
        host: "minion-1".into(),
        owner: None,
        draining: false,
    };
    state.statuses.insert(
        "duo".into(),
        PodStatus {
            host: String::new(),
            phase: PodPhase::Running,
            spec_hash: duo.spec_hash(),
            pod_ip: Some("10.101.1.3".parse().unwrap()),
            containers: vec![
                ContainerStatus {
                    name: "app".into(),
                    container_id: "c0ffee000001".into(),
                    running: true,
                    restart_count: 0,
                    exit_code: None,
                    healthy: None,
                },
                ContainerStatus {
                    name: "sidecar".into(),
                    container_id: "c0ffee000002".into(),
                    running: false,
                    restart_count: 4,
                    exit_code: Some(3),
                    healthy: None,
                },
            ],
            message: None,
        },
    );
    state.pods.insert("duo".into(), duo);
    state.services.insert(
        "web".into(),
        ServiceRecord {
            service: Service {
                id: "web".into(),
                labels: labels(&[("name", "web")]),
                selector: labels(&[("name", "web")]),
                port: 8080,
                container_port: Some(PortRef::Name("http".into())),
                protocol: Protocol::Tcp,
                portal_ip: None,
                external: false,
                public_ips: vec![],
                node_port: None,
            },
            portal_ip: "10.101.128.1".parse().unwrap(),
            node_port: None,
        },
    );
    // A v1 NodePort service, which no pod serves.
    state.services.insert(
        "np".into(),
        ServiceRecord {
            service: Service {
                id: "np".into(),
                labels: Labels::new(),
                selector: labels(&[("name", "np")]),
                port: 80,
                container_port: None,
                protocol: Protocol::Tcp,
                portal_ip: None,
                external: false,
                public_ips: vec![],
                node_port: Some(crate::model::NodePort::Any),
            },
            portal_ip: "10.101.128.2".parse().unwrap(),
            node_port: Some(30080),
        },
    );
    state.endpoints.insert(
        "web".into(),
        vec![crate::state::Endpoint {
            ip: "10.101.1.2".parse().unwrap(),
            port: 8080,
            pod: "web-4x2kq".into(),
        }],
    );
    let at = |seconds_ago: u64, source: &str, e: Event| Event {
        time_ms: NOW_MS - seconds_ago * 1000,
        source: source.into(),
        ..e
    };
    let events = vec![
        at(
            600,
            "kctl",
            event(
                Subject::ReplicationController,
                "web",
                "Created",
                "2 replica(s)".into(),
            ),
        ),
        at(
            600,
            "kctl",
            event(
                Subject::Pod,
                "web-4x2kq",
                "Scheduled",
                "bound to minion-1".into(),
            ),
        ),
        at(
            599,
            "kctl",
            event(
                Subject::Pod,
                "web-4x2kq",
                "Started",
                "containers started on minion-1".into(),
            ),
        ),
        at(
            3,
            "kctl-node/minion-2",
            event(
                Subject::Minion,
                "minion-2",
                "NotReady",
                "the container runtime does not answer".into(),
            ),
        ),
        at(
            7300,
            "kctl",
            event(
                Subject::Service,
                "web",
                "Created",
                "portal 10.101.128.1:8080/TCP".into(),
            ),
        ),
    ];
    let mut all = events;
    for seconds_ago in [90, 60, 30] {
        all.push(at(
            seconds_ago,
            "kctl-node/minion-1",
            event(
                Subject::Pod,
                "duo",
                "Restarted",
                "container sidecar started again after exit code 3".into(),
            ),
        ));
    }
    all.sort_by_key(|e| e.time_ms);
    (state, all)
}

fn of(events: &[Event], subject: Subject, id: &str) -> Vec<Event> {
    events
        .iter()
        .filter(|e| e.subject == subject && e.id == id)
        .cloned()
        .collect()
}

#[test]
fn get_tables() {
    let (state, _) = fixture();
    let pods: Vec<&PodRecord> = state.pods.values().collect();
    let rcs: Vec<&ReplicationController> = state.controllers.values().collect();
    let services: Vec<&ServiceRecord> = state.services.values().collect();
    let minions: Vec<MinionView> = state
        .minions
        .values()
        .map(|m| MinionView::of(&state, m))
        .collect();
    let mut text = String::new();
    for wide in [false, true] {
        let o = if wide { " -o wide" } else { "" };
        text.push_str(
            &[
                format!("$ kctl get pods{o}"),
                pods_table(&state, &pods, wide),
                format!("$ kctl get rc{o}"),
                controllers_table(&state, &rcs, wide),
                format!("$ kctl get services{o}"),
                services_table(&state, &services, wide),
                "$ kctl get endpoints".to_string(),
                endpoints_table(&state, &services),
                format!("$ kctl get minions{o}"),
                minions_table(&minions, NOW_MS / 1000, wide),
            ]
            .join("\n"),
        );
        text.push('\n');
    }
    assert_snapshot("get", &text);
}

#[test]
fn describe_each_kind() {
    let (state, events) = fixture();
    let pod = |id: &str| state.pods.get(id).unwrap();
    let text = [
        "$ kctl describe pod web-4x2kq".to_string(),
        describe_pod(
            &state,
            pod("web-4x2kq"),
            &of(&events, Subject::Pod, "web-4x2kq"),
            NOW_MS,
        ),
        "$ kctl describe pod web-9pz7m".to_string(),
        describe_pod(&state, pod("web-9pz7m"), &[], NOW_MS),
        "$ kctl describe pod duo".to_string(),
        describe_pod(
            &state,
            pod("duo"),
            &of(&events, Subject::Pod, "duo"),
            NOW_MS,
        ),
        "$ kctl describe rc web".to_string(),
        describe_controller(
            &state,
            state.controllers.get("web").unwrap(),
            &of(&events, Subject::ReplicationController, "web"),
            NOW_MS,
        ),
        "$ kctl describe service web".to_string(),
        describe_service(
            &state,
            state.services.get("web").unwrap(),
            &of(&events, Subject::Service, "web"),
            NOW_MS,
        ),
        "$ kctl describe service np".to_string(),
        describe_service(
            &state,
            state.services.get("np").unwrap(),
            &of(&events, Subject::Service, "np"),
            NOW_MS,
        ),
        "$ kctl describe minion minion-2".to_string(),
        describe_minion(
            &state,
            "minion-2",
            &of(&events, Subject::Minion, "minion-2"),
            NOW_MS,
        )
        .unwrap(),
        "$ kctl describe minion minion-3".to_string(),
        describe_minion(&state, "minion-3", &[], NOW_MS).unwrap(),
    ]
    .join("\n");
    assert_snapshot("describe", &text);
}

#[test]
fn get_events_collapses_repeats() {
    let (_, events) = fixture();
    assert_snapshot("events", &events_table(&events, NOW_MS));
}
