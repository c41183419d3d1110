//! Services on a real local cluster: portal IPs, iptables rules on every
//! minion, endpoints that follow the pods, and environment variables.

mod common;

use common::{manifest, TestCluster};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const REQUESTS: usize = 24;

fn docker_sock(cluster: &TestCluster, minion: usize) -> String {
    format!("unix:///run/kctl/{}/m{minion}/docker.sock", cluster.slot())
}

fn service(cluster: &TestCluster, id: &str) -> Value {
    let run = cluster.kctl(&["get", "services", id, "-o", "json"]);
    assert!(run.ok(), "{run:?}");
    run.json()
}

fn endpoints(cluster: &TestCluster, id: &str) -> Vec<String> {
    service(cluster, id)["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// Which pods answer `REQUESTS` connections to `url`, made with curl from
/// minion `minion` itself.
fn answers_from_minion(cluster: &TestCluster, minion: usize, url: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..REQUESTS {
        let run = cluster.in_minion(minion, &["curl", "-sS", "--max-time", "3", url]);
        assert!(run.ok(), "curl {url} from minion-{minion}: {run:?}");
        seen.insert(run.stdout.trim().to_string());
    }
    seen
}

/// The same from inside a pod, with busybox wget in one `docker exec`.
fn answers_from_pod(
    cluster: &TestCluster,
    minion: usize,
    pod: &str,
    url: &str,
) -> BTreeSet<String> {
    let script = format!("for i in $(seq {REQUESTS}); do wget -q -O - {url}; done");
    let container = format!("{pod}_tomcat");
    let sock = docker_sock(cluster, minion);
    let run = cluster.in_minion(
        minion,
        &[
            "docker", "-H", &sock, "exec", &container, "sh", "-c", &script,
        ],
    );
    assert!(run.ok(), "wget {url} from pod {pod}: {run:?}");
    run.stdout.lines().map(|l| l.trim().to_string()).collect()
}

fn pods_by_minion(cluster: &TestCluster) -> Vec<(usize, String)> {
    cluster
        .pods()
        .iter()
        .map(|p| {
            let host = p["currentState"]["host"].as_str().unwrap();
            let index = host.trim_start_matches("minion-").parse().unwrap();
            (index, p["id"].as_str().unwrap().to_string())
        })
        .collect()
}

/// kctl's nftables table on a minion, as `nft` lists it.
fn kctl_rules(cluster: &TestCluster, minion: usize) -> String {
    let run = cluster.in_minion(minion, &["nft", "list", "table", "ip", "kctl"]);
    assert!(run.ok(), "{run:?}");
    run.stdout
}

#[test]
fn portal_spreads_over_pods_and_follows_them() {
    let cluster = TestCluster::up("it-services", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    let rc = manifest("tomcat-controller.json");
    let svc = manifest("tomcat-service.json");
    // One apply holds both; the service is created first.
    let applied = cluster.kctl(&["apply", "-f", &rc, "-f", &svc]);
    assert!(applied.ok(), "{applied:?}");

    let tomcat = service(&cluster, "tomcat");
    let portal = tomcat["portalIP"].as_str().unwrap().to_string();
    common::assert_stays_on_machine(&portal);
    let url = format!("http://{portal}:8080/hostname");
    let pods = pods_by_minion(&cluster);
    let all: BTreeSet<String> = pods.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(all.len(), 2);
    assert_eq!(endpoints(&cluster, "tomcat").len(), 2);

    // From each minion itself and from a pod on each minion, connections
    // reach both pods (including the pod itself, through hairpin NAT).
    for (minion, pod) in &pods {
        assert_eq!(
            answers_from_minion(&cluster, *minion, &url),
            all,
            "from minion-{minion}"
        );
        assert_eq!(
            answers_from_pod(&cluster, *minion, pod, &url),
            all,
            "from pod {pod}"
        );
    }

    // Meanwhile the control plane is out of the pods' reach: etcd and every
    // machine's sshd refuse them, though the minions themselves get in.
    let minion_ips: Vec<String> = cluster.kctl(&["get", "minions", "-o", "json"]).json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hostIP"].as_str().unwrap().to_string())
        .collect();
    let etcd = format!("10.{}.0.1:2379", 100 + cluster.slot() as u32);
    // (A local minion's sshd listens on its node address only, so that is
    // the one address where reaching it could succeed.)
    let sshds: Vec<String> = minion_ips.iter().map(|ip| format!("{ip}:22")).collect();
    for (minion, pod) in &pods {
        // The minion's helper gets in with its certificate; without one,
        // etcd refuses the TLS handshake.
        let tls = cluster.minion_tls_dir(*minion);
        let url = format!("https://{etcd}/version");
        let curl = |with_certificate: bool| {
            let argv = common::etcd_curl(&tls, &url, with_certificate);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            cluster.in_minion(*minion, &argv)
        };
        let from_minion = curl(true);
        assert!(
            from_minion.ok() && from_minion.stdout.contains("etcdserver"),
            "etcd from minion-{minion}: {from_minion:?}"
        );
        let without_certificate = curl(false);
        assert!(
            !without_certificate.ok() && !without_certificate.stdout.contains("etcdserver"),
            "etcd without a client certificate: {without_certificate:?}"
        );
        let in_pod = |script: &str| {
            let sock = docker_sock(&cluster, *minion);
            let container = format!("{pod}_tomcat");
            cluster.in_minion(
                *minion,
                &[
                    "docker", "-H", &sock, "exec", &container, "sh", "-c", script,
                ],
            )
        };
        // etcd speaks only TLS, which the pod's busybox cannot; so what
        // shows the guard is that the connection itself is refused.
        let (etcd_ip, etcd_port) = etcd.split_once(':').unwrap();
        let etcd_from_pod = in_pod(&format!("nc -w 2 {etcd_ip} {etcd_port} </dev/null 2>&1"));
        assert!(
            etcd_from_pod.stdout.contains("refused"),
            "pod {pod} connected to etcd: {etcd_from_pod:?}"
        );
        // Its peer port too, where members trust each other.
        let peer_from_pod = in_pod(&format!("nc -w 2 {etcd_ip} 2380 </dev/null 2>&1"));
        assert!(
            peer_from_pod.stdout.contains("refused"),
            "pod {pod} connected to etcd's peer port: {peer_from_pod:?}"
        );
        for sshd in &minion_ips {
            let banner = cluster.in_minion(
                *minion,
                &["sh", "-c", &format!("busybox nc -w 2 {sshd} 22 </dev/null")],
            );
            assert!(
                banner.stdout.starts_with("SSH-"),
                "sshd {sshd} from minion-{minion}: {banner:?}"
            );
        }
        for sshd in &sshds {
            let (ip, port) = sshd.split_once(':').unwrap();
            let reached = in_pod(&format!("nc -w 2 {ip} {port} </dev/null 2>&1"));
            assert!(
                !reached.stdout.contains("SSH-") && reached.stdout.contains("refused"),
                "pod {pod} reached sshd {sshd}: {reached:?}"
            );
        }
    }

    // What `get` prints applies again unchanged: one object by id, or a
    // whole list, JSON or YAML.
    for (args, format) in [
        (&["get", "svc", "tomcat", "-o", "yaml"][..], "yaml"),
        (&["get", "rc", "-o", "yaml"][..], "yaml"),
        (&["get", "services", "-o", "json"][..], "json"),
    ] {
        let printed = cluster.kctl(args);
        assert!(printed.ok(), "{printed:?}");
        let first_line = printed
            .stdout
            .lines()
            .find(|l| l.trim() != "{")
            .unwrap_or_default()
            .to_string();
        assert!(
            first_line.contains("kind"),
            "{format} starts with the kind: {first_line}"
        );
        let again = cluster.kctl_stdin(&["apply", "-f", "-"], &printed.stdout);
        assert!(again.ok(), "{args:?}: {again:?}");
        assert!(again.stdout.contains("No changes"), "{args:?}: {again:?}");
    }

    // Rules removed behind the helper's back (someone flushed them; a
    // reboot does the same) are back within one drift check, with no kctl
    // command run, and the portal answers again.
    let (minion, pod) = &pods[0];
    for argv in [
        ["nft", "delete", "table", "ip", "kctl"].as_slice(),
        ["iptables", "-w", "-D", "INPUT", "-j", "KCTL-GUARD"].as_slice(),
    ] {
        let removed = cluster.in_minion(*minion, argv);
        assert!(removed.ok(), "{removed:?}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let table = cluster.in_minion(*minion, &["nft", "list", "table", "ip", "kctl"]);
        let guard = cluster.in_minion(
            *minion,
            &["iptables", "-w", "-C", "INPUT", "-j", "KCTL-GUARD"],
        );
        if table.ok() && guard.ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not repaired: {table:?} {guard:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(answers_from_pod(&cluster, *minion, pod, &url), all);

    // The pods see the service in their environment: they were started in
    // the same apply, after the service.
    let sock = docker_sock(&cluster, *minion);
    let env = cluster.in_minion(
        *minion,
        &[
            "docker",
            "-H",
            &sock,
            "exec",
            &format!("{pod}_tomcat"),
            "env",
        ],
    );
    assert!(env.ok(), "{env:?}");
    for expected in [
        format!("TOMCAT_SERVICE_HOST={portal}"),
        "TOMCAT_SERVICE_PORT=8080".to_string(),
        format!("TOMCAT_PORT=tcp://{portal}:8080"),
        format!("TOMCAT_PORT_8080_TCP=tcp://{portal}:8080"),
        "TOMCAT_PORT_8080_TCP_PROTO=tcp".to_string(),
        "TOMCAT_PORT_8080_TCP_PORT=8080".to_string(),
        format!("TOMCAT_PORT_8080_TCP_ADDR={portal}"),
    ] {
        assert!(
            env.stdout.lines().any(|l| l == expected),
            "{expected} missing:\n{}",
            env.stdout
        );
    }

    // Delete one pod: its address leaves the endpoints, and the controller
    // (the node helpers' leader) replaces it with a new pod that joins them.
    let (_, gone) = &pods[1];
    let deleted = cluster.kctl(&["delete", "pod", gone]);
    assert!(deleted.ok(), "{deleted:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let eps = endpoints(&cluster, "tomcat");
        let pods: BTreeSet<String> = pods_by_minion(&cluster)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        if eps.len() == 2 && !pods.contains(gone) && pods.len() == 2 {
            // Each minion's helper brings its own rules up to date within
            // a round or two: poll until both current pods answer.
            let answers = answers_from_minion(&cluster, 1, &url);
            assert!(!answers.contains(gone), "the deleted pod still answers");
            if answers == pods {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "endpoints never followed: {eps:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // Scale the controller down and up: the endpoints follow.
    let one = std::fs::read_to_string(&rc)
        .unwrap()
        .replace("\"replicas\": 2", "\"replicas\": 1");
    cluster.kctl_stdin(&["apply", "-f", "-"], &one).assert_ok();
    assert_eq!(endpoints(&cluster, "tomcat").len(), 1);
    let left: BTreeSet<String> = pods_by_minion(&cluster)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(left.len(), 1);
    for minion in 1..=2 {
        assert_eq!(
            answers_from_minion(&cluster, minion, &url),
            left,
            "scaled to 1, from minion-{minion}"
        );
    }
    let restored = cluster.kctl(&["apply", "-f", &rc]);
    assert!(restored.ok(), "{restored:?}");
    assert_eq!(endpoints(&cluster, "tomcat").len(), 2);
    let all_now: BTreeSet<String> = pods_by_minion(&cluster)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(answers_from_minion(&cluster, 1, &url), all_now);

    // A service that selects nothing refuses connections at once.
    let empty = r#"{"id": "nobody", "kind": "Service", "apiVersion": "v1beta1", "port": 9000,
                    "selector": {"name": "nothing-has-this"}}"#;
    cluster.kctl_stdin(&["apply", "-f", "-"], empty).assert_ok();
    let nobody = service(&cluster, "nobody")["portalIP"]
        .as_str()
        .unwrap()
        .to_string();
    let started = std::time::Instant::now();
    let refused = cluster.in_minion(
        1,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{nobody}:9000/"),
        ],
    );
    assert_eq!(refused.code, Some(7), "connection refused: {refused:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "refused at once, not after a timeout"
    );

    // Deleting the services leaves no kctl service rule on any minion.
    assert!(cluster.kctl(&["delete", "service", "tomcat"]).ok());
    assert!(cluster.kctl(&["delete", "service", "nobody"]).ok());
    for minion in 1..=2 {
        let rules = kctl_rules(&cluster, minion);
        assert!(!rules.contains("chain svc-"), "minion-{minion}:\n{rules}");
        assert!(
            !rules.contains(&portal) && !rules.contains(&nobody),
            "minion-{minion}:\n{rules}"
        );
    }
    // The freed portal IP is handed out again.
    assert!(cluster.kctl(&["apply", "-f", &svc]).ok());
    assert_eq!(
        service(&cluster, "tomcat")["portalIP"].as_str().unwrap(),
        portal
    );

    cluster.down_and_check();
}

#[test]
fn udp_service_and_late_pods_get_the_environment() {
    let cluster = TestCluster::up("it-udp", 1);
    cluster.load_demo_image("tutum/tomcat:latest");
    let service = r#"{"id": "echo", "kind": "Service", "apiVersion": "v1beta1", "port": 5300,
        "protocol": "UDP", "containerPort": 5353, "selector": {"name": "echo"}}"#;
    cluster
        .kctl_stdin(&["apply", "-f", "-"], service)
        .assert_ok();
    // A pod made after the service, declaring a UDP port.
    let pod = r#"{"id": "echo", "kind": "Pod", "apiVersion": "v1beta1", "labels": {"name": "echo"},
        "desiredState": {"manifest": {"version": "v1beta1", "id": "echo",
          "containers": [{"name": "tomcat", "image": "tutum/tomcat",
            "ports": [{"containerPort": 5353, "protocol": "UDP"}]}]}}}"#;
    let applied = cluster.kctl_stdin(&["apply", "-f", "-"], pod);
    assert!(applied.ok(), "{applied:?}");
    let portal = service_portal(&cluster, "echo");
    let sock = docker_sock(&cluster, 1);
    let env = cluster.in_minion(1, &["docker", "-H", &sock, "exec", "echo_tomcat", "env"]);
    assert!(
        env.stdout.contains(&format!("ECHO_SERVICE_HOST={portal}")),
        "{env:?}"
    );
    assert!(
        env.stdout
            .contains(&format!("ECHO_PORT_5300_UDP=udp://{portal}:5300")),
        "{env:?}"
    );
    let rules = kctl_rules(&cluster, 1);
    assert!(
        rules.contains(&format!("{portal} . udp . 5300 : goto svc-")),
        "{rules}"
    );

    // busybox has no UDP server, so one runs in the pod's network namespace
    // from outside (socat), answering every datagram with "pong".
    let pause = cluster.in_minion(
        1,
        &[
            "docker",
            "-H",
            &sock,
            "inspect",
            "-f",
            "{{.State.Pid}}",
            "echo_POD",
        ],
    );
    let pod_netns = format!("--net=/proc/{}/ns/net", pause.stdout.trim());
    // nsenter execs socat, so the child is socat itself; the guard kills
    // it however the test ends (a `timeout` wrapper, killed, would leave
    // socat running, holding the dead pod's network namespace).
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = Server(
        std::process::Command::new("nsenter")
            .args([
                &pod_netns,
                "socat",
                "-T2",
                "UDP4-RECVFROM:5353,fork",
                "SYSTEM:echo pong",
            ])
            .spawn()
            .unwrap(),
    );
    let mut answered = String::new();
    for _ in 0..20 {
        let client = format!("echo ping | socat -T2 - UDP4:{portal}:5300");
        let run = cluster.in_minion(1, &["sh", "-c", &client]);
        answered = run.stdout.trim().to_string();
        if answered == "pong" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(server);
    assert_eq!(answered, "pong", "no UDP answer through the portal");
    cluster.down_and_check();
}

fn service_portal(cluster: &TestCluster, id: &str) -> String {
    service(cluster, id)["portalIP"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `createExternalLoadBalancer` (v0.5's way out of the cluster) publishes
/// the service on every minion's own address: reachable from this machine
/// on both minions, wherever its one pod runs; not before, and not once
/// the manifest stops asking. v1's NodePort does the same at a port of
/// its own.
#[test]
fn external_and_node_port_services_answer_on_every_minion() {
    let cluster = TestCluster::up("it-external", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    let dir = cluster.dir();
    let rc = dir.join("web-controller.json");
    std::fs::write(&rc, common::web_controller("web", 1)).unwrap();
    let service = |external: bool| {
        let file = dir.join("web-service.json");
        std::fs::write(
            &file,
            format!(
                r#"{{"kind": "Service", "apiVersion": "v1beta1", "id": "web", "port": 8181,
  "containerPort": 8080, "selector": {{"name": "web"}}, "createExternalLoadBalancer": {external}}}"#
            ),
        )
        .unwrap();
        file.to_str().unwrap().to_string()
    };
    let applied = cluster.kctl(&["apply", "-f", rc.to_str().unwrap(), "-f", &service(false)]);
    assert!(applied.ok(), "{applied:?}");
    let minions: Vec<String> = cluster.kctl(&["get", "minions", "-o", "json"]).json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hostIP"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(minions.len(), 2, "{minions:?}");
    let pod = cluster.pods()[0]["id"].as_str().unwrap().to_string();
    common::wait_for(
        std::time::Duration::from_secs(30),
        "the pod in the endpoints",
        || (!endpoints(&cluster, "web").is_empty()).then_some(()),
    );
    for ip in &minions {
        assert_eq!(
            common::http_get_once(&format!("{ip}:8181"), "/hostname"),
            None,
            "{ip}"
        );
    }

    let applied = cluster.kctl(&["apply", "-f", &service(true)]);
    assert!(applied.ok(), "{applied:?}");
    for ip in &minions {
        let page = common::http_get(&format!("{ip}:8181"), "/hostname");
        assert_eq!(
            page.as_deref().map(str::trim),
            Some(pod.as_str()),
            "through {ip}"
        );
    }
    // Published on the machines, and kept in step by the helpers' rules.
    assert!(kctl_rules(&cluster, 1).contains(&format!("{} . tcp . 8181", minions[1])));

    let applied = cluster.kctl(&["apply", "-f", &service(false)]);
    assert!(applied.ok(), "{applied:?}");
    for ip in &minions {
        assert_eq!(
            common::http_get_once(&format!("{ip}:8181"), "/hostname"),
            None,
            "{ip}"
        );
    }

    // v1's NodePort: the service answers at its node port on every
    // minion, not at its own port.
    let node_port_service = dir.join("web-nodeport.yaml");
    std::fs::write(
        &node_port_service,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  selector:\n    name: web\n  ports:\n  - port: 8181\n    targetPort: 8080\n    nodePort: 30181\n",
    )
    .unwrap();
    let applied = cluster.kctl(&["apply", "-f", node_port_service.to_str().unwrap()]);
    assert!(applied.ok(), "{applied:?}");
    assert!(applied.stdout.contains("node port 30181"), "{applied:?}");
    for ip in &minions {
        let page = common::http_get(&format!("{ip}:30181"), "/hostname");
        assert_eq!(
            page.as_deref().map(str::trim),
            Some(pod.as_str()),
            "through {ip}"
        );
        assert_eq!(
            common::http_get_once(&format!("{ip}:8181"), "/hostname"),
            None,
            "{ip}"
        );
    }
    let table = cluster.kctl(&["get", "services"]);
    assert!(table.stdout.contains("8181:30181/TCP"), "{table:?}");
    // Another service naming the same node port is refused at its line,
    // and nothing changes.
    let taken = dir.join("other-nodeport.yaml");
    std::fs::write(
        &taken,
        std::fs::read_to_string(&node_port_service)
            .unwrap()
            .replace("name: web\nspec", "name: other\nspec"),
    )
    .unwrap();
    let refused = cluster.kctl(&["apply", "-f", taken.to_str().unwrap()]);
    assert!(!refused.ok(), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("asks for node port 30181, which service web has")
            && refused.stderr.contains("other-nodeport.yaml:12:15"),
        "{refused:?}"
    );
    let services = cluster.kctl(&["get", "services", "-o", "json"]).json();
    assert_eq!(services["items"].as_array().unwrap().len(), 1, "{services}");
    cluster.down_and_check();
}

/// An id that, pasted into the nft script, would close kctl's table and
/// make one of its own.
const CRAFTED_ID: &str =
    "x\" ; }\ntable ip pwned { chain c { type filter hook input priority 0; policy drop; } ";

#[test]
fn crafted_records_and_snapshots_change_no_minions_rules_and_are_reported() {
    let cluster = TestCluster::up("crafted", 2);
    let service = cluster.write_file(
        "svc.json",
        r#"{"kind": "Service", "apiVersion": "v1beta1", "id": "web", "port": 80,
            "selector": {"name": "web"}}"#,
    );
    let applied = cluster.kctl(&["apply", "-f", &service]);
    assert!(applied.ok(), "{applied:?}");
    let rules_before: Vec<String> = (1..=2).map(|m| kctl_rules(&cluster, m)).collect();
    let tables = |minion: usize| {
        let run = cluster.in_minion(minion, &["nft", "list", "tables"]);
        assert!(run.ok(), "{run:?}");
        run.stdout
    };

    // A snapshot whose service id would rewrite the packet filter is
    // refused whole, naming the record; nothing is restored.
    let saved = cluster.dir().join("snap.json");
    let save = cluster.kctl(&["snapshot", "save", saved.to_str().unwrap()]);
    assert!(save.ok(), "{save:?}");
    let mut snapshot: Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    snapshot["services"][0]["service"]["id"] = Value::from(CRAFTED_ID);
    let crafted_file = cluster.dir().join("crafted.json");
    std::fs::write(&crafted_file, snapshot.to_string()).unwrap();
    let restore = cluster.kctl(&["snapshot", "restore", crafted_file.to_str().unwrap()]);
    assert!(
        !restore.ok() && restore.stderr.contains("services[0]"),
        "{restore:?}"
    );

    // A minion's certificate may not write a service, nor another
    // minion's keys: etcd refuses it by its name.
    let config = cluster.record();
    let tls = cluster.minion_tls_dir(1);
    let portal_net: ipnet::Ipv4Net = config["portalNet"].as_str().unwrap().parse().unwrap();
    let portal = portal_net.hosts().nth(200).unwrap();
    let record = serde_json::json!({
        "service": {"id": CRAFTED_ID, "selector": {"name": "web"}, "port": 81},
        "portalIp": portal.to_string(),
    })
    .to_string();
    let key = format!("/kctl/{}/services/{CRAFTED_ID}", cluster.name);
    let etcd = config["etcdEndpoints"][0].as_str().unwrap().to_string();
    let as_minion_1 = |args: &[&str]| {
        let argv = common::etcdctl_as_helper(&etcd, &tls, args);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        cluster.in_minion(1, &argv)
    };
    let heartbeat_2 = format!("/kctl/{}/heartbeats/minion-2", cluster.name);
    for (key, value) in [(&key, &record), (&heartbeat_2, &String::new())] {
        let refused = as_minion_1(&["put", key, value]);
        assert!(
            !refused.ok() && refused.stderr.contains("permission denied"),
            "minion-1 wrote {key}: {refused:?}"
        );
    }
    // What it may write, a pod (the leader's right to reschedule), cannot
    // run what the cluster does not allow: a privileged pod placed on
    // minion-2 is left out by its helper and reported.
    let crafted_pod = serde_json::json!({
        "pod": {"id": "crafted", "labels": {},
                "spec": {"containers": [{"name": "c", "image": "tutum/tomcat",
                                         "security": {"privileged": true}}],
                         "restartPolicy": "always"}},
        "host": "minion-2",
    })
    .to_string();
    let pod_key = format!("/kctl/{}/pods/crafted", cluster.name);
    let written = as_minion_1(&["put", &pod_key, &crafted_pod]);
    assert!(written.ok(), "{written:?}");
    common::wait_for(
        Duration::from_secs(30),
        "the crafted pod's RecordRejected",
        || {
            let events = cluster.kctl(&["get", "events"]);
            (events.stdout.contains("RecordRejected") && events.stdout.contains("crafted"))
                .then_some(())
        },
    );
    let containers = cluster.in_minion(
        2,
        &[
            "docker",
            "-H",
            &format!("unix:///run/kctl/{}/m2/docker.sock", cluster.slot()),
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
        ],
    );
    assert!(
        containers.ok() && !containers.stdout.contains("crafted"),
        "{containers:?}"
    );

    // The crafted service record, where only the workstation's key could
    // put it (as a tampered etcd would hold it): the helpers leave it out
    // and say so; no minion's rules change.
    let pki = cluster.dir().join("pki");
    let path = |f: &str| pki.join(f).display().to_string();
    let written = common::run_here(&common::etcdctl(
        &etcd,
        &path("ca.crt"),
        &path("kctl.crt"),
        &path("kctl.key"),
        &["put", &key, &record],
    ));
    assert!(written.ok(), "{written:?}");
    common::wait_for(
        Duration::from_secs(30),
        "the service's RecordRejected",
        || {
            let events = cluster.kctl(&["get", "events"]);
            (events.stdout.matches("RecordRejected").count() >= 2).then_some(())
        },
    );
    let listed = cluster.kctl(&["get", "services"]);
    assert!(
        listed.ok() && listed.stderr.contains("does not act on") && listed.stdout.contains("web"),
        "{listed:?}"
    );
    // A later change still converges, and the crafted record stays out.
    let more = cluster.write_file(
        "svc2.json",
        r#"{"kind": "Service", "apiVersion": "v1beta1", "id": "api", "port": 90,
            "selector": {"name": "api"}}"#,
    );
    let applied = cluster.kctl(&["apply", "-f", &more]);
    assert!(applied.ok(), "{applied:?}");
    let api_portal = service_portal(&cluster, "api");
    for minion in 1..=2 {
        common::wait_for(Duration::from_secs(30), "the api service's rules", || {
            kctl_rules(&cluster, minion)
                .contains(&api_portal)
                .then_some(())
        });
        let rules = kctl_rules(&cluster, minion);
        assert!(!tables(minion).contains("pwned"), "minion-{minion}");
        assert!(
            !rules.contains("pwned") && !rules.contains(&portal.to_string()),
            "{rules}"
        );
        assert_ne!(rules, rules_before[minion - 1]);
    }
    // What kctl does not act on goes with `delete --rejected`, named one
    // by one; the services kctl wrote stay.
    let removed = cluster.kctl(&["delete", "--rejected"]);
    assert!(
        removed.ok()
            && removed.stdout.contains("pods/crafted")
            && removed.stdout.contains("services/")
            && removed.stderr.contains("removed 2 records"),
        "{removed:?}"
    );
    let listed = cluster.kctl(&["get", "services", "-o", "name"]);
    assert!(
        listed.ok() && !listed.stderr.contains("does not act on"),
        "{listed:?}"
    );
    assert_eq!(listed.stdout, "service/api\nservice/web\n");
    let again = cluster.kctl(&["delete", "--rejected"]);
    assert!(
        again.ok() && again.stderr.contains("holds no record"),
        "{again:?}"
    );
    cluster.down_and_check();
}

/// Each part of a minion's network removed behind kctl's back comes back
/// by the helper alone, within its 10 s check (asserted with a margin):
/// the route to the other minion's pods, the route to the portals, the
/// kernel's forwarding, the jump into kctl's FORWARD chain, the nftables
/// table, a pod port's hairpin mode. Each is seen there first, gone after
/// the removal (and by `diff --live`), back after, and working.
#[test]
fn the_helper_puts_back_each_part_of_its_minions_network() {
    const BACK_WITHIN: Duration = Duration::from_secs(20);
    let cluster = TestCluster::up("it-drift", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    let applied = cluster.kctl(&[
        "apply",
        "-f",
        &manifest("tomcat-controller.json"),
        "-f",
        &manifest("tomcat-service.json"),
    ]);
    assert!(applied.ok(), "{applied:?}");
    let record = cluster.record();
    let portal_net = record["portalNet"].as_str().unwrap().to_string();
    let pods_2 = record["minions"][1]["podCidr"]
        .as_str()
        .unwrap()
        .to_string();
    let portal = service_portal(&cluster, "tomcat");
    let pods = cluster.pods();
    let on_2 = pods
        .iter()
        .find(|p| p["currentState"]["host"] == "minion-2")
        .expect("a pod on minion-2");
    let pod_ip_2 = on_2["currentState"]["podIP"].as_str().unwrap().to_string();
    let on_1 = pods
        .iter()
        .find(|p| p["currentState"]["host"] == "minion-1")
        .expect("a pod on minion-1");
    let cluster_ref = &cluster;
    let answers = |url: String| {
        move || {
            cluster_ref
                .in_minion(1, &["curl", "-sS", "--max-time", "2", &url])
                .ok()
        }
    };
    let portal_answers = answers(format!("http://{portal}:8080/hostname"));
    let pod_2_answers = answers(format!("http://{pod_ip_2}:8080/hostname"));
    let sh = |script: &str| cluster.in_minion(1, &["sh", "-c", script]);
    let route_to = |range: &str| {
        let listed = cluster
            .in_minion(1, &["ip", "-4", "route", "show", range])
            .stdout;
        !listed.trim().is_empty()
    };
    let forwarding = || sh("cat /proc/sys/net/ipv4/ip_forward").stdout.trim() == "1";
    let forward_jump = || sh("iptables --wait --check FORWARD --jump KCTL-FORWARD").ok();
    let table = || sh("nft list table ip kctl").stdout.contains(&portal);
    assert!(
        on_1["currentState"]["podIP"].is_string(),
        "a pod on minion-1"
    );
    let pod_port = {
        let listed = sh("ip -d -o link show master kctl0").stdout;
        listed
            .lines()
            .find(|l| l.contains("hairpin on"))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|name| name.split('@').next())
            .unwrap_or_else(|| panic!("no pod port with hairpin on: {listed}"))
            .to_string()
    };
    let hairpin = || {
        sh(&format!("ip -d -o link show dev {pod_port}"))
            .stdout
            .contains("hairpin on")
    };

    let controller = manifest("tomcat-controller.json");
    let live = cluster.kctl(&["diff", "-f", &controller, "--live"]);
    assert!(
        live.ok() && live.stdout.contains("every minion runs what etcd holds"),
        "{live:?}"
    );

    type Check<'a> = Box<dyn Fn() -> bool + 'a>;
    // (what, how it is removed, whether it is there, what needs it, what
    // `diff --live` says while it is gone)
    let parts: Vec<(&str, String, Check, Check, String)> = vec![
        (
            "the route to minion-2's pods",
            format!("ip route del {pods_2}"),
            Box::new(|| route_to(&pods_2)),
            Box::new(&pod_2_answers),
            format!("minion-1: no route to {pods_2}"),
        ),
        (
            "the route to the portals",
            format!("ip route del {portal_net}"),
            Box::new(|| route_to(&portal_net)),
            Box::new(&portal_answers),
            format!("minion-1: no route to {portal_net}"),
        ),
        (
            "the kernel's forwarding",
            "sysctl -qw net.ipv4.ip_forward=0".into(),
            Box::new(forwarding),
            Box::new(&pod_2_answers),
            "minion-1: IPv4 forwarding is off".into(),
        ),
        (
            "the jump into KCTL-FORWARD",
            "iptables --wait --delete FORWARD --jump KCTL-FORWARD".into(),
            Box::new(forward_jump),
            Box::new(&pod_2_answers),
            "minion-1: FORWARD does not jump to KCTL-FORWARD".into(),
        ),
        (
            "the nftables table",
            "nft delete table ip kctl".into(),
            Box::new(table),
            Box::new(&portal_answers),
            "minion-1: the nftables table ip kctl is missing".into(),
        ),
        (
            "a pod port's hairpin mode",
            format!("ip link set dev {pod_port} type bridge_slave hairpin off"),
            Box::new(hairpin),
            Box::new(&portal_answers),
            format!("minion-1: pod port {pod_port} is not in hairpin mode"),
        ),
    ];
    for (part, remove, present, works, said) in &parts {
        assert!(present(), "{part} is there before");
        assert!(works(), "the check that needs {part} passes before");
        // `diff --live` sees it gone, unless the helper put it back first
        // (then it is removed again).
        let mut seen = false;
        for _ in 0..5 {
            let removed = sh(remove);
            assert!(removed.ok(), "{remove}: {removed:?}");
            assert!(!present(), "{part} is gone after `{remove}`");
            let drift = cluster.kctl(&["diff", "-f", &controller, "--live"]);
            if drift.code == Some(1) && drift.stdout.contains(said.as_str()) {
                seen = true;
                break;
            }
            assert!(present(), "diff --live missed {part}: {drift:?}");
        }
        assert!(seen, "diff --live never saw {part} gone");
        common::wait_for(BACK_WITHIN, part, || present().then_some(()));
        common::wait_for(Duration::from_secs(5), part, || works().then_some(()));
    }
    drop(parts);
    cluster.down_and_check();
}
