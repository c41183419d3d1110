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

/// The etcd process (not its supervisor) of a local cluster.
fn etcd_pid(cluster: &TestCluster) -> u32 {
    let supervisor = std::fs::read_to_string(cluster.dir().join("etcd").join("etcd.pid")).unwrap();
    let supervisor = supervisor.trim();
    let children =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")).unwrap();
    children
        .split_whitespace()
        .next()
        .expect("etcd runs under its supervisor")
        .parse()
        .unwrap()
}

fn signal(pid: impl ToString, sig: &str) {
    let sent = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{sig} {}", pid.to_string());
}

fn assert_a_sentence(text: &str) {
    for dump in ["MetadataMap", "tonic", "Status {"] {
        assert!(!text.contains(dump), "a raw dump, not a sentence: {text}");
    }
}

#[test]
fn etcd_killed_mid_apply_comes_back_and_nothing_is_lost() {
    let cluster = TestCluster::up("it-fault-etcd", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    let text = web_controller("web", 30);
    let mut apply = apply_until_committed(&cluster, &text);
    let first = etcd_pid(&cluster);
    signal(first, "KILL");
    // The apply finishes or fails, but says why in a sentence.
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut apply.0.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = apply.0.wait().unwrap();
    assert!(status.success() || stderr.contains("etcd"), "{stderr}");
    assert_a_sentence(&stderr);
    // Its supervisor started etcd again, without `kctl up`.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.kctl(&["get", "minions"]).ok() {
        assert!(Instant::now() < deadline, "etcd did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(etcd_pid(&cluster), first, "a new etcd");
    // Exactly the desired pods come to run; nothing half-written.
    wait_running(&cluster, 30, Duration::from_secs(90));
    assert_eq!(cluster.pods().len(), 30, "no pod twice, none missing");
    let again = cluster.kctl_stdin(&["apply", "-f", "-"], &text);
    assert!(again.ok(), "{again:?}");
    assert!(again.stdout.contains("No changes"), "{again:?}");

    // With its supervisor frozen, a dead etcd stays dead: every command
    // says so in one sentence, naming where it looked.
    let supervisor = std::fs::read_to_string(cluster.dir().join("etcd").join("etcd.pid")).unwrap();
    signal(supervisor.trim(), "STOP");
    signal(etcd_pid(&cluster), "KILL");
    std::thread::sleep(Duration::from_millis(300));
    let get = cluster.kctl(&["get", "pods"]);
    assert!(!get.ok(), "{get:?}");
    assert!(
        get.stderr.contains("cannot reach etcd at https://10."),
        "{get:?}"
    );
    assert_a_sentence(&get.stderr);
    // `up` repairs what is broken (etcd) and nothing else: one SSH login
    // per minion, whose setup finds nothing to change, so no helper is
    // restarted.
    let helpers = || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &format!("kctl-node run --cluster {}", cluster.name)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let helpers_before = helpers();
    let logins = cluster.ssh_logins();
    let up = cluster.kctl(&["up"]);
    assert!(up.ok(), "{up:?}");
    assert!(up.stdout.contains("repaired"), "{up:?}");
    assert_eq!(cluster.ssh_logins() - logins, 2, "{up:?}");
    assert_eq!(helpers(), helpers_before, "no helper restarted");
    assert_eq!(running(&cluster), 30);
    cluster.down_and_check();
}
