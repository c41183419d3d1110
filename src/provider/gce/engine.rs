//! The order of gcloud calls for `up` and `down`. Every step reads before it
//! writes, so `up` on an existing (or half-made) cluster creates only what
//! is missing, and `down` needs nothing but project, zone and cluster name.

use super::commands as cmd;
use super::parse::{self, Expect, Instance};
use super::spec::{pod_cidr, GceSpec, Names, Role};
use super::transport::Gcloud;
use super::{failed, GceError};
use crate::model::names::is_rfc1035;
use futures::future::join_all;
use serde_json::Value;
use tokio::time::Instant;

pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceCluster {
    /// The master VMs, one etcd member on each.
    pub masters: Vec<Instance>,
    pub minions: Vec<Instance>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreflightReport {
    /// The active gcloud account.
    pub account: String,
    /// Things worth telling the user that do not stop `up` (a machine type
    /// or image marked deprecated, a policy kctl could not read).
    pub warnings: Vec<String>,
    /// `guestCpus` of each machine type the cluster uses (what the CPUS
    /// quota counts).
    pub guest_cpus: Vec<(String, u32)>,
    /// The project's `quotas[]` (global metrics).
    pub project_quotas: Vec<Quota>,
}

/// One quota as GCE reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    pub metric: String,
    pub limit: f64,
    pub usage: f64,
}

/// `quotas[]` of a project or region resource.
pub fn quotas(value: &Value) -> Vec<Quota> {
    value
        .get("quotas")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|q| {
            Some(Quota {
                metric: q.get("metric")?.as_str()?.to_string(),
                limit: q.get("limit")?.as_f64()?,
                usage: q.get("usage").and_then(Value::as_f64).unwrap_or(0.0),
            })
        })
        .collect()
}

/// One line per quota that cannot hold what `up` would add (pure).
/// Metrics the resource does not report are not judged.
pub fn quota_shortfalls(available: &[Quota], needed: &[(String, f64)]) -> Vec<String> {
    needed
        .iter()
        .filter(|(_, n)| *n > 0.0)
        .filter_map(|(metric, n)| {
            let q = available.iter().find(|q| q.metric == *metric)?;
            (q.usage + n > q.limit).then(|| {
                format!(
                    "{metric}: needs {n}, but {} of {} are in use",
                    q.usage, q.limit
                )
            })
        })
        .collect()
}

/// Quota metrics and how much of each `up` needs.
pub type Needs = Vec<(String, f64)>;

/// The regional quota a machine type's vCPUs count against: N1 types
/// (f1-micro, g1-small, n1-*) count against CPUS; other families against
/// their own metric (E2_CPUS, N2_CPUS, ...) where the region reports one,
/// else CPUS.
pub fn cpu_metric(machine_type: &str, reported: &[Quota]) -> String {
    let family = machine_type
        .split('-')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    let own = format!("{family}_CPUS");
    let n1 = ["F1", "G1", "N1"].contains(&family.as_str());
    if !n1 && reported.iter().any(|q| q.metric == own) {
        own
    } else {
        "CPUS".to_string()
    }
}

/// What `up` still has to create, given what exists: the quotas it needs
/// (pure), regional then global. Instances count vCPUs (their machine
/// type's guestCpus, against `cpu_metric`), an instance, an external
/// address and a 10 GB boot disk each.
pub fn needed_quota(
    spec: &GceSpec,
    existing: &Discovered,
    guest_cpus: &[(String, u32)],
    region_quotas: &[Quota],
) -> Result<(Needs, Needs), GceError> {
    let plan = planned(spec)?;
    let missing = |want: &[String], have: &[String]| {
        want.iter()
            .filter(|w| !have.contains(w))
            .cloned()
            .collect::<Vec<_>>()
    };
    let n = spec.names()?;
    let new_instances = missing(&plan.instances, &existing.instances);
    let mut regional: Needs = vec![];
    let mut add =
        |metric: String, amount: f64| match regional.iter_mut().find(|(m, _)| *m == metric) {
            Some((_, sum)) => *sum += amount,
            None => regional.push((metric, amount)),
        };
    for instance in &new_instances {
        let machine_type = if n.masters(spec.masters).contains(instance) {
            &spec.master_machine_type
        } else {
            &spec.machine_type
        };
        let cpus = guest_cpus
            .iter()
            .find(|(t, _)| t == machine_type)
            .map_or(1, |(_, c)| *c) as f64;
        add(cpu_metric(machine_type, region_quotas), cpus);
    }
    let count = new_instances.len() as f64;
    add("INSTANCES".into(), count);
    add("IN_USE_ADDRESSES".into(), count);
    add("DISKS_TOTAL_GB".into(), 10.0 * count);
    let global = vec![
        ("NETWORKS".into(), (existing.network.is_none() as u8) as f64),
        (
            "SUBNETWORKS".into(),
            (existing.subnet.is_none() as u8) as f64,
        ),
        (
            "FIREWALLS".into(),
            missing(&plan.firewall_rules, &existing.firewall_rules).len() as f64,
        ),
        (
            "ROUTES".into(),
            missing(&plan.routes, &existing.routes).len() as f64,
        ),
    ];
    Ok((regional, global))
}

/// Checks, before anything is created, that the project's and region's
/// quotas can hold what `up` still has to make. Each shortfall is named
/// with its numbers.
pub async fn check_quotas<G: Gcloud>(
    g: &G,
    spec: &GceSpec,
    report: &PreflightReport,
    existing: &Discovered,
) -> Result<(), GceError> {
    let region = spec.names()?.region;
    let argv = cmd::region_describe(&spec.project, &region);
    let out = g.run(&argv).await?;
    if !out.success() {
        return Err(failed(&argv, &out));
    }
    let value = parse::single_object(&out.stdout).map_err(|m| bad_output(&argv, m))?;
    let region_quotas = quotas(&value);
    let (regional, global) = needed_quota(spec, existing, &report.guest_cpus, &region_quotas)?;
    let mut short = quota_shortfalls(&region_quotas, &regional);
    short.extend(quota_shortfalls(&report.project_quotas, &global));
    if short.is_empty() {
        Ok(())
    } else {
        Err(GceError::Quota {
            project: spec.project.clone(),
            region,
            shortfalls: short,
        })
    }
}

/// Whether an effective organisation policy enforces a boolean
/// constraint: `{"booleanPolicy": {"enforced": true}}`.
pub fn policy_enforced(value: &Value) -> bool {
    value.pointer("/booleanPolicy/enforced") == Some(&Value::Bool(true))
}

/// A `commonInstanceMetadata` item of a project, lower-cased.
pub fn project_metadata(project: &Value, key: &str) -> Option<String> {
    project
        .pointer("/commonInstanceMetadata/items")?
        .as_array()?
        .iter()
        .find(|i| i.get("key").and_then(Value::as_str) == Some(key))?
        .get("value")?
        .as_str()
        .map(|v| v.trim().to_ascii_lowercase())
}

/// What exists of one cluster, by name, sorted: what `down` deletes, and
/// what it found by name but leaves alone because it is not provably this
/// cluster's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    pub instances: Vec<String>,
    pub routes: Vec<String>,
    pub firewall_rules: Vec<String>,
    pub subnet: Option<String>,
    pub network: Option<String>,
    /// One line per resource found by name but not deleted, with why.
    pub left_alone: Vec<String>,
    /// Instances labelled with this cluster's name in other zones,
    /// "NAME (ZONE)": another cluster of the same name, or the wrong zone.
    pub elsewhere: Vec<String>,
    /// The deletes that remove every load balancer of the cluster
    /// (forwarding rules, target pools, their firewall rules), in order.
    pub load_balancers: Vec<super::lb::LbStep>,
}

impl Discovered {
    /// Nothing to delete.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
            && self.load_balancers.is_empty()
            && self.routes.is_empty()
            && self.firewall_rules.is_empty()
            && self.subnet.is_none()
            && self.network.is_none()
    }

    /// Nothing of this name anywhere in the project, not even something
    /// `down` would leave alone.
    pub fn nothing_at_all(&self) -> bool {
        self.is_empty() && self.left_alone.is_empty() && self.elsewhere.is_empty()
    }

    /// One human line per resource to delete, in teardown order
    /// ("instance NAME").
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .load_balancers
            .iter()
            .map(|step| step.line().trim_start_matches("- ").to_string())
            .collect();
        lines.extend(self.instances.iter().map(|n| format!("instance {n}")));
        lines.extend(self.routes.iter().map(|n| format!("route {n}")));
        lines.extend(
            self.firewall_rules
                .iter()
                .map(|n| format!("firewall rule {n}")),
        );
        lines.extend(self.subnet.iter().map(|n| format!("subnet {n}")));
        lines.extend(self.network.iter().map(|n| format!("network {n}")));
        lines
    }
}

/// How `down` knows where the cluster lives: from the record `up` saved,
/// or only from the user's `--project`/`--zone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knowledge {
    Recorded,
    FromFlags,
}

/// The last path segment of a resource URL ("…/zones/us-central1-b" ->
/// "us-central1-b").
fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

fn str_at<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// What the listing calls of `discover` returned.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    pub instances: Vec<Value>,
    pub routes: Vec<Value>,
    pub firewall_rules: Vec<Value>,
    pub subnet: Option<Value>,
    pub network: Option<Value>,
}

/// Decides from `listed` which resources are this cluster's in `zone`
/// (pure). Instances go by label (the list's filter) and zone. A route is
/// this cluster's only if its next hop is the minion of the same name in
/// `zone` and, without a record, only if that instance exists with the
/// cluster's label. Firewall rules and the subnet must be on the cluster's
/// network. Without a record, the network (with its subnet and rules) is
/// this cluster's only if it has no subnet outside the zone's region and
/// no route on it is left alone (GCE would refuse to delete it anyway).
pub fn judge(n: &Names, knowledge: Knowledge, listed: &Listed) -> Discovered {
    let zone = n.zone.as_str();
    let on_network =
        |v: &Value| str_at(v, "/network").ends_with(&format!("/global/networks/{}", n.network));
    let mut found = Discovered::default();
    for instance in &listed.instances {
        let name = str_at(instance, "/name").to_string();
        let its_zone = last_segment(str_at(instance, "/zone"));
        if its_zone == zone {
            found.instances.push(name);
        } else {
            found.elsewhere.push(format!("{name} ({its_zone})"));
        }
    }
    let mut routes_left_on_network = false;
    for route in &listed.routes {
        let name = str_at(route, "/name");
        let hop = str_at(route, "/nextHopInstance");
        let hop_path = hop.split("/zones/").nth(1).unwrap_or("");
        let expected = format!("{zone}/instances/{name}");
        let hop_exists = found.instances.iter().any(|i| i == name);
        if hop_path == expected && (knowledge == Knowledge::Recorded || hop_exists) {
            found.routes.push(name.to_string());
        } else {
            routes_left_on_network |= on_network(route);
            let hop = if hop.is_empty() {
                "none".to_string()
            } else {
                hop_path.replace("/instances/", "/")
            };
            found.left_alone.push(format!(
                "route {name}: its next hop ({hop}) is not a live instance {name} of cluster {} in {zone}",
                n.cluster
            ));
        }
    }
    let foreign_subnets: Vec<String> = listed
        .network
        .as_ref()
        .and_then(|v| v.get("subnetworks"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|url| !url.contains(&format!("/regions/{}/", n.region)))
        .map(|url| last_segment(url).to_string())
        .collect();
    let why_not_ours = match knowledge {
        Knowledge::Recorded => None,
        Knowledge::FromFlags if !foreign_subnets.is_empty() => Some(format!(
            "its network {} has subnets outside {} ({})",
            n.network,
            n.region,
            foreign_subnets.join(", ")
        )),
        Knowledge::FromFlags if routes_left_on_network => Some(format!(
            "routes left alone still use its network {}",
            n.network
        )),
        Knowledge::FromFlags => None,
    };
    let mut network_parts = vec![];
    for rule in &listed.firewall_rules {
        let name = str_at(rule, "/name").to_string();
        if on_network(rule) {
            network_parts.push(("firewall rule", name));
        } else {
            found.left_alone.push(format!(
                "firewall rule {name}: not on network {}",
                n.network
            ));
        }
    }
    if let Some(subnet) = &listed.subnet {
        let name = str_at(subnet, "/name").to_string();
        if on_network(subnet) {
            network_parts.push(("subnet", name));
        } else {
            found
                .left_alone
                .push(format!("subnet {name}: not on network {}", n.network));
        }
    }
    if let Some(network) = &listed.network {
        network_parts.push(("network", str_at(network, "/name").to_string()));
    }
    match why_not_ours {
        None => {
            for (kind, name) in network_parts {
                match kind {
                    "firewall rule" => found.firewall_rules.push(name),
                    "subnet" => found.subnet = Some(name),
                    _ => found.network = Some(name),
                }
            }
        }
        Some(why) => found.left_alone.extend(
            network_parts
                .into_iter()
                .map(|(kind, name)| format!("{kind} {name}: {why}")),
        ),
    }
    // Names are gcloud's answers and reach gcloud's argv: one that is no
    // GCE name (one that reads as a flag) is never acted on.
    let mut refused = vec![];
    for (kind, list) in [
        ("instance", &mut found.instances),
        ("route", &mut found.routes),
        ("firewall rule", &mut found.firewall_rules),
    ] {
        list.retain(|name| {
            let ok = is_rfc1035(name);
            if !ok {
                refused.push(format!("{kind} {name:?}: no GCE name"));
            }
            ok
        });
    }
    for (kind, slot) in [
        ("subnet", &mut found.subnet),
        ("network", &mut found.network),
    ] {
        if let Some(name) = slot.take_if(|name| !is_rfc1035(name)) {
            refused.push(format!("{kind} {name:?}: no GCE name"));
        }
    }
    found.left_alone.extend(refused);
    for list in [
        &mut found.instances,
        &mut found.routes,
        &mut found.firewall_rules,
        &mut found.left_alone,
        &mut found.elsewhere,
    ] {
        list.sort();
    }
    found
}

fn bad_output(argv: &[String], message: String) -> GceError {
    GceError::BadOutput {
        argv: argv.to_vec(),
        message,
    }
}

/// gcloud's error without its `ERROR: (gcloud.x.y)` and "Could not fetch
/// resource" wrapping, on one line, for messages.
fn error_text(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| {
            let l = l.trim();
            let l = match l.strip_prefix("ERROR: (") {
                Some(rest) => rest.split_once(") ").map_or(rest, |(_, r)| r),
                None => l,
            };
            l.trim_start_matches("- ").trim()
        })
        .filter(|l| !l.is_empty() && *l != "Could not fetch resource:")
        .collect();
    lines.join(" ")
}

fn is_quota_error(stderr: &str) -> bool {
    stderr.contains("Quota '") && stderr.contains("exceeded")
}

fn is_auth_failure(stderr: &str) -> bool {
    [
        "gcloud auth login",
        "active account",
        "Reauthentication",
        "invalid_grant",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

// ---- preflight ----

/// Checks, reading only, that `up` can work: gcloud runs, an account is
/// logged in, the project has Compute Engine, zone, machine types and
/// image exist. Each failure is one error with a help line.
pub async fn preflight<G: Gcloud>(g: &G, spec: &GceSpec) -> Result<PreflightReport, GceError> {
    spec.validate()?;
    let (p, z) = (spec.project.as_str(), spec.zone.as_str());
    let mut warnings = vec![];

    let argv = cmd::auth_list();
    let out = g.run(&argv).await?;
    if !out.success() {
        return Err(failed(&argv, &out));
    }
    let account = out.stdout.lines().map(str::trim).find(|l| !l.is_empty());
    let account = account.ok_or(GceError::NotLoggedIn)?.to_string();

    // The first authenticated call: a stored account whose token cannot be
    // refreshed fails here, not in `auth list`.
    let out = g.run(&cmd::project_info(p)).await?;
    if !out.success() && is_auth_failure(&out.stderr) {
        return Err(GceError::Auth {
            message: error_text(&out.stderr),
        });
    }
    if !out.success() {
        return Err(GceError::Project {
            project: p.to_string(),
            message: error_text(&out.stderr),
        });
    }
    let project_value =
        parse::single_object(&out.stdout).map_err(|m| bad_output(&cmd::project_info(p), m))?;
    if project_metadata(&project_value, "enable-oslogin").as_deref() == Some("true") {
        warnings.push(format!(
            "project {p} turns OS Login on (enable-oslogin=TRUE); kctl's VMs turn it off for themselves so that their ssh-keys metadata applies"
        ));
    }

    let argv = cmd::zone_describe(p, z);
    let out = g.run(&argv).await?;
    if !out.success() {
        return Err(GceError::Zone {
            zone: z.to_string(),
            project: p.to_string(),
            message: error_text(&out.stderr),
        });
    }
    let zone = parse::single_object(&out.stdout).map_err(|m| bad_output(&argv, m))?;
    if let Some(status) = zone.get("status").and_then(Value::as_str) {
        if status != "UP" {
            return Err(GceError::Zone {
                zone: z.to_string(),
                project: p.to_string(),
                message: format!("status is {status}"),
            });
        }
    }

    let mut types = vec![spec.master_machine_type.clone()];
    if spec.machine_type != spec.master_machine_type {
        types.push(spec.machine_type.clone());
    }
    let mut guest_cpus = vec![];
    for machine_type in types {
        let argv = cmd::machine_type_describe(p, z, &machine_type);
        let out = g.run(&argv).await?;
        if !out.success() {
            return Err(GceError::MachineType {
                machine_type,
                zone: z.to_string(),
                message: error_text(&out.stderr),
            });
        }
        let value = parse::single_object(&out.stdout).map_err(|m| bad_output(&argv, m))?;
        if let Some(state) = parse::deprecation(&value) {
            warnings.push(format!("machine type {machine_type} is marked {state}"));
        }
        let cpus = value.get("guestCpus").and_then(Value::as_u64).unwrap_or(1);
        guest_cpus.push((machine_type, cpus as u32));
    }

    let argv = cmd::image_describe();
    let out = g.run(&argv).await?;
    if !out.success() {
        return Err(GceError::Image {
            message: error_text(&out.stderr),
        });
    }
    let image = parse::single_object(&out.stdout).map_err(|m| bad_output(&argv, m))?;
    if let Some(state) = parse::deprecation(&image) {
        warnings.push(format!("image family debian-12 is marked {state}"));
    }

    // Organisation policies that would make the VMs unusable to kctl,
    // found now rather than as a host-key or SSH timeout later.
    for (constraint, problem) in [
        ("compute.requireOsLogin", PolicyProblem::OsLogin),
        (
            "compute.disableGuestAttributesAccess",
            PolicyProblem::GuestAttributes,
        ),
    ] {
        let argv = cmd::org_policy_describe(p, constraint);
        let out = g.run(&argv).await?;
        if !out.success() {
            warnings.push(format!(
                "could not read the organisation policy {constraint} ({}); if it is enforced, {}",
                error_text(&out.stderr),
                problem.consequence()
            ));
            continue;
        }
        let value = parse::single_object(&out.stdout).map_err(|m| bad_output(&argv, m))?;
        if policy_enforced(&value) {
            return Err(GceError::Policy {
                project: p.to_string(),
                constraint: constraint.to_string(),
                consequence: problem.consequence().to_string(),
            });
        }
    }
    Ok(PreflightReport {
        account,
        warnings,
        guest_cpus,
        project_quotas: quotas(&project_value),
    })
}

#[derive(Debug, Clone, Copy)]
enum PolicyProblem {
    OsLogin,
    GuestAttributes,
}

impl PolicyProblem {
    fn consequence(self) -> &'static str {
        match self {
            PolicyProblem::OsLogin => "the VMs ignore the ssh-keys metadata and kctl cannot log in with its own key",
            PolicyProblem::GuestAttributes => "the VMs cannot publish their SSH host keys, and kctl will not trust a key it has not seen published",
        }
    }
}

// ---- create ----

/// The resource if it exists, None if gcloud says it was not found.
async fn describe<G: Gcloud>(g: &G, argv: &[String]) -> Result<Option<Value>, GceError> {
    let out = g.run(argv).await?;
    if out.success() {
        let value = parse::single_object(&out.stdout).map_err(|m| bad_output(argv, m))?;
        Ok(Some(value))
    } else if out.not_found() {
        Ok(None)
    } else {
        Err(failed(argv, &out))
    }
}

/// One resource `up` makes: how to read it, how to create it, and the
/// fields an existing one must have to be adopted.
struct Step<'a> {
    what: String,
    describe: Vec<String>,
    create: Vec<String>,
    expect: &'a [Expect],
}

fn adopt(step: &Step<'_>, value: Value) -> Result<Value, GceError> {
    let problems = parse::mismatches(&value, step.expect);
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(GceError::Mismatch {
            resource: step.what.clone(),
            problems,
        })
    }
}

/// Describe, and create only if absent. A failed create is checked with a
/// describe (create calls fail transiently, sometimes after the resource
/// was made) and retried with a growing pause. What exists must have the
/// fields kctl would give it: a same-named resource of something else is
/// never adopted.
async fn ensure<G: Gcloud>(
    g: &G,
    spec: &GceSpec,
    step: Step<'_>,
    progress: Progress<'_>,
) -> Result<Value, GceError> {
    let (what, describe_argv, create_argv) = (&step.what, &step.describe, &step.create);
    if let Some(value) = describe(g, describe_argv).await? {
        progress(&format!("{what} exists"));
        return adopt(&step, value);
    }
    progress(&format!("creating {what}"));
    let mut attempt: u32 = 1;
    loop {
        let out = g.run(create_argv).await?;
        if out.success() {
            let value =
                parse::single_object(&out.stdout).map_err(|m| bad_output(create_argv, m))?;
            return adopt(&step, value);
        }
        // Exit 2 is gcloud rejecting the command line, and an exhausted
        // quota stays exhausted: no retry can help.
        if out.code == Some(2) || is_quota_error(&out.stderr) {
            return Err(failed(create_argv, &out));
        }
        if let Some(value) = describe(g, describe_argv).await? {
            progress(&format!("{what} exists after a failed create call"));
            return adopt(&step, value);
        }
        if attempt >= spec.create_attempts.max(1) {
            return Err(failed(create_argv, &out));
        }
        progress(&format!(
            "{what}: create failed ({}); retrying",
            error_text(&out.stderr)
        ));
        tokio::time::sleep(spec.retry_backoff * attempt).await;
        attempt += 1;
    }
}

/// All results of a parallel stage, or the first error once every task
/// has finished (none is cut off mid-call).
fn all_ok<T>(results: Vec<Result<T, GceError>>) -> Result<Vec<T>, GceError> {
    results.into_iter().collect()
}

const MASTER_SCRIPT: &str = include_str!("../../../cluster/gce/master.sh");
const MINION_SCRIPT: &str = include_str!("../../../cluster/gce/minion.sh");
const BOOT_LIB: &str = include_str!("../../../cluster/gce/boot-lib.sh");
/// The kctl that wrote a startup script (in its done marker, for people).
pub const BOOT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// What a finished script has done, as a number `up` compares: raised
/// when the scripts install or set up something new, so that VMs made by
/// an older script are told apart from ones still booting.
pub const BOOT_FORMAT: &str = "1";
/// Where the startup scripts leave their markers on the VM (in /run, which
/// every boot empties).
pub const BOOT_DONE: &str = "/run/kctl-boot/done";
pub const BOOT_FAILED: &str = "/run/kctl-boot/failed";

/// The startup script of the master, or of minion `n`: the role's steps
/// with the shared boot library (apt retries, swap, markers) inlined, so
/// the metadata value is one self-contained script.
pub fn startup_script(spec: &GceSpec, role: Role, n: usize) -> String {
    let template = match role {
        Role::Master => MASTER_SCRIPT,
        Role::Minion => MINION_SCRIPT,
    };
    template
        .replace("@BOOT_LIB@", BOOT_LIB.trim_end())
        .replace("@KCTL_VERSION@", BOOT_VERSION)
        .replace("@BOOT_FORMAT@", BOOT_FORMAT)
        .replace("@CLUSTER@", &spec.cluster)
        .replace("@MINION_INDEX@", &n.to_string())
        .replace("@POD_CIDR@", &pod_cidr(n))
}

/// Writes the files `--metadata-from-file` names: one startup script per
/// instance and the `ssh-keys` file (`USER:KEY`).
pub fn write_metadata_files(spec: &GceSpec) -> Result<(), GceError> {
    let io = |path: &std::path::Path, e: std::io::Error| GceError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(&spec.work_dir).map_err(|e| io(&spec.work_dir, e))?;
    let mut files = vec![(
        cmd::ssh_keys_path(&spec.work_dir),
        format!("{}:{}\n", spec.ssh_user, spec.ssh_public_key.trim()),
    )];
    files.push((
        cmd::startup_script_path(&spec.work_dir, Role::Master, 0),
        startup_script(spec, Role::Master, 0),
    ));
    for n in 1..=spec.minions {
        files.push((
            cmd::startup_script_path(&spec.work_dir, Role::Minion, n),
            startup_script(spec, Role::Minion, n),
        ));
    }
    for (path, text) in files {
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// Creates whatever of the cluster is missing, then reads every instance's
/// addresses and pinned host key. Network, subnet, firewall rules (in
/// parallel), instances (in parallel), routes (in parallel), host keys.
pub async fn create<G: Gcloud>(
    g: &G,
    spec: &GceSpec,
    progress: Progress<'_>,
) -> Result<GceCluster, GceError> {
    spec.validate()?;
    let n = spec.names()?;
    let (p, z) = (spec.project.as_str(), spec.zone.as_str());
    write_metadata_files(spec)?;

    let on_network = Expect::EndsWith("/network", format!("/global/networks/{}", n.network));
    let step = Step {
        what: format!("network {}", n.network),
        describe: cmd::network_describe(p, &n),
        create: cmd::network_create(p, &n),
        // An auto-mode network would overlap our ranges (reference §3).
        expect: &[Expect::Is("/autoCreateSubnetworks", Value::Bool(false))],
    };
    ensure(g, spec, step, progress).await?;
    let step = Step {
        what: format!("subnet {} ({})", n.subnet, super::spec::NODE_RANGE),
        describe: cmd::subnet_describe(p, &n),
        create: cmd::subnet_create(p, &n),
        expect: &[
            Expect::Is("/ipCidrRange", super::spec::NODE_RANGE.into()),
            on_network.clone(),
        ],
    };
    ensure(g, spec, step, progress).await?;

    let rules = [
        (&n.firewall_internal, cmd::firewall_internal_create(p, &n)),
        (
            &n.firewall_ssh,
            cmd::firewall_ssh_create(p, &n, &spec.ssh_sources),
        ),
    ];
    let expect = [on_network.clone()];
    let stage = rules.iter().map(|(name, create_argv)| {
        let step = Step {
            what: format!("firewall rule {name}"),
            describe: cmd::firewall_describe(p, name),
            create: create_argv.clone(),
            expect: &expect,
        };
        ensure(g, spec, step, progress)
    });
    all_ok(join_all(stage).await)?;

    let mut machines: Vec<(Role, usize, String)> = (1..=spec.masters)
        .map(|i| (Role::Master, i, n.master_n(i)))
        .collect();
    machines.extend((1..=spec.minions).map(|i| (Role::Minion, i, n.minion(i))));
    let stage = machines.iter().map(|(role, index, name)| {
        let n = &n;
        async move {
            let mut expect = vec![Expect::EndsWith(
                "/networkInterfaces/0/subnetwork",
                format!("/subnetworks/{}", n.subnet),
            )];
            if *role == Role::Minion {
                expect.push(Expect::Is("/canIpForward", Value::Bool(true)));
            }
            let step = Step {
                what: format!("instance {name}"),
                describe: cmd::instance_describe(p, z, name),
                create: cmd::instance_create(spec, n, *role, *index),
                expect: &expect,
            };
            let value = ensure(g, spec, step, progress).await?;
            parse::instance(&value).map_err(|m| GceError::BadOutput {
                argv: cmd::instance_describe(p, z, name),
                message: m,
            })
        }
    });
    let mut instances = all_ok(join_all(stage).await)?;

    let stage = (1..=spec.minions).map(|i| {
        let n = &n;
        let on_network = on_network.clone();
        async move {
            let expect = [
                Expect::Is("/destRange", pod_cidr(i).into()),
                Expect::EndsWith(
                    "/nextHopInstance",
                    format!("/zones/{z}/instances/{}", n.minion(i)),
                ),
                on_network,
            ];
            let step = Step {
                what: format!("route {} ({} via {})", n.route(i), pod_cidr(i), n.minion(i)),
                describe: cmd::route_describe(p, &n.route(i)),
                create: cmd::route_create(p, z, n, i),
                expect: &expect,
            };
            let value = ensure(g, spec, step, progress).await?;
            // Warnings mean the next hop is unusable (not yet running, or
            // no IP forwarding); tell, do not fail: a booting VM is normal.
            if let Some(w) = value.get("warnings").and_then(Value::as_array) {
                for code in w.iter().filter_map(|w| w.get("code")?.as_str()) {
                    progress(&format!("route {}: warning {code}", n.route(i)));
                }
            }
            Ok(())
        }
    });
    all_ok(join_all(stage).await)?;

    progress("waiting for SSH host keys (published by the guest agent on first boot)");
    let stage = instances
        .iter()
        .map(|instance| wait_host_keys(g, spec, &instance.name));
    let keys = all_ok(join_all(stage).await)?;
    for (instance, keys) in instances.iter_mut().zip(keys) {
        instance.host_keys = keys;
    }
    let minions = instances.split_off(spec.masters);
    Ok(GceCluster {
        masters: instances,
        minions,
    })
}

/// Polls guest attributes until the instance's host keys are there. Never
/// trust-on-first-use: no key by the deadline is an error.
async fn wait_host_keys<G: Gcloud>(
    g: &G,
    spec: &GceSpec,
    name: &str,
) -> Result<Vec<String>, GceError> {
    let argv = cmd::host_keys(&spec.project, &spec.zone, name);
    let start = Instant::now();
    loop {
        let out = g.run(&argv).await?;
        let last = if out.success() {
            let keys = parse::host_keys(&out.stdout).map_err(|m| bad_output(&argv, m))?;
            if !keys.is_empty() {
                return Ok(keys);
            }
            "no valid ed25519, ecdsa or rsa key".to_string()
        } else {
            error_text(&out.stderr)
        };
        if start.elapsed() >= spec.host_key_timeout {
            return Err(GceError::HostKeyTimeout {
                instance: name.to_string(),
                waited_secs: start.elapsed().as_secs(),
                last,
            });
        }
        tokio::time::sleep(spec.host_key_poll).await;
    }
}

/// The last `lines` lines of an instance's serial console: what a VM that
/// never answers SSH printed while booting. None if gcloud cannot read it.
pub async fn serial_tail<G: Gcloud>(
    g: &G,
    project: &str,
    zone: &str,
    instance: &str,
    lines: usize,
) -> Option<String> {
    let out = g
        .run(&cmd::serial_output(project, zone, instance))
        .await
        .ok()?;
    if !out.success() {
        return None;
    }
    let all: Vec<&str> = out.stdout.lines().collect();
    Some(all[all.len().saturating_sub(lines)..].join("\n"))
}

// ---- discover and destroy ----

async fn list_values<G: Gcloud>(g: &G, argv: &[String]) -> Result<Vec<Value>, GceError> {
    let out = g.run(argv).await?;
    if !out.success() {
        return Err(failed(argv, &out));
    }
    parse::list(&out.stdout).map_err(|m| bad_output(argv, m))
}

/// What exists of `cluster` in `project`: instances by label (in every
/// zone), routes and firewall rules by anchored name, subnet and network
/// by describe; then `judge` decides what of it is this cluster's in
/// `zone`.
pub async fn discover<G: Gcloud>(
    g: &G,
    project: &str,
    zone: &str,
    cluster: &str,
    knowledge: Knowledge,
) -> Result<Discovered, GceError> {
    super::spec::validate_cluster(cluster)?;
    super::spec::validate_project(project)?;
    let n = Names::new(cluster, zone)?;
    let listed = Listed {
        instances: list_values(g, &cmd::instances_list(project, &n)).await?,
        routes: list_values(g, &cmd::routes_list(project, &n)).await?,
        firewall_rules: list_values(g, &cmd::firewalls_list(project, &n)).await?,
        subnet: describe(g, &cmd::subnet_describe(project, &n)).await?,
        network: describe(g, &cmd::network_describe(project, &n)).await?,
    };
    let mut found = judge(&n, knowledge, &listed);
    // Load balancers say whose they are in their description; deleting
    // them is the plan that wants none.
    let lbs = super::lb::discover(g, project, &n).await?;
    found.load_balancers = super::lb::plan(&n, &[], &[], &lbs)?;
    Ok(found)
}

/// The delete calls for `found`, in teardown order: load balancers
/// (forwarding rules, then pools, then their firewall rules), instances,
/// routes, firewall rules, subnet, network (each depends on the ones after
/// it).
fn delete_calls(project: &str, zone: &str, n: &Names, found: &Discovered) -> Vec<Vec<String>> {
    let mut calls: Vec<Vec<String>> = found
        .load_balancers
        .iter()
        .map(|step| step.argv(project, n))
        .collect();
    if !found.instances.is_empty() {
        calls.push(cmd::instances_delete(project, zone, &found.instances));
    }
    if !found.routes.is_empty() {
        calls.push(cmd::routes_delete(project, &found.routes));
    }
    if !found.firewall_rules.is_empty() {
        calls.push(cmd::firewalls_delete(project, &found.firewall_rules));
    }
    if found.subnet.is_some() {
        calls.push(cmd::subnet_delete(project, n));
    }
    if found.network.is_some() {
        calls.push(cmd::network_delete(project, n));
    }
    calls
}

/// "instances kctl-demo-master kctl-demo-minion-1" from a delete argv
/// (`compute` dropped, flags dropped).
fn delete_targets(argv: &[String]) -> String {
    let words: Vec<&str> = argv
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--") && *a != "delete")
        .map(String::as_str)
        .collect();
    words.join(" ")
}

/// Deletes everything of `cluster` that exists in `zone` and is provably
/// its own (see `judge`), in the reference's order, and checks that
/// nothing is left. Needs no local record, so it cleans up after a
/// half-finished `up` too. Instances of the name in another zone stop it
/// before anything is deleted: the record or the `--zone` is wrong, or
/// another cluster of that name shares the project-wide names.
pub async fn destroy<G: Gcloud>(
    g: &G,
    project: &str,
    zone: &str,
    cluster: &str,
    knowledge: Knowledge,
    progress: Progress<'_>,
) -> Result<Destroyed, GceError> {
    let found = discover(g, project, zone, cluster, knowledge).await?;
    let n = Names::new(cluster, zone)?;
    if !found.elsewhere.is_empty() {
        return Err(GceError::OtherZone {
            cluster: cluster.to_string(),
            zone: zone.to_string(),
            elsewhere: found.elsewhere,
        });
    }
    if found.is_empty() {
        return Ok(Destroyed {
            deleted: vec![],
            left_alone: found.left_alone,
        });
    }
    let lines = found.lines();
    for argv in delete_calls(project, zone, &n, &found) {
        progress(&format!("deleting {}", delete_targets(&argv)));
        let out = g.run(&argv).await?;
        // Gone already (another `down`, or the console) is what we want.
        if !out.success() && !out.not_found() {
            return Err(failed(&argv, &out));
        }
    }
    let left = discover(g, project, zone, cluster, knowledge).await?;
    if !left.is_empty() {
        return Err(GceError::Leftovers {
            remaining: left.lines(),
        });
    }
    Ok(Destroyed {
        deleted: lines,
        left_alone: found.left_alone,
    })
}

/// Deletes the minions `indices` of a cluster (`up --minions` fewer): their
/// instances, then their routes. Gone already counts as done.
pub async fn remove_minions<G: Gcloud>(
    g: &G,
    spec: &GceSpec,
    indices: &[usize],
    progress: Progress<'_>,
) -> Result<(), GceError> {
    if indices.is_empty() {
        return Ok(());
    }
    let n = spec.names()?;
    let instances: Vec<String> = indices.iter().map(|i| n.minion(*i)).collect();
    let routes: Vec<String> = indices.iter().map(|i| n.route(*i)).collect();
    for argv in [
        cmd::instances_delete(&spec.project, &spec.zone, &instances),
        cmd::routes_delete(&spec.project, &routes),
    ] {
        progress(&format!("deleting {}", delete_targets(&argv)));
        let out = g.run(&argv).await?;
        if !out.success() && !out.not_found() {
            return Err(failed(&argv, &out));
        }
    }
    Ok(())
}

/// What `destroy` did: one line per deleted resource, and one per
/// resource it found by name but left alone, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destroyed {
    pub deleted: Vec<String>,
    pub left_alone: Vec<String>,
}

// ---- dry run ----

fn with_gcloud(calls: Vec<Vec<String>>) -> Vec<Vec<String>> {
    calls
        .into_iter()
        .map(|argv| std::iter::once("gcloud".to_string()).chain(argv).collect())
        .collect()
}

/// Every gcloud argv `up` issues on a project where nothing exists yet, in
/// order (parallel stages listed in a fixed order), each starting with
/// "gcloud". Runs nothing. Host keys are listed once per instance; `up`
/// repeats that call until the keys appear.
pub fn up_commands(spec: &GceSpec) -> Result<Vec<Vec<String>>, GceError> {
    spec.validate()?;
    let n = spec.names()?;
    let (p, z) = (spec.project.as_str(), spec.zone.as_str());
    let mut calls = vec![
        cmd::auth_list(),
        cmd::project_info(p),
        cmd::zone_describe(p, z),
    ];
    calls.push(cmd::machine_type_describe(p, z, &spec.master_machine_type));
    if spec.machine_type != spec.master_machine_type {
        calls.push(cmd::machine_type_describe(p, z, &spec.machine_type));
    }
    calls.push(cmd::image_describe());
    calls.push(cmd::org_policy_describe(p, "compute.requireOsLogin"));
    calls.push(cmd::org_policy_describe(
        p,
        "compute.disableGuestAttributesAccess",
    ));
    // What exists already (also of a same-named cluster elsewhere), then
    // whether the quotas hold the rest.
    calls.extend(discovery_reads(p, &n));
    calls.push(cmd::region_describe(p, &n.region));
    calls.push(cmd::network_describe(p, &n));
    calls.push(cmd::network_create(p, &n));
    calls.push(cmd::subnet_describe(p, &n));
    calls.push(cmd::subnet_create(p, &n));
    calls.push(cmd::firewall_describe(p, &n.firewall_internal));
    calls.push(cmd::firewall_internal_create(p, &n));
    calls.push(cmd::firewall_describe(p, &n.firewall_ssh));
    calls.push(cmd::firewall_ssh_create(p, &n, &spec.ssh_sources));
    for i in 1..=spec.masters {
        calls.push(cmd::instance_describe(p, z, &n.master_n(i)));
        calls.push(cmd::instance_create(spec, &n, Role::Master, i));
    }
    for i in 1..=spec.minions {
        calls.push(cmd::instance_describe(p, z, &n.minion(i)));
        calls.push(cmd::instance_create(spec, &n, Role::Minion, i));
    }
    for i in 1..=spec.minions {
        calls.push(cmd::route_describe(p, &n.route(i)));
        calls.push(cmd::route_create(p, z, &n, i));
    }
    for master in n.masters(spec.masters) {
        calls.push(cmd::host_keys(p, z, &master));
    }
    for i in 1..=spec.minions {
        calls.push(cmd::host_keys(p, z, &n.minion(i)));
    }
    Ok(with_gcloud(calls))
}

/// The reads of `discover`, in its order.
fn discovery_reads(project: &str, n: &Names) -> Vec<Vec<String>> {
    let mut reads = vec![
        cmd::instances_list(project, n),
        cmd::routes_list(project, n),
        cmd::firewalls_list(project, n),
        cmd::subnet_describe(project, n),
        cmd::network_describe(project, n),
    ];
    reads.extend(super::lb::discovery_reads(project, n));
    reads
}

/// Every gcloud argv `down` issues when `found` is what exists: the
/// discovery reads, the deletes, and the reads that check nothing is left.
pub fn down_commands(
    project: &str,
    zone: &str,
    cluster: &str,
    found: &Discovered,
) -> Result<Vec<Vec<String>>, GceError> {
    super::spec::validate_cluster(cluster)?;
    super::spec::validate_project(project)?;
    let n = Names::new(cluster, zone)?;
    let reads = discovery_reads(project, &n);
    let mut calls = reads.clone();
    if !found.is_empty() {
        calls.extend(delete_calls(project, zone, &n, found));
        calls.extend(reads);
    }
    Ok(with_gcloud(calls))
}

/// The cluster `up` would make, as a `Discovered` (for a dry-run `down`).
pub fn planned(spec: &GceSpec) -> Result<Discovered, GceError> {
    let n = spec.names()?;
    let mut instances = n.masters(spec.masters);
    instances.extend((1..=spec.minions).map(|i| n.minion(i)));
    instances.sort();
    let mut routes: Vec<String> = (1..=spec.minions).map(|i| n.route(i)).collect();
    routes.sort();
    let mut firewall_rules = vec![n.firewall_internal.clone(), n.firewall_ssh.clone()];
    firewall_rules.sort();
    Ok(Discovered {
        instances,
        routes,
        firewall_rules,
        subnet: Some(n.subnet.clone()),
        network: Some(n.network.clone()),
        ..Discovered::default()
    })
}
