//! Shared pieces of the integration tests: a cluster guard that always runs
//! `kctl down`, the demo image, and checks that nothing is left behind.
#![allow(dead_code)]

pub mod fence;
pub mod hosts;
pub mod mock_compute;
pub mod sys;
pub mod vms;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const KCTL: &str = env!("CARGO_BIN_EXE_kctl");

fn sh_stdout(command: &mut Command) -> String {
    let out = command.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where test clusters keep their records: under $HOME, never under a
/// world-writable directory such as /tmp, where the checkout may be (sshd's
/// StrictModes refuses key files there).
pub fn kctl_home() -> PathBuf {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .join(".kctl-test");
    std::fs::create_dir_all(&home).unwrap();
    home
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path of an example manifest in `manifests/`.
pub fn manifest(name: &str) -> String {
    repo().join("manifests").join(name).display().to_string()
}

/// Containers by minion number and name.
type Placed = std::collections::BTreeSet<(usize, String)>;

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// Panics with the command's whole output unless it exited 0.
    #[track_caller]
    pub fn assert_ok(self) -> Run {
        assert!(self.ok(), "{self:?}");
        self
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn to_run(out: Output) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A local cluster that exists for the life of the value: `down` runs on
/// drop, also when the test panics.
pub struct TestCluster {
    pub name: String,
    pub home: PathBuf,
    /// Extra environment for every kctl run (e.g. HOME for known_hosts).
    pub env: Vec<(String, String)>,
}

impl TestCluster {
    /// Brings up a cluster; panics (after cleaning up) if `up` fails.
    pub fn up(name: &str, minions: usize) -> TestCluster {
        TestCluster::up_with(name, &["--minions", &minions.to_string()])
    }

    /// Like `up`, with these flags for `kctl up`.
    pub fn up_with(name: &str, flags: &[&str]) -> TestCluster {
        let cluster = TestCluster {
            name: name.to_string(),
            home: kctl_home(),
            env: vec![],
        };
        // A cluster of this name left by an aborted run is removed first.
        cluster.kctl(&["down"]);
        let mut args = vec!["up"];
        args.extend_from_slice(flags);
        let run = cluster.kctl(&args);
        assert!(run.ok(), "kctl up failed: {run:?}");
        cluster
    }

    /// A guard for a cluster the test makes itself (any provider): `down`
    /// runs on drop. A leftover of an aborted run is removed first.
    pub fn adopt(name: &str, env: Vec<(String, String)>) -> TestCluster {
        let cluster = TestCluster {
            name: name.to_string(),
            home: kctl_home(),
            env,
        };
        cluster.kctl(&["down", "--force"]);
        cluster
    }

    pub fn dir(&self) -> PathBuf {
        self.home.join("clusters").join(&self.name)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KCTL);
        cmd.args(args)
            .env("KCTL_HOME", &self.home)
            .env("KCTL_CLUSTER", &self.name)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    pub fn kctl(&self, args: &[&str]) -> Run {
        to_run(self.command(args).output().expect("run kctl"))
    }

    pub fn kctl_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        to_run(child.wait_with_output().unwrap())
    }

    /// `kctl get pods -o json` items.
    pub fn pods(&self) -> Vec<Value> {
        let run = self.kctl(&["get", "pods", "-o", "json"]);
        assert!(run.ok(), "{run:?}");
        run.json()["items"].as_array().cloned().unwrap_or_default()
    }

    pub fn slot(&self) -> u8 {
        self.record()["local"]["slot"].as_u64().unwrap() as u8
    }

    /// The cluster record `up` wrote (cluster.json).
    pub fn record(&self) -> Value {
        let text = std::fs::read_to_string(self.dir().join("cluster.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The directory holding minion `index`'s (1-based) certificate and key.
    pub fn minion_tls_dir(&self, index: usize) -> String {
        let record = self.record();
        let helper_dir = record["minions"][index - 1]["helperDir"].as_str().unwrap();
        format!("{helper_dir}/tls")
    }

    /// Writes `text` to a file in the cluster's directory; returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> String {
        let path = self.dir().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Builds the demo image tagged `tag` and loads it into every minion.
    pub fn load_demo_image(&self, tag: &str) {
        let tar = self.dir().join("demo-image.tar");
        let build = Command::new("bash")
            .arg(repo().join("cluster/demo-image/build.sh"))
            .arg(&tar)
            .arg(tag)
            .output()
            .unwrap();
        assert!(
            build.status.success(),
            "{}",
            String::from_utf8_lossy(&build.stderr)
        );
        let run = self.kctl(&["image", "load", "-i", tar.to_str().unwrap()]);
        assert!(run.ok(), "{run:?}");
        std::fs::remove_file(tar).unwrap();
    }

    /// Lines of every minion's sshd log that record an accepted login.
    pub fn ssh_logins(&self) -> usize {
        let minions = self.dir().join("minions");
        std::fs::read_dir(minions)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        std::fs::read_to_string(e.path().join("sshd.log"))
                            .unwrap_or_default()
                            .matches("Accepted publickey")
                            .count()
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Runs a command inside minion `index`'s network namespace.
    pub fn in_minion(&self, index: usize, argv: &[&str]) -> Run {
        let ns = format!("/run/netns/kctl-{}-minion-{index}", self.name);
        let out = Command::new("nsenter")
            .arg(format!("--net={ns}"))
            .args(argv)
            .output()
            .unwrap();
        to_run(out)
    }

    /// The names of the containers running on minion `index`, as its
    /// dockerd lists them (`<pod>_<container>`, the pause one included).
    pub fn running_containers(&self, index: usize) -> Vec<String> {
        let sock = format!("unix:///run/kctl/{}/m{index}/docker.sock", self.slot());
        let run = self.in_minion(
            index,
            &["docker", "-H", &sock, "ps", "--format", "{{.Names}}"],
        );
        assert!(run.ok(), "{run:?}");
        run.stdout.lines().map(str::to_string).collect()
    }

    /// Waits up to `limit` for the minions to run exactly the pods etcd
    /// holds, counted in containers: container `container` of every pod on
    /// the pod's minion, and no other `*_<container>` anywhere (none
    /// twice, none left of a pod that went). A status record can say
    /// Running a moment after its container died; the containers are what
    /// counts.
    pub fn wait_runs_exactly_its_pods(&self, container: &str, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let (running, held) = self.containers_and_pods(container);
            if running == held {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "containers running {running:?}, pods in etcd {held:?}, after {limit:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// (minion, container name) of what runs, and of what etcd holds.
    fn containers_and_pods(&self, container: &str) -> (Placed, Placed) {
        let pods = self.pods();
        let minions = self.record()["minions"].as_array().unwrap().len();
        let suffix = format!("_{container}");
        let running = (1..=minions)
            .flat_map(|m| {
                self.running_containers(m)
                    .into_iter()
                    .filter(|name| name.ends_with(&suffix))
                    .map(move |name| (m, name))
            })
            .collect();
        let held = pods
            .iter()
            .map(|p| {
                (
                    minion_of(p),
                    format!("{}{suffix}", p["id"].as_str().unwrap()),
                )
            })
            .collect();
        (running, held)
    }

    /// Runs `script` under `sh -c` in container `container` of `pod` on
    /// minion `index`.
    pub fn in_pod(&self, index: usize, pod: &str, container: &str, script: &str) -> Run {
        let sock = format!("unix:///run/kctl/{}/m{index}/docker.sock", self.slot());
        let name = format!("{pod}_{container}");
        self.in_minion(
            index,
            &["docker", "-H", &sock, "exec", &name, "sh", "-c", script],
        )
    }

    /// The cluster's machines as the fence check sees them: the
    /// workstation (which runs etcd and no pods) and each minion's
    /// namespace, shell lines run there as root.
    pub fn fence_machines(&self) -> Vec<fence::Machine<'_>> {
        let mut out = vec![fence::Machine {
            name: "workstation".into(),
            shell: Box::new(|script: &str| sh_stdout(Command::new("sh").args(["-c", script]))),
            runs_pods: false,
        }];
        let minions = self.record()["minions"].as_array().map_or(0, Vec::len);
        for index in 1..=minions {
            out.push(fence::Machine {
                name: format!("minion-{index}"),
                shell: Box::new(move |script: &str| {
                    self.in_minion(index, &["sh", "-c", script]).stdout
                }),
                runs_pods: true,
            });
        }
        out
    }

    /// Takes the cluster down now and checks nothing of it is left.
    pub fn down_and_check(self) {
        let slot = self.slot();
        let run = self.kctl(&["down"]);
        assert!(run.ok(), "kctl down failed: {run:?}");
        assert_nothing_left(&self.name, slot, &self.dir());
        std::mem::forget(self);
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let run = self.kctl(&["down"]);
        if !run.ok() {
            eprintln!("cleanup of cluster {} failed: {run:?}", self.name);
        }
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// No namespace, link, route, mount, process or file of the cluster remains.
pub fn assert_nothing_left(name: &str, slot: u8, dir: &Path) {
    let netns = sh("ip netns list");
    assert!(
        !netns.contains(&format!("kctl-{name}-")),
        "namespaces left: {netns}"
    );
    let links = sh("ip -o link show");
    let prefix = format!("kctl{slot}");
    assert!(
        !links.lines().any(|l| l
            .split(':')
            .nth(1)
            .is_some_and(|n| n.trim().split('@').next() == Some(prefix.as_str())
                || n.trim().starts_with(&format!("{prefix}m")))),
        "links left: {links}"
    );
    let routes = sh("ip route show table all");
    assert!(
        !routes.contains(&format!("10.{}.", 100 + slot as u32)),
        "routes left: {routes}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let dir_text = dir.display().to_string();
    let run_dir = format!("/run/kctl/{slot}/");
    assert!(
        !mounts.contains(&dir_text) && !mounts.contains(&run_dir),
        "mounts left"
    );
    let leftovers = processes_naming(&[&dir_text, &run_dir]);
    assert!(leftovers.is_empty(), "processes left: {leftovers:?}");
    assert!(!dir.exists(), "cluster directory left: {}", dir.display());
}

/// Live processes (zombies aside: they hold nothing, and this machine's
/// PID 1 reaps late) whose command line names any of `paths`.
pub fn processes_naming(paths: &[&str]) -> Vec<String> {
    sh("ps -eo stat=,args=")
        .lines()
        .filter(|l| !l.starts_with('Z'))
        .filter(|l| paths.iter().any(|p| l.contains(p)))
        .map(str::to_string)
        .collect()
}

/// GET a page over plain TCP (no client dependency). A container that
/// Docker reports running may not listen yet: retry for a few seconds.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(page) = http_get_once(addr, path) {
            return Some(page);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

pub fn http_get_once(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    assert_stays_on_machine(&sock.ip().to_string());
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (head, rest) = body.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| rest.to_string())
}

/// Network safety: test traffic may only go to addresses this machine
/// routes into a cluster bridge (or drops). Anything else is a test bug.
pub fn assert_stays_on_machine(ip: &str) {
    let route = sh(&format!("ip route get {ip} 2>&1"));
    // `ip route get` answers "Invalid argument" for a blackholed address.
    let on_machine = [
        "dev kctl",
        // The test's own plain hosts (common/hosts.rs).
        "dev kth",
        "dev lo",
        "Invalid argument",
        "blackhole",
        "unreachable",
        "prohibit",
    ];
    assert!(
        on_machine.iter().any(|m| route.contains(m)),
        "refusing to send test traffic to {ip}: route {route}"
    );
}

/// A replication controller `id` of `replicas` demo pods without host
/// ports, so more replicas than minions fit.
pub fn web_controller(id: &str, replicas: u32) -> String {
    format!(
        r#"{{"id": "{id}", "kind": "ReplicationController", "apiVersion": "v1beta1",
  "desiredState": {{"replicas": {replicas}, "replicaSelector": {{"name": "{id}"}},
    "podTemplate": {{"desiredState": {{"manifest": {{"version": "v1beta1", "id": "{id}",
        "containers": [{{"name": "web", "image": "tutum/tomcat",
                        "ports": [{{"containerPort": 8080}}]}}]}}}},
      "labels": {{"name": "{id}"}}}}}},
  "labels": {{"name": "{id}"}}}}"#
    )
}

/// `curl` asking etcd at `url`, trusting the cluster's CA from a helper's
/// `tls` directory on its minion, and presenting that helper's own
/// certificate when `with_certificate` (without one, etcd must refuse).
pub fn etcd_curl(tls_dir: &str, url: &str, with_certificate: bool) -> Vec<String> {
    let mut argv: Vec<String> = ["curl", "-sS", "--http1.1", "--max-time", "3", "--cacert"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.push(format!("{tls_dir}/ca.crt"));
    if with_certificate {
        argv.extend([
            "--cert".to_string(),
            format!("{tls_dir}/node.crt"),
            "--key".to_string(),
            format!("{tls_dir}/node.key"),
        ]);
    }
    argv.push(url.to_string());
    argv
}

/// `etcdctl` against `endpoint` (`https://IP:PORT`) as the identity whose
/// certificate and key are `cert` and `key`, trusting `ca`: the real
/// client, which (unlike etcd's HTTP gateway) authenticates by the
/// certificate's name.
pub fn etcdctl(endpoint: &str, ca: &str, cert: &str, key: &str, args: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "etcdctl".into(),
        "--endpoints".into(),
        endpoint.into(),
        "--dial-timeout".into(),
        "3s".into(),
        "--command-timeout".into(),
        "5s".into(),
        "--cacert".into(),
        ca.into(),
        "--cert".into(),
        cert.into(),
        "--key".into(),
        key.into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// [`etcdctl`] as a minion's helper: the files in its `tls` directory.
pub fn etcdctl_as_helper(endpoint: &str, tls_dir: &str, args: &[&str]) -> Vec<String> {
    etcdctl(
        endpoint,
        &format!("{tls_dir}/ca.crt"),
        &format!("{tls_dir}/node.crt"),
        &format!("{tls_dir}/node.key"),
        args,
    )
}

/// Runs `argv` on this machine.
pub fn run_here(argv: &[String]) -> Run {
    to_run(Command::new(&argv[0]).args(&argv[1..]).output().unwrap())
}

/// The number of the minion a pod (as `kctl get pods -o json` lists it)
/// runs on: 2 for `minion-2`.
pub fn minion_of(pod: &Value) -> usize {
    pod["currentState"]["host"]
        .as_str()
        .and_then(|host| host.strip_prefix("minion-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no minion-N host: {pod}"))
}

/// Polls `check` every 200 ms until it finds something, for at most
/// `limit`; panics naming `what` otherwise.
pub fn wait_for<T>(
    limit: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited {limit:?} for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
