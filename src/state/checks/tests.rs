use super::*;
use crate::model::{Container, Object, Pod, Port, Protocol, SecurityContext, Volume, VolumeMount};
use std::path::Path;

fn policy() -> RecordPolicy {
    RecordPolicy {
        portal_net: Some("10.0.0.0/16".parse().unwrap()),
        ..RecordPolicy::default()
    }
}

fn minion() -> MinionRecord {
    MinionRecord {
        id: "minion-1".into(),
        host_ip: "10.101.0.11".parse().unwrap(),
        pod_cidr: "10.101.1.0/24".into(),
        ssh_port: 22,
        ssh_user: "root".into(),
    }
}

fn pod() -> PodRecord {
    PodRecord {
        pod: Pod {
            id: "web-abcde".into(),
            labels: Labels::from([("name".to_string(), "web".to_string())]),
            spec: PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: "nginx".into(),
                    ports: vec![Port {
                        name: Some("http".into()),
                        container_port: 80,
                        host_port: Some(8080),
                        protocol: Protocol::Tcp,
                    }],
                    volume_mounts: vec![VolumeMount {
                        name: "data".into(),
                        mount_path: "/data".into(),
                        read_only: false,
                    }],
                    ..Default::default()
                }],
                volumes: vec![Volume {
                    name: "data".into(),
                    source: VolumeSource::HostDir {
                        path: "/srv/web".into(),
                    },
                }],
                ..Default::default()
            },
        },
        host: "minion-1".into(),
        owner: None,
        draining: false,
    }
}

fn service() -> ServiceRecord {
    ServiceRecord {
        service: Service {
            id: "web".into(),
            labels: Labels::new(),
            selector: Labels::from([("name".to_string(), "web".to_string())]),
            port: 80,
            container_port: None,
            protocol: Protocol::Tcp,
            portal_ip: None,
            external: true,
            public_ips: vec![],
            node_port: None,
        },
        portal_ip: "10.0.0.7".parse().unwrap(),
        node_port: None,
    }
}

fn state() -> ClusterState {
    let mut state = ClusterState::default();
    state.minions.insert("minion-1".into(), minion());
    state.pods.insert("web-abcde".into(), pod());
    state.services.insert("web".into(), service());
    state
}

#[test]
fn sound_records_pass_whole() {
    let (kept, rejected) = checked(state(), &policy());
    assert_eq!(rejected, []);
    assert_eq!(kept, state());
}

/// Each crafted record is left out, named by its key, and the rest stays.
#[test]
fn crafted_records_are_left_out_and_named() {
    type Craft = fn(&mut ClusterState);
    let crafts: &[(&str, &str, Craft)] = &[
        ("services/web", "its id", |s| {
            // What closes the nft block and adds a table of its own.
            let r = s.services.get_mut("web").unwrap();
            r.service.id = "web\" }\ntable ip evil { chain c {".into();
        }),
        ("services/web", "portal IP", |s| {
            // The minion's own address: its sshd and etcd's traffic.
            s.services.get_mut("web").unwrap().portal_ip = "10.101.0.11".parse().unwrap();
        }),
        ("services/web", "portal IP", |s| {
            // The machine's resolver, outside the portal range.
            s.services.get_mut("web").unwrap().portal_ip = "10.255.255.254".parse().unwrap();
        }),
        ("services/web", "port 22", |s| {
            s.services.get_mut("web").unwrap().service.port = 22;
        }),
        ("services/web", "public IP", |s| {
            let r = s.services.get_mut("web").unwrap();
            r.service.public_ips = vec!["127.0.0.1".parse().unwrap()];
        }),
        ("services/web", "node port", |s| {
            s.services.get_mut("web").unwrap().node_port = Some(4001);
        }),
        ("services/web", "holds id", |s| {
            s.services.get_mut("web").unwrap().service.id = "other".into();
        }),
        ("pods/web-abcde", "privileged", |s| {
            let c = &mut s.pods.get_mut("web-abcde").unwrap().pod.spec.containers[0];
            c.security = SecurityContext {
                privileged: true,
                ..SecurityContext::default()
            };
        }),
        ("pods/web-abcde", "privileged", |s| {
            let c = &mut s.pods.get_mut("web-abcde").unwrap().pod.spec.containers[0];
            c.security.capabilities_add = vec!["SYS_ADMIN".into()];
        }),
        ("pods/web-abcde", "--allow-host-dir", |s| {
            let spec = &mut s.pods.get_mut("web-abcde").unwrap().pod.spec;
            spec.volumes[0].source = VolumeSource::HostDir { path: "/".into() };
        }),
        ("pods/web-abcde", "contains `:`", |s| {
            let c = &mut s.pods.get_mut("web-abcde").unwrap().pod.spec.containers[0];
            c.volume_mounts[0].mount_path = "/data:/etc:rw".into();
        }),
        ("pods/web-abcde", "host port 22", |s| {
            let c = &mut s.pods.get_mut("web-abcde").unwrap().pod.spec.containers[0];
            c.ports[0].host_port = Some(22);
        }),
        ("pods/web-abcde", "environment variable", |s| {
            let c = &mut s.pods.get_mut("web-abcde").unwrap().pod.spec.containers[0];
            c.env = vec![crate::model::EnvVar {
                name: "A=B\nC".into(),
                value: String::new(),
            }];
        }),
        ("pods/web-abcde", "control character", |s| {
            let p = s.pods.get_mut("web-abcde").unwrap();
            p.pod
                .labels
                .insert("name".into(), "\u{1b}]52;c;evil\u{7}".into());
        }),
        ("pods/web-abcde", "container name", |s| {
            let c = &mut s.pods.get_mut("web-abcde").unwrap().pod.spec.containers[0];
            c.name = "--privileged".into();
        }),
        ("pods/web-abcde", "minion id", |s| {
            s.pods.get_mut("web-abcde").unwrap().host = "../../etc".into();
        }),
        ("minions/minion-1", "user name", |s| {
            s.minions.get_mut("minion-1").unwrap().ssh_user = "-oProxyCommand=sh".into();
        }),
        ("minions/minion-1", "pod range", |s| {
            let m = s.minions.get_mut("minion-1").unwrap();
            m.pod_cidr = "10.101.1.0/24 -j ACCEPT".into();
        }),
    ];
    for (key, reason, craft) in crafts {
        let mut crafted = state();
        craft(&mut crafted);
        let (kept, rejected) = checked(crafted, &policy());
        assert_eq!(rejected.len(), 1, "{key} {reason}: {rejected:?}");
        assert_eq!(rejected[0].key, *key);
        assert!(
            rejected[0].reason.contains(reason),
            "{key}: {:?} does not say {reason:?}",
            rejected[0].reason
        );
        let mut expected = state();
        let (kind, id) = key.split_once('/').unwrap();
        match kind {
            "services" => expected.services.remove(id),
            "pods" => expected.pods.remove(id).map(|_| service()),
            "minions" => expected.minions.remove(id).map(|_| service()),
            _ => unreachable!(),
        };
        assert_eq!(kept, expected, "{key}: the rest stays as it was");
    }
}

#[test]
fn what_the_cluster_allows_passes() {
    let mut crafted = state();
    let c = &mut crafted.pods.get_mut("web-abcde").unwrap().pod.spec;
    c.containers[0].security.privileged = true;
    c.volumes[0].source = VolumeSource::HostDir { path: "/".into() };
    let lenient = RecordPolicy {
        allow_host_dir: true,
        allow_privileged: true,
        ..policy()
    };
    assert_eq!(checked(crafted.clone(), &lenient).1, []);
    assert_eq!(checked(crafted, &policy()).1.len(), 1);
}

/// What the manifest decoder accepts, the record checks accept: a record
/// kctl wrote itself is never left out, whichever file it came from.
#[test]
fn every_object_of_kubernetes_own_examples_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s-examples");
    let sources = std::fs::read_to_string(root.join("SOURCES.tsv")).unwrap();
    let mut checked_objects = 0;
    for file in sources.lines().filter(|l| !l.trim().is_empty()) {
        let path = root.join(file.split('\t').next().unwrap());
        for (options, policy) in [
            (crate::manifest::LoadOptions::default(), policy()),
            (
                crate::manifest::LoadOptions::permissive(),
                RecordPolicy {
                    allow_host_dir: true,
                    allow_privileged: true,
                    ..policy()
                },
            ),
        ] {
            let Ok(loaded) = crate::manifest::load_paths(std::slice::from_ref(&path), options)
            else {
                continue;
            };
            for object in loaded.objects {
                let problem = match &object {
                    Object::Pod(pod) => pod_problem(
                        &PodRecord {
                            pod: pod.clone(),
                            host: "minion-1".into(),
                            owner: None,
                            draining: false,
                        },
                        &policy,
                    ),
                    Object::ReplicationController(rc) => controller_problem(rc, &policy),
                    Object::Service(s) => service_problem(s),
                };
                assert_eq!(problem, None, "{file}: {object:?}");
                checked_objects += 1;
            }
        }
    }
    assert!(checked_objects >= 80, "{checked_objects}");
}
