//! Unit tests of the pure core: names, validation, every argv against the
//! reference's contract checklist (§13), JSON parsing, host keys.

use super::commands as cmd;
use super::engine::planned;
use super::parse;
use super::spec::*;
use super::*;
use std::path::PathBuf;

pub(super) const ED25519: &str =
    "AAAAC3NzaC1lZDI1NTE5AAAAIMknWvkjbCOKsicY5W+5IfNWfsUFDCpVHTIDik37P5DE";
pub(super) const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIK95FolJL6OpfZXhW4QlqNt16l1mPonol4kdY0Kok79YlPpPv6EaRKGjHlTaQ8fEwFNq0OWm3wEpBtKFBTJg0A=";

pub(super) fn spec(minions: usize) -> GceSpec {
    let mut spec = GceSpec::new(
        "demo",
        "my-proj-123",
        "us-central1-b",
        minions,
        &format!("ssh-ed25519 {ED25519} kctl@test"),
        PathBuf::from("/work/x"),
    );
    spec.machine_type = "f1-micro".into();
    spec.master_machine_type = "f1-micro".into();
    spec
}

fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    let values: Vec<&str> = argv
        .iter()
        .filter_map(|a| a.strip_prefix(&prefix))
        .collect();
    assert!(values.len() <= 1, "{name} given twice in {argv:?}");
    values.first().copied()
}

fn has(argv: &[String], word: &str) -> bool {
    argv.iter().any(|a| a == word)
}

#[test]
fn names_follow_the_scheme() {
    let n = spec(3).names().unwrap();
    assert_eq!(n.region, "us-central1");
    assert_eq!(n.network, "kctl-demo");
    assert_eq!(n.subnet, "kctl-demo-us-central1");
    assert_eq!(n.master, "kctl-demo-master");
    assert_eq!(n.minion(2), "kctl-demo-minion-2");
    assert_eq!(
        n.masters(3),
        [
            "kctl-demo-master",
            "kctl-demo-master-2",
            "kctl-demo-master-3"
        ]
    );
    assert_eq!(n.route(2), "kctl-demo-minion-2");
    assert_eq!(n.master_tag, "kctl-demo-master");
    assert_eq!(n.minion_tag, "kctl-demo-minion");
    assert_eq!(n.firewall_internal, "kctl-demo-internal");
    assert_eq!(n.firewall_ssh, "kctl-demo-ssh");
    assert_eq!(n.labels(Role::Minion), "kctl-cluster=demo,kctl-role=minion");
    assert_eq!(pod_cidr(3), "10.244.3.0/24");
}

#[test]
fn region_is_the_zone_without_its_letter() {
    assert_eq!(region_of("us-central1-b").unwrap(), "us-central1");
    assert_eq!(region_of("europe-west1-b").unwrap(), "europe-west1");
    assert_eq!(
        region_of("northamerica-northeast1-a").unwrap(),
        "northamerica-northeast1"
    );
    for bad in [
        "us-central1",
        "uscentral1-b",
        "us-central1-",
        "US-central1-b",
        "us-central-b",
        "",
    ] {
        assert!(region_of(bad).is_err(), "{bad}");
    }
}

#[test]
fn validation_rejects_bad_names() {
    assert!(spec(3).validate().is_ok());
    for bad in ["Demo", "demo.1", "1demo", "demo-", "", "dé"] {
        let mut s = spec(1);
        s.cluster = bad.into();
        let err = s.validate().unwrap_err();
        assert!(err.to_string().contains("cluster name"), "{bad}: {err}");
    }
    // Derived names must fit in 63 characters.
    let mut s = spec(100);
    s.cluster = "a".repeat(48);
    assert!(s.validate().unwrap_err().to_string().contains("63"));
    let mut s = spec(1);
    s.project = "My Project".into();
    assert!(s.validate().unwrap_err().to_string().contains("project id"));
    let mut s = spec(1);
    s.machine_type = "F1_MICRO".into();
    assert!(s
        .validate()
        .unwrap_err()
        .to_string()
        .contains("machine type"));
    let mut s = spec(0);
    s.minions = 0;
    assert!(s.validate().is_err());
    for (masters, ok) in [
        (1, true),
        (2, false),
        (3, true),
        (5, true),
        (0, false),
        (7, false),
    ] {
        let mut s = spec(1);
        s.masters = masters;
        assert_eq!(s.validate().is_ok(), ok, "{masters} masters");
    }
    let mut s = spec(1);
    s.ssh_public_key = "-----BEGIN OPENSSH PRIVATE KEY-----".into();
    assert!(s
        .validate()
        .unwrap_err()
        .to_string()
        .contains("ssh public key"));
    let mut s = spec(1);
    s.ssh_public_key = "ssh-ed25519 not*base64".into();
    assert!(s.validate().is_err());
}

/// §13.1: --project, --quiet, --format=json on reads, zone/region.
#[test]
fn every_call_has_project_quiet_and_json_on_reads() {
    let s = spec(3);
    let mut calls = up_commands(&s).unwrap();
    calls.extend(
        down_commands(
            "my-proj-123",
            "us-central1-b",
            "demo",
            &planned(&s).unwrap(),
        )
        .unwrap(),
    );
    for call in &calls {
        assert_eq!(call[0], "gcloud");
        let argv = &call[1..];
        assert!(has(argv, "--quiet"), "{argv:?}");
        if argv[0] == "auth" {
            assert_eq!(flag(argv, "--format"), Some("value(account)"));
            continue;
        }
        assert!(flag(argv, "--project").is_some(), "{argv:?}");
        let verb = argv.iter().position(|a| a == "delete");
        if verb.is_none() {
            assert_eq!(flag(argv, "--format"), Some("json"), "{argv:?}");
        }
        let group = &argv[1];
        let zonal = group == "instances" || group == "machine-types";
        if zonal && argv[2] != "list" {
            assert_eq!(flag(argv, "--zone"), Some("us-central1-b"), "{argv:?}");
        }
        if argv.get(2).map(String::as_str) == Some("subnets") {
            assert_eq!(flag(argv, "--region"), Some("us-central1"), "{argv:?}");
        }
        // No call relies on a gcloud config property or prompt.
        assert!(!argv.iter().any(|a| a.contains('\n')));
    }
}

/// §13.2: custom mode, never --range; subnet 10.240.0.0/16 in the region.
#[test]
fn network_is_custom_mode_with_one_subnet() {
    let n = spec(1).names().unwrap();
    let net = cmd::network_create("my-proj-123", &n);
    assert_eq!(flag(&net, "--subnet-mode"), Some("custom"));
    assert!(flag(&net, "--range").is_none());
    assert_eq!(flag(&net, "--mtu"), Some("1460"));
    assert_eq!(GCE_MTU, 1460);
    let sub = cmd::subnet_create("my-proj-123", &n);
    assert_eq!(flag(&sub, "--range"), Some("10.240.0.0/16"));
    assert_eq!(flag(&sub, "--region"), Some("us-central1"));
    assert_eq!(flag(&sub, "--network"), Some("kctl-demo"));
}

/// §13.3: network, non-empty sources, ssh only tcp:22, nothing else open.
#[test]
fn firewall_rules_are_scoped() {
    let n = spec(1).names().unwrap();
    let internal = cmd::firewall_internal_create("my-proj-123", &n);
    let ssh = cmd::firewall_ssh_create("my-proj-123", &n, &["0.0.0.0/0".to_string()]);
    for rule in [&internal, &ssh] {
        assert_eq!(flag(rule, "--network"), Some("kctl-demo"));
        assert!(!flag(rule, "--source-ranges").unwrap_or("").is_empty());
        assert_eq!(
            flag(rule, "--target-tags"),
            Some("kctl-demo-master,kctl-demo-minion")
        );
        assert_eq!(flag(rule, "--direction"), Some("INGRESS"));
        let allow = flag(rule, "--allow").unwrap();
        assert!(!allow.contains("443") && !allow.contains("4001") && !allow.contains("2379"));
    }
    let sources = flag(&internal, "--source-ranges").unwrap();
    assert!(sources.split(',').any(|r| r == "10.240.0.0/16"));
    assert!(sources.split(',').any(|r| r == "10.244.0.0/14"));
    assert!(!sources.contains("0.0.0.0/0"));
    assert_eq!(flag(&ssh, "--allow"), Some("tcp:22"));
    assert_eq!(flag(&ssh, "--source-ranges"), Some("0.0.0.0/0"));
}

/// §13.4 and §13.5: instance flags and metadata.
#[test]
fn instances_have_explicit_everything() {
    let s = spec(2);
    let n = s.names().unwrap();
    let minion = cmd::instance_create(&s, &n, Role::Minion, 2);
    let master = cmd::instance_create(&s, &n, Role::Master, 0);
    assert_eq!(minion[3], "kctl-demo-minion-2");
    assert_eq!(master[3], "kctl-demo-master");
    assert!(has(&minion, "--can-ip-forward"));
    assert!(!has(&master, "--can-ip-forward"));
    for argv in [&minion, &master] {
        assert_eq!(flag(argv, "--machine-type"), Some("f1-micro"));
        assert_eq!(flag(argv, "--image-family"), Some("debian-12"));
        assert_eq!(flag(argv, "--image-project"), Some("debian-cloud"));
        assert_eq!(flag(argv, "--boot-disk-size"), Some("10GB"));
        assert_eq!(flag(argv, "--boot-disk-type"), Some("pd-standard"));
        assert_eq!(flag(argv, "--subnet"), Some("kctl-demo-us-central1"));
        assert!(flag(argv, "--network").is_none());
        assert!(has(argv, "--no-service-account") && has(argv, "--no-scopes"));
        assert_eq!(
            flag(argv, "--metadata"),
            Some("enable-guest-attributes=TRUE,enable-oslogin=FALSE,block-project-ssh-keys=TRUE")
        );
        let files = flag(argv, "--metadata-from-file").unwrap();
        let keys: Vec<&str> = files
            .split(',')
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        assert_eq!(keys, ["startup-script", "ssh-keys"]);
        // No key in both flags.
        let meta_keys: Vec<&str> = flag(argv, "--metadata")
            .unwrap()
            .split(',')
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        assert!(keys.iter().all(|k| !meta_keys.contains(k)));
        // Labels: lower-case keys and values, no dots or slashes.
        let labels = flag(argv, "--labels").unwrap();
        for kv in labels.split(',') {
            let (k, v) = kv.split_once('=').unwrap();
            assert!(k.starts_with(|c: char| c.is_ascii_lowercase()));
            assert!((k.to_string() + v)
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'));
        }
    }
    assert_eq!(flag(&minion, "--tags"), Some("kctl-demo-minion"));
    assert_eq!(flag(&master, "--tags"), Some("kctl-demo-master"));
    assert_eq!(
        flag(&minion, "--labels"),
        Some("kctl-cluster=demo,kctl-role=minion")
    );
    assert_eq!(
        flag(&minion, "--metadata-from-file"),
        Some("startup-script=/work/x/gce-minion-2-startup.sh,ssh-keys=/work/x/gce-ssh-keys")
    );
}

/// §13.6: one route per minion with network, range and next hop.
#[test]
fn routes_point_pod_ranges_at_minions() {
    let n = spec(3).names().unwrap();
    let route = cmd::route_create("my-proj-123", "us-central1-b", &n, 3);
    assert_eq!(route[3], "kctl-demo-minion-3");
    assert_eq!(flag(&route, "--network"), Some("kctl-demo"));
    assert_eq!(flag(&route, "--destination-range"), Some("10.244.3.0/24"));
    assert_eq!(
        flag(&route, "--next-hop-instance"),
        Some("kctl-demo-minion-3")
    );
    assert_eq!(
        flag(&route, "--next-hop-instance-zone"),
        Some("us-central1-b")
    );
}

/// §13.7 and §13.8: host keys query path, anchored discovery filters.
#[test]
fn host_keys_and_discovery_queries() {
    let keys = cmd::host_keys("my-proj-123", "us-central1-b", "kctl-demo-master");
    assert_eq!(flag(&keys, "--query-path"), Some("hostkeys/"));
    let n = spec(1).names().unwrap();
    let instances = cmd::instances_list("my-proj-123", &n);
    assert_eq!(
        flag(&instances, "--filter"),
        Some(r#"labels.kctl-cluster~"^demo$""#)
    );
    // Every zone: down must see a same-named cluster elsewhere.
    assert_eq!(flag(&instances, "--zones"), None);
    let routes = cmd::routes_list("my-proj-123", &n);
    assert_eq!(
        flag(&routes, "--filter"),
        Some(r#"name~"^kctl-demo-minion-[0-9]+$""#)
    );
    // Unquoted, gcloud reads the parentheses and `|` as filter syntax and
    // rejects the filter.
    let rules = cmd::firewalls_list("my-proj-123", &n);
    assert_eq!(
        flag(&rules, "--filter"),
        Some(r#"name~"^kctl-demo-(internal|ssh)$""#)
    );
    // Every discovery filter: one `KEY~"^...$"` term, the regex anchored
    // and quoted whole.
    for argv in [instances, routes, rules] {
        let filter = flag(&argv, "--filter").unwrap();
        let (key, pattern) = filter.split_once('~').unwrap();
        assert!(!key.is_empty() && !key.contains(['"', ' ']), "{filter}");
        let regex = pattern
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or_else(|| panic!("regex not quoted: {filter}"));
        assert!(regex.starts_with('^') && regex.ends_with('$'), "{filter}");
        assert!(!regex.contains('"'), "{filter}");
    }
}

/// §13.9: teardown order.
#[test]
fn teardown_order_is_instances_routes_firewalls_subnet_network() {
    let s = spec(2);
    let calls = down_commands(
        "my-proj-123",
        "us-central1-b",
        "demo",
        &planned(&s).unwrap(),
    )
    .unwrap();
    let deletes: Vec<String> = calls
        .iter()
        .filter(|c| c.contains(&"delete".to_string()))
        .map(|c| c[2..c.iter().position(|a| a == "delete").unwrap()].join(" "))
        .collect();
    assert_eq!(
        deletes,
        [
            "instances",
            "routes",
            "firewall-rules",
            "networks subnets",
            "networks"
        ]
    );
    let instances = calls
        .iter()
        .find(|c| c[2] == "instances" && c[3] == "delete")
        .unwrap();
    assert_eq!(
        &instances[4..7],
        [
            "kctl-demo-master",
            "kctl-demo-minion-1",
            "kctl-demo-minion-2"
        ]
    );
    assert!(!instances.iter().any(|a| a.starts_with("--delete-disks")));
    // Nothing found: only the reads (five of the cluster, three of its
    // load balancers).
    let calls = down_commands(
        "my-proj-123",
        "us-central1-b",
        "demo",
        &Discovered::default(),
    )
    .unwrap();
    assert_eq!(calls.len(), 8);
}

#[test]
fn up_commands_are_in_stage_order() {
    let calls = up_commands(&spec(3)).unwrap();
    let kinds: Vec<String> = calls.iter().map(|c| c[1..].join(" ")).collect();
    let first = |k: &str| kinds.iter().position(|x| x.starts_with(k)).unwrap();
    assert!(kinds[0].starts_with("auth list --filter=status:ACTIVE"));
    assert!(first("compute images") < first("compute networks create"));
    assert!(first("compute networks create") < first("compute networks subnets create"));
    assert!(first("compute networks subnets create") < first("compute firewall-rules create"));
    assert!(first("compute firewall-rules create") < first("compute instances create"));
    assert!(first("compute instances create") < first("compute routes create"));
    assert!(first("compute routes create") < first("compute instances get-guest-attributes"));
    let creates = kinds
        .iter()
        .filter(|k| k.starts_with("compute instances create"))
        .count();
    assert_eq!(creates, 4);
    // Same machine type for master and minions: described once.
    assert_eq!(
        kinds.iter().filter(|k| k.contains("machine-types")).count(),
        1
    );
}

#[test]
fn shell_line_quotes_only_where_needed() {
    let argv: Vec<String> = crate::argv![
        "gcloud",
        "compute",
        "--filter=name~^kctl-demo-(internal|ssh)$",
        "--description=kctl cluster demo",
        "it's",
        "--zone=us-central1-b",
        ""
    ];
    assert_eq!(
        shell_line(&argv),
        r#"gcloud compute '--filter=name~^kctl-demo-(internal|ssh)$' '--description=kctl cluster demo' 'it'\''s' --zone=us-central1-b ''"#
    );
}

#[test]
fn instance_json_is_parsed() {
    let json = r#"[
  {
    "canIpForward": true,
    "machineType": "https://www.googleapis.com/compute/v1/projects/my-proj-123/zones/us-central1-b/machineTypes/f1-micro",
    "name": "kctl-demo-minion-1",
    "networkInterfaces": [
      {
        "accessConfigs": [
          {
            "kind": "compute#accessConfig",
            "name": "external-nat",
            "natIP": "34.71.2.9",
            "networkTier": "PREMIUM",
            "type": "ONE_TO_ONE_NAT"
          }
        ],
        "name": "nic0",
        "network": "https://www.googleapis.com/compute/v1/projects/my-proj-123/global/networks/kctl-demo",
        "networkIP": "10.240.0.3",
        "subnetwork": "https://www.googleapis.com/compute/v1/projects/my-proj-123/regions/us-central1/subnetworks/kctl-demo-us-central1"
      }
    ],
    "status": "RUNNING"
  }
]"#;
    let value = parse::single_object(json).unwrap();
    let instance = parse::instance(&value).unwrap();
    assert_eq!(instance.name, "kctl-demo-minion-1");
    assert_eq!(instance.internal_ip.to_string(), "10.240.0.3");
    assert_eq!(instance.external_ip.to_string(), "34.71.2.9");
    // describe prints the object itself.
    let obj = serde_json::to_string(&value).unwrap();
    assert_eq!(
        parse::instance(&parse::single_object(&obj).unwrap()).unwrap(),
        instance
    );
    // --no-address instances have no natIP: kctl needs one.
    let no_nat = json.replace("\"natIP\": \"34.71.2.9\",", "");
    let err = parse::instance(&parse::single_object(&no_nat).unwrap()).unwrap_err();
    assert!(err.contains("natIP"), "{err}");
    assert!(parse::single_object("[]").is_err());
    assert!(parse::single_object("Created [x].").is_err());
}

#[test]
fn deprecation_block_is_reported() {
    let value: serde_json::Value = serde_json::from_str(
        r#"{"name": "f1-micro", "guestCpus": 1, "memoryMb": 614, "isSharedCpu": true,
            "deprecated": {"state": "DEPRECATED", "replacement": "https://www.googleapis.com/compute/v1/projects/p/zones/z/machineTypes/e2-micro"}}"#,
    )
    .unwrap();
    assert_eq!(
        parse::deprecation(&value).as_deref(),
        Some("DEPRECATED, replacement e2-micro")
    );
    let plain: serde_json::Value = serde_json::from_str(r#"{"name": "e2-micro"}"#).unwrap();
    assert!(parse::deprecation(&plain).is_none());
}

#[test]
fn host_keys_prefer_ed25519_and_are_validated() {
    let answer = format!(
        r#"[
  {{"key": "ecdsa-sha2-nistp256", "namespace": "hostkeys", "value": "{ECDSA}"}},
  {{"key": "ssh-ed25519", "namespace": "hostkeys", "value": "{ED25519} root@vm\n"}},
  {{"key": "ssh-rsa", "namespace": "hostkeys", "value": "AAAAB3NzaC1yc2E="}}
]"#
    );
    assert_eq!(
        parse::host_keys(&answer).unwrap(),
        [format!("ssh-ed25519 {ED25519}")]
    );
    // A broken ed25519 value is skipped: ecdsa is next.
    let broken = answer.replace(ED25519, "AAAAC3Nz!!");
    assert_eq!(
        parse::host_keys(&broken).unwrap(),
        [format!("ecdsa-sha2-nistp256 {ECDSA}")]
    );
    // Unknown types and other namespaces are ignored.
    let other = r#"[{"key": "ssh-dss", "namespace": "hostkeys", "value": "AAAA"},
                   {"key": "ssh-ed25519", "namespace": "other", "value": "AAAA"}]"#;
    assert!(parse::host_keys(other).unwrap().is_empty());
    assert!(parse::host_keys("[]").unwrap().is_empty());
}

#[test]
fn base64_round_trip_is_strict() {
    assert!(parse::base64_round_trips(ED25519));
    assert!(parse::base64_round_trips(ECDSA));
    assert!(parse::base64_round_trips("YQ=="));
    assert!(!parse::base64_round_trips("YR==")); // non-canonical trailing bits
    assert!(!parse::base64_round_trips("YQ"));
    assert!(!parse::base64_round_trips("Y=Q="));
    assert!(!parse::base64_round_trips(""));
    assert_eq!(parse::base64_encode(b"hello"), "aGVsbG8=");
    assert_eq!(parse::base64_decode("aGVsbG8=").unwrap(), b"hello");
}

/// An `@NAME@` left unfilled.
fn has_placeholder(script: &str) -> bool {
    script.match_indices('@').any(|(at, _)| {
        let rest = &script[at + 1..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        !name.is_empty() && rest[name.len()..].starts_with('@')
    })
}

#[test]
fn a_placeholder_is_found_wherever_it_stands() {
    assert!(has_placeholder("a \"$@\" b @CLUSTER@ c"));
    assert!(!has_placeholder("for p in \"$@\"; do kctl@host"));
}

#[test]
fn startup_scripts_are_filled_in() {
    let s = spec(3);
    let minion = engine::startup_script(&s, Role::Minion, 2);
    assert!(minion.starts_with("#!/bin/sh"));
    assert!(minion.contains("minion 2 of cluster demo") && minion.contains("10.244.2.0/24"));
    assert!(minion.contains("net.ipv4.ip_forward=1"));
    assert!(minion.contains("install_packages docker.io nftables iptables apparmor"));
    // The boot library is inlined: the metadata value stands alone.
    assert!(minion.contains("apt_get()") && minion.contains("DPkg::Lock::Timeout=300"));
    assert!(minion.contains(&format!("KCTL_VERSION='{BOOT_VERSION}'")));
    assert!(!has_placeholder(&minion), "{minion}");
    let master = engine::startup_script(&s, Role::Master, 0);
    assert!(master.contains("etcd-server") && master.contains("systemctl disable --now etcd"));
    assert!(!has_placeholder(&master), "{master}");
    assert!(minion.len() < 256 * 1024 && master.len() < 256 * 1024);
}

#[test]
fn metadata_files_are_written() {
    let dir = std::env::temp_dir().join(format!("kctl-gce-meta-{}", std::process::id()));
    let mut s = spec(2);
    s.work_dir = dir.clone();
    write_metadata_files(&s).unwrap();
    let keys = std::fs::read_to_string(dir.join("gce-ssh-keys")).unwrap();
    assert_eq!(keys, format!("kctl:ssh-ed25519 {ED25519} kctl@test\n"));
    assert!(dir.join("gce-master-startup.sh").exists());
    assert!(dir.join("gce-minion-2-startup.sh").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn existing_resources_are_checked_before_adoption() {
    use parse::{mismatches, Expect};
    let route: serde_json::Value = serde_json::from_str(
        r#"{"name": "kctl-demo-minion-1", "destRange": "10.244.1.0/24",
            "network": "https://www.googleapis.com/compute/v1/projects/p/global/networks/kctl-demo",
            "nextHopInstance": "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-b/instances/kctl-demo-minion-1"}"#,
    )
    .unwrap();
    let ok = [
        Expect::Is("/destRange", "10.244.1.0/24".into()),
        Expect::EndsWith("/network", "/global/networks/kctl-demo".into()),
        Expect::EndsWith(
            "/nextHopInstance",
            "/zones/us-central1-b/instances/kctl-demo-minion-1".into(),
        ),
    ];
    assert!(mismatches(&route, &ok).is_empty());
    let bad = [
        Expect::Is("/destRange", "10.244.2.0/24".into()),
        Expect::EndsWith("/network", "/global/networks/other".into()),
        Expect::Is("/canIpForward", true.into()),
    ];
    assert_eq!(
        mismatches(&route, &bad),
        [
            r#"/destRange is "10.244.1.0/24", expected "10.244.2.0/24""#,
            r#"/network is "https://www.googleapis.com/compute/v1/projects/p/global/networks/kctl-demo", expected …/global/networks/other"#,
            "/canIpForward is nothing, expected true",
        ]
    );
}

mod ownership {
    use super::super::engine::{judge, Knowledge, Listed};
    use super::super::spec::Names;
    use serde_json::{json, Value};

    const BASE: &str = "https://compute.googleapis.com/compute/v1/projects/p";

    fn instance(name: &str, zone: &str) -> Value {
        json!({"name": name, "zone": format!("{BASE}/zones/{zone}")})
    }
    fn net(name: &str) -> String {
        format!("{BASE}/global/networks/{name}")
    }
    fn route(name: &str, hop_zone: &str, hop: &str) -> Value {
        json!({"name": name, "network": net("kctl-demo"),
               "nextHopInstance": format!("{BASE}/zones/{hop_zone}/instances/{hop}")})
    }
    fn rule(name: &str, network: &str) -> Value {
        json!({"name": name, "network": net(network)})
    }
    fn network(subnet_regions: &[&str]) -> Value {
        let subnets: Vec<String> = subnet_regions
            .iter()
            .map(|r| format!("{BASE}/regions/{r}/subnetworks/kctl-demo-{r}"))
            .collect();
        json!({"name": "kctl-demo", "subnetworks": subnets})
    }
    fn subnet() -> Value {
        json!({"name": "kctl-demo-us-central1", "network": net("kctl-demo")})
    }
    fn names() -> Names {
        Names::new("demo", "us-central1-b").unwrap()
    }
    fn rules() -> Vec<Value> {
        vec![
            rule("kctl-demo-internal", "kctl-demo"),
            rule("kctl-demo-ssh", "kctl-demo"),
        ]
    }
    fn rule_names() -> Vec<String> {
        vec!["kctl-demo-internal".into(), "kctl-demo-ssh".into()]
    }

    #[test]
    fn a_recorded_cluster_owns_what_bears_its_names_in_its_zone() {
        let listed = Listed {
            instances: vec![
                instance("kctl-demo-master", "us-central1-b"),
                instance("kctl-demo-minion-1", "us-central1-b"),
            ],
            // minion-2's instance is gone (a down that stopped half-way):
            // its route still goes, as the record says the cluster is here.
            routes: vec![
                route("kctl-demo-minion-1", "us-central1-b", "kctl-demo-minion-1"),
                route("kctl-demo-minion-2", "us-central1-b", "kctl-demo-minion-2"),
            ],
            firewall_rules: rules(),
            subnet: Some(subnet()),
            network: Some(network(&["us-central1"])),
        };
        let found = judge(&names(), Knowledge::Recorded, &listed);
        assert_eq!(found.instances, ["kctl-demo-master", "kctl-demo-minion-1"]);
        assert_eq!(found.routes, ["kctl-demo-minion-1", "kctl-demo-minion-2"]);
        assert_eq!(found.firewall_rules, rule_names());
        assert_eq!(found.subnet.as_deref(), Some("kctl-demo-us-central1"));
        assert_eq!(found.network.as_deref(), Some("kctl-demo"));
        assert!(found.left_alone.is_empty() && found.elsewhere.is_empty());
    }

    #[test]
    fn a_listed_name_that_reads_as_a_flag_is_never_acted_on() {
        let listed = Listed {
            instances: vec![
                instance("kctl-demo-minion-1", "us-central1-b"),
                instance("--quiet", "us-central1-b"),
            ],
            routes: vec![route("--zone=x", "us-central1-b", "--zone=x")],
            firewall_rules: vec![rule("-fw", "kctl-demo")],
            subnet: Some(subnet()),
            network: Some(network(&["us-central1"])),
        };
        let found = judge(&names(), Knowledge::Recorded, &listed);
        assert_eq!(found.instances, ["kctl-demo-minion-1"]);
        assert!(found.routes.is_empty() && found.firewall_rules.is_empty());
        for name in ["--quiet", "--zone=x", "-fw"] {
            assert!(
                found
                    .left_alone
                    .iter()
                    .any(|l| l.contains(&format!("{name:?}"))),
                "{name}: {:?}",
                found.left_alone
            );
        }
    }

    #[test]
    fn without_a_record_a_route_goes_only_with_its_live_next_hop_in_the_zone() {
        let listed = Listed {
            instances: vec![instance("kctl-demo-minion-1", "us-central1-b")],
            routes: vec![
                route("kctl-demo-minion-1", "us-central1-b", "kctl-demo-minion-1"),
                // next hop instance does not exist (or is not labelled)
                route("kctl-demo-minion-2", "us-central1-b", "kctl-demo-minion-2"),
                // next hop in another zone
                route("kctl-demo-minion-3", "us-east1-b", "kctl-demo-minion-3"),
                // next hop is another instance
                route("kctl-demo-minion-4", "us-central1-b", "db-server"),
            ],
            firewall_rules: rules(),
            subnet: Some(subnet()),
            network: Some(network(&["us-central1"])),
        };
        let found = judge(&names(), Knowledge::FromFlags, &listed);
        assert_eq!(found.routes, ["kctl-demo-minion-1"]);
        assert!(found
            .left_alone
            .iter()
            .any(|l| l.contains("us-east1-b/kctl-demo-minion-3")));
        // Routes left on the network keep it (GCE would refuse to delete
        // it): the network, its subnet and rules stay, said so.
        assert!(found.network.is_none() && found.subnet.is_none());
        assert!(found.firewall_rules.is_empty());
        assert_eq!(found.left_alone.len(), 3 + 4, "{:#?}", found.left_alone);
        assert!(found
            .left_alone
            .iter()
            .any(|l| l.starts_with("network kctl-demo: routes left alone")));
        // A recorded cluster still never takes a route whose hop is elsewhere.
        let found = judge(&names(), Knowledge::Recorded, &listed);
        assert_eq!(found.routes, ["kctl-demo-minion-1", "kctl-demo-minion-2"]);
        assert_eq!(found.network.as_deref(), Some("kctl-demo"));
    }

    #[test]
    fn instances_in_another_zone_are_reported_not_taken() {
        let listed = Listed {
            instances: vec![
                instance("kctl-demo-master", "us-east1-b"),
                instance("kctl-demo-minion-1", "us-east1-b"),
            ],
            ..Listed::default()
        };
        let found = judge(&names(), Knowledge::FromFlags, &listed);
        assert!(found.instances.is_empty());
        assert_eq!(
            found.elsewhere,
            [
                "kctl-demo-master (us-east1-b)",
                "kctl-demo-minion-1 (us-east1-b)"
            ]
        );
        assert!(found.is_empty() && !found.nothing_at_all());
    }

    #[test]
    fn without_a_record_a_network_with_subnets_in_other_regions_is_left_alone() {
        let listed = Listed {
            firewall_rules: rules(),
            network: Some(network(&["us-east1"])),
            ..Listed::default()
        };
        let found = judge(&names(), Knowledge::FromFlags, &listed);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(found.left_alone.len(), 3, "{:?}", found.left_alone);
        assert!(found.left_alone.iter().all(|l| l.contains("us-east1")));
        // A network without subnets (an up that stopped early) is taken.
        let listed = Listed {
            firewall_rules: rules(),
            network: Some(network(&[])),
            ..Listed::default()
        };
        let found = judge(&names(), Knowledge::FromFlags, &listed);
        assert_eq!(found.network.as_deref(), Some("kctl-demo"));
        assert_eq!(found.firewall_rules, rule_names());
    }

    #[test]
    fn rules_and_subnets_on_another_network_are_never_taken() {
        let listed = Listed {
            firewall_rules: vec![
                rule("kctl-demo-internal", "kctl-demo"),
                rule("kctl-demo-ssh", "default"),
            ],
            subnet: Some(json!({"name": "kctl-demo-us-central1", "network": net("other")})),
            network: Some(network(&["us-central1"])),
            ..Listed::default()
        };
        for knowledge in [Knowledge::Recorded, Knowledge::FromFlags] {
            let found = judge(&names(), knowledge, &listed);
            assert_eq!(found.firewall_rules, ["kctl-demo-internal"]);
            assert!(found.subnet.is_none());
            assert_eq!(found.left_alone.len(), 2, "{:?}", found.left_alone);
        }
    }
}

/// The startup script's own logic, run by /bin/sh with stand-ins for the
/// programs that would change this machine (apt-get, dpkg, systemctl,
/// etcd): apt retried until it works, then the done marker with kctl's
/// version; apt failing for good leaves the failed marker with the log's
/// tail and exits non-zero. (The real packages are installed by the same
/// script on booted Debian machines in the integration tests.)
mod startup_script_runs {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Command;

    struct Sandbox {
        dir: PathBuf,
    }

    impl Sandbox {
        fn new(name: &str, apt_failures: u32) -> Sandbox {
            let dir = std::env::temp_dir().join(format!("kctl-boot-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("bin")).unwrap();
            let stub = |name: &str, body: &str| {
                let path = dir.join("bin").join(name);
                std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            };
            let calls = dir.join("calls");
            let count = dir.join("apt-count");
            stub(
                "apt-get",
                &format!(
                    "echo \"apt-get $*\" >>{calls}\nn=$(cat {count} 2>/dev/null || echo 0)\necho $((n+1)) >{count}\nif [ \"$n\" -lt {apt_failures} ]; then echo 'E: Could not get lock /var/lib/dpkg/lock-frontend' >&2; exit 100; fi",
                    calls = calls.display(),
                    count = count.display()
                ),
            );
            stub("dpkg-query", "exit 1");
            stub("dpkg", &format!("echo \"dpkg $*\" >>{}", calls.display()));
            stub(
                "systemctl",
                &format!("echo \"systemctl $*\" >>{}", calls.display()),
            );
            stub("etcd", "echo 'etcd Version: 3.4.23'");
            // Swap is made only where memory is short; these record what
            // would be done and touch nothing of this machine.
            for program in ["swapon", "mkswap", "fallocate"] {
                stub(
                    program,
                    &format!(
                        "echo \"{program} $*\" >>{calls}\n[ \"$1\" = -l ] && : >\"$3\"\nexit 0",
                        calls = calls.display()
                    ),
                );
            }
            std::fs::write(dir.join("meminfo"), "MemTotal:       24000000 kB\n").unwrap();
            Sandbox { dir }
        }

        fn run(&self, script: &str) -> std::process::Output {
            let path = self.dir.join("startup.sh");
            std::fs::write(&path, script).unwrap();
            let bin = self.dir.join("bin");
            Command::new("/bin/sh")
                .arg(&path)
                .env(
                    "PATH",
                    format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
                )
                .env("KCTL_BOOT", self.dir.join("boot"))
                .env("KCTL_BOOT_LOG", self.dir.join("log"))
                .env("KCTL_BOOT_SWAPFILE", self.dir.join("swapfile"))
                .env("KCTL_BOOT_MEMINFO", self.dir.join("meminfo"))
                .env("KCTL_BOOT_RETRY_PAUSE", "0")
                .output()
                .unwrap()
        }

        fn read(&self, name: &str) -> Option<String> {
            std::fs::read_to_string(self.dir.join(name)).ok()
        }

        fn boot(&self, name: &str) -> Option<String> {
            self.read(&Path::new("boot").join(name).display().to_string())
        }
    }

    impl Drop for Sandbox {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn a_held_lock_is_waited_out_and_the_done_marker_names_the_version() {
        let sandbox = Sandbox::new("retry", 2);
        let out = sandbox.run(&engine::startup_script(&spec(1), Role::Master, 0));
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{log}");
        let calls = sandbox.read("calls").unwrap();
        // update failed twice (lock held), then update and install ran.
        assert_eq!(calls.matches("apt-get").count(), 4, "{calls}");
        assert!(
            calls.contains("install --no-install-recommends etcd-server"),
            "{calls}"
        );
        assert!(calls.contains("DPkg::Lock::Timeout=300"), "{calls}");
        assert!(calls.contains("dpkg --configure -a"), "{calls}");
        assert!(calls.contains("systemctl disable --now etcd"), "{calls}");
        assert_eq!(
            sandbox.boot("done").as_deref(),
            Some(&*format!("{BOOT_FORMAT} {BOOT_VERSION}\n"))
        );
        assert!(sandbox.boot("failed").is_none());
        assert!(sandbox.read("log").unwrap().contains("retrying"));
        // 24 GB of memory: no swap.
        assert!(!calls.contains("swapon /"), "{calls}");
    }

    #[test]
    fn where_memory_is_short_a_swap_file_is_made_once() {
        let sandbox = Sandbox::new("swap", 0);
        // f1-micro: 614 MB.
        std::fs::write(sandbox.dir.join("meminfo"), "MemTotal:         628736 kB\n").unwrap();
        let script = engine::startup_script(&spec(1), Role::Master, 0);
        let out = sandbox.run(&script);
        assert!(out.status.success(), "{out:?}");
        let swapfile = sandbox.dir.join("swapfile").display().to_string();
        let calls = sandbox.read("calls").unwrap();
        for call in [
            format!("fallocate -l 1G {swapfile}"),
            format!("mkswap {swapfile}"),
            format!("swapon {swapfile}"),
        ] {
            assert!(calls.contains(&call), "{call} in {calls}");
        }
        // The next boot finds the file and only turns it on.
        std::fs::remove_file(sandbox.dir.join("calls")).unwrap();
        let out = sandbox.run(&script);
        assert!(out.status.success(), "{out:?}");
        let calls = sandbox.read("calls").unwrap();
        assert!(
            !calls.contains("fallocate") && !calls.contains("mkswap"),
            "{calls}"
        );
        assert!(calls.contains(&format!("swapon {swapfile}")), "{calls}");
    }

    #[test]
    fn apt_failing_for_good_leaves_the_failed_marker_with_the_log_tail() {
        let sandbox = Sandbox::new("fail", 99);
        // A done marker of an earlier boot must not survive this one.
        std::fs::create_dir_all(sandbox.dir.join("boot")).unwrap();
        std::fs::write(sandbox.dir.join("boot/done"), "0.0.1\n").unwrap();
        let out = sandbox.run(&engine::startup_script(&spec(1), Role::Minion, 1));
        assert!(!out.status.success());
        assert!(sandbox.boot("done").is_none());
        let failed = sandbox.boot("failed").unwrap();
        assert!(failed.contains("Could not get lock"), "{failed}");
        assert!(failed.contains("failed 4 times"), "{failed}");
        // Four tries, then no install step ran.
        let calls = sandbox.read("calls").unwrap();
        assert_eq!(calls.matches("apt-get").count(), 4, "{calls}");
        assert!(!calls.contains("systemctl enable"), "{calls}");
    }
}

mod capacity {
    use super::*;
    use serde_json::json;

    fn quota(metric: &str, limit: f64, usage: f64) -> Quota {
        Quota {
            metric: metric.into(),
            limit,
            usage,
        }
    }

    #[test]
    fn quotas_are_read_from_a_region_or_project() {
        let region = json!({"quotas": [
            {"metric": "CPUS", "limit": 8.0, "usage": 6.0},
            {"metric": "IN_USE_ADDRESSES", "limit": 8, "usage": 0},
            {"metric": "broken"}
        ]});
        assert_eq!(
            quotas(&region),
            [quota("CPUS", 8.0, 6.0), quota("IN_USE_ADDRESSES", 8.0, 0.0)]
        );
    }

    fn needs(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(m, n)| (m.to_string(), *n)).collect()
    }

    #[test]
    fn vcpus_count_against_their_family_quota_where_the_region_has_one() {
        let with_e2 = [quota("CPUS", 24.0, 0.0), quota("E2_CPUS", 8.0, 0.0)];
        assert_eq!(cpu_metric("e2-micro", &with_e2), "E2_CPUS");
        assert_eq!(cpu_metric("e2-micro", &with_e2[..1]), "CPUS");
        assert_eq!(cpu_metric("f1-micro", &with_e2), "CPUS");
        assert_eq!(cpu_metric("n1-standard-1", &with_e2), "CPUS");
    }

    #[test]
    fn a_first_up_needs_every_instance_and_network_resource() {
        let mut s = spec(3);
        s.machine_type = "e2-micro".into();
        let cpus = [("f1-micro".to_string(), 1), ("e2-micro".to_string(), 2)];
        let region = [quota("CPUS", 24.0, 0.0), quota("E2_CPUS", 8.0, 0.0)];
        let (regional, global) = needed_quota(&s, &Discovered::default(), &cpus, &region).unwrap();
        // master f1-micro (1, CPUS) + 3 minions e2-micro (2 each, E2_CPUS)
        assert_eq!(
            regional,
            needs(&[
                ("CPUS", 1.0),
                ("E2_CPUS", 6.0),
                ("INSTANCES", 4.0),
                ("IN_USE_ADDRESSES", 4.0),
                ("DISKS_TOTAL_GB", 40.0)
            ])
        );
        assert_eq!(
            global,
            needs(&[
                ("NETWORKS", 1.0),
                ("SUBNETWORKS", 1.0),
                ("FIREWALLS", 2.0),
                ("ROUTES", 3.0)
            ])
        );
    }

    #[test]
    fn a_rerun_needs_only_what_is_missing() {
        let s = spec(2);
        let mut existing = planned(&s).unwrap();
        existing.instances.retain(|i| i != "kctl-demo-minion-2");
        existing.routes.clear();
        let cpus = [("f1-micro".to_string(), 1)];
        let (regional, global) = needed_quota(&s, &existing, &cpus, &[]).unwrap();
        assert_eq!(regional[0], ("CPUS".to_string(), 1.0));
        assert_eq!(regional[1], ("INSTANCES".to_string(), 1.0));
        assert_eq!(global[0], ("NETWORKS".to_string(), 0.0));
        assert_eq!(global[3], ("ROUTES".to_string(), 2.0));
    }

    #[test]
    fn shortfalls_name_the_metric_and_numbers() {
        let available = [quota("CPUS", 8.0, 6.0), quota("IN_USE_ADDRESSES", 8.0, 0.0)];
        let short = quota_shortfalls(
            &available,
            &needs(&[
                ("CPUS", 4.0),
                ("IN_USE_ADDRESSES", 4.0),
                ("UNREPORTED", 99.0),
            ]),
        );
        assert_eq!(short, ["CPUS: needs 4, but 6 of 8 are in use"]);
        // Exactly full is enough.
        assert!(quota_shortfalls(&available, &needs(&[("CPUS", 2.0)])).is_empty());
        assert!(quota_shortfalls(&available, &needs(&[("CPUS", 0.0)])).is_empty());
    }

    #[test]
    fn enforced_policies_are_recognised() {
        assert!(policy_enforced(&json!({
            "constraint": "constraints/compute.requireOsLogin",
            "booleanPolicy": {"enforced": true}
        })));
        assert!(!policy_enforced(&json!({
            "constraint": "constraints/compute.requireOsLogin",
            "booleanPolicy": {}
        })));
        assert!(!policy_enforced(&json!({"constraint": "x"})));
    }
}

/// Load balancers go first: a forwarding rule holds its pool, and the
/// firewall rule is on the network deleted last.
#[test]
fn teardown_deletes_load_balancers_before_instances() {
    let n = Names::new("demo", "us-central1-b").unwrap();
    let mut found = planned(&spec(1)).unwrap();
    found.load_balancers = vec![
        super::lb::LbStep::DeleteRule {
            name: "kctl-demo-lb-web".into(),
        },
        super::lb::LbStep::DeletePool {
            name: "kctl-demo-lb-web".into(),
        },
        super::lb::LbStep::DeleteFirewall {
            name: "kctl-demo-lb-web".into(),
        },
    ];
    assert_eq!(
        &found.lines()[..2],
        [
            "forwarding rule kctl-demo-lb-web",
            "target pool kctl-demo-lb-web"
        ]
    );
    let calls = down_commands("my-proj-123", &n.zone, "demo", &found).unwrap();
    let deletes: Vec<String> = calls
        .iter()
        .filter(|c| c.contains(&"delete".to_string()))
        .map(|c| c[2..4].join(" "))
        .collect();
    assert_eq!(
        &deletes[..4],
        [
            "forwarding-rules delete",
            "target-pools delete",
            "firewall-rules delete",
            "instances delete"
        ]
    );
    let rule = calls
        .iter()
        .find(|c| c[2] == "forwarding-rules" && c[3] == "delete")
        .unwrap();
    assert!(
        rule.contains(&"--region=us-central1".to_string()),
        "{rule:?}"
    );
}
