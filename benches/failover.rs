//! The node helper's figures on a real local cluster (needs root):
//! - restart: `docker kill` of a container until it runs again;
//! - failover: `kctl minion stop` until every controller pod of that minion
//!   runs on another minion and no service endpoint points at it, repeated;
//! - the helper's resident memory and CPU use when idle with 10 pods.
//!
//!     cargo bench --bench failover
//!
//! Times are measured by polling `kctl get` every 100 ms, so they carry
//! that much resolution.

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
    let mut restarts = Vec::new();
    for _ in 0..ROUNDS {
        let pod = items("pods")
            .into_iter()
            .find(|p| p["currentState"]["host"] == "minion-1")
            .unwrap();
        let id = pod["id"].as_str().unwrap().to_string();
        let count = pod["currentState"]["info"]["web"]["restartCount"]
            .as_u64()
            .unwrap_or(0);
        let sock = format!("unix:///run/kctl/{slot}/m1/docker.sock");
        let killed = Command::new("nsenter")
            .arg(format!("--net=/run/netns/kctl-{CLUSTER}-minion-1"))
            .args(["docker", "-H", &sock, "kill", &format!("{id}_web")])
            .output()
            .unwrap();
        assert!(killed.status.success());
        let t = wait("restart", Duration::from_secs(60), || {
            items("pods").iter().any(|p| {
                p["id"] == id.as_str()
                    && p["currentState"]["status"] == "Running"
                    && p["currentState"]["info"]["web"]["restartCount"]
                        .as_u64()
                        .unwrap_or(0)
                        > count
            })
        });
        restarts.push(t.as_secs_f64());
        // Stay up long enough for the back-off to reset, so each run
        // measures a first restart rather than a crash loop.
        std::thread::sleep(Duration::from_secs(12));
    }
    stats(
        "restart after docker kill (until reported Running)",
        restarts,
    );

    // Failover.
    let mut failovers = Vec::new();
    for round in 0..ROUNDS {
        let victim = format!("minion-{}", 2 + round % 2);
        let prefix = format!("10.{}.{}.", 100 + slot, 2 + round % 2);
        kctl(&["minion", "stop", &victim], None);
        let t = wait("failover", Duration::from_secs(60), || {
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
        failovers.push(t.as_secs_f64());
        println!(
            "  failover {}: {:.2} s ({victim} stopped)",
            round + 1,
            t.as_secs_f64()
        );
        kctl(&["minion", "start", &victim], None);
    }
    stats(
        "failover (stop until pods run elsewhere and endpoints moved)",
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
