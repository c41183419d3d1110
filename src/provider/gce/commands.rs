//! Every gcloud command line kctl runs, as pure argv builders (without the
//! leading `gcloud`). Rules from the reference: always `--project`, always
//! `--quiet`, `--format=json` on everything whose output is read, explicit
//! `--zone`/`--region`, and nothing left to gcloud's defaults.

use super::spec::{
    pod_cidr, regex_filter, GceSpec, Names, Role, IMAGE_FAMILY, IMAGE_PROJECT, NODE_RANGE,
    POD_SUPERNET,
};
use crate::argv;
use std::path::{Path, PathBuf};

const JSON: &str = "--format=json";
const QUIET: &str = "--quiet";

fn project(p: &str) -> String {
    format!("--project={p}")
}
fn zone(z: &str) -> String {
    format!("--zone={z}")
}
fn region(r: &str) -> String {
    format!("--region={r}")
}

// ---- preflight reads ----

pub fn auth_list() -> Vec<String> {
    argv![
        "auth",
        "list",
        "--filter=status:ACTIVE",
        "--format=value(account)",
        QUIET
    ]
}

pub fn project_info(p: &str) -> Vec<String> {
    argv![
        "compute",
        "project-info",
        "describe",
        project(p),
        JSON,
        QUIET
    ]
}

pub fn zone_describe(p: &str, z: &str) -> Vec<String> {
    argv!["compute", "zones", "describe", z, project(p), JSON, QUIET]
}

pub fn machine_type_describe(p: &str, z: &str, machine_type: &str) -> Vec<String> {
    argv![
        "compute",
        "machine-types",
        "describe",
        machine_type,
        zone(z),
        project(p),
        JSON,
        QUIET
    ]
}

/// Regional quotas (CPUS, IN_USE_ADDRESSES, INSTANCES, DISKS_TOTAL_GB).
pub fn region_describe(p: &str, region: &str) -> Vec<String> {
    argv![
        "compute",
        "regions",
        "describe",
        region,
        project(p),
        JSON,
        QUIET
    ]
}

/// The organisation policy in force on the project for `constraint`
/// (e.g. `compute.requireOsLogin`), inherited ones included.
pub fn org_policy_describe(p: &str, constraint: &str) -> Vec<String> {
    argv![
        "resource-manager",
        "org-policies",
        "describe",
        constraint,
        project(p),
        "--effective",
        JSON,
        QUIET
    ]
}

/// Public images live in their own project; that is the `--project` here.
pub fn image_describe() -> Vec<String> {
    argv![
        "compute",
        "images",
        "describe-from-family",
        IMAGE_FAMILY,
        project(IMAGE_PROJECT),
        JSON,
        QUIET
    ]
}

// ---- network ----

pub fn network_describe(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "networks",
        "describe",
        &n.network,
        project(p),
        JSON,
        QUIET
    ]
}

/// Custom mode and never `--range`: legacy networks cannot be created any
/// more, and `--range` without `--subnet-mode=legacy` silently makes an
/// auto network whose 10.128.0.0/9 covers our ranges.
pub fn network_create(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "networks",
        "create",
        &n.network,
        project(p),
        "--subnet-mode=custom",
        "--bgp-routing-mode=regional",
        format!("--mtu={}", super::spec::GCE_MTU),
        JSON,
        QUIET
    ]
}

pub fn subnet_describe(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "networks",
        "subnets",
        "describe",
        &n.subnet,
        region(&n.region),
        project(p),
        JSON,
        QUIET
    ]
}

pub fn subnet_create(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "networks",
        "subnets",
        "create",
        &n.subnet,
        project(p),
        format!("--network={}", n.network),
        region(&n.region),
        format!("--range={NODE_RANGE}"),
        JSON,
        QUIET
    ]
}

// ---- firewall rules ----

pub fn firewall_describe(p: &str, name: &str) -> Vec<String> {
    argv![
        "compute",
        "firewall-rules",
        "describe",
        name,
        project(p),
        JSON,
        QUIET
    ]
}

/// Nodes and pods talk to each other. The pod range must be a source:
/// forwarded pod traffic arrives from 10.244.x.y, not the VM's address.
pub fn firewall_internal_create(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "firewall-rules",
        "create",
        &n.firewall_internal,
        project(p),
        format!("--network={}", n.network),
        "--direction=INGRESS",
        "--allow=tcp,udp,icmp,esp,ah,sctp",
        format!("--source-ranges={NODE_RANGE},{POD_SUPERNET}"),
        format!("--target-tags={},{}", n.master_tag, n.minion_tag),
        JSON,
        QUIET
    ]
}

/// SSH is the only way in from outside: kctl reaches etcd through it.
/// SSH from `sources` (0.0.0.0/0 as in 2014 unless the user narrows it,
/// e.g. to the workstation's /32).
pub fn firewall_ssh_create(p: &str, n: &Names, sources: &[String]) -> Vec<String> {
    argv![
        "compute",
        "firewall-rules",
        "create",
        &n.firewall_ssh,
        project(p),
        format!("--network={}", n.network),
        "--direction=INGRESS",
        "--allow=tcp:22",
        format!("--source-ranges={}", sources.join(",")),
        format!("--target-tags={},{}", n.master_tag, n.minion_tag),
        JSON,
        QUIET
    ]
}

// ---- instances ----

/// Where `up` writes each instance's metadata files.
pub fn startup_script_path(work_dir: &Path, role: Role, n: usize) -> PathBuf {
    match role {
        Role::Master => work_dir.join("gce-master-startup.sh"),
        Role::Minion => work_dir.join(format!("gce-minion-{n}-startup.sh")),
    }
}

pub fn ssh_keys_path(work_dir: &Path) -> PathBuf {
    work_dir.join("gce-ssh-keys")
}

pub fn instance_describe(p: &str, z: &str, name: &str) -> Vec<String> {
    argv![
        "compute",
        "instances",
        "describe",
        name,
        zone(z),
        project(p),
        JSON,
        QUIET
    ]
}

/// One call per instance: each has its own startup script. `index` counts
/// minions, or masters (0 and 1: the first master), from 1.
pub fn instance_create(spec: &GceSpec, n: &Names, role: Role, index: usize) -> Vec<String> {
    let (name, machine_type, tag) = match role {
        Role::Master => (n.master_n(index), &spec.master_machine_type, &n.master_tag),
        Role::Minion => (n.minion(index), &spec.machine_type, &n.minion_tag),
    };
    let script = startup_script_path(&spec.work_dir, role, index);
    let keys = ssh_keys_path(&spec.work_dir);
    let mut argv = argv![
        "compute",
        "instances",
        "create",
        name,
        project(&spec.project),
        zone(&spec.zone),
        format!("--machine-type={machine_type}"),
        format!("--image-family={IMAGE_FAMILY}"),
        format!("--image-project={IMAGE_PROJECT}"),
        "--boot-disk-size=10GB",
        "--boot-disk-type=pd-standard",
        format!("--subnet={}", n.subnet)
    ];
    // Minions route their pod range: GCE must let them send and receive
    // packets that are not addressed to the VM itself.
    if role == Role::Minion {
        argv.push("--can-ip-forward".into());
    }
    argv.extend(argv![
        format!("--tags={tag}"),
        format!("--labels={}", n.labels(role)),
        // Guest attributes must be on at creation: host keys are published
        // on first boot only. OS Login off so our ssh-keys apply; project
        // keys blocked so only kctl's key gets in.
        "--metadata=enable-guest-attributes=TRUE,enable-oslogin=FALSE,block-project-ssh-keys=TRUE",
        // One flag: a repeated --metadata-from-file keeps only the last.
        format!(
            "--metadata-from-file=startup-script={},ssh-keys={}",
            script.display(),
            keys.display()
        ),
        // Nodes need no Google API access.
        "--no-service-account",
        "--no-scopes",
        JSON,
        QUIET
    ]);
    argv
}

pub fn host_keys(p: &str, z: &str, name: &str) -> Vec<String> {
    argv![
        "compute",
        "instances",
        "get-guest-attributes",
        name,
        zone(z),
        project(p),
        "--query-path=hostkeys/",
        JSON,
        QUIET
    ]
}

/// What the VM printed on its serial console (boot messages, the startup
/// script's output). Plain text, not JSON.
pub fn serial_output(p: &str, z: &str, name: &str) -> Vec<String> {
    argv![
        "compute",
        "instances",
        "get-serial-port-output",
        name,
        zone(z),
        project(p),
        "--port=1",
        QUIET
    ]
}

// ---- routes ----

pub fn route_describe(p: &str, name: &str) -> Vec<String> {
    argv![
        "compute",
        "routes",
        "describe",
        name,
        project(p),
        JSON,
        QUIET
    ]
}

/// Minion `index`'s pod range goes to that minion.
pub fn route_create(p: &str, z: &str, n: &Names, index: usize) -> Vec<String> {
    argv![
        "compute",
        "routes",
        "create",
        n.route(index),
        project(p),
        format!("--network={}", n.network),
        format!("--destination-range={}", pod_cidr(index)),
        format!("--next-hop-instance={}", n.minion(index)),
        format!("--next-hop-instance-zone={z}"),
        "--priority=1000",
        format!("--description=kctl cluster {} pod range", n.cluster),
        JSON,
        QUIET
    ]
}

// ---- discovery ----

/// Every zone, not only the cluster's: `down` must see a same-named
/// cluster in another zone before it touches project-wide resources.
pub fn instances_list(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "instances",
        "list",
        project(p),
        format!("--filter={}", n.instance_filter()),
        JSON,
        QUIET
    ]
}

pub fn routes_list(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "routes",
        "list",
        project(p),
        format!("--filter={}", regex_filter("name", &n.route_regex())),
        JSON,
        QUIET
    ]
}

pub fn firewalls_list(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "firewall-rules",
        "list",
        project(p),
        format!("--filter={}", regex_filter("name", &n.firewall_regex())),
        JSON,
        QUIET
    ]
}

// ---- teardown ----

/// No `--delete-disks`: boot disks made by `instances create` auto-delete
/// anyway, and with it gcloud first fetches every named instance and
/// deletes none if one is already gone (a `down` racing another).
pub fn instances_delete(p: &str, z: &str, names: &[String]) -> Vec<String> {
    let mut argv = argv!["compute", "instances", "delete"];
    argv.extend(names.iter().cloned());
    argv.extend(argv![project(p), zone(z), QUIET]);
    argv
}

pub fn routes_delete(p: &str, names: &[String]) -> Vec<String> {
    let mut argv = argv!["compute", "routes", "delete"];
    argv.extend(names.iter().cloned());
    argv.extend(argv![project(p), QUIET]);
    argv
}

pub fn firewalls_delete(p: &str, names: &[String]) -> Vec<String> {
    let mut argv = argv!["compute", "firewall-rules", "delete"];
    argv.extend(names.iter().cloned());
    argv.extend(argv![project(p), QUIET]);
    argv
}

pub fn subnet_delete(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "networks",
        "subnets",
        "delete",
        &n.subnet,
        region(&n.region),
        project(p),
        QUIET
    ]
}

pub fn network_delete(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "networks",
        "delete",
        &n.network,
        project(p),
        QUIET
    ]
}

// ---- external load balancers (regional target pools, forwarding rules) ----

/// `--filter=name~"^kctl-C-lb-"`: the cluster's load balancers and, since
/// cluster names may contain `-lb-`, maybe another's (told apart by their
/// description).
fn lb_filter(n: &Names) -> String {
    format!(
        "--filter={}",
        regex_filter("name", &format!("^{}", super::lb::lb_prefix(n)))
    )
}

pub fn target_pools_list(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "target-pools",
        "list",
        project(p),
        format!("--regions={}", n.region),
        lb_filter(n),
        JSON,
        QUIET
    ]
}

pub fn forwarding_rules_list(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "forwarding-rules",
        "list",
        project(p),
        format!("--regions={}", n.region),
        lb_filter(n),
        JSON,
        QUIET
    ]
}

pub fn firewalls_lb_list(p: &str, n: &Names) -> Vec<String> {
    argv![
        "compute",
        "firewall-rules",
        "list",
        project(p),
        lb_filter(n),
        JSON,
        QUIET
    ]
}

/// No health check, as v0.5 made it: the minions' packet rules answer for
/// the pods.
pub fn target_pool_create(p: &str, n: &Names, name: &str, description: &str) -> Vec<String> {
    argv![
        "compute",
        "target-pools",
        "create",
        name,
        project(p),
        region(&n.region),
        format!("--description={description}"),
        JSON,
        QUIET
    ]
}

/// `add-instances` (or `remove-instances`) of minions in the cluster's zone.
pub fn target_pool_instances(
    p: &str,
    n: &Names,
    name: &str,
    instances: &[String],
    add: bool,
) -> Vec<String> {
    argv![
        "compute",
        "target-pools",
        if add {
            "add-instances"
        } else {
            "remove-instances"
        },
        name,
        format!("--instances={}", instances.join(",")),
        format!("--instances-zone={}", n.zone),
        project(p),
        region(&n.region),
        JSON,
        QUIET
    ]
}

pub fn target_pool_delete(p: &str, n: &Names, name: &str) -> Vec<String> {
    argv![
        "compute",
        "target-pools",
        "delete",
        name,
        project(p),
        region(&n.region),
        QUIET
    ]
}

/// The rule gets an ephemeral external address; `--target-pool` is taken
/// in `--region`.
pub fn forwarding_rule_create(
    p: &str,
    n: &Names,
    name: &str,
    port: u16,
    protocol: &str,
    description: &str,
) -> Vec<String> {
    argv![
        "compute",
        "forwarding-rules",
        "create",
        name,
        project(p),
        region(&n.region),
        format!("--ports={port}"),
        format!("--ip-protocol={protocol}"),
        format!("--target-pool={name}"),
        format!("--description={description}"),
        JSON,
        QUIET
    ]
}

pub fn forwarding_rule_delete(p: &str, n: &Names, name: &str) -> Vec<String> {
    argv![
        "compute",
        "forwarding-rules",
        "delete",
        name,
        project(p),
        region(&n.region),
        QUIET
    ]
}

/// The service's port from anywhere, to the minions only (as v0.5 opened
/// it; the forwarding rule's clients are the whole Internet).
pub fn firewall_lb_create(
    p: &str,
    n: &Names,
    name: &str,
    allow: &str,
    description: &str,
) -> Vec<String> {
    argv![
        "compute",
        "firewall-rules",
        "create",
        name,
        project(p),
        format!("--network={}", n.network),
        "--direction=INGRESS",
        format!("--allow={allow}"),
        "--source-ranges=0.0.0.0/0",
        format!("--target-tags={}", n.minion_tag),
        format!("--description={description}"),
        JSON,
        QUIET
    ]
}

// ---- persistent disks (the user's: kctl never creates or deletes one) ----

pub fn disk_describe(p: &str, n: &Names, disk: &str) -> Vec<String> {
    argv![
        "compute",
        "disks",
        "describe",
        disk,
        project(p),
        zone(&n.zone),
        JSON,
        QUIET
    ]
}

/// The device name is the disk's name, so the guest sees it at
/// `/dev/disk/by-id/google-DISK`, and kctl knows its own attachments by it.
pub fn attach_disk(p: &str, n: &Names, instance: &str, disk: &str, read_only: bool) -> Vec<String> {
    argv![
        "compute",
        "instances",
        "attach-disk",
        instance,
        format!("--disk={disk}"),
        format!("--device-name={disk}"),
        format!("--mode={}", if read_only { "ro" } else { "rw" }),
        project(p),
        zone(&n.zone),
        JSON,
        QUIET
    ]
}

pub fn detach_disk(p: &str, n: &Names, instance: &str, disk: &str) -> Vec<String> {
    argv![
        "compute",
        "instances",
        "detach-disk",
        instance,
        format!("--disk={disk}"),
        project(p),
        zone(&n.zone),
        JSON,
        QUIET
    ]
}
