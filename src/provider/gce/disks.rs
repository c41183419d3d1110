//! Persistent disks, as Kubernetes v0.5's GCE cloud provider used them for
//! a pod's `persistentDisk` volume: the disk (the user's, made beforehand
//! with `gcloud compute disks create`) is attached to the instance of the
//! minion the pod runs on, read-write for one pod or read-only for many,
//! and detached when no pod there uses it any more. kctl never creates or
//! deletes a disk: it is the user's data.
//!
//! Pure: what is attached (from `instances list`), the plan (wanted
//! against found). Edge: `discover`, `describe`, `run`. kctl attaches a
//! disk under its own name as device name (so the guest sees it at
//! `/dev/disk/by-id/google-NAME`); only such attachments, never a boot
//! disk, are kctl's to detach.

use super::commands as cmd;
use super::parse;
use super::spec::Names;
use super::transport::Gcloud;
use super::{failed, GceError};
use crate::model::names::is_rfc1035;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A disk one of the cluster's instances should have: read-only when
/// every pod there that uses it says so.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attachment {
    pub disk: String,
    pub instance: String,
    pub read_only: bool,
}

/// The last path segment of `url` when it is `.../zones/ZONE/KIND/NAME`.
fn in_zone(url: &str, zone: &str, kind: &str) -> Option<String> {
    let (head, name) = url.rsplit_once('/')?;
    head.ends_with(&format!("/zones/{zone}/{kind}"))
        .then(|| name.to_string())
}

fn in_cluster_zone(n: &Names, instance: &Value) -> bool {
    let zone = instance.get("zone").and_then(Value::as_str).unwrap_or("");
    zone.ends_with(&format!("/zones/{}", n.zone)) || zone == n.zone
}

/// The cluster's instances in its zone that are not running (stopped,
/// suspended, being deleted): nothing of theirs can still use a disk.
pub fn stopped_instances(n: &Names, instances: &[Value]) -> BTreeSet<String> {
    instances
        .iter()
        .filter(|i| in_cluster_zone(n, i))
        .filter(|i| i.get("status").and_then(Value::as_str) != Some("RUNNING"))
        .filter_map(|i| i.get("name").and_then(Value::as_str))
        .filter(|name| is_rfc1035(name))
        .map(str::to_string)
        .collect()
}

/// What `discover` found on the cluster's instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    pub attachments: Vec<Attachment>,
    pub stopped: BTreeSet<String>,
}

/// The attachments kctl made on the cluster's instances in its zone,
/// from `instances list` (pure). Untrusted: a disk counts only when it is
/// no boot disk, lives in the cluster's zone, has a valid name and is
/// attached under that name.
pub fn judge_attachments(n: &Names, instances: &[Value]) -> Vec<Attachment> {
    let mut found = vec![];
    for instance in instances {
        let Some(name) = instance.get("name").and_then(Value::as_str) else {
            continue;
        };
        if !is_rfc1035(name) || !in_cluster_zone(n, instance) {
            continue;
        }
        let disks = instance.get("disks").and_then(Value::as_array);
        for disk in disks.into_iter().flatten() {
            if disk.get("boot").and_then(Value::as_bool).unwrap_or(false) {
                continue;
            }
            let source = disk.get("source").and_then(Value::as_str).unwrap_or("");
            let device = disk.get("deviceName").and_then(Value::as_str).unwrap_or("");
            let Some(disk_name) = in_zone(source, &n.zone, "disks") else {
                continue;
            };
            if disk_name != device || !is_rfc1035(&disk_name) {
                continue;
            }
            found.push(Attachment {
                disk: disk_name,
                instance: name.to_string(),
                read_only: disk.get("mode").and_then(Value::as_str) == Some("READ_ONLY"),
            });
        }
    }
    found.sort();
    found
}

/// One gcloud call of the disk plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskStep {
    Detach { disk: String, instance: String },
    Attach(Attachment),
}

impl DiskStep {
    /// The plan line.
    pub fn line(&self) -> String {
        match self {
            DiskStep::Detach { disk, instance } => {
                format!("- disk {disk} detached from {instance}")
            }
            DiskStep::Attach(a) => format!(
                "+ disk {} attached to {} ({})",
                a.disk,
                a.instance,
                if a.read_only {
                    "read-only"
                } else {
                    "read-write"
                }
            ),
        }
    }

    /// The gcloud argv (without "gcloud").
    pub fn argv(&self, project: &str, n: &Names) -> Vec<String> {
        match self {
            DiskStep::Detach { disk, instance } => cmd::detach_disk(project, n, instance, disk),
            DiskStep::Attach(a) => cmd::attach_disk(project, n, &a.instance, &a.disk, a.read_only),
        }
    }

    /// The instance the step changes.
    pub fn instance(&self) -> &str {
        match self {
            DiskStep::Detach { instance, .. } => instance,
            DiskStep::Attach(a) => &a.instance,
        }
    }
}

/// What makes the attachments `found` into `wanted` (pure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskPlan {
    /// Attachments nobody wants (or wanted in the other mode).
    pub detach: Vec<DiskStep>,
    /// Attachments GCE takes now: nothing found stands in their way.
    pub attach_now: Vec<DiskStep>,
    /// Attachments that wait for detaches of the same disk elsewhere.
    pub attach_later: Vec<DiskStep>,
}

impl DiskPlan {
    pub fn is_empty(&self) -> bool {
        self.detach.is_empty() && self.attach_now.is_empty() && self.attach_later.is_empty()
    }

    /// Every step, in the order they may run.
    pub fn steps(&self) -> impl Iterator<Item = &DiskStep> {
        self.attach_now
            .iter()
            .chain(&self.detach)
            .chain(&self.attach_later)
    }
}

/// The calls that make `found` into `wanted`. An attachment waits when the
/// disk is attached elsewhere in a way GCE refuses beside it: read-write
/// anywhere else, or anywhere else when it is wanted read-write.
pub fn plan(wanted: &[Attachment], found: &[Attachment]) -> DiskPlan {
    // A read-write attachment serves read-only pods as well; it is only
    // turned read-only when other instances want the disk too (pulling it
    // from under pods that still run there is what this avoids).
    let wanted: Vec<Attachment> = wanted
        .iter()
        .map(|a| {
            let shared = wanted
                .iter()
                .any(|o| o.disk == a.disk && o.instance != a.instance);
            let writable_here = found
                .iter()
                .any(|f| f.disk == a.disk && f.instance == a.instance && !f.read_only);
            Attachment {
                read_only: a.read_only && (shared || !writable_here),
                ..a.clone()
            }
        })
        .collect();
    let wanted_set: BTreeSet<&Attachment> = wanted.iter().collect();
    let found_set: BTreeSet<&Attachment> = found.iter().collect();
    let mut out = DiskPlan::default();
    for a in &found_set {
        if !wanted_set.contains(a) {
            out.detach.push(DiskStep::Detach {
                disk: a.disk.clone(),
                instance: a.instance.clone(),
            });
        }
    }
    for a in &wanted_set {
        if found_set.contains(a) {
            continue;
        }
        let blocked = found.iter().any(|f| {
            f.disk == a.disk && (f.instance == a.instance || !a.read_only || !f.read_only)
        });
        let step = DiskStep::Attach((*a).clone());
        if blocked {
            out.attach_later.push(step);
        } else {
            out.attach_now.push(step);
        }
    }
    out
}

/// What `compute disks describe` says of a disk that matters to kctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFacts {
    /// The instances (names, in the cluster's zone) it is attached to; a
    /// user elsewhere is kept as its whole URL.
    pub users: Vec<String>,
}

/// The disk's users, or None when the disk does not exist in the zone.
pub async fn describe<G: Gcloud>(
    g: &G,
    project: &str,
    n: &Names,
    disk: &str,
) -> Result<Option<DiskFacts>, GceError> {
    let argv = cmd::disk_describe(project, n, disk);
    let out = g.run(&argv).await?;
    if out.not_found() {
        return Ok(None);
    }
    if !out.success() {
        return Err(failed(&argv, &out));
    }
    let value = parse::single_object(&out.stdout).map_err(|message| GceError::BadOutput {
        argv: argv.clone(),
        message,
    })?;
    let users = value
        .get("users")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|url| in_zone(url, &n.zone, "instances").unwrap_or_else(|| url.to_string()))
        .collect();
    Ok(Some(DiskFacts { users }))
}

/// Why a disk cannot serve the cluster's pods, if it cannot (pure): it
/// must exist in the cluster's zone and be attached nowhere but to the
/// cluster's instances.
pub fn disk_problem(facts: Option<&DiskFacts>, n: &Names, instances: &[String]) -> Option<String> {
    let Some(facts) = facts else {
        return Some(format!(
            "does not exist in zone {} (kctl never creates a disk: `gcloud compute disks create NAME --zone={} --size=10GB` makes one)",
            n.zone, n.zone
        ));
    };
    let foreign: Vec<&String> = facts
        .users
        .iter()
        .filter(|u| !instances.contains(u))
        .collect();
    (!foreign.is_empty()).then(|| {
        format!(
            "is attached to {}, which is no minion of cluster {}: detach it there first",
            foreign
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            n.cluster
        )
    })
}

/// The attachments on the cluster's instances now, and which of them are
/// not running.
pub async fn discover<G: Gcloud>(g: &G, project: &str, n: &Names) -> Result<Discovered, GceError> {
    let argv = cmd::instances_list(project, n);
    let out = g.run(&argv).await?;
    if !out.success() {
        return Err(failed(&argv, &out));
    }
    let items = parse::list(&out.stdout).map_err(|message| GceError::BadOutput {
        argv: argv.clone(),
        message,
    })?;
    Ok(Discovered {
        attachments: judge_attachments(n, &items),
        stopped: stopped_instances(n, &items),
    })
}

/// Runs `steps` in order; each one's outcome by step. A detach from an
/// instance that is gone, or of a disk no longer attached there, counts
/// as done. Stops at nothing: one instance's failure
/// leaves the others' steps to run.
pub async fn run<G: Gcloud>(
    g: &G,
    project: &str,
    n: &Names,
    steps: &[DiskStep],
    progress: super::Progress<'_>,
) -> BTreeMap<DiskStep, Result<(), GceError>> {
    let mut results = BTreeMap::new();
    for step in steps {
        progress(&step.line());
        let argv = step.argv(project, n);
        let result = match g.run(&argv).await {
            Ok(out) if out.success() => Ok(()),
            // gcloud checks the instance itself before it asks GCE.
            Ok(out)
                if matches!(step, DiskStep::Detach { .. })
                    && (out.not_found() || out.stderr.contains("is not attached to instance")) =>
            {
                Ok(())
            }
            Ok(out) => Err(failed(&argv, &out)),
            Err(e) => Err(e),
        };
        results.insert(step.clone(), result);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const API: &str = "https://compute.googleapis.com/compute/v1/projects/p-123456";

    fn names() -> Names {
        Names::new("demo", "us-central1-b").unwrap()
    }

    fn at(disk: &str, instance: &str, read_only: bool) -> Attachment {
        Attachment {
            disk: disk.into(),
            instance: instance.into(),
            read_only,
        }
    }

    fn instance(name: &str, disks: Value) -> Value {
        json!({"name": name, "zone": format!("{API}/zones/us-central1-b"), "disks": disks})
    }

    fn attached(disk: &str, device: &str, mode: &str, boot: bool) -> Value {
        json!({"source": format!("{API}/zones/us-central1-b/disks/{disk}"),
               "deviceName": device, "mode": mode, "boot": boot})
    }

    #[test]
    fn only_disks_kctl_attached_under_their_own_name_are_found() {
        let listed = vec![
            instance(
                "kctl-demo-minion-1",
                json!([
                    attached(
                        "kctl-demo-minion-1",
                        "persistent-disk-0",
                        "READ_WRITE",
                        true
                    ),
                    attached("data", "data", "READ_WRITE", false),
                    attached("other", "by-hand", "READ_WRITE", false),
                    attached("logs", "logs", "READ_ONLY", false),
                ]),
            ),
            // Another zone's instance of the same name pattern.
            json!({"name": "kctl-demo-minion-2", "zone": format!("{API}/zones/europe-west1-b"),
                   "disks": [attached("data", "data", "READ_WRITE", false)]}),
            instance(
                "kctl-demo-minion-3",
                json!([{"source": format!("{API}/zones/us-central1-b/disks/x;rm"),
                        "deviceName": "x;rm", "mode": "READ_WRITE"}]),
            ),
        ];
        assert_eq!(
            judge_attachments(&names(), &listed),
            vec![
                at("data", "kctl-demo-minion-1", false),
                at("logs", "kctl-demo-minion-1", true),
            ]
        );
    }

    #[test]
    fn a_disk_moving_between_minions_is_detached_before_it_is_attached() {
        let found = vec![at("data", "m1", false), at("old", "m1", false)];
        let wanted = vec![at("data", "m2", false), at("new", "m2", false)];
        let p = plan(&wanted, &found);
        let lines: Vec<String> = p.steps().map(DiskStep::line).collect();
        assert_eq!(
            lines,
            [
                "+ disk new attached to m2 (read-write)",
                "- disk data detached from m1",
                "- disk old detached from m1",
                "+ disk data attached to m2 (read-write)",
            ]
        );
        assert_eq!(plan(&wanted, &wanted), DiskPlan::default());
    }

    #[test]
    fn read_only_uses_share_a_disk_and_a_changed_mode_reattaches() {
        let found = vec![at("data", "m1", true)];
        let wanted = vec![at("data", "m1", true), at("data", "m2", true)];
        let p = plan(&wanted, &found);
        assert_eq!(p.attach_now, vec![DiskStep::Attach(at("data", "m2", true))]);
        assert!(p.detach.is_empty() && p.attach_later.is_empty(), "{p:?}");
        // Written to now: the read-only attachment goes first.
        let p = plan(&[at("data", "m1", false)], &found);
        assert_eq!(
            p.detach,
            vec![DiskStep::Detach {
                disk: "data".into(),
                instance: "m1".into()
            }]
        );
        assert_eq!(
            p.attach_later,
            vec![DiskStep::Attach(at("data", "m1", false))]
        );
        // Read-write elsewhere blocks even a read-only attachment.
        let p = plan(&[at("data", "m2", true)], &[at("data", "m1", false)]);
        assert!(
            p.attach_now.is_empty() && p.attach_later.len() == 1,
            "{p:?}"
        );
    }

    #[test]
    fn a_writable_attachment_serves_a_read_only_pod_unless_others_share_the_disk() {
        let found = vec![at("data", "m1", false)];
        assert_eq!(plan(&[at("data", "m1", true)], &found), DiskPlan::default());
        let p = plan(&[at("data", "m1", true), at("data", "m2", true)], &found);
        assert_eq!(p.detach.len(), 1, "{p:?}");
        assert_eq!(p.attach_later.len(), 2, "{p:?}");
    }

    #[test]
    fn instances_not_running_are_told_apart() {
        let mut stopped = instance("kctl-demo-minion-2", json!([]));
        stopped["status"] = json!("TERMINATED");
        let mut running = instance("kctl-demo-minion-1", json!([]));
        running["status"] = json!("RUNNING");
        assert_eq!(
            stopped_instances(&names(), &[running, stopped]),
            BTreeSet::from(["kctl-demo-minion-2".to_string()])
        );
    }

    #[test]
    fn the_argv_names_disk_device_mode_and_zone() {
        let n = names();
        let argv = DiskStep::Attach(at("data", "kctl-demo-minion-1", true)).argv("p-123456", &n);
        for word in [
            "attach-disk",
            "kctl-demo-minion-1",
            "--disk=data",
            "--device-name=data",
            "--mode=ro",
            "--zone=us-central1-b",
            "--project=p-123456",
        ] {
            assert!(argv.contains(&word.to_string()), "{argv:?}");
        }
    }

    #[test]
    fn a_missing_disk_or_one_used_outside_the_cluster_is_a_problem() {
        let n = names();
        let ours = vec!["kctl-demo-minion-1".to_string()];
        let missing = disk_problem(None, &n, &ours).unwrap();
        assert!(
            missing.contains("does not exist in zone us-central1-b"),
            "{missing}"
        );
        let free = DiskFacts { users: vec![] };
        assert_eq!(disk_problem(Some(&free), &n, &ours), None);
        let here = DiskFacts {
            users: ours.clone(),
        };
        assert_eq!(disk_problem(Some(&here), &n, &ours), None);
        let elsewhere = DiskFacts {
            users: vec!["db-vm".into()],
        };
        let why = disk_problem(Some(&elsewhere), &n, &ours).unwrap();
        assert!(why.contains("db-vm") && why.contains("no minion"), "{why}");
    }
}
