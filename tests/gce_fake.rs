//! `kctl up|down --provider gce` end to end against the fake gcloud
//! (tests/fake-gcloud), which checks every argv against gcloud's syntax,
//! keeps the project's resources and records each call. The fake's VMs
//! have loopback addresses, so `up` stops at the SSH stage (nothing
//! listens there) after every gcloud step has run; what it asked of gcloud
//! is compared with the goldens in tests/golden/.

mod common;

use common::hosts::PlainHosts;
use common::{repo, Run};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const PROJECT: &str = "my-proj-123";
const ZONE: &str = "us-central1-b";

/// A workstation of its own: KCTL_HOME, the fake's state, PATH with the
/// fake first. `down` runs on drop.
struct GceEnv {
    root: PathBuf,
    cluster: String,
    extra: Vec<(String, String)>,
}

impl GceEnv {
    fn new(tag: &str) -> GceEnv {
        GceEnv::named(tag, "demo")
    }

    fn named(tag: &str, cluster: &str) -> GceEnv {
        let root = common::kctl_home().join(format!("gce-{tag}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("home")).unwrap();
        std::fs::create_dir_all(root.join("fake")).unwrap();
        GceEnv {
            root,
            cluster: cluster.to_string(),
            extra: vec![],
        }
    }

    fn fake_dir(&self) -> PathBuf {
        self.root.join("fake")
    }

    fn cluster_dir(&self) -> PathBuf {
        self.root.join("home/clusters").join(&self.cluster)
    }

    fn kctl_with(&self, args: &[&str], env: &[(&str, &str)], path: Option<&str>) -> Run {
        let fake = repo().join("tests/fake-gcloud");
        let default_path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", fake.display());
        let out = Command::new(common::KCTL)
            .args(args)
            .env("KCTL_HOME", self.root.join("home"))
            .env("KCTL_CLUSTER", &self.cluster)
            .env("FAKE_GCLOUD_DIR", self.fake_dir())
            .env("PATH", path.unwrap_or(&default_path))
            .envs(self.extra.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn kctl(&self, args: &[&str]) -> Run {
        self.kctl_with(args, &[], None)
    }

    /// `kctl up --provider gce --project P --zone Z` and `extra`.
    fn up_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let mut args = vec![
            "up",
            "--provider",
            "gce",
            "--project",
            PROJECT,
            "--zone",
            ZONE,
        ];
        args.extend_from_slice(extra);
        self.kctl_with(&args, env, None)
    }

    /// A 3-minion `up` that stops at the SSH stage within a second (the
    /// fake's VMs have loopback addresses where nothing listens).
    fn up(&self, env: &[(&str, &str)]) -> Run {
        self.up_with(&["--minions", "3", "--boot-timeout", "1"], env)
    }

    /// The calls recorded so far, as shell-like lines, and forget them.
    fn take_calls(&self) -> Vec<String> {
        let log = self.fake_dir().join("calls.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let work = self.cluster_dir().display().to_string();
        text.lines()
            .map(|l| {
                let argv: Vec<String> = serde_json::from_str(l).unwrap();
                argv.iter()
                    .map(|a| {
                        let a = a.replace(&work, "$WORK");
                        if a.contains(['(', ')', '$', '~', '^', ' ', '|']) && !a.contains("$WORK") {
                            format!("'{a}'")
                        } else {
                            a
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// Every resource the fake holds for the project, by kind.
    fn resources(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.fake_dir().join("state.json")).unwrap_or_default();
        let state: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut out = vec![];
        if let Some(kinds) = state["projects"][PROJECT].as_object() {
            for (kind, items) in kinds {
                if let Some(items) = items.as_object() {
                    out.extend(items.keys().map(|k| format!("{kind}/{k}")));
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for GceEnv {
    fn drop(&mut self) {
        let _ = self.kctl(&[
            "down",
            "--provider",
            "gce",
            "--project",
            PROJECT,
            "--zone",
            ZONE,
        ]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn golden(name: &str) -> Vec<String> {
    std::fs::read_to_string(repo().join("tests/golden").join(name))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// What a first `up` asks: the reads that make sure no cluster of the
/// name exists (down's discovery), then the golden create sequence.
fn first_up_calls() -> Vec<String> {
    let mut calls: Vec<String> = golden("gce-down-3-minions.txt")
        .into_iter()
        .take(5)
        .collect();
    calls.extend(golden("gce-up-3-minions.txt"));
    calls
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn position(calls: &[String], needle: &str) -> usize {
    calls
        .iter()
        .position(|c| c.contains(needle))
        .unwrap_or_else(|| panic!("no call with {needle:?} in {calls:#?}"))
}

fn flat(text: &str) -> String {
    text.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn up_and_down_issue_the_golden_gcloud_sequences() {
    let env = GceEnv::new("golden");
    let run = env.up(&[]);
    // Every gcloud step ran; then no VM answered SSH (loopback, nothing
    // listens): a clear error that says how to continue or clean up.
    assert!(!run.ok(), "{run:?}");
    let err = flat(&run.stderr);
    assert!(err.contains("not ready after 1s"), "{run:?}");
    assert!(err.contains("kctl down"), "{run:?}");
    let calls = env.take_calls();
    assert_eq!(
        sorted(calls.clone()),
        sorted(first_up_calls()),
        "up's gcloud calls"
    );
    // Stages in order: preflight, network, subnet, firewalls, instances,
    // routes, host keys.
    let order = [
        "compute images describe-from-family",
        "networks create",
        "subnets create",
        "firewall-rules create kctl-demo-internal",
        "instances create kctl-demo-master",
        "routes create kctl-demo-minion-1",
        "get-guest-attributes kctl-demo-master",
    ];
    for pair in order.windows(2) {
        assert!(
            position(&calls, pair[0]) < position(&calls, pair[1]),
            "{} before {}",
            pair[0],
            pair[1]
        );
    }
    assert_eq!(env.resources().len(), 11, "{:?}", env.resources());
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(env.cluster_dir().join("cluster.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["gce"]["project"], PROJECT);
    assert_eq!(record["minions"].as_array().unwrap().len(), 3);
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(env.fake_dir().join("state.json")).unwrap())
            .unwrap();
    let master_ip = state["projects"][PROJECT]["instances"]["kctl-demo-master"]
        ["networkInterfaces"][0]["networkIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        record["etcdEndpoints"][0],
        format!("http://{master_ip}:4001"),
        "etcd on the master's internal address"
    );
    let known_hosts = std::fs::read_to_string(env.cluster_dir().join("known_hosts")).unwrap();
    assert_eq!(
        known_hosts.lines().count(),
        4,
        "pinned host keys: {known_hosts}"
    );
    assert!(known_hosts.lines().all(|l| l.starts_with("127.77.0.")));

    // Again on the existing cluster: reads only, nothing created.
    let again = env.up(&[]);
    assert!(!again.ok());
    let calls = env.take_calls();
    assert!(!calls.is_empty());
    assert!(
        !calls.iter().any(|c| c.contains(" create ")),
        "re-running up created something: {calls:#?}"
    );
    assert_eq!(env.resources().len(), 11);

    // down: the golden sequence, nothing left in the project or here.
    let down = env.kctl(&["down"]);
    assert!(down.ok(), "{down:?}");
    assert_eq!(down.stdout.matches("deleted ").count(), 11, "{down:?}");
    assert_eq!(
        sorted(env.take_calls()),
        sorted(golden("gce-down-3-minions.txt")),
        "down's gcloud calls"
    );
    assert_eq!(env.resources(), Vec::<String>::new());
    assert!(!env.cluster_dir().exists());
}

#[test]
fn dry_run_prints_the_commands_and_runs_none() {
    let env = GceEnv::new("dryrun");
    let run = env.up_with(&["--minions", "3", "--dry-run"], &[]);
    assert!(run.ok(), "{run:?}");
    let printed: Vec<String> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("gcloud "))
        .map(|l| l.replace(&env.cluster_dir().display().to_string(), "$WORK"))
        .collect();
    assert_eq!(printed, first_up_calls());

    // SSH narrowed to the operator's address: only that rule changes.
    let narrow = env.up_with(
        &[
            "--minions",
            "3",
            "--ssh-source",
            "203.0.113.7/32",
            "--dry-run",
        ],
        &[],
    );
    assert!(narrow.ok(), "{narrow:?}");
    let ssh_rule: Vec<&str> = narrow
        .stdout
        .lines()
        .filter(|l| l.contains("firewall-rules create kctl-demo-ssh"))
        .collect();
    assert_eq!(ssh_rule.len(), 1);
    assert!(
        ssh_rule[0].contains("--source-ranges=203.0.113.7/32"),
        "{ssh_rule:?}"
    );
    assert!(!narrow.stdout.contains("0.0.0.0/0"), "{narrow:?}");
    let bad = env.up_with(&["--ssh-source", "203.0.113.7", "--dry-run"], &[]);
    assert!(!bad.ok(), "a source without a prefix length: {bad:?}");
    assert!(env.take_calls().is_empty(), "dry run ran gcloud");
    assert!(!env.cluster_dir().exists(), "dry run left a record");
}

#[test]
fn a_failure_half_way_then_down_leaves_nothing() {
    let env = GceEnv::new("halfway");
    // The project's CPU quota runs out at the third VM: a failure no retry
    // cures, after some VMs exist.
    let run = env.up(&[(
        "FAKE_GCLOUD_FAIL",
        "quota:instances create kctl-demo-minion-2",
    )]);
    assert!(!run.ok(), "{run:?}");
    let err = flat(&run.stderr);
    assert!(
        err.contains("kctl-demo-minion-2") && err.contains("Quota 'CPUS' exceeded"),
        "{run:?}"
    );
    let made = env.resources();
    assert!(
        made.iter().any(|r| r.ends_with("kctl-demo-master")),
        "{made:?}"
    );
    assert!(
        !made.iter().any(|r| r.ends_with("kctl-demo-minion-2")),
        "{made:?}"
    );
    assert!(
        env.cluster_dir().join("cluster.json").exists(),
        "a record for down"
    );

    let down = env.kctl(&["down"]);
    assert!(down.ok(), "{down:?}");
    assert_eq!(env.resources(), Vec::<String>::new());
    assert!(!env.cluster_dir().exists());
}

#[test]
fn down_finds_a_cluster_whose_record_is_lost() {
    let env = GceEnv::new("lost");
    let run = env.up(&[]);
    assert!(!run.ok());
    assert_eq!(env.resources().len(), 11);
    env.take_calls();
    std::fs::remove_dir_all(env.cluster_dir()).unwrap();

    // `up` without a record never adopts what it finds: its `down` would
    // delete someone else's cluster.
    let run = env.up(&[]);
    assert!(!run.ok(), "{run:?}");
    assert!(flat(&run.stderr).contains("no record of"), "{run:?}");
    assert!(!env.take_calls().iter().any(|c| c.contains(" create ")));
    assert!(!env.cluster_dir().exists());

    let guess = env.kctl(&["down", "--provider", "gce", "--project", PROJECT]);
    assert!(!guess.ok(), "no zone, no record: {guess:?}");
    assert!(flat(&guess.stderr).contains("which zone"), "{guess:?}");

    let without = env.kctl(&["down"]);
    assert!(without.ok(), "{without:?}");
    assert!(without.stdout.contains("does not exist"), "{without:?}");
    assert_eq!(
        env.resources().len(),
        11,
        "nothing deleted without a record or --provider"
    );

    let down = env.kctl(&[
        "down",
        "--provider",
        "gce",
        "--project",
        PROJECT,
        "--zone",
        ZONE,
    ]);
    assert!(down.ok(), "{down:?}");
    assert_eq!(down.stdout.matches("deleted ").count(), 11, "{down:?}");
    assert_eq!(env.resources(), Vec::<String>::new());
}

#[test]
fn preflight_problems_create_nothing() {
    let env = GceEnv::new("preflight");
    let cases: [(&[(&str, &str)], &str); 2] = [
        (&[("FAKE_GCLOUD_ACCOUNT", "")], "not logged in"),
        (&[("FAKE_GCLOUD_FAIL", "always:zones describe")], "zone"),
    ];
    for (env_vars, expect) in cases {
        let run = env.up(env_vars);
        assert!(!run.ok(), "{run:?}");
        assert!(flat(&run.stderr).contains(expect), "{expect}: {run:?}");
    }
    let run = env.up_with(&["--machine-type", "n9-imaginary-1"], &[]);
    assert!(!run.ok());
    assert!(flat(&run.stderr).contains("n9-imaginary-1"), "{run:?}");
    // A PATH with no gcloud on it (this machine may have a real one).
    let empty = env.root.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let no_gcloud = env.kctl_with(
        &["up", "--provider", "gce", "--project", PROJECT],
        &[],
        Some(empty.to_str().unwrap()),
    );
    assert!(!no_gcloud.ok());
    assert!(
        flat(&no_gcloud.stderr).contains("gcloud not found"),
        "{no_gcloud:?}"
    );

    assert!(
        !env.take_calls().iter().any(|c| c.contains(" create ")),
        "a failed preflight created something"
    );
    assert_eq!(env.resources(), Vec::<String>::new());
    assert!(
        !env.cluster_dir().exists(),
        "no record of a cluster never made"
    );
}

/// The user GCE's guest agent makes from the `ssh-keys` metadata: `kctl`,
/// with passwordless sudo. Made for the test and removed after it (users
/// are the machine's, so one that the test did not make is left alone).
struct SudoUser;

const TEST_USER_COMMENT: &str = "kctl test user";
const SUDOERS: &str = "/etc/sudoers.d/kctl-test";

impl SudoUser {
    fn create() -> SudoUser {
        let existing = Command::new("getent")
            .args(["passwd", "kctl"])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&existing.stdout).to_string();
        if existing.status.success() && !line.contains(TEST_USER_COMMENT) {
            panic!("a user kctl that this test did not make exists: {line}");
        }
        if !existing.status.success() {
            let made = Command::new("useradd")
                .args(["--system", "--no-create-home", "--shell", "/bin/bash"])
                .args(["--comment", TEST_USER_COMMENT, "kctl"])
                .status()
                .unwrap();
            assert!(made.success(), "useradd kctl");
        }
        // No password, but not locked: sshd (without PAM) refuses locked
        // accounts even for key logins.
        let unlocked = Command::new("usermod")
            .args(["-p", "*", "kctl"])
            .status()
            .unwrap();
        assert!(unlocked.success());
        // The test's hosts keep Docker at their own socket (SetEnv in
        // sshd_config); sudo must pass it on, as a VM's default socket
        // would need nothing.
        let rules = "Defaults:kctl env_keep += \"DOCKER_HOST\"\nkctl ALL=(ALL) NOPASSWD: ALL\n";
        let tmp = format!("{SUDOERS}.tmp");
        std::fs::write(&tmp, rules).unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o440))
            .unwrap();
        let ok = Command::new("visudo")
            .args(["-cqf", &tmp])
            .status()
            .unwrap();
        assert!(ok.success(), "sudoers rule invalid");
        std::fs::rename(&tmp, SUDOERS).unwrap();
        SudoUser
    }
}

impl Drop for SudoUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(SUDOERS);
        let _ = Command::new("userdel").arg("kctl").status();
    }
}

/// A route that keeps a range on this machine for the test's life.
struct Unreachable(&'static str);

impl Unreachable {
    fn claim(cidr: &'static str) -> Unreachable {
        let ok = Command::new("ip")
            .args(["route", "add", "unreachable", cidr])
            .status()
            .unwrap();
        assert!(ok.success(), "{cidr} is routed already");
        Unreachable(cidr)
    }
}

impl Drop for Unreachable {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del", "unreachable", self.0])
            .status();
    }
}

/// The whole GCE path with the fake's VMs pointing at SSH hosts the test
/// made: gcloud steps, host keys pinned from guest attributes, boot wait,
/// bootstrap over SSH as `kctl` through sudo, etcd on the master reached
/// through the tunnel, pods on the minions, then `down`: the project is
/// empty and the hosts are as they were.
#[test]
fn a_gce_cluster_on_stand_in_vms_runs_pods_and_goes_away() {
    let hosts = PlainHosts::create("gce", 3);
    let _pods_here = Unreachable::claim("10.244.0.0/14");
    let _user = SudoUser::create();
    let before: Vec<_> = (0..3).map(|i| hosts.snapshot(i)).collect();
    let env = GceEnv::named("e2e", "t-gce");

    // The cluster key, made where `up` looks for it, authorized on the
    // hosts as the guest agent would from the ssh-keys metadata.
    std::fs::create_dir_all(env.cluster_dir()).unwrap();
    let key = env.cluster_dir().join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kctl-t-gce", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    hosts.authorize("kctl", &public);

    let names = [
        "kctl-t-gce-master",
        "kctl-t-gce-minion-1",
        "kctl-t-gce-minion-2",
    ];
    let mut map = serde_json::Map::new();
    for (name, host) in names.iter().zip(hosts.hosts()) {
        let blob = host.host_key.split_whitespace().nth(1).unwrap();
        map.insert(
            name.to_string(),
            serde_json::json!({
                "internal_ip": host.ip.to_string(),
                "external_ip": host.ip.to_string(),
                "hostkeys": {"ssh-ed25519": blob},
            }),
        );
    }
    std::fs::write(
        env.fake_dir().join("hosts.json"),
        serde_json::to_string(&Value::Object(map)).unwrap(),
    )
    .unwrap();

    let portal = hosts.portal_net();
    let run = env.up_with(
        &[
            "--minions",
            "2",
            "--portal-net",
            &portal,
            "--boot-timeout",
            "60",
        ],
        &[],
    );
    assert!(run.ok(), "kctl up --provider gce: {run:?}");
    let minions = env.kctl(&["get", "minions", "-o", "json"]);
    assert!(minions.ok(), "{minions:?}");
    let ready = minions.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "Ready")
        .count();
    assert_eq!(ready, 2, "{minions:?}");

    let tar = env.root.join("demo.tar");
    let build = Command::new("bash")
        .arg(repo().join("cluster/demo-image/build.sh"))
        .arg(&tar)
        .arg("tutum/tomcat:latest")
        .output()
        .unwrap();
    assert!(build.status.success());
    let load = env.kctl(&["image", "load", "-i", tar.to_str().unwrap()]);
    assert!(load.ok(), "{load:?}");
    let apply = env.kctl(&["apply", "-f", &common::manifest("tomcat-controller.json")]);
    assert!(apply.ok(), "{apply:?}");
    let pods = env.kctl(&["get", "pods", "-o", "json"]);
    assert!(pods.ok(), "{pods:?}");
    let items = pods.json()["items"].as_array().cloned().unwrap();
    assert_eq!(items.len(), 2, "{pods:?}");
    for pod in &items {
        assert_eq!(pod["currentState"]["status"], "Running", "{pod}");
        let minion: usize = pod["currentState"]["host"]
            .as_str()
            .unwrap()
            .trim_start_matches("minion-")
            .parse()
            .unwrap();
        let ip = pod["currentState"]["podIP"].as_str().unwrap();
        assert!(
            ip.starts_with(&format!("10.244.{minion}.")),
            "pod range of minion-{minion}: {ip}"
        );
        // On its VM (the master is host 0), the pod answers on its IP.
        let page = hosts.run_in(
            minion,
            &[
                "docker",
                "exec",
                &format!("{}_tomcat", pod["id"].as_str().unwrap()),
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{ip}:8080/"),
            ],
        );
        let text = String::from_utf8_lossy(&page.stdout);
        assert!(text.contains(pod["id"].as_str().unwrap()), "{page:?}");
    }

    let down = env.kctl(&["down"]);
    assert!(down.ok(), "{down:?}");
    assert_eq!(down.stdout.matches("deleted ").count(), 9, "{down:?}");
    assert_eq!(env.resources(), Vec::<String>::new());
    for (i, before) in before.iter().enumerate() {
        let after = hosts.snapshot(i);
        assert!(
            after == *before,
            "host {} changed:\n{}",
            i + 1,
            before.diff(&after)
        );
    }
    assert!(!std::path::Path::new("/var/lib/kctl/t-gce").exists());
}
