//! The engine against tests/fake-gcloud: the full command sequences of `up`
//! and `down` (goldens in tests/golden/, `KCTL_BLESS=1` rewrites them),
//! idempotency, failures half-way, preflight failures, host-key polling.
//! No root, no network: the fake keeps its state in a temp directory.

use super::tests::{spec as base_spec, ED25519};
use super::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake-gcloud/gcloud");
const PROJECT: &str = "my-proj-123";
const ZONE: &str = "us-central1-b";

struct Fake {
    dir: PathBuf,
    gcloud: GcloudProcess,
}

impl Fake {
    /// A fresh fake with its own state directory; `env` goes to the fake
    /// only (tests run in parallel, the test process's env is shared).
    fn new(test: &str, env: &[(&str, &str)]) -> Fake {
        let dir =
            std::env::temp_dir().join(format!("kctl-fake-gcloud-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut gcloud =
            GcloudProcess::with_program(FAKE).env("FAKE_GCLOUD_DIR", &dir.display().to_string());
        // The fake's `#!/usr/bin/env python3` through a pyenv shim costs
        // ~200 ms a call; the system python is as good for it.
        let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
        gcloud = gcloud.env("PATH", &path);
        for (k, v) in env {
            gcloud = gcloud.env(k, v);
        }
        Fake { dir, gcloud }
    }

    fn spec(&self, minions: usize) -> GceSpec {
        let mut spec = base_spec(minions);
        spec.work_dir = self.dir.join("work");
        spec.host_key_poll = Duration::from_millis(20);
        spec.host_key_timeout = Duration::from_secs(20);
        spec.create_attempts = 3;
        spec.retry_backoff = Duration::from_millis(10);
        spec
    }

    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.dir.join("calls.log"));
    }

    fn state(&self) -> Value {
        std::fs::read_to_string(self.dir.join("state.json"))
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap_or(Value::Null)
    }

    /// Names of everything the fake's project holds.
    fn resources(&self) -> Vec<String> {
        let state = self.state();
        let mut out = vec![];
        if let Some(project) = state.pointer(&format!("/projects/{PROJECT}")) {
            for table in [
                "instances",
                "routes",
                "firewalls",
                "subnetworks",
                "networks",
            ] {
                if let Some(items) = project.get(table).and_then(Value::as_object) {
                    out.extend(items.keys().map(|k| format!("{table}/{k}")));
                }
            }
        }
        out
    }

    fn created_anything(&self) -> bool {
        self.calls().iter().any(|c| c.iter().any(|a| a == "create"))
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn quiet(_: &str) {}

/// The words before the verb: "compute networks" vs "compute networks
/// subnets". Calls of one parallel stage share it.
fn group(argv: &[String]) -> String {
    let verbs = [
        "create",
        "describe",
        "delete",
        "list",
        "get-guest-attributes",
        "describe-from-family",
    ];
    argv.iter()
        .skip(1)
        .take_while(|a| !verbs.contains(&a.as_str()))
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first word after the verb: the resource a call is about.
fn target(argv: &[String]) -> String {
    let g = group(argv);
    let skip = 1 + g.split(' ').count() + 1;
    argv.get(skip)
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_default()
}

/// Call log as golden text: temp paths replaced, calls of a parallel stage
/// (consecutive calls of one group) sorted, one shell line per call.
fn normalise(calls: &[Vec<String>], work_dir: &Path) -> String {
    let work = work_dir.display().to_string();
    let lines: Vec<(String, String)> = calls
        .iter()
        .map(|c| (group(c), shell_line(c).replace(&work, "$WORK")))
        .collect();
    let mut out = vec![];
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        while j < lines.len() && lines[j].0 == lines[i].0 {
            j += 1;
        }
        // By target name, keeping each target's own calls in order
        // (describe, then create).
        let mut stage: Vec<(String, String)> = lines[i..j]
            .iter()
            .zip(&calls[i..j])
            .map(|((_, l), c)| (target(c), l.clone()))
            .collect();
        stage.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(stage.into_iter().map(|(_, l)| l));
        i = j;
    }
    out.join("\n") + "\n"
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("KCTL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (KCTL_BLESS=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (KCTL_BLESS=1 rewrites it)",
        path.display()
    );
}

#[tokio::test]
async fn up_and_down_issue_the_golden_command_sequences() {
    let fake = Fake::new("golden", &[]);
    let spec = fake.spec(3);
    let lines = std::sync::Mutex::new(vec![]);
    let progress = |l: &str| lines.lock().unwrap().push(l.to_string());
    let (report, cluster) = up(&fake.gcloud, &spec, &progress).await.unwrap();
    assert_eq!(report.account, "tester@example.com");
    assert!(report.warnings.is_empty());

    let up_calls = fake.calls();
    golden(
        "gce-up-3-minions.txt",
        &normalise(&up_calls, &spec.work_dir),
    );
    // The dry run is the same sequence.
    assert_eq!(
        normalise(&up_commands(&spec).unwrap(), &spec.work_dir),
        normalise(&up_calls, &spec.work_dir)
    );

    // Addresses: 10.240.0.2.. in creation order (parallel, so any order),
    // loopback external addresses, one pinned ed25519 key each.
    assert_eq!(cluster.master.name, "kctl-demo-master");
    let names: Vec<&str> = cluster.minions.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kctl-demo-minion-1",
            "kctl-demo-minion-2",
            "kctl-demo-minion-3"
        ]
    );
    let mut internal: Vec<String> = std::iter::once(&cluster.master)
        .chain(&cluster.minions)
        .map(|i| {
            assert!(i.external_ip.is_loopback(), "{i:?}");
            assert_eq!(i.external_ip.octets()[3], i.internal_ip.octets()[3]);
            assert_eq!(i.host_keys.len(), 1);
            assert!(i.host_keys[0].starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"));
            i.internal_ip.to_string()
        })
        .collect();
    internal.sort();
    assert_eq!(
        internal,
        ["10.240.0.2", "10.240.0.3", "10.240.0.4", "10.240.0.5"]
    );
    let progress_lines = lines.lock().unwrap().clone();
    assert!(progress_lines
        .iter()
        .any(|l| l == "creating network kctl-demo"));

    // Routes read back without warnings once the minions exist.
    let route = fake
        .gcloud
        .run(&commands::route_describe(PROJECT, "kctl-demo-minion-2"))
        .await
        .unwrap();
    let route: Value = serde_json::from_str(&route.stdout).unwrap();
    assert_eq!(route["destRange"], "10.244.2.0/24");
    assert!(route.get("warnings").is_none(), "{route}");

    // The metadata the instances got.
    let keys = std::fs::read_to_string(spec.work_dir.join("gce-ssh-keys")).unwrap();
    assert_eq!(keys, format!("kctl:ssh-ed25519 {ED25519} kctl@test\n"));

    fake.clear_calls();
    let found = discover(&fake.gcloud, PROJECT, ZONE, "demo", Knowledge::Recorded)
        .await
        .unwrap();
    assert_eq!(found, engine::planned(&spec).unwrap());
    fake.clear_calls();
    let deleted = destroy(
        &fake.gcloud,
        PROJECT,
        ZONE,
        "demo",
        Knowledge::Recorded,
        &quiet,
    )
    .await
    .unwrap();
    assert_eq!(deleted, found.lines());
    assert!(deleted.contains(&"instance kctl-demo-minion-1".to_string()));
    let down_calls = fake.calls();
    golden(
        "gce-down-3-minions.txt",
        &normalise(&down_calls, &spec.work_dir),
    );
    assert_eq!(
        normalise(
            &down_commands(PROJECT, ZONE, "demo", &found).unwrap(),
            &spec.work_dir
        ),
        normalise(&down_calls, &spec.work_dir)
    );
    assert!(fake.resources().is_empty(), "{:?}", fake.resources());
}

#[tokio::test]
async fn up_again_creates_nothing_and_reads_the_same_cluster() {
    let fake = Fake::new("rerun", &[]);
    let spec = fake.spec(2);
    let first = create(&fake.gcloud, &spec, &quiet).await.unwrap();
    fake.clear_calls();
    let second = create(&fake.gcloud, &spec, &quiet).await.unwrap();
    assert_eq!(first, second);
    assert!(!fake.created_anything(), "{:#?}", fake.calls());
    destroy(
        &fake.gcloud,
        PROJECT,
        ZONE,
        "demo",
        Knowledge::Recorded,
        &quiet,
    )
    .await
    .unwrap();
    assert!(fake.resources().is_empty());
}

#[tokio::test]
async fn a_failure_half_way_is_reported_and_down_cleans_up() {
    // Minion 2's create fails every time: up stops after its retries.
    let fake = Fake::new(
        "halfway",
        &[(
            "FAKE_GCLOUD_FAIL",
            "always:instances create kctl-demo-minion-2 ",
        )],
    );
    let spec = fake.spec(3);
    let err = create(&fake.gcloud, &spec, &quiet).await.unwrap_err();
    assert!(matches!(err, GceError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("Internal error"), "{err}");
    let tries = fake
        .calls()
        .iter()
        .filter(|c| c[3] == "create" && c[4] == "kctl-demo-minion-2")
        .count();
    assert_eq!(tries, 3);
    // No route was made: that stage never started.
    assert!(!fake.resources().iter().any(|r| r.starts_with("routes/")));
    assert!(fake
        .resources()
        .contains(&"instances/kctl-demo-minion-3".to_string()));

    // down needs only project, zone and cluster.
    let deleted = destroy(
        &fake.gcloud,
        PROJECT,
        ZONE,
        "demo",
        Knowledge::Recorded,
        &quiet,
    )
    .await
    .unwrap();
    assert!(deleted.contains(&"network kctl-demo".to_string()));
    assert!(!deleted.contains(&"instance kctl-demo-minion-2".to_string()));
    assert!(fake.resources().is_empty(), "{:?}", fake.resources());
    // And again: nothing left, nothing to do.
    assert!(destroy(
        &fake.gcloud,
        PROJECT,
        ZONE,
        "demo",
        Knowledge::Recorded,
        &quiet
    )
    .await
    .unwrap()
    .is_empty());
}

#[tokio::test]
async fn a_transient_create_failure_is_retried() {
    let fake = Fake::new(
        "transient",
        &[("FAKE_GCLOUD_FAIL", "routes create kctl-demo-minion-1 ")],
    );
    let spec = fake.spec(1);
    create(&fake.gcloud, &spec, &quiet).await.unwrap();
    let calls = fake.calls();
    let route_calls: Vec<&str> = calls
        .iter()
        .filter(|c| c[2] == "routes")
        .map(|c| c[3].as_str())
        .collect();
    // describe, create (fails), describe (absent), create (works).
    assert_eq!(route_calls, ["describe", "create", "describe", "create"]);
    destroy(
        &fake.gcloud,
        PROJECT,
        ZONE,
        "demo",
        Knowledge::Recorded,
        &quiet,
    )
    .await
    .unwrap();
}

async fn preflight_error(fake: &Fake, spec: &GceSpec) -> GceError {
    let err = preflight(&fake.gcloud, spec).await.unwrap_err();
    assert!(!fake.created_anything());
    assert!(fake.resources().is_empty());
    err
}

#[tokio::test]
async fn preflight_failures_are_clear_and_create_nothing() {
    use miette::Diagnostic;
    let help = |e: &GceError| e.help().map(|h| h.to_string()).unwrap_or_default();

    let fake = Fake::new("nologin", &[("FAKE_GCLOUD_ACCOUNT", "")]);
    let err = preflight_error(&fake, &fake.spec(1)).await;
    assert!(matches!(err, GceError::NotLoggedIn), "{err}");
    assert!(help(&err).contains("gcloud auth login"));

    let fake = Fake::new("zone", &[]);
    let mut spec = fake.spec(1);
    spec.zone = "us-central1-z".into();
    let err = preflight_error(&fake, &spec).await;
    assert!(matches!(err, GceError::Zone { .. }), "{err}");
    assert!(err.to_string().contains("us-central1-z"), "{err}");

    let fake = Fake::new("machinetype", &[]);
    let mut spec = fake.spec(1);
    spec.machine_type = "f9-micro".into();
    let err = preflight_error(&fake, &spec).await;
    assert!(matches!(err, GceError::MachineType { .. }), "{err}");
    assert!(err.to_string().contains("f9-micro"), "{err}");

    let fake = Fake::new("missing", &[]);
    let gone = GcloudProcess::with_program(fake.dir.join("no-such-gcloud"));
    let err = preflight(&gone, &fake.spec(1)).await.unwrap_err();
    assert!(matches!(err, GceError::GcloudMissing { .. }), "{err}");
    assert!(err.to_string().contains("gcloud not found on PATH"));
    assert!(help(&err).contains("Google Cloud CLI"));

    // A bad name never reaches gcloud.
    let fake = Fake::new("badname", &[]);
    let mut spec = fake.spec(1);
    spec.cluster = "Demo.1".into();
    assert!(matches!(
        preflight(&fake.gcloud, &spec).await.unwrap_err(),
        GceError::Invalid { .. }
    ));
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn preflight_warns_about_deprecated_machine_types() {
    let fake = Fake::new(
        "deprecated",
        &[("FAKE_GCLOUD_DEPRECATED_TYPES", "f1-micro")],
    );
    let report = preflight(&fake.gcloud, &fake.spec(1)).await.unwrap();
    assert_eq!(
        report.warnings,
        ["machine type f1-micro is marked DEPRECATED, replacement e2-micro"]
    );
}

#[tokio::test]
async fn host_keys_are_polled_until_published_and_never_assumed() {
    let fake = Fake::new("hostkeys", &[("FAKE_GCLOUD_HOSTKEY_DELAY_CALLS", "2")]);
    let spec = fake.spec(1);
    let cluster = create(&fake.gcloud, &spec, &quiet).await.unwrap();
    assert_eq!(cluster.minions[0].host_keys.len(), 1);
    let polls = fake
        .calls()
        .iter()
        .filter(|c| c[3] == "get-guest-attributes" && c[4] == "kctl-demo-minion-1")
        .count();
    assert_eq!(polls, 3);
    destroy(
        &fake.gcloud,
        PROJECT,
        ZONE,
        "demo",
        Knowledge::Recorded,
        &quiet,
    )
    .await
    .unwrap();

    let fake = Fake::new(
        "hostkeys-never",
        &[("FAKE_GCLOUD_HOSTKEY_DELAY_CALLS", "1000")],
    );
    let mut spec = fake.spec(1);
    spec.host_key_timeout = Duration::from_millis(300);
    let err = create(&fake.gcloud, &spec, &quiet).await.unwrap_err();
    assert!(matches!(err, GceError::HostKeyTimeout { .. }), "{err}");
    assert!(err.to_string().contains("was not found"), "{err}");
}

#[tokio::test]
async fn hosts_json_overrides_addresses_and_keys() {
    let fake = Fake::new("hosts", &[]);
    let hosts = serde_json::json!({
        "kctl-demo-minion-1": {
            "external_ip": "127.77.9.1",
            "hostkeys": {"ecdsa-sha2-nistp256": super::tests::ECDSA}
        }
    });
    std::fs::write(fake.dir.join("hosts.json"), hosts.to_string()).unwrap();
    let cluster = create(&fake.gcloud, &fake.spec(1), &quiet).await.unwrap();
    let minion = &cluster.minions[0];
    assert_eq!(minion.external_ip.to_string(), "127.77.9.1");
    assert_eq!(
        minion.host_keys,
        [format!("ecdsa-sha2-nistp256 {}", super::tests::ECDSA)]
    );
    destroy(
        &fake.gcloud,
        PROJECT,
        ZONE,
        "demo",
        Knowledge::Recorded,
        &quiet,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn discover_and_destroy_on_nothing() {
    let fake = Fake::new("nothing", &[]);
    let found = discover(&fake.gcloud, PROJECT, ZONE, "demo", Knowledge::Recorded)
        .await
        .unwrap();
    assert!(found.is_empty());
    assert!(destroy(
        &fake.gcloud,
        PROJECT,
        ZONE,
        "demo",
        Knowledge::Recorded,
        &quiet
    )
    .await
    .unwrap()
    .is_empty());
}

/// The fake checks argv like gcloud: these are the traps it must catch.
#[tokio::test]
async fn the_fake_rejects_what_gcloud_would() {
    let fake = Fake::new("syntax", &[]);
    let g = &fake.gcloud;
    let run = |args: &[&str]| {
        let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move { g.run(&argv).await.unwrap() }
    };
    let p = "--project=my-proj-123";

    // --range without legacy mode (gcloud would silently make an auto network).
    let out = run(&[
        "compute",
        "networks",
        "create",
        "kctl-x",
        p,
        "--range=10.240.0.0/16",
    ])
    .await;
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .starts_with("ERROR: (gcloud.compute.networks.create)"),
        "{}",
        out.stderr
    );
    let out = run(&[
        "compute",
        "networks",
        "create",
        "kctl-x",
        p,
        "--subnet-mode=custom",
        "--range=10.0.0.0/8",
    ])
    .await;
    assert!(out
        .stderr
        .contains("--range can only be used with --subnet-mode=legacy"));

    // A firewall rule without --network goes to `default`, which is absent.
    let out = run(&[
        "compute",
        "networks",
        "create",
        "kctl-x",
        p,
        "--subnet-mode=custom",
    ])
    .await;
    assert!(out.success(), "{}", out.stderr);
    let out = run(&[
        "compute",
        "firewall-rules",
        "create",
        "kctl-x-ssh",
        p,
        "--allow=tcp:22",
        "--source-ranges=0.0.0.0/0",
    ])
    .await;
    assert!(out.not_found(), "{}", out.stderr);
    assert!(out.stderr.contains("networks/default"));
    let out = run(&[
        "compute",
        "firewall-rules",
        "create",
        "kctl-x-ssh",
        p,
        "--network=kctl-x",
        "--allow=tcp:22-",
    ])
    .await;
    assert!(
        out.stderr.contains("PROTOCOL[:PORT[-PORT]]"),
        "{}",
        out.stderr
    );

    // Unknown flag, bare --delete-disks, --metadata twice, --no-scopes alone,
    // a query path without its slash, a zone flag with no next hop.
    let z = "--zone=us-central1-b";
    for (args, expect) in [
        (
            vec![
                "compute",
                "networks",
                "describe",
                "kctl-x",
                p,
                "--zone=us-central1-b",
            ],
            "unrecognized arguments: --zone",
        ),
        (
            vec![
                "compute",
                "instances",
                "delete",
                "a",
                p,
                z,
                "--delete-disks",
            ],
            "expected one argument",
        ),
        (
            vec![
                "compute",
                "instances",
                "create",
                "a",
                p,
                z,
                "--metadata=a=1",
                "--metadata=b=2",
            ],
            "cannot be specified multiple times",
        ),
        (
            vec!["compute", "instances", "create", "a", p, z, "--no-scopes"],
            "--no-service-account",
        ),
        (
            vec![
                "compute",
                "instances",
                "get-guest-attributes",
                "a",
                p,
                z,
                "--query-path=hostkeys",
            ],
            "--query-path",
        ),
        (
            vec![
                "compute",
                "routes",
                "create",
                "r",
                p,
                "--network=kctl-x",
                "--destination-range=10.244.1.0/24",
                "--next-hop-address=10.240.0.9",
                "--next-hop-instance-zone=us-central1-b",
            ],
            "can only be specified in conjunction with [--next-hop-instance]",
        ),
        (
            vec!["compute", "networks", "create", "Bad_Name", p],
            "resource.name",
        ),
        (
            vec![
                "compute",
                "instances",
                "create",
                "a",
                p,
                z,
                "--labels=Cluster=x",
            ],
            "--labels",
        ),
    ] {
        let out = run(&args).await;
        assert!(!out.success(), "{args:?} was accepted");
        assert!(
            out.stderr.contains("ERROR: (gcloud."),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(expect), "{args:?}: {}", out.stderr);
    }

    // A network in use cannot be deleted; absent things are "not found".
    let out = run(&[
        "compute",
        "networks",
        "subnets",
        "create",
        "s",
        p,
        "--network=kctl-x",
        "--region=us-central1",
        "--range=10.240.0.0/16",
    ])
    .await;
    assert!(out.success(), "{}", out.stderr);
    let out = run(&["compute", "networks", "delete", "kctl-x", p, "--quiet"]).await;
    assert!(!out.success() && !out.not_found());
    assert!(
        out.stderr.contains("already being used by"),
        "{}",
        out.stderr
    );
    let out = run(&["compute", "routes", "delete", "nope", p, "--quiet"]).await;
    assert!(out.not_found(), "{}", out.stderr);
    // Every call was logged.
    assert!(fake.calls().len() >= 14);
}

#[test]
fn engine_futures_are_send() {
    // `kctl up` may run them on a spawned task.
    fn assert_send<T: Send>(_: T) {}
    let g = GcloudProcess::new();
    let spec = base_spec(1);
    assert_send(preflight(&g, &spec));
    assert_send(create(&g, &spec, &quiet));
    assert_send(up(&g, &spec, &quiet));
    assert_send(discover(&g, PROJECT, ZONE, "demo", Knowledge::Recorded));
    assert_send(destroy(
        &g,
        PROJECT,
        ZONE,
        "demo",
        Knowledge::Recorded,
        &quiet,
    ));
}

/// Every argv of `up` and `down` through the *real* gcloud's parser, if
/// one is installed: with an empty configuration and no credentials (the
/// environment is cleared), a well-formed command gets as far as "You do not
/// currently have an active account selected" (exit 1); a malformed one
/// fails in the parser (exit 2). Nothing can reach a project.
/// `cargo test --lib provider::gce -- --ignored real_gcloud`
#[test]
#[ignore = "needs the Google Cloud CLI installed; slow (about 1 s a call)"]
fn real_gcloud_parses_every_argv() {
    let fake = Fake::new("real-gcloud", &[]);
    let mut spec = fake.spec(2);
    spec.work_dir = fake.dir.join("work");
    write_metadata_files(&spec).unwrap();
    let config = fake.dir.join("cloudsdk");
    std::fs::create_dir_all(&config).unwrap();
    let mut calls = up_commands(&spec).unwrap();
    let found = engine::planned(&spec).unwrap();
    calls.extend(down_commands(PROJECT, ZONE, "demo", &found).unwrap());
    calls.dedup();
    for call in calls {
        let out = std::process::Command::new("gcloud")
            .args(&call[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &fake.dir)
            .env("CLOUDSDK_CONFIG", &config)
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
            .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("gcloud on PATH");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = shell_line(&call);
        if call[1] == "auth" {
            assert_eq!(out.status.code(), Some(0), "{line}: {stderr}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{line}: {stderr}");
            assert!(stderr.contains("active account"), "{line}: {stderr}");
        }
    }
}

#[tokio::test]
async fn a_same_named_resource_of_another_shape_is_not_adopted() {
    let fake = Fake::new("mismatch", &[]);
    // Someone made an auto-mode network of our name.
    let argv: Vec<String> = crate::argv![
        "compute",
        "networks",
        "create",
        "kctl-demo",
        "--project=my-proj-123",
        "--subnet-mode=auto",
        "--quiet"
    ];
    assert!(fake.gcloud.run(&argv).await.unwrap().success());
    fake.clear_calls();
    let err = create(&fake.gcloud, &fake.spec(1), &quiet)
        .await
        .unwrap_err();
    assert!(matches!(err, GceError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("autoCreateSubnetworks"), "{err}");
    assert!(!fake.created_anything());
}

/// A scripted gcloud: answers by argv prefix, for cases the fake does not
/// model.
struct Scripted(Vec<(&'static str, GcloudOutput)>);

impl Gcloud for Scripted {
    async fn run(&self, argv: &[String]) -> Result<GcloudOutput, GceError> {
        let line = argv.join(" ");
        let answer = self.0.iter().find(|(prefix, _)| line.starts_with(prefix));
        Ok(answer.map(|(_, out)| out.clone()).unwrap_or(GcloudOutput {
            code: Some(0),
            stdout: "{}".into(),
            stderr: String::new(),
        }))
    }
}

#[tokio::test]
async fn expired_credentials_are_an_auth_error() {
    let g = Scripted(vec![
        (
            "auth list",
            GcloudOutput {
                code: Some(0),
                stdout: "me@example.com\n".into(),
                stderr: String::new(),
            },
        ),
        (
            "compute project-info",
            GcloudOutput {
                code: Some(1),
                stdout: String::new(),
                stderr: "ERROR: (gcloud.compute.project-info.describe) There was a problem refreshing your current auth tokens: Reauthentication failed. cannot prompt during non-interactive execution.\nPlease run:\n\n  $ gcloud auth login\n".into(),
            },
        ),
    ]);
    let err = preflight(&g, &base_spec(1)).await.unwrap_err();
    assert!(matches!(err, GceError::Auth { .. }), "{err}");
}
