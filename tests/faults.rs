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
    cluster.wait_runs_exactly_its_pods("web", Duration::from_secs(30));
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
    let killed = Instant::now();
    signal(first, "KILL");
    // Its supervisor starts etcd again, without `kctl up`: serving within
    // 6 s (the README says about 2 s: the supervisor waits 0.3 s).
    while !cluster.kctl(&["get", "minions"]).ok() {
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "etcd did not come back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "etcd serving again {:.1}s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    assert_ne!(etcd_pid(&cluster), first, "a new etcd");
    // The apply finishes or fails, but says why in a sentence.
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut apply.0.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = apply.0.wait().unwrap();
    assert!(status.success() || stderr.contains("etcd"), "{stderr}");
    assert_a_sentence(&stderr);
    // Exactly the desired pods come to run; nothing half-written.
    wait_running(&cluster, 30, Duration::from_secs(90));
    cluster.wait_runs_exactly_its_pods("web", Duration::from_secs(30));
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
    wait_running(&cluster, 30, Duration::from_secs(30));
    cluster.wait_runs_exactly_its_pods("web", Duration::from_secs(30));
    assert_eq!(cluster.pods().len(), 30);
    cluster.down_and_check();
}

/// The pid of the first process whose command line starts with `prefix`
/// (a program's own, not its supervisor's, whose line only contains it).
fn pid_starting(prefix: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let line = String::from_utf8_lossy(&line).replace('\0', " ");
        line.starts_with(prefix).then_some(pid)
    })
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn minion_status(cluster: &TestCluster, minion: &str) -> String {
    let run = cluster.kctl(&["get", "minions", minion, "-o", "json"]);
    assert!(run.ok(), "{run:?}");
    let item = &run.json();
    format!(
        "{} {}",
        item["status"].as_str().unwrap(),
        item["reason"].as_str().unwrap_or("")
    )
    .trim()
    .to_string()
}

fn endpoint_count(cluster: &TestCluster, service: &str) -> usize {
    let run = cluster.kctl(&["get", "services", service, "-o", "json"]);
    run.json()["endpoints"].as_array().map_or(0, |e| e.len())
}

/// A minion's helper or dockerd killed: its supervisor starts it again; a
/// dockerd that stays away makes the minion NotReady with the reason, and
/// once it is back the pods run and the endpoints are whole again.
#[test]
fn a_killed_helper_or_dockerd_comes_back_and_the_minion_recovers() {
    let cluster = TestCluster::up("it-fault-daemons", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    let service = r#"{"id": "web", "kind": "Service", "apiVersion": "v1beta1",
        "port": 8080, "selector": {"name": "web"}}"#;
    for text in [service.to_string(), web_controller("web", 4)] {
        let apply = cluster.kctl_stdin(&["apply", "-f", "-"], &text);
        assert!(apply.ok(), "{apply:?}");
    }
    wait_running(&cluster, 4, Duration::from_secs(60));
    cluster.wait_runs_exactly_its_pods("web", Duration::from_secs(30));
    wait_until("4 endpoints", Duration::from_secs(20), || {
        endpoint_count(&cluster, "web") == 4
    });

    // The helper, SIGKILLed, is started again by its supervisor.
    let helper = |minion: &str| {
        pid_starting(&format!(
            "/run/kctl/{}/m{}/helper/kctl-node run ",
            cluster.slot(),
            &minion[7..]
        ))
    };
    // (The README says within a second: its supervisor waits 0.3 s.)
    let first = helper("minion-1").expect("minion-1's helper runs");
    signal(first, "KILL");
    wait_until("a new helper", Duration::from_secs(3), || {
        helper("minion-1").is_some_and(|p| p != first)
    });

    // dockerd, SIGKILLed, is started again by its supervisor.
    let dockerd_pid = |i: usize| {
        std::fs::read_to_string(format!("/run/kctl/{}/m{i}/docker.pid", cluster.slot()))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    let first = dockerd_pid(1).expect("minion-1's dockerd runs");
    signal(first, "KILL");
    wait_until("a new dockerd", Duration::from_secs(20), || {
        dockerd_pid(1).is_some_and(|p| p != first)
    });

    // With its supervisor frozen, dockerd stays away: the minion says so.
    let supervisor = std::fs::read_to_string(format!(
        "/run/kctl/{}/m1/dockerd-supervisor.pid",
        cluster.slot()
    ))
    .unwrap();
    signal(supervisor.trim(), "STOP");
    signal(dockerd_pid(1).unwrap(), "KILL");
    wait_until("minion-1 NotReady", Duration::from_secs(15), || {
        minion_status(&cluster, "minion-1") == "NotReady container runtime unreachable"
    });
    let table = cluster.kctl(&["get", "minions"]);
    assert!(
        table
            .stdout
            .contains("NotReady (container runtime unreachable)"),
        "{table:?}"
    );
    assert_eq!(minion_status(&cluster, "minion-2"), "Ready");
    // Its pods stay where they are, under their ids (their containers may
    // still serve); and it gets no new pods.
    let placed = |pods: &[serde_json::Value]| -> std::collections::BTreeSet<(String, usize)> {
        pods.iter()
            .map(|p| (p["id"].as_str().unwrap().to_string(), common::minion_of(p)))
            .collect()
    };
    let web_before = placed(&cluster.pods());
    let extra = cluster.kctl_stdin(&["apply", "-f", "-"], &web_controller("extra", 2));
    assert!(extra.ok(), "{extra:?}");
    let pods = cluster.pods();
    let (extra_pods, web_pods): (Vec<_>, Vec<_>) = pods
        .into_iter()
        .partition(|p| p["labels"]["name"] == "extra");
    assert_eq!(placed(&web_pods), web_before, "a pod moved or changed");
    assert!(
        extra_pods.len() == 2 && extra_pods.iter().all(|p| common::minion_of(p) == 2),
        "a new pod went to the NotReady minion: {extra_pods:?}"
    );
    let deleted = cluster.kctl(&["delete", "rc", "extra"]);
    assert!(deleted.ok(), "{deleted:?}");

    // dockerd back: Ready, every pod Running, every endpoint there.
    signal(supervisor.trim(), "CONT");
    wait_until("minion-1 Ready again", Duration::from_secs(20), || {
        minion_status(&cluster, "minion-1") == "Ready"
    });
    wait_running(&cluster, 4, Duration::from_secs(30));
    cluster.wait_runs_exactly_its_pods("web", Duration::from_secs(30));
    wait_until("4 endpoints again", Duration::from_secs(20), || {
        endpoint_count(&cluster, "web") == 4
    });
    assert_eq!(cluster.pods().len(), 4, "nothing moved, nothing doubled");
    cluster.down_and_check();
}

/// The names of the app containers (`<pod>_web`) running on a minion.
fn app_containers(cluster: &TestCluster, minion: usize) -> Vec<String> {
    cluster
        .running_containers(minion)
        .into_iter()
        .filter(|n| n.ends_with("_web"))
        .collect()
}

fn all_app_containers(cluster: &TestCluster, minions: usize) -> usize {
    (1..=minions)
        .map(|m| app_containers(cluster, m).len())
        .sum()
}

fn pod_ids(cluster: &TestCluster) -> Vec<String> {
    let mut ids: Vec<String> = cluster
        .pods()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Drops (or lets through again) minion `m`'s packets to etcd, in its own
/// namespace: the minion keeps running its containers, its helper is cut
/// off from the cluster.
fn partition(cluster: &TestCluster, m: usize, cut: bool) {
    let etcd = format!("10.{}.0.1", 100 + cluster.slot() as u32);
    let op = if cut { "-I" } else { "-D" };
    let run = cluster.in_minion(
        m,
        &[
            "iptables", "-w", op, "OUTPUT", "-d", &etcd, "-p", "tcp", "--dport", "2379", "-j",
            "DROP",
        ],
    );
    assert!(run.ok(), "{run:?}");
}

/// A partitioned minion (cut off from etcd, containers running): a
/// partition shorter than the heartbeat lease moves nothing; a longer one
/// has its replica brought back elsewhere (N+1 containers at most while it
/// lasts), and once it heals the returning minion removes its stale pod,
/// so exactly N run.
#[test]
fn a_partitioned_minion_is_replaced_and_cleans_up_when_it_returns() {
    let cluster = TestCluster::up("it-fault-split", 3);
    cluster.load_demo_image("tutum/tomcat:latest");
    let apply = cluster.kctl_stdin(&["apply", "-f", "-"], &web_controller("web", 3));
    assert!(apply.ok(), "{apply:?}");
    wait_running(&cluster, 3, Duration::from_secs(60));
    let before = pod_ids(&cluster);
    let on_3: Vec<String> = cluster
        .pods()
        .iter()
        .filter(|p| p["currentState"]["host"] == "minion-3")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on_3.len(), 1, "one replica per minion");

    // A second, well inside the lease (4 s; the last beat may be a second
    // old, and TCP resends a dropped beat only after its back-off, so a
    // cut of 2 s can already outlast the lease): nothing moves.
    partition(&cluster, 3, true);
    std::thread::sleep(Duration::from_secs(1));
    partition(&cluster, 3, false);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(pod_ids(&cluster), before, "a short partition moved pods");
    assert_eq!(minion_status(&cluster, "minion-3"), "Ready");

    // 20 s: the replica comes back on another minion meanwhile.
    partition(&cluster, 3, true);
    let cut = Instant::now();
    wait_until("minion-3 NotReady", Duration::from_secs(15), || {
        minion_status(&cluster, "minion-3").starts_with("NotReady")
    });
    wait_until("the replica replaced", Duration::from_secs(15), || {
        let pods = cluster.pods();
        pods.len() == 3
            && pods.iter().all(|p| p["currentState"]["host"] != "minion-3")
            && running(&cluster) == 3
    });
    let mut most = 0;
    while cut.elapsed() < Duration::from_secs(20) {
        most = most.max(all_app_containers(&cluster, 3));
        // minion-3's containers run on, cut off from the cluster.
        assert_eq!(app_containers(&cluster, 3).len(), 1);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        most <= 4,
        "{most} containers for 3 replicas during the partition"
    );
    partition(&cluster, 3, false);
    // Healed: the returning minion removes its stale pod; exactly 3 run.
    wait_until(
        "minion-3's stale pod removed",
        Duration::from_secs(30),
        || app_containers(&cluster, 3).is_empty(),
    );
    wait_until("minion-3 Ready again", Duration::from_secs(15), || {
        minion_status(&cluster, "minion-3") == "Ready"
    });
    assert_eq!(all_app_containers(&cluster, 3), 3);
    assert_eq!(running(&cluster), 3);
    let again = cluster.kctl_stdin(&["apply", "-f", "-"], &web_controller("web", 3));
    assert!(again.stdout.contains("No changes"), "{again:?}");
    cluster.down_and_check();
}

/// 20 `kctl apply` processes at once on different controllers, and 5 more
/// on one controller with different replica counts: every apply succeeds
/// (a conflict means re-planning), every change is kept, the shared one
/// ends as one of its versions whole, and no pod runs twice.
#[test]
fn twenty_five_concurrent_applies_lose_nothing() {
    let cluster = TestCluster::up("it-fault-load", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    let dir = cluster.dir();
    let mut texts: Vec<String> = (0..20)
        .map(|i| web_controller(&format!("own{i}"), 1))
        .collect();
    texts.extend((1..=5).map(|n| web_controller("shared", n)));
    let children: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = dir.join(format!("load-{i}.json"));
            std::fs::write(&path, text).unwrap();
            Apply(
                cluster
                    .command(&["apply", "-f", path.to_str().unwrap()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for mut child in children {
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
        let status = child.0.wait().unwrap();
        assert!(status.success(), "{stderr}");
    }
    let controllers = cluster.kctl(&["get", "rc", "-o", "json"]).json();
    let controllers = controllers["items"].as_array().unwrap();
    assert_eq!(controllers.len(), 21, "every controller kept");
    let shared = controllers.iter().find(|c| c["id"] == "shared").unwrap()["desiredState"]
        ["replicas"]
        .as_u64()
        .unwrap() as usize;
    assert!((1..=5).contains(&shared));
    let total = 20 + shared;
    wait_running(&cluster, total, Duration::from_secs(120));
    cluster.wait_runs_exactly_its_pods("web", Duration::from_secs(30));
    let pods = cluster.pods();
    assert_eq!(pods.len(), total, "exactly the desired pods");
    for i in 0..20 {
        let name = format!("own{i}");
        assert_eq!(
            pods.iter()
                .filter(|p| p["labels"]["name"] == name.as_str())
                .count(),
            1
        );
    }
    assert_eq!(
        pods.iter()
            .filter(|p| p["labels"]["name"] == "shared")
            .count(),
        shared
    );
    // One app container per pod, none twice.
    let mut containers: Vec<String> = (1..=2).flat_map(|m| app_containers(&cluster, m)).collect();
    assert_eq!(containers.len(), total, "{containers:?}");
    containers.sort();
    containers.dedup();
    assert_eq!(containers.len(), total);
    cluster.down_and_check();
}
