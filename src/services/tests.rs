use super::*;
use crate::model::{Container, Labels, Pod, Port, Protocol, RestartPolicy};
use crate::state::{PodPhase, PodRecord, PodStatus};

fn labels(name: &str) -> Labels {
    Labels::from([("name".to_string(), name.to_string())])
}

fn spec(ports: &[(Option<&str>, u16)]) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "c".into(),
            image: "img".into(),
            ports: ports
                .iter()
                .map(|(name, port)| Port {
                    name: name.map(str::to_string),
                    container_port: *port,
                    host_port: None,
                    protocol: Protocol::Tcp,
                })
                .collect(),
            ..Default::default()
        }],
        restart_policy: RestartPolicy::Always,
        volumes: vec![],
    }
}

pub(crate) fn service(id: &str, container_port: Option<PortRef>) -> ServiceRecord {
    ServiceRecord {
        service: Service {
            id: id.into(),
            labels: Labels::new(),
            selector: labels("web"),
            port: 80,
            container_port,
            protocol: Protocol::Tcp,
            portal_ip: None,
            external: false,
            public_ips: vec![],
            node_port: None,
        },
        portal_ip: "10.0.0.1".parse().unwrap(),
        node_port: None,
    }
}

fn add_pod(state: &mut ClusterState, id: &str, name: &str, ip: &str, phase: PodPhase) {
    let record = PodRecord {
        pod: Pod {
            id: id.into(),
            labels: labels(name),
            spec: spec(&[(Some("http"), 8080), (None, 9090)]),
        },
        host: "minion-1".into(),
        owner: None,
        draining: false,
    };
    state.statuses.insert(
        id.into(),
        PodStatus {
            host: String::new(),
            phase,
            spec_hash: record.spec_hash(),
            pod_ip: Some(ip.parse().unwrap()),
            containers: vec![crate::state::ContainerStatus {
                name: "c".into(),
                container_id: "x".into(),
                running: phase == PodPhase::Running,
                restart_count: 0,
                exit_code: None,
                healthy: None,
            }],
            message: None,
        },
    );
    state.pods.insert(id.into(), record);
}

#[test]
fn portals_are_allocated_lowest_first_and_exhaust() {
    let range: Ipv4Net = "10.0.0.0/30".parse().unwrap();
    let mut used = BTreeSet::new();
    let first = allocate_portal(range, &used).unwrap();
    assert_eq!(first, Ipv4Addr::new(10, 0, 0, 1), "network address skipped");
    used.insert(first);
    let second = allocate_portal(range, &used).unwrap();
    assert_eq!(second, Ipv4Addr::new(10, 0, 0, 2));
    used.insert(second);
    assert_eq!(
        allocate_portal(range, &used),
        None,
        "broadcast is never handed out"
    );
}

#[test]
fn endpoints_are_running_matching_pods() {
    let mut state = ClusterState::default();
    state.heartbeats.insert("minion-1".into());
    state.services.insert("web".into(), service("web", None));
    add_pod(&mut state, "a", "web", "10.101.1.2", PodPhase::Running);
    add_pod(&mut state, "b", "web", "10.101.2.2", PodPhase::Running);
    add_pod(&mut state, "c", "web", "10.101.2.3", PodPhase::Waiting);
    add_pod(&mut state, "d", "other", "10.101.1.3", PodPhase::Running);
    let eps = endpoints(&state);
    let web: Vec<String> = eps["web"]
        .iter()
        .map(|e| format!("{}:{}", e.ip, e.port))
        .collect();
    assert_eq!(web, ["10.101.1.2:8080", "10.101.2.2:8080"]);
}

#[test]
fn target_port_by_number_name_or_default() {
    let s = spec(&[(Some("http"), 8080), (Some("admin"), 9090)]);
    assert_eq!(target_port(&service("x", None).service, &s), Some(8080));
    assert_eq!(
        target_port(&service("x", Some(PortRef::Number(7))).service, &s),
        Some(7)
    );
    assert_eq!(
        target_port(
            &service("x", Some(PortRef::Name("admin".into()))).service,
            &s
        ),
        Some(9090)
    );
    assert_eq!(
        target_port(
            &service("x", Some(PortRef::Name("nope".into()))).service,
            &s
        ),
        None
    );
    assert_eq!(target_port(&service("x", None).service, &spec(&[])), None);
}

#[test]
fn environment_variables_follow_v1beta1_and_docker_links() {
    let mut record = service("redis-master", None);
    record.service.port = 6379;
    record.portal_ip = "10.0.0.11".parse().unwrap();
    let env: BTreeMap<String, String> = service_env([&record])
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    let expected = [
        ("REDIS_MASTER_SERVICE_HOST", "10.0.0.11"),
        ("REDIS_MASTER_SERVICE_PORT", "6379"),
        ("REDIS_MASTER_PORT", "tcp://10.0.0.11:6379"),
        ("REDIS_MASTER_PORT_6379_TCP", "tcp://10.0.0.11:6379"),
        ("REDIS_MASTER_PORT_6379_TCP_PROTO", "tcp"),
        ("REDIS_MASTER_PORT_6379_TCP_PORT", "6379"),
        ("REDIS_MASTER_PORT_6379_TCP_ADDR", "10.0.0.11"),
    ];
    assert_eq!(env.len(), expected.len());
    for (k, v) in expected {
        assert_eq!(env[k], v, "{k}");
    }
    record.service.protocol = Protocol::Udp;
    let udp: Vec<EnvVar> = service_env([&record]);
    assert!(udp
        .iter()
        .any(|e| e.name == "REDIS_MASTER_PORT_6379_UDP" && e.value == "udp://10.0.0.11:6379"));
}

#[test]
fn pods_failing_their_probe_or_on_dead_minions_are_not_endpoints() {
    let mut state = ClusterState::default();
    state.heartbeats.insert("minion-1".into());
    state.services.insert("web".into(), service("web", None));
    add_pod(&mut state, "a", "web", "10.101.1.2", PodPhase::Running);
    add_pod(&mut state, "b", "web", "10.101.1.3", PodPhase::Running);
    add_pod(&mut state, "c", "web", "10.101.1.4", PodPhase::Running);
    state.statuses.get_mut("b").unwrap().containers[0].healthy = Some(false);
    state.pods.get_mut("c").unwrap().host = "minion-2".into();
    let eps = endpoints(&state);
    let pods: Vec<&str> = eps["web"].iter().map(|e| e.pod.as_str()).collect();
    assert_eq!(pods, ["a"]);
}

/// A load balancer's address joins the addresses a service answers on,
/// only while the service asks for one, and only a usable address.
#[test]
fn a_load_balancer_address_is_published_while_the_service_asks_for_it() {
    use crate::state::LoadBalancerStatus;
    let mut state = ClusterState::default();
    let mut record = service("front", None);
    record.service.external = true;
    state.services.insert("front".into(), record.clone());
    let lb = |ip: &str| LoadBalancerStatus {
        ip: ip.parse().unwrap(),
    };
    state
        .load_balancers
        .insert("front".into(), lb("203.0.113.10"));
    let published = |state: &ClusterState| {
        rules::portals(state, &BTreeMap::new())[0]
            .published
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(published(&state), ["203.0.113.10"]);
    assert!(rules::render(&rules::portals(&state, &BTreeMap::new())).contains("203.0.113.10"));
    state.load_balancers.insert("front".into(), lb("127.0.0.1"));
    assert_eq!(published(&state), Vec::<String>::new());
    state
        .load_balancers
        .insert("front".into(), lb("203.0.113.10"));
    record.service.external = false;
    state.services.insert("front".into(), record);
    assert_eq!(published(&state), Vec::<String>::new());
}
