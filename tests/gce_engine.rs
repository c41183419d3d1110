//! The GCE engine (`kctl::provider::gce`) running the real gcloud against
//! the mock Compute API (tests/common/mock_compute.rs): failures half-way,
//! retries, preflight, host-key polling, adoption, and how gcloud's answers
//! read. The full `up`/`down` sequences and their goldens are checked end
//! to end through the CLI in tests/gce.rs. No root needed.

mod common;

use common::mock_compute::{Call, MockCompute, PROJECT, ZONE};
use kctl::provider::gce::{self, GceError, GceSpec, Gcloud, GcloudProcess};
use serde_json::json;
use std::time::Duration;

const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIMknWvkjbCOKsicY5W+5IfNWfsUFDCpVHTIDik37P5DE";
const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIK95FolJL6OpfZXhW4QlqNt16l1mPonol4kdY0Kok79YlPpPv6EaRKGjHlTaQ8fEwFNq0OWm3wEpBtKFBTJg0A=";

/// Cluster `demo` in the mock's project; polls and retries are fast (each
/// gcloud call takes most of a second anyway).
fn spec(mock: &MockCompute, minions: usize) -> GceSpec {
    let mut spec = GceSpec::new(
        "demo",
        PROJECT,
        ZONE,
        minions,
        &format!("ssh-ed25519 {ED25519} kctl@test"),
        mock.dir().join("work"),
    );
    spec.machine_type = "f1-micro".into();
    spec.master_machine_type = "f1-micro".into();
    spec.host_key_poll = Duration::from_millis(20);
    spec.host_key_timeout = Duration::from_secs(20);
    spec.create_attempts = 3;
    spec.retry_backoff = Duration::from_millis(10);
    spec
}

fn quiet(_: &str) {}

/// The calls whose argv is `gcloud compute KIND VERB NAME ...`.
fn calls_of<'a>(calls: &'a [Call], kind: &str, verb: &str, name: &str) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| c.argv.len() > 4 && c.argv[2] == kind && c.argv[3] == verb && c.argv[4] == name)
        .collect()
}

fn statuses(call: &Call) -> Vec<u64> {
    call.requests
        .iter()
        .filter(|r| r["path"] != "/token")
        .map(|r| r["status"].as_u64().unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn a_create_that_keeps_failing_stops_after_its_attempts_before_routes() {
    let mock = MockCompute::start("keeps-failing");
    // Every insert of minion 2 fails in its operation (GCE's "Internal
    // error"), which no retry cures here.
    mock.fail(json!({"kind": "instances", "name": "kctl-demo-minion-2",
                     "error": "operation", "times": "always"}));
    let err = gce::create(&mock.gcloud(), &spec(&mock, 2), &quiet)
        .await
        .unwrap_err();
    assert!(matches!(err, GceError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("Internal error"), "{err}");
    assert!(err.to_string().contains("kctl-demo-minion-2"), "{err}");

    let calls = mock.take_calls();
    let tries = calls_of(&calls, "instances", "create", "kctl-demo-minion-2");
    assert_eq!(tries.len(), 3, "create_attempts");
    for call in tries {
        // Insert accepted, its operation waited on and found failed; no
        // read of a resource that was never made.
        let methods: Vec<&str> = call
            .requests
            .iter()
            .filter_map(|r| r["method"].as_str())
            .collect();
        assert_eq!(methods, ["GET", "POST", "POST"], "{:#?}", call.requests);
        assert!(call.requests[2]["path"]
            .as_str()
            .unwrap()
            .ends_with("/wait"));
    }
    // Once before the first try, and after each failed one: did the
    // failed call make it after all?
    assert_eq!(
        calls_of(&calls, "instances", "describe", "kctl-demo-minion-2").len(),
        4
    );
    let made = mock.resources();
    assert!(
        made.contains(&"instances/kctl-demo-minion-1".to_string()),
        "{made:?}"
    );
    assert!(
        !made.contains(&"instances/kctl-demo-minion-2".to_string()),
        "{made:?}"
    );
    // The route stage never started.
    assert!(!made.iter().any(|r| r.starts_with("routes/")), "{made:?}");
    assert!(!calls.iter().any(|c| c.argv[2] == "routes"));
}

#[tokio::test]
async fn a_transient_create_failure_is_retried() {
    let mock = MockCompute::start("transient");
    // The classic: a route made right after its network is "not ready".
    mock.fail(
        json!({"kind": "routes", "name": "kctl-demo-minion-1", "error": "notReady",
                     "resource": "projects/my-proj-123/global/networks/kctl-demo"}),
    );
    let lines = std::sync::Mutex::new(vec![]);
    let progress = |l: &str| lines.lock().unwrap().push(l.to_string());
    let cluster = gce::create(&mock.gcloud(), &spec(&mock, 1), &progress)
        .await
        .unwrap();
    assert_eq!(cluster.minions.len(), 1);
    let calls = mock.take_calls();
    let route_calls: Vec<(&str, Vec<u64>)> = calls
        .iter()
        .filter(|c| c.argv[2] == "routes")
        .map(|c| (c.argv[3].as_str(), statuses(c)))
        .collect();
    // describe (absent), create (400 not ready), describe (still absent),
    // create (insert, wait, read back).
    assert_eq!(
        route_calls,
        [
            ("describe", vec![404]),
            ("create", vec![400]),
            ("describe", vec![404]),
            ("create", vec![200, 200, 200]),
        ]
    );
    let lines = lines.lock().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("create failed")
            && l.contains("is not ready")
            && l.contains("retrying")),
        "{lines:#?}"
    );
    assert!(mock
        .resources()
        .contains(&"routes/kctl-demo-minion-1".to_string()));
}

#[tokio::test]
async fn preflight_failures_are_clear_and_create_nothing() {
    use miette::Diagnostic;
    let help = |e: &GceError| e.help().map(|h| h.to_string()).unwrap_or_default();
    let mock = MockCompute::start("preflight");

    // A configuration nobody logged in to: `auth list` is empty.
    let err = gce::preflight(&mock.gcloud_logged_out(), &spec(&mock, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, GceError::NotLoggedIn), "{err}");
    assert!(help(&err).contains("gcloud auth login"));

    let g = mock.gcloud();
    let mut bad_zone = spec(&mock, 1);
    bad_zone.zone = "us-central1-z".into();
    let err = gce::preflight(&g, &bad_zone).await.unwrap_err();
    assert!(matches!(err, GceError::Zone { .. }), "{err}");
    assert!(err.to_string().contains("us-central1-z"), "{err}");
    assert!(err.to_string().contains("was not found"), "{err}");

    let mut bad_type = spec(&mock, 1);
    bad_type.machine_type = "f9-micro".into();
    let err = gce::preflight(&g, &bad_type).await.unwrap_err();
    assert!(matches!(err, GceError::MachineType { .. }), "{err}");
    assert!(err.to_string().contains("f9-micro"), "{err}");

    let gone = GcloudProcess::with_program(mock.dir().join("no-such-gcloud"));
    let err = gce::preflight(&gone, &spec(&mock, 1)).await.unwrap_err();
    assert!(matches!(err, GceError::GcloudMissing { .. }), "{err}");
    assert!(err.to_string().contains("gcloud not found on PATH"));
    assert!(help(&err).contains("Google Cloud CLI"));

    let calls = mock.take_calls();
    assert!(!calls.is_empty());
    assert!(!calls.iter().any(Call::changed_anything), "{calls:#?}");

    // A bad name never reaches gcloud.
    let mut bad_name = spec(&mock, 1);
    bad_name.cluster = "Demo.1".into();
    assert!(matches!(
        gce::preflight(&g, &bad_name).await.unwrap_err(),
        GceError::Invalid { .. }
    ));
    assert!(mock.take_calls().is_empty());
    assert!(mock.resources().is_empty());
}

#[tokio::test]
async fn preflight_warns_about_deprecated_machine_types() {
    let mock = MockCompute::start("deprecated");
    mock.deprecate_machine_type("f1-micro", "e2-micro");
    let report = gce::preflight(&mock.gcloud(), &spec(&mock, 1))
        .await
        .unwrap();
    assert_eq!(report.account, common::mock_compute::ACCOUNT);
    assert_eq!(
        report.warnings,
        ["machine type f1-micro is marked DEPRECATED, replacement e2-micro"]
    );
}

#[tokio::test]
async fn expired_credentials_are_an_auth_error() {
    let mock = MockCompute::start("expired");
    mock.break_credentials();
    let err = gce::preflight(&mock.gcloud(), &spec(&mock, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, GceError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    // The stored account is still listed: only a real call finds out.
    let calls = mock.take_calls();
    assert_eq!(calls[0].argv[1..3], ["auth", "list"]);
    let token = calls[1]
        .requests
        .iter()
        .find(|r| r["path"] == "/token")
        .expect("gcloud tried to refresh its token");
    assert_eq!(token["status"], 400);
}

/// Host keys appear some reads after boot: polled until there, then
/// pinned. Addresses and keys a test sets for an instance are what the
/// engine reads back.
#[tokio::test]
async fn host_keys_are_polled_until_published() {
    let mock = MockCompute::start("hostkeys");
    mock.set_hostkey_delay_reads(2);
    mock.set_hosts(json!({"kctl-demo-minion-1": {
        "externalIp": "127.77.9.1",
        "hostkeys": {"ecdsa-sha2-nistp256": ECDSA}
    }}));
    let cluster = gce::create(&mock.gcloud(), &spec(&mock, 1), &quiet)
        .await
        .unwrap();
    let minion = &cluster.minions[0];
    assert_eq!(minion.external_ip.to_string(), "127.77.9.1");
    assert_eq!(minion.host_keys, [format!("ecdsa-sha2-nistp256 {ECDSA}")]);
    assert_eq!(cluster.masters.len(), 1);
    assert_eq!(cluster.masters[0].host_keys.len(), 1);
    assert!(cluster.masters[0].host_keys[0].starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"));

    let calls = mock.take_calls();
    let polls = calls_of(
        &calls,
        "instances",
        "get-guest-attributes",
        "kctl-demo-minion-1",
    );
    let answers: Vec<Vec<u64>> = polls.iter().map(|c| statuses(c)).collect();
    assert_eq!(answers, [vec![404], vec![404], vec![200]]);
    assert_eq!(
        polls[0].requests[0]["query"]["queryPath"], "hostkeys/",
        "{:#?}",
        polls[0].requests
    );
}

#[tokio::test]
async fn host_keys_never_published_are_an_error_not_trust_on_first_use() {
    let mock = MockCompute::start("hostkeys-never");
    mock.set_hostkey_delay_reads(1000);
    let mut spec = spec(&mock, 1);
    spec.host_key_timeout = Duration::from_millis(300);
    let err = gce::create(&mock.gcloud(), &spec, &quiet)
        .await
        .unwrap_err();
    assert!(matches!(err, GceError::HostKeyTimeout { .. }), "{err}");
    assert!(err.to_string().contains("was not found"), "{err}");
}

/// `--masters 3`: three master VMs (the first keeps the one-master name),
/// each of the master's type, tag and labels, with their keys read; and
/// `destroy` finds and deletes them all by label.
#[tokio::test]
async fn three_masters_are_made_and_deleted_with_the_rest() {
    let mock = MockCompute::start("masters");
    let mut spec = spec(&mock, 1);
    spec.masters = 3;
    spec.master_machine_type = "e2-small".into();
    let cluster = gce::create(&mock.gcloud(), &spec, &quiet).await.unwrap();
    let names: Vec<&str> = cluster.masters.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kctl-demo-master",
            "kctl-demo-master-2",
            "kctl-demo-master-3"
        ]
    );
    assert_eq!(cluster.minions.len(), 1);
    let ips: std::collections::BTreeSet<_> =
        cluster.masters.iter().map(|m| m.internal_ip).collect();
    assert_eq!(ips.len(), 3, "each master has its own address");
    assert!(cluster.masters.iter().all(|m| !m.host_keys.is_empty()));
    let calls = mock.take_calls();
    for name in &names {
        let create = calls_of(&calls, "instances", "create", name);
        assert_eq!(create.len(), 1, "{name}");
        let argv = &create[0].argv;
        assert!(
            argv.contains(&"--machine-type=e2-small".to_string()),
            "{argv:?}"
        );
        assert!(
            argv.contains(&"--tags=kctl-demo-master".to_string()),
            "{argv:?}"
        );
        assert!(!argv.contains(&"--can-ip-forward".to_string()), "{argv:?}");
    }

    let destroyed = gce::destroy(
        &mock.gcloud(),
        PROJECT,
        ZONE,
        "demo",
        gce::Knowledge::Recorded,
        &quiet,
    )
    .await
    .unwrap();
    let text = destroyed.deleted.join(" ");
    for name in &names {
        assert!(text.contains(name), "{name}: {text}");
    }
    assert!(
        !mock.resources().iter().any(|r| r.starts_with("instances/")),
        "{:?}",
        mock.resources()
    );
}

#[tokio::test]
async fn destroy_on_nothing_only_reads() {
    let mock = MockCompute::start("nothing");
    let deleted = gce::destroy(
        &mock.gcloud(),
        PROJECT,
        ZONE,
        "demo",
        gce::Knowledge::Recorded,
        &quiet,
    )
    .await
    .unwrap();
    assert!(deleted.deleted.is_empty() && deleted.left_alone.is_empty());
    let calls = mock.take_calls();
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    // Five reads find the cluster's own resources (instances, routes,
    // firewall rules, subnet, network), three its load balancers' (target
    // pools, forwarding rules, their firewall rules).
    assert_eq!(calls.len(), 8, "the discovery reads only: {lines:#?}");
    assert!(!calls.iter().any(Call::changed_anything), "{calls:#?}");
}

#[tokio::test]
async fn a_same_named_resource_of_another_shape_is_not_adopted() {
    let mock = MockCompute::start("mismatch");
    // Someone made an auto-mode network of our name.
    mock.create(
        "networks",
        json!({"name": "kctl-demo", "autoCreateSubnetworks": true}),
    );
    let err = gce::create(&mock.gcloud(), &spec(&mock, 1), &quiet)
        .await
        .unwrap_err();
    assert!(matches!(err, GceError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("autoCreateSubnetworks"), "{err}");
    let calls = mock.take_calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(!calls[0].changed_anything());
}

/// How the engine reads gcloud's answers, checked on the real gcloud:
/// "absent" for describe and for deletes of several names, "in use" is not
/// "absent"; and what the mock serves for reads main's engine adds: the
/// all-zone instance list, the serial console, regional quotas and org
/// policies.
#[tokio::test]
async fn gcloud_answers_read_as_the_engine_expects() {
    let mock = MockCompute::start("answers");
    let g = mock.gcloud();
    let run = |args: &[&str]| {
        let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let g = &g;
        async move { g.run(&argv).await.unwrap() }
    };
    let p = format!("--project={PROJECT}");
    mock.create(
        "networks",
        json!({"name": "kctl-x", "autoCreateSubnetworks": false}),
    );
    mock.create(
        "subnetworks",
        json!({"name": "kctl-x-us-central1", "network": "projects/my-proj-123/global/networks/kctl-x",
               "ipCidrRange": "10.240.0.0/16"}),
    );
    mock.create(
        "routes",
        json!({"name": "kctl-x-r1", "network": "projects/my-proj-123/global/networks/kctl-x",
               "destRange": "10.244.1.0/24", "nextHopIp": "10.240.0.9"}),
    );

    // A network still used by its subnet: a failure, not "absent".
    let out = run(&["compute", "networks", "delete", "kctl-x", &p, "--quiet"]).await;
    assert!(!out.success() && !out.not_found(), "{out:?}");
    assert!(
        out.stderr.contains("already being used by"),
        "{}",
        out.stderr
    );

    // Two names, one absent: the other is deleted, and the only error is
    // "was not found" (the engine takes it as done).
    let out = run(&[
        "compute",
        "routes",
        "delete",
        "kctl-x-r1",
        "kctl-x-r2",
        &p,
        "--quiet",
    ])
    .await;
    assert!(out.not_found(), "{out:?}");
    assert!(!mock.resources().contains(&"routes/kctl-x-r1".to_string()));

    // Regional quotas count the instances that exist; org policies read
    // as not enforced until a test says so.
    mock.create(
        "instances",
        json!({"name": "kctl-x-vm", "labels": {"kctl-role": "vm"}, "machineType": "zones/us-central1-b/machineTypes/e2-micro",
               "disks": [{"boot": true, "initializeParams": {"diskSizeGb": "10"}}],
               "networkInterfaces": [{"subnetwork": "regions/us-central1/subnetworks/kctl-x-us-central1",
                                      "accessConfigs": [{"type": "ONE_TO_ONE_NAT"}]}]}),
    );
    // Without --zones, gcloud lists every zone (an aggregated list) and
    // applies the label filter itself.
    let out = run(&[
        "compute",
        "instances",
        "list",
        &p,
        r#"--filter=labels.kctl-role~"^vm$""#,
        "--format=json",
        "--quiet",
    ])
    .await;
    assert!(out.success(), "{out:?}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "kctl-x-vm");
    // The serial console a test writes is what gcloud prints.
    mock.append_serial("kctl-x-vm", "kctl: startup script done\n");
    let out = run(&[
        "compute",
        "instances",
        "get-serial-port-output",
        "kctl-x-vm",
        &format!("--zone={ZONE}"),
        &p,
        "--port=1",
        "--quiet",
    ])
    .await;
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "kctl: startup script done");
    let out = run(&[
        "compute",
        "regions",
        "describe",
        "us-central1",
        &p,
        "--format=json",
        "--quiet",
    ])
    .await;
    assert!(out.success(), "{out:?}");
    let region: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let quota = |metric: &str| {
        region["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["metric"] == metric)
            .map(|q| (q["usage"].as_f64().unwrap(), q["limit"].as_f64().unwrap()))
            .unwrap()
    };
    assert_eq!(quota("CPUS").0, 2.0, "e2-micro has 2 vCPUs");
    assert_eq!(quota("IN_USE_ADDRESSES").0, 1.0);
    assert_eq!(quota("DISKS_TOTAL_GB").0, 10.0);
    mock.set_org_policy("compute.requireOsLogin", true);
    for (constraint, enforced) in [
        ("compute.requireOsLogin", true),
        ("compute.disableGuestAttributesAccess", false),
    ] {
        let out = run(&[
            "resource-manager",
            "org-policies",
            "describe",
            constraint,
            &p,
            "--effective",
            "--format=json",
            "--quiet",
        ])
        .await;
        assert!(out.success(), "{out:?}");
        let policy: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(policy["constraint"], format!("constraints/{constraint}"));
        assert_eq!(
            policy["booleanPolicy"]["enforced"]
                .as_bool()
                .unwrap_or(false),
            enforced,
            "{policy}"
        );
    }
}

/// A disk moving from one minion to another through the real gcloud:
/// attach (read-write), what `instances list` then says, the attach
/// elsewhere GCE refuses while it is attached, detach, attach there; a
/// missing disk and one attached outside the cluster are told apart; an
/// instance's deletion frees its disks, which stay.
#[tokio::test]
async fn a_disk_moves_between_minions_through_gcloud() {
    use gce::disks::{self, Attachment, DiskStep};
    let mock = MockCompute::start("disks");
    let g = mock.gcloud();
    gce::create(&g, &spec(&mock, 2), &quiet).await.unwrap();
    mock.create("disks", json!({"name": "data", "sizeGb": "10"}));
    let n = gce::Names::new("demo", ZONE).unwrap();
    let minions = vec![n.minion(1), n.minion(2)];
    let on = |i: usize, read_only| Attachment {
        disk: "data".into(),
        instance: n.minion(i),
        read_only,
    };

    let free = disks::describe(&g, PROJECT, &n, "data").await.unwrap();
    assert_eq!(disks::disk_problem(free.as_ref(), &n, &minions), None);
    let missing = disks::describe(&g, PROJECT, &n, "nodisk").await.unwrap();
    assert_eq!(missing, None);
    assert!(disks::disk_problem(None, &n, &minions).is_some());

    let plan = disks::plan(
        &[on(1, false)],
        &disks::discover(&g, PROJECT, &n).await.unwrap().attachments,
    );
    assert_eq!(plan.attach_now, vec![DiskStep::Attach(on(1, false))]);
    let done = disks::run(&g, PROJECT, &n, &plan.attach_now, &quiet).await;
    assert!(done.values().all(Result::is_ok), "{done:?}");
    assert_eq!(
        disks::discover(&g, PROJECT, &n).await.unwrap().attachments,
        vec![on(1, false)],
        "attached read-write under its own name, found again"
    );
    let users = disks::describe(&g, PROJECT, &n, "data")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(users.users, [n.minion(1)]);

    // GCE refuses a second attachment of a read-write disk.
    let refused = disks::run(&g, PROJECT, &n, &[DiskStep::Attach(on(2, true))], &quiet).await;
    let e = refused
        .into_values()
        .next()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(e.contains("already being used"), "{e}");

    let found = disks::discover(&g, PROJECT, &n).await.unwrap().attachments;
    let plan = disks::plan(&[on(2, false)], &found);
    assert!(plan.attach_now.is_empty(), "{plan:?}");
    let steps: Vec<DiskStep> = plan
        .detach
        .iter()
        .chain(&plan.attach_later)
        .cloned()
        .collect();
    let done = disks::run(&g, PROJECT, &n, &steps, &quiet).await;
    assert!(done.values().all(Result::is_ok), "{done:?}");
    assert_eq!(
        disks::discover(&g, PROJECT, &n).await.unwrap().attachments,
        vec![on(2, false)]
    );

    // Outside the cluster: a problem named before anything is done.
    mock.create("disks", json!({"name": "theirs", "sizeGb": "10"}));
    let theirs = disks::describe(&g, PROJECT, &n, "theirs").await.unwrap();
    let only_minion_1 = vec![n.minion(1)];
    let outside = DiskStep::Attach(Attachment {
        disk: "theirs".into(),
        instance: n.minion(2),
        read_only: true,
    });
    assert!(disks::run(&g, PROJECT, &n, &[outside], &quiet)
        .await
        .values()
        .all(Result::is_ok));
    let theirs_now = disks::describe(&g, PROJECT, &n, "theirs").await.unwrap();
    assert_eq!(
        disks::disk_problem(theirs.as_ref(), &n, &only_minion_1),
        None
    );
    let why = disks::disk_problem(theirs_now.as_ref(), &n, &only_minion_1).unwrap();
    assert!(why.contains(&n.minion(2)), "{why}");

    gce::destroy(&g, PROJECT, ZONE, "demo", gce::Knowledge::Recorded, &quiet)
        .await
        .unwrap();
    let left = mock.state()["projects"][PROJECT]["disks"].clone();
    assert_eq!(left["data"]["users"], json!([]), "{left:#}");
    assert_eq!(left["theirs"]["users"], json!([]), "{left:#}");
}

#[test]
fn engine_futures_are_send() {
    // `kctl up` may run them on a spawned task.
    fn assert_send<T: Send>(_: T) {}
    let g = GcloudProcess::new();
    let spec = GceSpec::new(
        "demo",
        PROJECT,
        ZONE,
        1,
        &format!("ssh-ed25519 {ED25519} kctl@test"),
        std::env::temp_dir(),
    );
    assert_send(gce::preflight(&g, &spec));
    assert_send(gce::create(&g, &spec, &quiet));
    assert_send(gce::discover(
        &g,
        PROJECT,
        ZONE,
        "demo",
        gce::Knowledge::Recorded,
    ));
    assert_send(gce::destroy(
        &g,
        PROJECT,
        ZONE,
        "demo",
        gce::Knowledge::Recorded,
        &quiet,
    ));
}
