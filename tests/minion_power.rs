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
    assert!(cluster.kctl_stdin(&["apply", "-f", "-"], rc).ok());
    let pods = cluster.pods();
    let victim = pod_on(&pods, "minion-2")["id"]
        .as_str()
        .unwrap()
        .to_string();

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

    let started = cluster.kctl(&["minion", "start", "minion-2"]);
    assert!(started.ok(), "{started:?}");
    assert_eq!(minion_status(&cluster, "minion-2"), "Ready");
    let pods = cluster.pods();
    let back = pod_on(&pods, "minion-2");
    assert_eq!(back["id"], victim.as_str(), "the same pod, not a new one");
    assert_eq!(back["currentState"]["status"], "Running");
    let ip = back["currentState"]["podIP"].as_str().unwrap();
    let page = http_get(&format!("{ip}:8080"), "/hostname").expect("pod answers after boot");
    assert_eq!(page.trim(), victim);

    let unknown = cluster.kctl(&["minion", "stop", "minion-9"]);
    assert_eq!(unknown.code, Some(1));
    assert!(unknown.stderr.contains("no minion"), "{unknown:?}");
    cluster.down_and_check();
}
