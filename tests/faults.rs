//! Faults in the middle of an apply, on real local clusters: kctl killed
//! right after it committed, and etcd killed while kctl works. Nothing is
//! lost either way, and the next apply has nothing left to do.

mod common;

use common::{web_controller, TestCluster};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `kctl apply`, killed if the test ends (or fails) before it.
struct Apply(Child);

impl Drop for Apply {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kctl apply` of `text` (a controller `web`) and returns once it
/// has committed, with the process still at work converging.
fn apply_until_committed(cluster: &TestCluster, text: &str) -> Apply {
    let file = cluster.home.join(format!("{}-rc.json", cluster.name));
    std::fs::write(&file, text).unwrap();
    let mut apply = Apply(
        cluster
            .command(&["apply", "-f", file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = apply.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("apply ended before printing its plan")
            .unwrap();
        if line.starts_with("Plan:") {
            break;
        }
    }
    // Keep reading in the background so apply never blocks on its pipe.
    std::thread::spawn(move || for _ in lines {});
    // The plan is printed just before the commit: wait for the commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.kctl(&["get", "rc", "web"]).ok() {
        assert!(Instant::now() < deadline, "apply never committed");
        std::thread::sleep(Duration::from_millis(20));
    }
    apply
}

fn running(cluster: &TestCluster) -> usize {
    cluster
        .pods()
        .iter()
        .filter(|p| p["currentState"]["status"] == "Running")
        .count()
}

fn wait_running(cluster: &TestCluster, count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = running(cluster);
        if now == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} of {count} pods Running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_kctl_killed_after_committing_loses_nothing() {
    let cluster = TestCluster::up("it-fault-kill", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    let text = web_controller("web", 20);
    let apply = apply_until_committed(&cluster, &text);
    drop(apply); // SIGKILL
                 // The helpers, woken by the commit, start every pod themselves.
    wait_running(&cluster, 20, Duration::from_secs(60));
    let again = cluster.kctl_stdin(&["apply", "-f", "-"], &text);
    assert!(again.ok(), "{again:?}");
    assert!(again.stdout.contains("No changes"), "{again:?}");
    cluster.down_and_check();
}

#[test]
fn etcd_killed_mid_apply_is_a_clear_error_and_up_recovers() {
    let cluster = TestCluster::up("it-fault-etcd", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    let text = web_controller("web", 40);
    let mut apply = apply_until_committed(&cluster, &text);
    let pid_file = cluster.dir().join("etcd").join("etcd.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut apply.0.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = apply.0.wait().unwrap();
    assert!(!status.success(), "apply went on without etcd: {stderr}");
    assert!(stderr.contains("etcd"), "{stderr}");
    for dump in ["MetadataMap", "tonic", "Status {"] {
        assert!(
            !stderr.contains(dump),
            "a raw dump, not a sentence: {stderr}"
        );
    }
    // Without etcd, reads say so too.
    let get = cluster.kctl(&["get", "pods"]);
    assert!(!get.ok() && get.stderr.contains("etcd"), "{get:?}");

    // `up` brings etcd back; what was committed comes to run.
    let up = cluster.kctl(&["up"]);
    assert!(up.ok(), "{up:?}");
    wait_running(&cluster, 40, Duration::from_secs(90));
    let again = cluster.kctl_stdin(&["apply", "-f", "-"], &text);
    assert!(again.ok(), "{again:?}");
    assert!(again.stdout.contains("No changes"), "{again:?}");
    cluster.down_and_check();
}
