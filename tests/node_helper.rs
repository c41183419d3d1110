//! The node helper on a real minion: restarts after exits, liveness probes
//! (httpGet, exec), restart policies, and probe failures taking a pod out
//! of its service's endpoints.

mod common;

use common::TestCluster;
use serde_json::Value;
use std::time::{Duration, Instant};

fn pod(id: &str, policy: &str, probe: &str) -> String {
    format!(
        r#"{{"id": "{id}", "kind": "Pod", "apiVersion": "v1beta1", "labels": {{"name": "{id}"}},
  "desiredState": {{"manifest": {{"version": "v1beta1", "id": "{id}",
    "restartPolicy": {{"{policy}": {{}}}},
    "containers": [{{"name": "web", "image": "tutum/tomcat",
      "ports": [{{"containerPort": 8080}}] {probe} }}]}}}}}}"#
    )
}

fn get_pod(cluster: &TestCluster, id: &str) -> Value {
    cluster
        .pods()
        .into_iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no pod {id}"))
}

fn web(pod: &Value) -> &Value {
    &pod["currentState"]["info"]["web"]
}

/// Polls until `done` holds for the pod, or panics with what it saw.
fn wait_for(cluster: &TestCluster, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = get_pod(cluster, id);
        if done(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "{id}: never {what}: {p}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn kill_app(cluster: &TestCluster, id: &str) {
    let sock = format!("unix:///run/kctl/{}/m1/docker.sock", cluster.slot());
    let run = cluster.in_minion(1, &["docker", "-H", &sock, "kill", &format!("{id}_web")]);
    assert!(run.ok(), "{run:?}");
}

#[test]
fn helper_restarts_probes_and_policies() {
    let cluster = TestCluster::up("it-helper", 1);
    cluster.load_demo_image("tutum/tomcat:latest");
    let http_probe = r#", "livenessProbe": {"httpGet": {"path": "/missing", "port": 8080}, "timeoutSeconds": 1}"#;
    let exec_probe = r#", "livenessProbe": {"exec": {"command": ["false"]}}"#;
    let manifests = [
        pod("crashy", "always", ""),
        pod("stays", "never", ""),
        pod("sick", "always", http_probe),
        pod("failing", "never", exec_probe),
    ]
    .join(",\n");
    let service = r#"{"id": "failing", "kind": "Service", "apiVersion": "v1beta1", "port": 80,
        "containerPort": 8080, "selector": {"name": "failing"}}"#;
    let list = format!(
        r#"{{"kind": "List", "apiVersion": "v1beta1", "items": [{service}, {manifests}]}}"#
    );
    let applied = cluster.kctl_stdin(&["apply", "-f", "-"], &list);
    assert!(applied.ok(), "{applied:?}");

    // A container that exits (docker kill) runs again, its count up.
    kill_app(&cluster, "crashy");
    let started = Instant::now();
    let back = wait_for(&cluster, "crashy", "restarted", |p| {
        p["currentState"]["status"] == "Running" && web(p)["restartCount"].as_u64() >= Some(1)
    });
    eprintln!(
        "crashy running again {:.1}s after docker kill",
        started.elapsed().as_secs_f64()
    );
    assert!(web(&back)["state"]["running"].is_object());

    // restartPolicy never: an exited container is left alone.
    kill_app(&cluster, "stays");
    wait_for(&cluster, "stays", "Terminated", |p| {
        p["currentState"]["status"] == "Terminated"
    });
    std::thread::sleep(Duration::from_secs(3));
    let stays = get_pod(&cluster, "stays");
    assert_eq!(stays["currentState"]["status"], "Terminated", "{stays}");
    assert_eq!(web(&stays)["restartCount"], 0);

    // An HTTP probe that gets 404 counts as failed: restarted (policy always).
    wait_for(&cluster, "sick", "restarted after failed probes", |p| {
        web(p)["restartCount"].as_u64() >= Some(2)
    });

    // An exec probe that exits 1 counts as failed; with policy never the
    // container keeps running, but the pod leaves its service's endpoints.
    let failing = wait_for(&cluster, "failing", "unhealthy", |p| {
        web(p)["healthy"] == false
    });
    assert_eq!(failing["currentState"]["status"], "Running");
    assert_eq!(web(&failing)["restartCount"], 0);
    let svc = cluster
        .kctl(&["get", "services", "failing", "-o", "json"])
        .json();
    assert_eq!(svc["endpoints"].as_array().unwrap().len(), 0, "{svc}");

    cluster.down_and_check();
}
