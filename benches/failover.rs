//! The node helper's figures on a real local cluster (needs root), each
//! beside its floor measured in the same run:
//! - restart: `docker kill` of a pod's container until Docker reports it
//!   started again (from Docker's events), and until `kctl get` reports
//!   it Running; floor: the same kill with the container started by hand
//!   the moment Docker reports its death;
//! - failover: `kctl minion stop` until every controller pod of that minion
//!   runs on another minion and no service endpoint points at it; floor:
//!   until the minion's heartbeat lease has expired (`kctl get minions`
//!   says NotReady), before which nothing may move;
//! - the helper's resident memory and CPU use when idle with 10 pods.
//!
//!     cargo bench --bench failover
//!
//! What `kctl get` reports is polled every 100 ms, so it carries that much
//! resolution; Docker's events carry nanoseconds.

use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const KCTL: &str = env!("CARGO_BIN_EXE_kctl");
const CLUSTER: &str = "bench-failover";
const ROUNDS: usize = 5;

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".kctl-bench")
}

fn kctl(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(KCTL)
        .args(args)
        .env("KCTL_HOME", home())
        .env("KCTL_CLUSTER", CLUSTER)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kctl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn items(kind: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&kctl(&["get", kind, "-o", "json"], None)).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

struct Down;
impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(KCTL)
            .args(["down"])
            .env("KCTL_HOME", home())
            .env("KCTL_CLUSTER", CLUSTER)
            .status();
    }
}

fn wait(what: &str, limit: Duration, done: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn controller(id: &str, replicas: u32) -> String {
    format!(
        r#"{{"id": "{id}", "kind": "ReplicationController", "apiVersion": "v1beta1",
  "desiredState": {{"replicas": {replicas}, "replicaSelector": {{"name": "{id}"}},
    "podTemplate": {{"desiredState": {{"manifest": {{"version": "v1beta1", "id": "{id}",
      "containers": [{{"name": "web", "image": "tutum/tomcat", "ports": [{{"containerPort": 8080}}]}}]}}}},
      "labels": {{"name": "{id}"}}}}}}}}"#
    )
}

fn stats(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name}: median {:.2} s, worst {:.2} s, best {:.2} s over {} runs",
        v[v.len() / 2],
        v[v.len() - 1],
        v[0],
        v.len()
    );
}

fn helper_pid(slot: u64, minion: usize) -> u32 {
    let file = format!("/run/kctl/{slot}/m{minion}/helper/kctl-node.pid");
    std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn main() {
    std::fs::create_dir_all(home()).unwrap();
    let _ = Command::new(KCTL)
        .arg("down")
        .env("KCTL_HOME", home())
        .env("KCTL_CLUSTER", CLUSTER)
        .status();
    let _down = Down;
    kctl(&["up", "--minions", "3"], None);
    let tar = home().join("demo.tar");
    let built = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/cluster/demo-image/build.sh"
        ))
        .arg(&tar)
        .status()
        .unwrap();
    assert!(built.success());
    kctl(&["image", "load", "-i", tar.to_str().unwrap()], None);
    let service = r#"{"id": "web", "kind": "Service", "apiVersion": "v1beta1", "port": 80, "containerPort": 8080, "selector": {"name": "web"}}"#;
    kctl(&["apply", "-f", "-"], Some(service));
    kctl(&["apply", "-f", "-"], Some(&controller("web", 3)));
    let cluster: Value = serde_json::from_str(
        &std::fs::read_to_string(home().join("clusters").join(CLUSTER).join("cluster.json"))
            .unwrap(),
    )
    .unwrap();
    let slot = cluster["local"]["slot"].as_u64().unwrap();

    // Restart after an exit.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let docker = runtime.block_on(async {
        bollard::Docker::connect_with_unix(
            &format!("/run/kctl/{slot}/m1/docker.sock"),
            30,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
    });
    let (mut floors, mut started, mut reported) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let pod = items("pods")
            .into_iter()
            .find(|p| p["currentState"]["host"] == "minion-1")
            .unwrap();
        let id = pod["id"].as_str().unwrap().to_string();
        let container = format!("{id}_web");
        // Floor: started by hand as soon as Docker says it died.
        floors.push(runtime.block_on(kill_until_started(&docker, &container, true)));
        wait("running again", Duration::from_secs(60), || {
            items("pods")
                .iter()
                .any(|p| p["id"] == id.as_str() && p["currentState"]["status"] == "Running")
        });
        // Stay up long enough for the helper's back-off to reset, so each
        // run measures a first restart rather than a crash loop.
        std::thread::sleep(Duration::from_secs(12));
        let count = |pods: &[Value]| {
            pods.iter()
                .find(|p| p["id"] == id.as_str())
                .and_then(|p| p["currentState"]["info"]["web"]["restartCount"].as_u64())
                .unwrap_or(0)
        };
        let before = count(&items("pods"));
        let t0 = Instant::now();
        started.push(runtime.block_on(kill_until_started(&docker, &container, false)));
        wait("restart", Duration::from_secs(60), || {
            let pods = items("pods");
            count(&pods) > before
                && pods
                    .iter()
                    .any(|p| p["id"] == id.as_str() && p["currentState"]["status"] == "Running")
        });
        reported.push(t0.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_secs(12));
    }
    stats(
        "restart floor: docker start on Docker's death event",
        floors,
    );
    stats(
        "restart by kctl-node: kill until Docker's start event",
        started,
    );
    stats(
        "restart by kctl-node: kill until `kctl get` says Running",
        reported,
    );

    // Failover.
    let (mut failovers, mut detections) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let victim = format!("minion-{}", 2 + round % 2);
        let prefix = format!("10.{}.{}.", 100 + slot, 2 + round % 2);
        kctl(&["minion", "stop", &victim], None);
        let stopped = Instant::now();
        let lease = wait("lease expiry", Duration::from_secs(60), || {
            items("minions")
                .iter()
                .any(|m| m["id"] == victim.as_str() && m["status"] != "Ready")
        });
        detections.push(lease.as_secs_f64());
        wait("failover", Duration::from_secs(60), || {
            let pods = items("pods");
            let moved = pods.len() == 3
                && pods.iter().all(|p| {
                    p["currentState"]["host"] != victim.as_str()
                        && p["currentState"]["status"] == "Running"
                });
            let services = items("services");
            let endpoints: Vec<String> = services[0]["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_string())
                .collect();
            moved && endpoints.len() == 3 && endpoints.iter().all(|e| !e.starts_with(&prefix))
        });
        let t = stopped.elapsed();
        failovers.push(t.as_secs_f64());
        println!(
            "  failover {}: {:.2} s ({victim} stopped; NotReady after {:.2} s)",
            round + 1,
            t.as_secs_f64(),
            lease.as_secs_f64()
        );
        kctl(&["minion", "start", &victim], None);
    }
    stats(
        "failover floor: stop until the lease expired (NotReady)",
        detections,
    );
    stats(
        "failover: stop until pods run elsewhere and endpoints moved",
        failovers,
    );

    // The helper when idle with 10 pods on its minion.
    kctl(&["apply", "-f", "-"], Some(&controller("web", 0)));
    kctl(&["apply", "-f", "-"], Some(&controller("idle", 30)));
    let on_one = items("pods")
        .iter()
        .filter(|p| p["currentState"]["host"] == "minion-1")
        .count();
    std::thread::sleep(Duration::from_secs(5));
    let pid = helper_pid(slot, 1);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("VmRSS: ?")
        .to_string();
    let ticks_per_second = 100.0;
    let window = Duration::from_secs(20);
    let before = cpu_ticks(pid);
    std::thread::sleep(window);
    let used = (cpu_ticks(pid) - before) as f64 / ticks_per_second;
    println!("helper on minion-1 with {on_one} pods: {rss}");
    println!(
        "helper on minion-1 with {on_one} pods: {:.2}% of one core over {}s idle",
        100.0 * used / window.as_secs_f64(),
        window.as_secs()
    );
}

/// Kills `container` and returns the time until Docker reports it started
/// again; `by_hand` starts it the moment Docker reports it died.
async fn kill_until_started(docker: &bollard::Docker, container: &str, by_hand: bool) -> f64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let mut events = docker.events(Some(EventsOptions {
        since: Some((since.as_secs() - 1).to_string()),
        filters: Some(std::collections::HashMap::from([
            ("container".to_string(), vec![container.to_string()]),
            ("type".to_string(), vec!["container".to_string()]),
        ])),
        ..Default::default()
    }));
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    docker.kill_container(container, None).await.unwrap();
    let limit = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(limit);
    loop {
        let event = tokio::select! {
            e = events.next() => e.expect("Docker's event stream ended").unwrap(),
            _ = &mut limit => panic!("{container} not started again within 60 s"),
        };
        let at = event.time_nano.unwrap_or(0);
        if at < killed_at {
            continue;
        }
        match event.action.as_deref() {
            Some("die") if by_hand => docker.start_container(container, None).await.unwrap(),
            Some("start") => return (at - killed_at) as f64 / 1e9,
            _ => {}
        }
    }
}
