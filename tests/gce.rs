//! `kctl up|down --provider gce` end to end: kctl runs the real gcloud,
//! which talks to the mock Compute API (tests/common/mock_compute.rs). The
//! mock's VMs have loopback addresses, so `up` stops at the SSH stage
//! (nothing listens there) after every gcloud step has run; what kctl asked
//! of gcloud, and what gcloud asked of the API, is compared with the goldens
//! in tests/golden/ (`KCTL_BLESS=1` rewrites them).

mod common;

use common::mock_compute::{
    argv_lines, golden, golden_text, read_golden_argv, Call, MockCompute, PROJECT, ZONE,
};
use common::vms::DebianVms;
use common::{repo, Run};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A workstation of its own: KCTL_HOME, a mock Compute API, PATH with the
/// gcloud recorder first.
struct GceEnv {
    root: PathBuf,
    cluster: String,
    mock: MockCompute,
    /// Run `kctl down` on drop (a test whose cluster reached real hosts).
    down_on_drop: bool,
}

impl GceEnv {
    fn new(tag: &str) -> GceEnv {
        GceEnv::named(tag, "demo")
    }

    fn named(tag: &str, cluster: &str) -> GceEnv {
        let root = common::kctl_home().join(format!("gce-{tag}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("home")).unwrap();
        GceEnv {
            root,
            cluster: cluster.to_string(),
            mock: MockCompute::start(&format!("cli-{tag}")),
            down_on_drop: false,
        }
    }

    fn cluster_dir(&self) -> PathBuf {
        self.root.join("home/clusters").join(&self.cluster)
    }

    /// Builds the demo image (as tutum/tomcat:latest) and loads it into
    /// every minion: the VMs reach no registry.
    fn load_demo_image(&self) {
        let tar = self.root.join("demo.tar");
        let build = Command::new("bash")
            .arg(repo().join("cluster/demo-image/build.sh"))
            .arg(&tar)
            .arg("tutum/tomcat:latest")
            .output()
            .unwrap();
        assert!(build.status.success());
        let load = self.kctl(&["image", "load", "-i", tar.to_str().unwrap()]);
        assert!(load.ok(), "{load:?}");
    }

    /// kctl with the mock's gcloud environment (or `gcloud_env`) and PATH
    /// (or `path`).
    fn kctl_with(
        &self,
        args: &[&str],
        gcloud_env: Option<Vec<(String, String)>>,
        path: Option<&str>,
    ) -> Run {
        let default_path = format!(
            "{}:/usr/sbin:/usr/bin:/sbin:/bin",
            self.mock.bin_dir().display()
        );
        let out = Command::new(common::KCTL)
            .args(args)
            .env("KCTL_HOME", self.root.join("home"))
            .env("KCTL_CLUSTER", &self.cluster)
            .env("PATH", path.unwrap_or(&default_path))
            .envs(gcloud_env.unwrap_or_else(|| self.mock.env()))
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
        self.kctl_with(args, None, None)
    }

    /// `kctl up --provider gce --project P --zone Z` and `extra`.
    fn up_with(&self, extra: &[&str]) -> Run {
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
        self.kctl(&args)
    }

    /// A 3-minion `up` that stops at the SSH stage within a second (the
    /// mock's VMs have loopback addresses where nothing listens).
    fn up(&self) -> Run {
        self.up_with(&["--minions", "3", "--boot-timeout", "1"])
    }

    fn golden_text(&self, calls: &[Call]) -> String {
        golden_text(calls, &self.cluster_dir())
    }
}

impl Drop for GceEnv {
    fn drop(&mut self) {
        if self.down_on_drop && self.cluster_dir().exists() {
            let _ = self.kctl(&["down"]);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

fn position(calls: &[Call], needle: &str) -> usize {
    calls
        .iter()
        .position(|c| c.line().contains(needle))
        .unwrap_or_else(|| panic!("no call with {needle:?} in {:#?}", lines(calls)))
}

fn flat(text: &str) -> String {
    text.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn up_and_down_issue_the_golden_gcloud_sequences() {
    let env = GceEnv::new("golden");
    let run = env.up();
    // Every gcloud step ran; then no VM answered SSH (loopback, nothing
    // listens): a clear error that says how to continue or clean up.
    assert!(!run.ok(), "{run:?}");
    let err = flat(&run.stderr);
    assert!(err.contains("not ready after 1s"), "{run:?}");
    assert!(err.contains("kctl down"), "{run:?}");
    let calls = env.mock.take_calls();
    golden("gce-up-3-minions.txt", &env.golden_text(&calls));
    // Stages in order: preflight, the reads that make sure no cluster of
    // the name exists, network, subnet, firewalls, instances, routes, host
    // keys.
    let order = [
        "compute images describe-from-family",
        "compute firewall-rules list",
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

    let mock = &env.mock;
    assert_eq!(mock.resources().len(), 11, "{:?}", mock.resources());
    let record = read_json(env.cluster_dir().join("cluster.json"));
    assert_eq!(record["gce"]["project"], PROJECT);
    assert_eq!(record["minions"].as_array().unwrap().len(), 3);
    let master_ip = mock.instance("kctl-demo-master")["networkInterfaces"][0]["networkIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        record["etcdEndpoints"][0],
        format!("https://{master_ip}:4001"),
        "etcd on the master's internal address"
    );
    let known_hosts = std::fs::read_to_string(env.cluster_dir().join("known_hosts")).unwrap();
    assert_eq!(
        known_hosts.lines().count(),
        4,
        "pinned host keys: {known_hosts}"
    );
    assert!(known_hosts
        .lines()
        .all(|l| l.starts_with("127.77.0.") && l.contains(" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5")));

    // What each VM was given: the cluster's key for user kctl, its own
    // startup script, guest attributes on; routes usable (no warnings).
    let public_key = std::fs::read_to_string(env.cluster_dir().join("id_ed25519.pub")).unwrap();
    for (name, script) in [
        ("kctl-demo-master", "gce-master-startup.sh"),
        ("kctl-demo-minion-2", "gce-minion-2-startup.sh"),
    ] {
        assert_eq!(
            mock.instance_metadata(name, "ssh-keys").unwrap().trim(),
            format!("kctl:{}", public_key.trim())
        );
        assert_eq!(
            mock.instance_metadata(name, "startup-script").unwrap(),
            std::fs::read_to_string(env.cluster_dir().join(script)).unwrap()
        );
        assert_eq!(
            mock.instance_metadata(name, "enable-guest-attributes")
                .as_deref(),
            Some("TRUE")
        );
    }
    let state = mock.state();
    for (name, route) in state["projects"][PROJECT]["routes"].as_object().unwrap() {
        assert!(route.get("warnings").is_none(), "{name}: {route}");
    }

    // Again on the existing cluster: reads only, the same machines read
    // back.
    let before = (
        std::fs::read_to_string(env.cluster_dir().join("cluster.json")).unwrap(),
        known_hosts,
    );
    let again = env.up();
    assert!(!again.ok());
    let calls = env.mock.take_calls();
    assert!(!calls.is_empty());
    assert!(
        !calls.iter().any(Call::changed_anything),
        "re-running up changed something: {:#?}",
        lines(&calls)
    );
    assert_eq!(mock.resources().len(), 11);
    let after = (
        std::fs::read_to_string(env.cluster_dir().join("cluster.json")).unwrap(),
        std::fs::read_to_string(env.cluster_dir().join("known_hosts")).unwrap(),
    );
    assert_eq!(before, after);

    // down with a zone or project other than the record's changes nothing
    // (it used to strip a live cluster's routes, or forget its record).
    for flags in [
        &["--zone", "us-east1-b"][..],
        &["--project", "other-proj-456"],
    ] {
        let mut args = vec!["down"];
        args.extend_from_slice(flags);
        let refused = env.kctl(&args);
        assert!(!refused.ok(), "{refused:?}");
        let text = flat(&refused.stderr);
        assert!(
            text.contains("recorded in project my-proj-123 zone us-central1-b")
                && text.contains("Nothing was changed"),
            "{refused:?}"
        );
        assert!(env.mock.take_calls().is_empty(), "no gcloud call");
        assert_eq!(mock.resources().len(), 11);
        assert!(env.cluster_dir().join("cluster.json").exists());
    }

    // A VM that later publishes another host key (anything in a VM can
    // write guest attributes) stops up before anything is written.
    let other_key = "AAAAC3NzaC1lZDI1NTE5AAAAIMknWvkjbCOKsicY5W+5IfNWfsUFDCpVHTIDik37P5DE";
    mock.set_hosts(json!({"kctl-demo-minion-2": {"hostkeys": {"ssh-ed25519": other_key}}}));
    let changed = env.up();
    assert!(!changed.ok(), "{changed:?}");
    let text = flat(&changed.stderr);
    assert!(
        text.contains("host key changed: kctl-demo-minion-2"),
        "{changed:?}"
    );
    let unwrapped: String = text.split_whitespace().collect();
    assert!(
        unwrapped.contains(&env.cluster_dir().join("known_hosts").display().to_string()),
        "names the file: {changed:?}"
    );
    assert!(
        !text.contains("not ready after"),
        "no SSH attempted: {changed:?}"
    );
    assert_eq!(
        std::fs::read_to_string(env.cluster_dir().join("known_hosts")).unwrap(),
        before.1,
        "the pinned keys stay"
    );
    let calls = env.mock.take_calls();
    assert!(!calls.iter().any(Call::changed_anything));

    // The dry run of down prints exactly what down then runs, and deletes
    // nothing.
    let dry = env.kctl(&["down", "--dry-run"]);
    assert!(dry.ok(), "{dry:?}");
    let printed: Vec<String> = dry
        .stdout
        .lines()
        .filter(|l| l.starts_with("gcloud "))
        .map(str::to_string)
        .collect();
    let calls = env.mock.take_calls();
    // The cluster's five reads and three of its load balancers.
    assert_eq!(lines(&calls).len(), 8);
    assert!(!calls.iter().any(Call::changed_anything));

    // down: the golden sequence, nothing left in the project or here.
    let down = env.kctl(&["down"]);
    assert!(down.ok(), "{down:?}");
    assert_eq!(down.stdout.matches("deleted ").count(), 11, "{down:?}");
    let text = env.golden_text(&env.mock.take_calls());
    golden("gce-down-3-minions.txt", &text);
    assert_eq!(printed, argv_lines(&text), "dry run vs what down ran");
    assert_eq!(mock.resources(), Vec::<String>::new());
    assert!(!env.cluster_dir().exists());
}

#[test]
fn dry_run_prints_the_commands_and_runs_none() {
    let env = GceEnv::new("dryrun");
    let run = env.up_with(&["--minions", "3", "--dry-run"]);
    assert!(run.ok(), "{run:?}");
    // SSH open to the world (2014's rule) is pointed out, with the fix.
    let warning = run
        .stdout
        .lines()
        .find(|l| l.starts_with("# warning: SSH"))
        .unwrap_or_else(|| panic!("no SSH warning: {run:?}"));
    assert!(
        warning.contains("0.0.0.0/0") && warning.contains("--ssh-source"),
        "{warning}"
    );
    let printed: Vec<String> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("gcloud "))
        .map(|l| l.replace(&env.cluster_dir().display().to_string(), "$WORK"))
        .collect();
    // What `up` runs (the golden, which real gcloud ran), but for the
    // serial console reads made only because the golden's VMs never
    // answered SSH.
    let ran: Vec<String> = read_golden_argv("gce-up-3-minions.txt")
        .into_iter()
        .filter(|l| !l.contains(" get-serial-port-output "))
        .collect();
    assert_eq!(sorted(printed.clone()), sorted(ran));
    // In stage order: preflight and the reads that make sure no cluster of
    // the name exists, then network, subnet, firewalls, instances, routes,
    // host keys.
    let at = |needle: &str| {
        printed
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not printed: {printed:#?}"))
    };
    assert!(at("compute firewall-rules list") < at("networks create"));
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
        assert!(at(pair[0]) < at(pair[1]), "{} before {}", pair[0], pair[1]);
    }

    // SSH narrowed to the operator's address: only that rule changes.
    let narrow = env.up_with(&[
        "--minions",
        "3",
        "--ssh-source",
        "203.0.113.7/32",
        "--dry-run",
    ]);
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
    let bad = env.up_with(&["--ssh-source", "203.0.113.7", "--dry-run"]);
    assert!(!bad.ok(), "a source without a prefix length: {bad:?}");
    assert!(env.mock.take_calls().is_empty(), "dry run ran gcloud");
    assert!(env.mock.requests().is_empty(), "dry run reached the API");
    assert!(!env.cluster_dir().exists(), "dry run left a record");
}

#[test]
fn a_failure_half_way_then_down_leaves_nothing() {
    let env = GceEnv::new("halfway");
    // Minion 2's insert is refused for quota (another workload took the
    // region's last CPUs meanwhile): a failure no retry cures, after other
    // VMs exist.
    env.mock
        .fail(json!({"kind": "instances", "name": "kctl-demo-minion-2",
                         "error": "quota", "limit": 3.0, "times": "always"}));
    let run = env.up();
    assert!(!run.ok(), "{run:?}");
    let err = flat(&run.stderr);
    assert!(
        err.contains("kctl-demo-minion-2") && err.contains("Quota 'CPUS' exceeded"),
        "{run:?}"
    );
    // Tried once: an exhausted quota stays exhausted.
    let calls = env.mock.take_calls();
    let tries: Vec<&Call> = calls
        .iter()
        .filter(|c| c.line().contains(" instances create kctl-demo-minion-2 "))
        .collect();
    assert_eq!(tries.len(), 1, "{:#?}", lines(&calls));
    assert!(tries[0].requests.iter().any(|r| r["status"] == 403));
    let made = env.mock.resources();
    assert_eq!(
        made.iter().filter(|r| r.starts_with("instances/")).count(),
        3,
        "{made:?}"
    );
    assert!(!made.iter().any(|r| r.starts_with("routes/")), "{made:?}");
    assert!(
        env.cluster_dir().join("cluster.json").exists(),
        "a record for down"
    );

    let down = env.kctl(&["down"]);
    assert!(down.ok(), "{down:?}");
    assert_eq!(env.mock.resources(), Vec::<String>::new());
    assert!(!env.cluster_dir().exists());
}

/// Cluster `demo` with `minions` minions, made directly in the mock (as
/// another workstation's `kctl up` would have).
fn make_cluster_elsewhere(mock: &MockCompute, minions: usize) {
    let net = "projects/my-proj-123/global/networks/kctl-demo";
    let sub = "projects/my-proj-123/regions/us-central1/subnetworks/kctl-demo-us-central1";
    mock.create(
        "networks",
        json!({"name": "kctl-demo", "autoCreateSubnetworks": false}),
    );
    mock.create(
        "subnetworks",
        json!({"name": "kctl-demo-us-central1", "network": net, "ipCidrRange": "10.240.0.0/16"}),
    );
    for (name, ranges) in [
        ("kctl-demo-internal", vec!["10.240.0.0/16", "10.244.0.0/14"]),
        ("kctl-demo-ssh", vec!["0.0.0.0/0"]),
    ] {
        mock.create(
            "firewalls",
            json!({"name": name, "network": net, "sourceRanges": ranges,
                   "allowed": [{"IPProtocol": "tcp"}]}),
        );
    }
    let names =
        std::iter::once("master".to_string()).chain((1..=minions).map(|i| format!("minion-{i}")));
    for (i, name) in names.enumerate() {
        let role = if i == 0 { "master" } else { "minion" };
        mock.create(
            "instances",
            json!({"name": format!("kctl-demo-{name}"),
                   "machineType": "zones/us-central1-b/machineTypes/f1-micro",
                   "canIpForward": i > 0,
                   "labels": {"kctl-cluster": "demo", "kctl-role": role},
                   "disks": [{"boot": true, "initializeParams": {"diskSizeGb": "10"}}],
                   "networkInterfaces": [{"subnetwork": sub, "accessConfigs": [{"type": "ONE_TO_ONE_NAT"}]}]}),
        );
        if i > 0 {
            mock.create(
                "routes",
                json!({"name": format!("kctl-demo-minion-{i}"), "network": net,
                       "destRange": format!("10.244.{i}.0/24"),
                       "nextHopInstance": format!("projects/my-proj-123/zones/us-central1-b/instances/kctl-demo-minion-{i}")}),
            );
        }
    }
}

#[test]
fn down_finds_a_cluster_whose_record_is_lost() {
    let env = GceEnv::new("lost");
    make_cluster_elsewhere(&env.mock, 3);
    assert_eq!(env.mock.resources().len(), 11);

    // `up` without a record never adopts what it finds: its `down` would
    // delete someone else's cluster.
    let run = env.up();
    assert!(!run.ok(), "{run:?}");
    assert!(flat(&run.stderr).contains("no record of"), "{run:?}");
    let calls = env.mock.take_calls();
    assert!(!calls.is_empty());
    assert!(
        !calls.iter().any(Call::changed_anything),
        "{:#?}",
        lines(&calls)
    );
    assert!(!env.cluster_dir().exists());

    let guess = env.kctl(&["down", "--provider", "gce", "--project", PROJECT]);
    assert!(!guess.ok(), "no zone, no record: {guess:?}");
    assert!(flat(&guess.stderr).contains("which zone"), "{guess:?}");

    let without = env.kctl(&["down"]);
    assert!(without.ok(), "{without:?}");
    assert!(without.stdout.contains("does not exist"), "{without:?}");
    assert_eq!(
        env.mock.resources().len(),
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
    assert_eq!(env.mock.resources(), Vec::<String>::new());
}

#[test]
fn preflight_problems_create_nothing() {
    let env = GceEnv::new("preflight");
    let base = [
        "up",
        "--provider",
        "gce",
        "--project",
        PROJECT,
        "--minions",
        "3",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    type GcloudEnv = Option<Vec<(String, String)>>;
    let cases: [(Vec<String>, GcloudEnv, &str); 3] = [
        (with(&[]), Some(env.mock.env_logged_out()), "not logged in"),
        (with(&["--zone", "us-central1-z"]), None, "us-central1-z"),
        (
            with(&["--machine-type", "n9-imaginary-1"]),
            None,
            "n9-imaginary-1",
        ),
    ];
    for (args, gcloud_env, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = env.kctl_with(&args, gcloud_env, None);
        assert!(!run.ok(), "{run:?}");
        assert!(flat(&run.stderr).contains(expect), "{expect}: {run:?}");
    }
    // A PATH with no gcloud on it.
    let empty = env.root.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let no_gcloud = env.kctl_with(&base, None, Some(empty.to_str().unwrap()));
    assert!(!no_gcloud.ok());
    assert!(
        flat(&no_gcloud.stderr).contains("gcloud not found"),
        "{no_gcloud:?}"
    );

    let calls = env.mock.take_calls();
    assert!(
        !calls.iter().any(Call::changed_anything),
        "a failed preflight changed something: {:#?}",
        lines(&calls)
    );
    assert_eq!(env.mock.resources(), Vec::<String>::new());
    assert!(
        !env.cluster_dir().exists(),
        "no record of a cluster never made"
    );
}

/// Quota shortfalls and organisation policies that would make the VMs
/// unusable stop `up` in preflight: each is named with its fix, and
/// nothing is created.
#[test]
fn quotas_and_policies_are_checked_before_anything_is_created() {
    let env = GceEnv::new("capacity");
    // 1 master + 3 f1-micro minions need 4 CPUs (a new project's quota
    // can be that small).
    env.mock.set_region_quota("us-central1", "CPUS", 3.0);
    // OS Login on for the project is only a warning: the VMs turn it off
    // for themselves.
    env.mock.set_project_metadata("enable-oslogin", "TRUE");
    let short = env.up();
    assert!(!short.ok(), "{short:?}");
    let text = flat(&short.stderr);
    assert!(
        text.contains("turns OS Login on (enable-oslogin=TRUE)"),
        "{short:?}"
    );
    assert!(
        text.contains("CPUS: needs 4, but 0 of 3 are in use"),
        "{short:?}"
    );
    assert!(text.contains("nothing was created"), "{short:?}");
    let calls = env.mock.take_calls();
    assert!(
        !calls.iter().any(Call::changed_anything),
        "{:#?}",
        lines(&calls)
    );
    assert!(!env.cluster_dir().exists());

    env.mock.set_region_quota("us-central1", "CPUS", 24.0);
    for (constraint, says) in [
        ("compute.requireOsLogin", "ignore the ssh-keys metadata"),
        (
            "compute.disableGuestAttributesAccess",
            "cannot publish their SSH host keys",
        ),
    ] {
        env.mock.set_org_policy(constraint, true);
        let refused = env.up();
        assert!(!refused.ok(), "{refused:?}");
        let text = flat(&refused.stderr);
        assert!(
            text.contains(&format!("organisation policy {constraint} is enforced"))
                && text.contains(says),
            "{refused:?}"
        );
        assert!(text.contains("disable-enforce"), "the fix: {refused:?}");
        env.mock.set_org_policy(constraint, false);
    }
    let calls = env.mock.take_calls();
    assert!(
        !calls.iter().any(Call::changed_anything),
        "{:#?}",
        lines(&calls)
    );
    assert_eq!(env.mock.resources(), Vec::<String>::new());
    assert!(!env.cluster_dir().exists());
}

/// A route that keeps a range on this machine for the test's life.
struct Unreachable(&'static str);

impl Unreachable {
    /// Claims `cidr`; an unreachable route for it that a killed earlier
    /// run left is taken over (any other route for it is not).
    fn claim(cidr: &'static str) -> Unreachable {
        let add = || {
            Command::new("ip")
                .args(["route", "add", "unreachable", cidr])
                .status()
                .unwrap()
                .success()
        };
        if !add() {
            let _ = Command::new("ip")
                .args(["route", "del", "unreachable", cidr])
                .status();
            assert!(add(), "{cidr} is routed already, and not by an earlier run");
        }
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

/// The mock's instances are the VMs: same name, the VM's address inside
/// and out, its real host key published in guest attributes.
fn instances_are(vms: &DebianVms) -> Value {
    let mut map = serde_json::Map::new();
    for vm in vms.hosts() {
        let blob = vm.host_key.split_whitespace().nth(1).unwrap();
        map.insert(
            vm.name.clone(),
            json!({
                "internalIp": vm.ip.to_string(),
                "externalIp": vm.ip.to_string(),
                "hostkeys": {"ssh-ed25519": blob},
            }),
        );
    }
    Value::Object(map)
}

/// What GCE's guest environment does once an instance exists: the guest
/// agent makes each `ssh-keys` user (with passwordless sudo), and the
/// startup-script runner runs the `startup-script` metadata, kctl's own
/// script, on the booted machine. Until every VM has started or `stop`.
fn guest_environment(vms: &DebianVms, mock: &MockCompute, stop: &AtomicBool) {
    // A VM that booted for an earlier `up` has run its script already.
    let mut started: Vec<bool> = (0..vms.hosts().len())
        .map(|i| vms.run_in_code(i, &["test", "-e", "/run/kctl-boot/done"]).0 == Some(0))
        .collect();
    while !stop.load(Ordering::SeqCst) && started.iter().any(|s| !s) {
        for (i, vm) in vms.hosts().iter().enumerate() {
            if started[i] {
                continue;
            }
            let (Some(script), Some(keys)) = (
                mock.instance_metadata(&vm.name, "startup-script"),
                mock.instance_metadata(&vm.name, "ssh-keys"),
            ) else {
                continue;
            };
            for line in keys.lines() {
                if let Some((user, key)) = line.split_once(':') {
                    vms.add_guest_user(i, user, key);
                }
            }
            vms.start_startup_script(i, &script);
            started[i] = true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `kctl up` while the guest environment serves the VMs it creates, and
/// `meanwhile` runs beside it (until `up` ends: the flag it is given); the
/// run and when it ended.
fn up_on(
    env: &GceEnv,
    vms: &DebianVms,
    extra: &[&str],
    meanwhile: &(dyn Fn(&AtomicBool) + Sync),
) -> (Run, SystemTime) {
    env.mock.set_hosts(instances_are(vms));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| guest_environment(vms, &env.mock, &stop));
        s.spawn(|| meanwhile(&stop));
        let run = env.up_with(extra);
        let ended = SystemTime::now();
        stop.store(true, Ordering::SeqCst);
        (run, ended)
    })
}

fn nothing_else(_: &AtomicBool) {}

/// The whole GCE path on real Debian 12 machines booted with systemd: the
/// real gcloud creates the VMs in the mock; each VM then runs kctl's own
/// startup script (apt installs docker.io, nftables, iptables, apparmor,
/// etcd-server from Debian's mirror); `up` pins the host keys from guest
/// attributes, waits for the scripts' done markers, bootstraps over SSH as
/// `kctl` through sudo, with etcd and kctl-node as systemd units; pods run
/// on the minions; `down` removes kctl's parts from the VMs and every
/// resource from the project.
/// The end-to-end tests route GCE's pod range on this machine (to
/// nowhere) while they run: one at a time.
static POD_RANGE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_gce_cluster_on_booted_debian_vms_runs_pods_and_goes_away() {
    let _pod_range = POD_RANGE.lock().unwrap_or_else(|e| e.into_inner());
    // The fourth joins when the cluster grows to 3 minions.
    let mut vms = DebianVms::create_named(
        "gce",
        &[
            "kctl-t-gce-master",
            "kctl-t-gce-minion-1",
            "kctl-t-gce-minion-2",
            "kctl-t-gce-minion-3",
        ],
    );
    let _pods_here = Unreachable::claim("10.244.0.0/14");
    let mut env = GceEnv::named("e2e", "t-gce");
    // kctl's parts on the VMs go with `down`, also when the test fails.
    env.down_on_drop = true;
    for i in 0..3 {
        let (code, _) = vms.run_in_code(i, &["sh", "-c", "command -v docker || command -v etcd"]);
        assert_ne!(code, Some(0), "a fresh VM has neither Docker nor etcd");
    }

    let portal = vms.portal_net();
    let (run, _) = up_on(
        &env,
        &vms,
        &[
            "--minions",
            "2",
            "--portal-net",
            &portal,
            "--boot-timeout",
            "300",
        ],
        &nothing_else,
    );
    assert!(run.ok(), "kctl up --provider gce: {run:?}");

    // The startup scripts did their work, said so on the serial console
    // and in their marker; kctl's long-running parts are systemd units.
    let version = env!("CARGO_PKG_VERSION");
    for i in 0..3 {
        let serial = vms.serial_console(i);
        assert!(
            serial.contains(&format!("kctl-boot: done (kctl {version})")),
            "{}: {serial}",
            vms.hosts()[i].name
        );
        // In /run: every boot starts without one.
        assert_eq!(
            vms.run_in_stdout(i, &["cat", "/run/kctl-boot/done"]).trim(),
            format!("{} {version}", kctl::provider::gce::BOOT_FORMAT)
        );
    }
    assert_eq!(
        vms.run_in_stdout(0, &["systemctl", "is-active", "kctl-etcd-t-gce"]),
        "active\n"
    );
    for i in 1..3 {
        assert_eq!(
            vms.run_in_stdout(i, &["systemctl", "is-active", "docker", "kctl-node-t-gce"]),
            "active\nactive\n"
        );
        let installed = vms.run_in_stdout(
            i,
            &[
                "dpkg-query",
                "-W",
                "-f",
                "${Package} ",
                "docker.io",
                "nftables",
                "iptables",
                "apparmor",
            ],
        );
        assert_eq!(installed.trim(), "apparmor docker.io iptables nftables");
    }
    let minions = env.kctl(&["get", "minions", "-o", "json"]);
    assert!(minions.ok(), "{minions:?}");
    let ready = minions.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "Ready")
        .count();
    assert_eq!(ready, 2, "{minions:?}");

    env.load_demo_image();
    let apply = env.kctl(&["apply", "-f", &common::manifest("tomcat-controller.json")]);
    assert!(apply.ok(), "{apply:?}");
    let pods = env.kctl(&["get", "pods", "-o", "json"]);
    assert!(pods.ok(), "{pods:?}");
    let items = pods.json()["items"].as_array().cloned().unwrap();
    assert_eq!(items.len(), 2, "{pods:?}");
    for pod in &items {
        assert_eq!(pod["currentState"]["status"], "Running", "{pod}");
        let minion = common::minion_of(pod);
        let ip = pod["currentState"]["podIP"].as_str().unwrap();
        assert!(
            ip.starts_with(&format!("10.244.{minion}.")),
            "pod range of minion-{minion}: {ip}"
        );
        // On its VM (the master is VM 0), the pod answers on its IP.
        let page = vms.run_in(
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

        // Its VM's helper gets into etcd on the master (VM 0) with its
        // certificate; without one, etcd refuses the TLS handshake.
        let master = vms.hosts()[0].ip;
        let tls = format!("/var/lib/kctl/t-gce/minion-{minion}/tls");
        let url = format!("https://{master}:4001/version");
        let curl = |with_certificate: bool| {
            let argv = common::etcd_curl(&tls, &url, with_certificate);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            vms.run_in(minion, &argv)
        };
        let from_vm = curl(true);
        assert!(
            String::from_utf8_lossy(&from_vm.stdout).contains("etcdserver"),
            "etcd from minion-{minion}'s VM: {from_vm:?}"
        );
        let without = curl(false);
        assert!(
            !without.status.success(),
            "etcd without a client certificate, from minion-{minion}'s VM: {without:?}"
        );
    }

    // A pod reaches no control-plane port on any address of any VM, and
    // nothing on the master, nor GCE's metadata server. The master stands
    // in for that one here: 169.254.169.254 on its loopback, routed to by
    // the minions, with its sshd listening there as a metadata server
    // would (only the guard's metadata rule refuses it: the master's own
    // address is another).
    let master = vms.hosts()[0].ip.to_string();
    let on_master = vms.run_in(0, &["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"]);
    assert!(on_master.status.success(), "{on_master:?}");
    for minion in 1..3 {
        let route = vms.run_in(
            minion,
            &["ip", "route", "add", "169.254.169.254/32", "via", &master],
        );
        assert!(route.status.success(), "{route:?}");
    }
    // (The fourth VM is not the cluster's yet.)
    let machines = vms.fence_machines(3, |i| i > 0);
    for pod in &items {
        let minion = common::minion_of(pod);
        let container = format!("{}_tomcat", pod["id"].as_str().unwrap());
        let checked = common::fence::assert_pod_fenced(
            &machines,
            &|script: &str| vms.sh_stdout(minion, script),
            &|script: &str| vms.in_container(minion, &container, script),
            &container,
        );
        for want in [
            format!("kctl-t-gce-master {master}:4001"),
            format!("kctl-t-gce-master {master}:22"),
            "kctl-t-gce-master 169.254.169.254:22".to_string(),
            format!("kctl-t-gce-minion-1 {}:22", vms.hosts()[1].ip),
            format!("kctl-t-gce-minion-2 {}:22", vms.hosts()[2].ip),
        ] {
            assert!(checked.contains(&want), "{want} not among {checked:?}");
        }
    }
    drop(machines);

    // Grow: a third minion joins, with the image the others were given.
    let (grown, _) = up_on(
        &env,
        &vms,
        &["--minions", "3", "--boot-timeout", "300"],
        &nothing_else,
    );
    assert!(grown.ok(), "{grown:?}");
    assert!(
        grown.stdout.contains("with 3 minions (it had 2)"),
        "{grown:?}"
    );
    assert!(
        grown.stderr.contains("to minion-3"),
        "image copied: {grown:?}"
    );
    let web = env.root.join("web.json");
    std::fs::write(&web, common::web_controller("web", 3)).unwrap();
    let spread = env.kctl(&["apply", "-f", web.to_str().unwrap()]);
    assert!(spread.ok(), "{spread:?}");
    let on_3 = env
        .kctl(&["get", "pods", "-l", "name=web", "-o", "json"])
        .json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["currentState"]["host"] == "minion-3" && p["currentState"]["status"] == "Running"
        })
        .count();
    assert_eq!(on_3, 1, "a replica runs on the new minion");
    // Shrink: its pod moves first, then its VM and route go.
    let (shrunk, _) = up_on(
        &env,
        &vms,
        &["--minions", "2", "--boot-timeout", "300"],
        &nothing_else,
    );
    assert!(shrunk.ok(), "{shrunk:?}");
    assert!(
        shrunk.stdout.contains("with 2 minions (it had 3)"),
        "{shrunk:?}"
    );
    assert!(shrunk.stderr.contains("moved off minion-3"), "{shrunk:?}");
    let left = env
        .kctl(&["get", "pods", "-l", "name=web", "-o", "json"])
        .json();
    let running: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["currentState"]["status"] == "Running")
        .map(|p| p["currentState"]["host"].as_str().unwrap())
        .collect();
    assert_eq!(running.len(), 3, "{left}");
    assert!(!running.contains(&"minion-3"), "{left}");
    assert!(
        !env.mock
            .resources()
            .iter()
            .any(|r| r.contains("minion-3") || r.ends_with("-3")),
        "{:?}",
        env.mock.resources()
    );
    // What deleting the instance does on GCE: the machine is gone.
    vms.kill_vm(3);

    let down = env.kctl(&["down"]);
    assert!(down.ok(), "{down:?}");
    assert_eq!(down.stdout.matches("deleted ").count(), 9, "{down:?}");
    assert_eq!(env.mock.resources(), Vec::<String>::new());
    // What kctl put on the VMs went before they were deleted.
    for i in 0..3 {
        let snapshot = vms.snapshot(i);
        let name = &vms.hosts()[i].name;
        assert!(
            !snapshot.units.iter().any(|u| u.contains("kctl")),
            "{name}: {:?}",
            snapshot.units
        );
        assert!(snapshot.containers.is_empty(), "{name}: {snapshot:?}");
        assert!(
            !snapshot.iptables.iter().any(|l| l.contains("KCTL")),
            "{name}: {:?}",
            snapshot.iptables
        );
        assert!(!snapshot.nft.iter().any(|l| l.contains("kctl")), "{name}");
        let (code, _) = vms.run_in_code(i, &["test", "-e", "/var/lib/kctl/t-gce"]);
        assert_ne!(code, Some(0), "{name}: /var/lib/kctl/t-gce is gone");
    }
}

/// `--masters 3` on GCE: three master VMs, an etcd member on each as a
/// systemd unit, reached through a tunnel to each. A master's power cut
/// changes nothing a user sees: what was applied before is there, changes
/// go on, and the pods start. `down` removes every VM of the cluster, all
/// three masters too.
#[test]
fn three_gce_masters_keep_the_cluster_when_one_is_lost() {
    let _pod_range = POD_RANGE.lock().unwrap_or_else(|e| e.into_inner());
    let mut vms = DebianVms::create_named(
        "gce3",
        &[
            "kctl-t-gce3-master",
            "kctl-t-gce3-master-2",
            "kctl-t-gce3-master-3",
            "kctl-t-gce3-minion-1",
        ],
    );
    let _pods_here = Unreachable::claim("10.244.0.0/14");
    let mut env = GceEnv::named("e2e3", "t-gce3");
    env.down_on_drop = true;
    let portal = vms.portal_net();
    let (run, _) = up_on(
        &env,
        &vms,
        &[
            "--masters",
            "3",
            "--minions",
            "1",
            "--portal-net",
            &portal,
            "--boot-timeout",
            "300",
        ],
        &nothing_else,
    );
    assert!(run.ok(), "kctl up --provider gce --masters 3: {run:?}");
    assert!(
        run.stdout
            .contains("3 masters + 1 minions, etcd of 3 members"),
        "{run:?}"
    );
    for i in 0..3 {
        assert_eq!(
            vms.run_in_stdout(i, &["systemctl", "is-active", "kctl-etcd-t-gce3"]),
            "active\n",
            "{}",
            vms.hosts()[i].name
        );
    }
    let record = read_json(env.cluster_dir().join("cluster.json"));
    assert_eq!(record["etcdHosts"].as_array().unwrap().len(), 3, "{record}");

    env.load_demo_image();

    let web = env.root.join("web.json");
    std::fs::write(&web, common::web_controller("web", 1)).unwrap();
    let apply = env.kctl(&["apply", "-f", web.to_str().unwrap()]);
    assert!(apply.ok(), "{apply:?}");

    // The first master's power is cut: what it held, the others hold too
    // (the controller is there to resize), and they take new changes.
    vms.kill_vm(0);
    let resize = env.kctl(&["resize", "rc", "web", "2"]);
    assert!(resize.ok(), "resize with a master lost: {resize:?}");
    common::wait_for(Duration::from_secs(60), "2 pods running", || {
        let pods = env.kctl(&["get", "pods", "-o", "json"]);
        assert!(pods.ok(), "get with a master lost: {pods:?}");
        let items = pods.json()["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2
            && items
                .iter()
                .all(|p| p["currentState"]["status"] == "Running"))
        .then_some(())
    });

    vms.boot_vm(0);
    let down = env.kctl(&["down"]);
    assert!(down.ok(), "{down:?}");
    for name in ["master", "master-2", "master-3", "minion-1"] {
        let line = format!("deleted instance kctl-t-gce3-{name}\n");
        assert!(down.stdout.contains(&line), "{line}: {down:?}");
    }
    assert_eq!(env.mock.resources(), Vec::<String>::new());
    for i in 0..4 {
        let snapshot = vms.snapshot(i);
        assert!(
            !snapshot.units.iter().any(|u| u.contains("kctl")),
            "{}: {:?}",
            vms.hosts()[i].name,
            snapshot.units
        );
    }
}

/// A startup script that fails (here: the kernel refuses IP forwarding on
/// a minion) is reported with its log as soon as its failure marker is
/// there, without waiting out the boot timeout or for the other VMs. The
/// failure is held back until `up` is waiting for the VMs (its first SSH
/// login as kctl), so what is measured is the wait's own delay.
#[test]
fn a_failing_startup_script_is_reported_with_its_log_at_once() {
    let vms = DebianVms::create_named(
        "gcefail",
        &["kctl-t-gcefail-master", "kctl-t-gcefail-minion-1"],
    );
    vms.write_file(
        1,
        "/usr/local/sbin/sysctl",
        b"#!/bin/sh\nwhile [ ! -e /run/fail-now ]; do sleep 0.2; done\necho 'sysctl: setting key \"net.ipv4.ip_forward\": Read-only file system' >&2\nexit 255\n",
        0o755,
    );
    let release = |stop: &AtomicBool| {
        while !stop.load(Ordering::SeqCst) {
            let log = vms.run_in_stdout(1, &["journalctl", "-q", "-u", "ssh", "--no-pager"]);
            if log.contains("Accepted publickey for kctl") {
                vms.write_file(1, "/run/fail-now", b"", 0o644);
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut env = GceEnv::named("gcefail", "t-gcefail");
    env.down_on_drop = true;
    let (run, ended) = up_on(
        &env,
        &vms,
        &["--minions", "1", "--boot-timeout", "300"],
        &release,
    );
    assert!(!run.ok(), "{run:?}");
    let text = flat(&run.stderr);
    assert!(
        text.contains("minion-1: its startup script failed")
            && text.contains("net.ipv4.ip_forward\": Read-only file system"),
        "{run:?}"
    );
    let marker: u64 = vms
        .run_in_stdout(1, &["stat", "-c", "%Y", "/run/kctl-boot/failed"])
        .trim()
        .parse()
        .unwrap();
    let ended = ended.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(
        ended.saturating_sub(marker) <= 8,
        "up ended {} s after the failure marker",
        ended.saturating_sub(marker)
    );
    let down = env.kctl(&["down"]);
    assert!(down.ok(), "{down:?}");
    assert_eq!(env.mock.resources(), Vec::<String>::new());
}

/// A service with `createExternalLoadBalancer` on GCE gets what v0.5's
/// GCE provider made: a target pool of the minions, a forwarding rule on
/// its port (whose external address shows in `get services` and in the
/// minions' rules), and a firewall rule for the port. Applying it again
/// changes nothing in the cloud; deleting the service, and `down`, remove
/// all three.
#[test]
fn a_load_balanced_service_gets_pool_forwarding_and_firewall_rules_that_go_with_it() {
    let _pod_range = POD_RANGE.lock().unwrap_or_else(|e| e.into_inner());
    // The third joins when the cluster grows to 2 minions.
    let mut vms = DebianVms::create_named(
        "gce-lb",
        &[
            "kctl-t-elb-master",
            "kctl-t-elb-minion-1",
            "kctl-t-elb-minion-2",
        ],
    );
    let _pods_here = Unreachable::claim("10.244.0.0/14");
    let mut env = GceEnv::named("elb", "t-elb");
    env.down_on_drop = true;
    let portal = vms.portal_net();
    let (run, _) = up_on(
        &env,
        &vms,
        &[
            "--minions",
            "1",
            "--portal-net",
            &portal,
            "--boot-timeout",
            "300",
        ],
        &nothing_else,
    );
    assert!(run.ok(), "kctl up --provider gce: {run:?}");

    let manifest = env.root.join("front.json");
    std::fs::write(
        &manifest,
        r#"{"kind": "Service", "apiVersion": "v1beta1", "id": "front", "port": 8080,
            "selector": {"name": "front"}, "createExternalLoadBalancer": true}"#,
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    env.mock.take_calls();
    let apply = env.kctl(&["apply", "-f", manifest]);
    assert!(apply.ok(), "{apply:?}");
    let name = "kctl-t-elb-lb-front";
    let applied = env.golden_text(&env.mock.take_calls());
    assert!(
        apply.stdout.contains(&format!("+ target pool {name}"))
            && apply
                .stdout
                .contains(&format!("+ forwarding rule {name} (TCP 8080"))
            && apply.stdout.contains(&format!("+ firewall rule {name}")),
        "the cloud steps are in the plan: {apply:?}"
    );
    let project = env.mock.state()["projects"][PROJECT].clone();
    let pool = &project["targetPools"][name];
    let members: Vec<&str> = pool["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no target pool {name}: {project:#}"))
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        [format!(
            "projects/{PROJECT}/zones/{ZONE}/instances/kctl-t-elb-minion-1"
        )],
        "{pool:#}"
    );
    let rule = &project["forwardingRules"][name];
    assert_eq!(rule["portRange"], "8080-8080", "{rule:#}");
    assert_eq!(rule["IPProtocol"], "TCP", "{rule:#}");
    assert!(
        rule["target"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/regions/us-central1/targetPools/{name}")),
        "{rule:#}"
    );
    let ip = rule["IPAddress"].as_str().unwrap().to_string();
    let firewall = &project["firewalls"][name];
    assert_eq!(
        firewall["allowed"],
        json!([{"IPProtocol": "tcp", "ports": ["8080"]}]),
        "{firewall:#}"
    );
    assert_eq!(firewall["sourceRanges"], json!(["0.0.0.0/0"]));
    assert_eq!(firewall["targetTags"], json!(["kctl-t-elb-minion"]));
    assert!(firewall["network"]
        .as_str()
        .unwrap()
        .ends_with("/global/networks/kctl-t-elb"));

    let table = env.kctl(&["get", "services"]);
    assert!(table.ok(), "{table:?}");
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("front"))
        .unwrap();
    assert!(
        table.stdout.contains("EXTERNAL IP") && row.contains(&ip),
        "{table:?}"
    );
    let v1 = env.kctl(&[
        "get",
        "services",
        "front",
        "-o",
        "json",
        "--output-version",
        "v1",
    ]);
    assert!(v1.ok(), "{v1:?}");
    assert_eq!(
        v1.json()["status"]["loadBalancer"]["ingress"],
        json!([{"ip": ip}]),
        "{v1:?}"
    );
    // The forwarding rule hands the minion packets addressed to its IP:
    // the minion's rules take that address as the service's.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rules = vms.run_in_stdout(1, &["nft", "list", "set", "ip", "kctl", "published"]);
        if rules.contains(&ip) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ip} not among the minion's published addresses: {rules}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // The pool follows the minions: `up` adds the new one (which answers
    // on the address too), and removes it when the cluster shrinks.
    let pool_members = |env: &GceEnv| -> Vec<String> {
        let pool = env.mock.state()["projects"][PROJECT]["targetPools"][name].clone();
        pool["instances"]
            .as_array()
            .unwrap_or_else(|| panic!("no target pool {name}: {pool}"))
            .iter()
            .map(|i| i.as_str().unwrap().rsplit('/').next().unwrap().to_string())
            .collect()
    };
    let (grown, _) = up_on(
        &env,
        &vms,
        &["--minions", "2", "--boot-timeout", "300"],
        &nothing_else,
    );
    assert!(grown.ok(), "{grown:?}");
    assert_eq!(
        pool_members(&env),
        ["kctl-t-elb-minion-1", "kctl-t-elb-minion-2"]
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !vms
        .run_in_stdout(2, &["nft", "list", "set", "ip", "kctl", "published"])
        .contains(&ip)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{ip} not published on minion-2"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let (shrunk, _) = up_on(
        &env,
        &vms,
        &["--minions", "1", "--boot-timeout", "300"],
        &nothing_else,
    );
    assert!(shrunk.ok(), "{shrunk:?}");
    assert_eq!(pool_members(&env), ["kctl-t-elb-minion-1"]);
    // What deleting the instance does on GCE: the machine is gone.
    vms.kill_vm(2);

    // Unchanged: no gcloud call that changes anything.
    env.mock.take_calls();
    let again = env.kctl(&["apply", "-f", manifest]);
    assert!(again.ok(), "{again:?}");
    assert!(!again.stdout.contains("Cloud"), "{again:?}");
    let calls = env.mock.take_calls();
    assert!(
        !calls.iter().any(Call::changed_anything),
        "{:#?}",
        lines(&calls)
    );

    let lb_parts = |env: &GceEnv| -> Vec<String> {
        env.mock
            .resources()
            .into_iter()
            .filter(|r| r.ends_with(name))
            .collect()
    };
    assert_eq!(lb_parts(&env).len(), 3, "{:?}", env.mock.resources());
    // The field turned off: the service stays, its load balancer goes.
    let off = env.root.join("front-off.json");
    std::fs::write(
        &off,
        std::fs::read_to_string(manifest)
            .unwrap()
            .replace("true", "false"),
    )
    .unwrap();
    let turned_off = env.kctl(&["apply", "-f", off.to_str().unwrap()]);
    assert!(turned_off.ok(), "{turned_off:?}");
    assert!(
        turned_off
            .stdout
            .contains(&format!("- forwarding rule {name}")),
        "{turned_off:?}"
    );
    assert_eq!(lb_parts(&env), Vec::<String>::new());
    let table = env.kctl(&["get", "services"]);
    assert!(
        table.stdout.contains("front") && !table.stdout.contains(&ip),
        "{table:?}"
    );
    let back = env.kctl(&["apply", "-f", manifest]);
    assert!(back.ok(), "{back:?}");
    assert_eq!(lb_parts(&env).len(), 3, "{:?}", env.mock.resources());
    env.mock.take_calls();
    let delete = env.kctl(&["delete", "services", "front"]);
    assert!(delete.ok(), "{delete:?}");
    assert_eq!(lb_parts(&env), Vec::<String>::new());
    // What apply and delete asked of gcloud, and gcloud of the API.
    let deleted = env.golden_text(&env.mock.take_calls());
    golden(
        "gce-load-balancer.txt",
        &format!("# kctl apply -f front.json\n{applied}# kctl delete services front\n{deleted}"),
    );
    let table = env.kctl(&["get", "services"]);
    assert!(!table.stdout.contains("203.0.113."), "{table:?}");

    // `down` finds a load balancer whose service is still there.
    let apply = env.kctl(&["apply", "-f", manifest]);
    assert!(apply.ok(), "{apply:?}");
    assert_eq!(lb_parts(&env).len(), 3, "{:?}", env.mock.resources());
    let down = env.kctl(&["down"]);
    assert!(down.ok(), "{down:?}");
    assert!(
        down.stdout
            .contains(&format!("deleted forwarding rule {name}")),
        "{down:?}"
    );
    assert_eq!(env.mock.resources(), Vec::<String>::new());
}

/// An ext4 filesystem in a file on a loop device: a persistent disk's
/// contents, which the test hands to whichever VM GCE (the mock) says the
/// disk is attached to. Detached and removed on drop.
struct LoopDisk {
    name: String,
    file: PathBuf,
    device: String,
    major: u32,
    minor: u32,
}

impl LoopDisk {
    fn new(name: &str, dir: &std::path::Path) -> LoopDisk {
        let file = dir.join(format!("{name}.img"));
        let run = |program: &str, args: &[&str]| -> String {
            let out = Command::new(program).args(args).output().unwrap();
            assert!(out.status.success(), "{program} {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let path = file.to_str().unwrap();
        run("truncate", &["-s", "64M", path]);
        run("mkfs.ext4", &["-q", "-F", path]);
        let device = run("losetup", &["-f", "--show", path]);
        let numbers = run("stat", &["-c", "%t %T", &device]);
        let (major, minor) = numbers.split_once(' ').unwrap();
        LoopDisk {
            name: name.to_string(),
            file,
            major: u32::from_str_radix(major, 16).unwrap(),
            minor: u32::from_str_radix(minor, 16).unwrap(),
            device,
        }
    }

    /// Whether the filesystem is mounted in VM `i` (in its own mount
    /// namespace, where its dockerd mounts volumes).
    fn mounted_in(&self, vms: &DebianVms, i: usize) -> bool {
        let Some(pid1) = vms.pid1(i) else {
            return false;
        };
        let info = std::fs::read_to_string(format!("/proc/{pid1}/mountinfo")).unwrap_or_default();
        let numbers = format!("{}:{}", self.major, self.minor);
        info.lines()
            .any(|l| l.split_whitespace().nth(2) == Some(numbers.as_str()))
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// What GCE does with an attached disk, played from the mock's state: the
/// guest of the instance it is attached to has the device at
/// `/dev/disk/by-id/google-NAME`; once detached, it is gone there. A
/// detach while the guest still has the filesystem mounted (which on GCE
/// loses what was not written) is recorded in `violations`. Until `stop`.
fn disks_follow_the_mock(
    vms: &DebianVms,
    mock: &MockCompute,
    disk: &LoopDisk,
    stop: &AtomicBool,
    violations: &std::sync::Mutex<Vec<String>>,
) {
    let link = format!("/dev/disk/by-id/google-{}", disk.name);
    let mut present = vec![false; vms.hosts().len()];
    while !stop.load(Ordering::SeqCst) {
        let instances = mock.state()["projects"][PROJECT]["instances"].clone();
        for (i, vm) in vms.hosts().iter().enumerate() {
            if !vms.is_running(i) {
                continue;
            }
            let attached = instances[&vm.name]["disks"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| {
                    d["deviceName"] == disk.name.as_str()
                        && d["source"]
                            .as_str()
                            .is_some_and(|s| s.ends_with(&format!("/disks/{}", disk.name)))
                });
            if attached && !present[i] {
                vms.allow_block_device(i, disk.major, disk.minor);
                let made = vms.sh(
                    i,
                    &format!(
                        "mkdir -p /dev/disk/by-id && mknod {link} b {} {} && echo made",
                        disk.major, disk.minor
                    ),
                );
                present[i] = made.contains("made");
            } else if !attached && present[i] {
                if disk.mounted_in(vms, i) {
                    violations.lock().unwrap().push(format!(
                        "{} detached from {} while mounted there",
                        disk.name, vm.name
                    ));
                }
                vms.sh(i, &format!("rm -f {link}"));
                present[i] = false;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sets the flag when dropped: a scoped helper thread stops also when the
/// test body panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A pod's `persistentDisk` on a GCE cluster, end to end on booted VMs:
/// `apply` attaches the disk (read-write) to the pod's minion and the pod
/// writes to it; when a change moves the pod to the other minion, one
/// `apply` converges the old minion (the filesystem is unmounted), detaches
/// the disk, attaches it to the new minion and starts the pod there, which
/// reads what was written; deleting the pod detaches the disk; `down`
/// leaves the disk, the user's data, in the project.
#[test]
fn a_persistent_disk_follows_its_pod_to_another_minion_and_outlives_the_cluster() {
    let _pod_range = POD_RANGE.lock().unwrap_or_else(|e| e.into_inner());
    let vms = DebianVms::create_named(
        "gce-pd",
        &[
            "kctl-t-pd-master",
            "kctl-t-pd-minion-1",
            "kctl-t-pd-minion-2",
        ],
    );
    let _pods_here = Unreachable::claim("10.244.0.0/14");
    let mut env = GceEnv::named("pd", "t-pd");
    env.down_on_drop = true;
    let disk = LoopDisk::new("pd-data", &env.root);
    env.mock
        .create("disks", json!({"name": "pd-data", "sizeGb": "10"}));
    let stop = AtomicBool::new(false);
    let violations = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        s.spawn(|| disks_follow_the_mock(&vms, &env.mock, &disk, &stop, &violations));
        let _stop = StopOnDrop(&stop);
        let no_violation = || {
            let seen = violations.lock().unwrap();
            assert!(seen.is_empty(), "{seen:?}");
        };
        let users = || -> Vec<String> {
            env.mock.state()["projects"][PROJECT]["disks"]["pd-data"]["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().rsplit('/').next().unwrap().to_string())
                .collect()
        };

        let portal = vms.portal_net();
        let (run, _) = up_on(
            &env,
            &vms,
            &[
                "--minions",
                "1",
                "--portal-net",
                &portal,
                "--boot-timeout",
                "300",
            ],
            &nothing_else,
        );
        assert!(run.ok(), "kctl up --provider gce: {run:?}");
        env.load_demo_image();

        let pod = |id: &str, host_port: Option<u16>, disk: bool| -> String {
            let port = match host_port {
                Some(p) => format!(r#"{{"containerPort": 8080, "hostPort": {p}}}"#),
                None => r#"{"containerPort": 8080}"#.to_string(),
            };
            let (volumes, mounts) = if disk {
                (
                    r#""volumes": [{"name": "data", "source": {"persistentDisk": {"pdName": "pd-data", "fsType": "ext4"}}}],"#,
                    r#", "volumeMounts": [{"name": "data", "mountPath": "/data"}]"#,
                )
            } else {
                ("", "")
            };
            format!(
                r#"{{"id": "{id}", "kind": "Pod", "apiVersion": "v1beta1", "labels": {{"name": "{id}"}},
                  "desiredState": {{"manifest": {{"version": "v1beta1", "id": "{id}", {volumes}
                    "containers": [{{"name": "web", "image": "tutum/tomcat", "ports": [{port}]{mounts}}}]}}}}}}"#
            )
        };
        let file = |name: &str, text: String| -> String {
            let path = env.root.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_string()
        };
        let blocker = file("blocker.json", pod("blocker", Some(8080), false));
        let writer = file("writer.json", pod("writer", None, true));
        let apply = env.kctl(&["apply", "-f", &blocker, "-f", &writer]);
        assert!(apply.ok(), "{apply:?}");
        assert!(
            apply
                .stdout
                .contains("+ disk pd-data attached to kctl-t-pd-minion-1 (read-write)"),
            "{apply:?}"
        );
        assert_eq!(users(), ["kctl-t-pd-minion-1"]);
        let wrote = vms.run_in(
            1,
            &[
                "docker",
                "exec",
                "writer_web",
                "sh",
                "-c",
                "echo kept-on-the-disk > /data/note && sync",
            ],
        );
        assert!(wrote.status.success(), "{wrote:?}");
        assert!(disk.mounted_in(&vms, 1));

        let (grown, _) = up_on(
            &env,
            &vms,
            &["--minions", "2", "--boot-timeout", "300"],
            &nothing_else,
        );
        assert!(grown.ok(), "{grown:?}");
        // The blocker holds port 8080 on minion-1: the changed writer
        // (which wants it too) goes to minion-2, and its disk with it.
        let moved = file("writer-moved.json", pod("writer", Some(8080), true));
        // Minion-1's helper would remove the old container as soon as etcd
        // says so: stopped, only apply's own order (converge the old
        // minion, then detach) keeps the disk from going while mounted.
        let helper = ["systemctl", "stop", "kctl-node-t-pd"];
        assert!(vms.run_in(1, &helper).status.success());
        assert!(
            disk.mounted_in(&vms, 1),
            "the writer still has the disk mounted on minion-1"
        );
        // The plan shows the disk's move; a dry run makes none of it.
        let dry = env.kctl(&["apply", "--dry-run", "-f", &moved]);
        assert!(dry.ok(), "{dry:?}");
        assert!(
            dry.stdout
                .contains("- disk pd-data detached from kctl-t-pd-minion-1")
                && dry
                    .stdout
                    .contains("+ disk pd-data attached to kctl-t-pd-minion-2 (read-write)"),
            "{dry:?}"
        );
        assert_eq!(users(), ["kctl-t-pd-minion-1"]);
        env.mock.take_calls();
        let apply = env.kctl(&["apply", "-f", &moved]);
        assert!(apply.ok(), "{apply:?}");
        let applied = env.golden_text(&env.mock.take_calls());
        for line in [
            "- disk pd-data detached from kctl-t-pd-minion-1",
            "+ disk pd-data attached to kctl-t-pd-minion-2 (read-write)",
        ] {
            assert!(apply.stdout.contains(line), "{line}: {apply:?}");
        }
        assert_eq!(users(), ["kctl-t-pd-minion-2"]);
        assert!(!disk.mounted_in(&vms, 1), "unmounted on minion-1");
        let pods = env.kctl(&["get", "pods", "writer", "-o", "json"]);
        assert!(pods.ok(), "{pods:?}");
        assert_eq!(pods.json()["currentState"]["host"], "minion-2", "{pods:?}");
        assert_eq!(pods.json()["currentState"]["status"], "Running", "{pods:?}");
        let read = vms.run_in(2, &["docker", "exec", "writer_web", "cat", "/data/note"]);
        assert_eq!(
            String::from_utf8_lossy(&read.stdout).trim(),
            "kept-on-the-disk",
            "{read:?}"
        );
        no_violation();
        let helper = ["systemctl", "start", "kctl-node-t-pd"];
        assert!(vms.run_in(1, &helper).status.success());

        // Unchanged: no disk step, no gcloud call that changes anything.
        let again = env.kctl(&["apply", "-f", &moved]);
        assert!(again.ok(), "{again:?}");
        assert!(!again.stdout.contains("Disks"), "{again:?}");
        assert!(
            !env.mock.take_calls().iter().any(Call::changed_anything),
            "an unchanged apply changed something in the cloud"
        );

        let delete = env.kctl(&["delete", "pods", "writer"]);
        assert!(delete.ok(), "{delete:?}");
        assert!(
            delete
                .stdout
                .contains("- disk pd-data detached from kctl-t-pd-minion-2"),
            "{delete:?}"
        );
        let deleted = env.golden_text(&env.mock.take_calls());
        assert_eq!(users(), Vec::<String>::new());
        golden(
            "gce-persistent-disk.txt",
            &format!(
                "# kctl apply -f writer-moved.json\n{applied}# kctl delete pods writer\n{deleted}"
            ),
        );
        no_violation();

        // A controller's pod writing the disk: a rolling update replaces
        // it in place (old pod first, the new one on the same minion, the
        // disk left attached); shrinking the cluster moves it, and the
        // disk with it, to the minion that stays.
        let keeper = r#"{"id": "keeper", "kind": "ReplicationController", "apiVersion": "v1beta1",
          "desiredState": {"replicas": 1, "replicaSelector": {"name": "keeper"},
            "podTemplate": {"labels": {"name": "keeper"}, "desiredState": {"manifest": {
              "version": "v1beta1", "id": "keeper",
              "volumes": [{"name": "data", "source": {"persistentDisk": {"pdName": "pd-data"}}}],
              "containers": [{"name": "web", "image": "tutum/tomcat",
                "ports": [{"containerPort": 8080, "hostPort": 8080}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}}},
          "labels": {"name": "keeper"}}"#;
        let keeper = file("keeper.json", keeper.to_string());
        let apply = env.kctl(&["apply", "-f", &keeper]);
        assert!(apply.ok(), "{apply:?}");
        let keeper_pod = || -> (String, String) {
            let pods = env.kctl(&["get", "pods", "-l", "name=keeper", "-o", "json"]);
            let items = pods.json()["items"].as_array().cloned().unwrap();
            assert_eq!(items.len(), 1, "{pods:?}");
            (
                items[0]["id"].as_str().unwrap().to_string(),
                items[0]["currentState"]["host"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        };
        let reads_the_note = |vm: usize, pod: &str| {
            let read = vms.run_in(
                vm,
                &["docker", "exec", &format!("{pod}_web"), "cat", "/data/note"],
            );
            assert_eq!(
                String::from_utf8_lossy(&read.stdout).trim(),
                "kept-on-the-disk",
                "{read:?}"
            );
        };
        let (first, host) = keeper_pod();
        assert_eq!(host, "minion-2", "the blocker holds port 8080 on minion-1");
        assert_eq!(users(), ["kctl-t-pd-minion-2"]);
        reads_the_note(2, &first);
        let rolled = env.kctl(&[
            "rollingupdate",
            "rc",
            "keeper",
            "--image",
            "tutum/tomcat:latest",
            "--update-period",
            "0s",
        ]);
        assert!(rolled.ok(), "{rolled:?}");
        let (second, host) = keeper_pod();
        assert_ne!(second, first);
        assert_eq!(host, "minion-2", "replaced in place: {rolled:?}");
        assert_eq!(users(), ["kctl-t-pd-minion-2"]);
        reads_the_note(2, &second);

        let delete = env.kctl(&["delete", "pods", "blocker"]);
        assert!(delete.ok(), "{delete:?}");
        let (shrunk, _) = up_on(
            &env,
            &vms,
            &["--minions", "1", "--boot-timeout", "300"],
            &nothing_else,
        );
        assert!(shrunk.ok(), "{shrunk:?}");
        let (third, host) = keeper_pod();
        assert_eq!(host, "minion-1", "{shrunk:?}");
        assert_eq!(users(), ["kctl-t-pd-minion-1"], "{shrunk:?}");
        reads_the_note(1, &third);
        no_violation();

        let down = env.kctl(&["down"]);
        assert!(down.ok(), "{down:?}");
        assert_eq!(env.mock.resources(), Vec::<String>::new());
        let kept = &env.mock.state()["projects"][PROJECT]["disks"]["pd-data"];
        assert_eq!(kept["users"], json!([]), "the disk stays, free: {kept:#}");
    });
}
