//! `kctl minion stop` is a power cut; `kctl minion start` boots the minion
//! with its old identity and converges it.

mod common;

use common::{http_get, TestCluster};
use serde_json::Value;

fn minion_status(cluster: &TestCluster, id: &str) -> String {
    let minions = cluster.kctl(&["get", "minions", "-o", "json"]).json();
    minions["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["status"].as_str().unwrap().to_string())
        .unwrap()
}

fn pod_on<'a>(pods: &'a [Value], minion: &str) -> &'a Value {
    pods.iter()
        .find(|p| p["currentState"]["host"] == minion)
        .unwrap_or_else(|| panic!("no pod on {minion}: {pods:?}"))
}

#[test]
fn stopped_minion_comes_back_with_its_pods() {
    let cluster = TestCluster::up("it-power", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    let rc = r#"{"id": "web", "kind": "ReplicationController", "apiVersion": "v1beta1",
      "desiredState": {"replicas": 2, "replicaSelector": {"name": "web"},
        "podTemplate": {"desiredState": {"manifest": {"version": "v1beta1", "id": "web",
          "containers": [{"name": "web", "image": "tutum/tomcat", "ports": [{"containerPort": 8080}]}]}},
          "labels": {"name": "web"}}}}"#;
    let service = r#"{"id": "web", "kind": "Service", "apiVersion": "v1beta1", "port": 80,
        "containerPort": 8080, "selector": {"name": "web"}}"#;
    cluster
        .kctl_stdin(&["apply", "-f", "-"], service)
        .assert_ok();
    cluster.kctl_stdin(&["apply", "-f", "-"], rc).assert_ok();
    let pods = cluster.pods();
    let victim = pod_on(&pods, "minion-2")["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A bare pod, pinned to minion-2 by a host port only it has free.
    let bare = r#"{"id": "bare", "kind": "Pod", "apiVersion": "v1beta1", "labels": {"name": "bare"},
      "desiredState": {"manifest": {"version": "v1beta1", "id": "bare",
        "containers": [{"name": "web", "image": "tutum/tomcat",
          "ports": [{"containerPort": 8080, "hostPort": 81}]}]}}}"#;
    let blocker = bare.replace("\"bare\"", "\"blocker\"");
    cluster
        .kctl_stdin(&["apply", "-f", "-"], &blocker)
        .assert_ok();
    cluster.kctl_stdin(&["apply", "-f", "-"], bare).assert_ok();
    let pods = cluster.pods();
    assert_eq!(pod_on(&pods, "minion-2")["id"], "bare", "{pods:?}");

    let stopped = cluster.kctl(&["minion", "stop", "minion-2"]);
    assert!(stopped.ok(), "{stopped:?}");
    // The helper died with the minion: its heartbeat lease runs out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while minion_status(&cluster, "minion-2") != "NotReady" {
        assert!(
            std::time::Instant::now() < deadline,
            "minion-2 never became NotReady"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(minion_status(&cluster, "minion-1"), "Ready");
    let table = cluster.kctl(&["get", "minions"]);
    assert!(table.stdout.contains("LAST SEEN"), "{table:?}");
    // Nothing of minion-2 runs: no process in its namespace.
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", "kctl-it-power-minion-2"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&pids.stdout).trim().is_empty(),
        "processes survived the power cut"
    );

    // The leader (minion-1's helper) moves the lost replica to minion-1:
    // a new pod, running and answering; the count holds at 2.
    let moved_at = std::time::Instant::now();
    let deadline = moved_at + std::time::Duration::from_secs(30);
    let replacement = loop {
        let pods = cluster.pods();
        let running: Vec<&Value> = pods
            .iter()
            .filter(|p| {
                p["currentState"]["status"] == "Running" && p["currentState"]["host"] == "minion-1"
            })
            .collect();
        if running.len() == 3 {
            break running
                .into_iter()
                .find(|p| p["id"] != victim.as_str())
                .cloned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica never moved: {pods:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    eprintln!(
        "replica moved and running {:.1}s after the minion turned NotReady",
        moved_at.elapsed().as_secs_f64()
    );
    let replacement = replacement.expect("a pod other than the lost one");
    // The controller's events say what the leader did, and why.
    let described = cluster.kctl(&["describe", "rc", "web"]);
    let said = |words: &[&str]| {
        described
            .stdout
            .lines()
            .any(|l| words.iter().all(|w| l.contains(w)))
    };
    assert!(
        said(&[
            "SuccessfulDelete",
            "kctl-node/minion-1",
            &format!("deleted pod {victim}: minion minion-2 is not ready")
        ]),
        "{described:?}"
    );
    assert!(
        said(&["SuccessfulCreate", "kctl-node/minion-1", "on minion-1"]),
        "{described:?}"
    );
    // The bare pod is not moved: it shows as Terminated, saying why.
    let bare_pod = cluster
        .pods()
        .into_iter()
        .find(|p| p["id"] == "bare")
        .unwrap();
    assert_eq!(
        bare_pod["currentState"]["status"], "Terminated",
        "{bare_pod}"
    );
    assert_eq!(bare_pod["currentState"]["host"], "minion-2");
    let message = bare_pod["currentState"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("minion-2 is not ready"), "{bare_pod}");
    // The portal still answers, from the replicas on minion-1 only.
    let portal = cluster
        .kctl(&["get", "services", "web", "-o", "json"])
        .json()["portalIP"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..6 {
        let url = format!("http://{portal}:80/hostname");
        let run = cluster.in_minion(1, &["curl", "-sS", "--max-time", "3", &url]);
        assert!(run.ok(), "portal after failover: {run:?}");
        assert_ne!(run.stdout.trim(), victim, "the lost pod answered");
    }
    assert_ne!(replacement["id"], victim.as_str());
    let ip = replacement["currentState"]["podIP"].as_str().unwrap();
    assert!(http_get(&format!("{ip}:8080"), "/hostname").is_some());

    // Booted again, minion-2 removes the stale containers of its old pod:
    // the replica never runs twice.
    let started = cluster.kctl(&["minion", "start", "minion-2"]);
    assert!(started.ok(), "{started:?}");
    assert_eq!(minion_status(&cluster, "minion-2"), "Ready");
    let pods = cluster.pods();
    let web: Vec<&Value> = pods
        .iter()
        .filter(|p| p["labels"]["name"] == "web")
        .collect();
    assert_eq!(web.len(), 2, "no duplicates: {pods:?}");
    assert!(pods.iter().all(|p| p["id"] != victim.as_str()));
    let sock = format!("unix:///run/kctl/{}/m2/docker.sock", cluster.slot());
    let label = format!("label=io.kctl.pod={victim}");
    let stale = cluster.in_minion(2, &["docker", "-H", &sock, "ps", "-aq", "--filter", &label]);
    // Back up, the bare pod runs again where it was.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cluster.pods().iter().find(|p| p["id"] == "bare").unwrap()["currentState"]["status"]
        != "Running"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "bare pod not running after boot"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        stale.ok() && stale.stdout.trim().is_empty(),
        "stale containers: {stale:?}"
    );

    let unknown = cluster.kctl(&["minion", "stop", "minion-9"]);
    assert_eq!(unknown.code, Some(1));
    assert!(unknown.stderr.contains("no minion"), "{unknown:?}");
    cluster.down_and_check();
}
