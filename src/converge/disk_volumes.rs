//! GCE persistent disk volumes on a minion. The workstation's gcloud
//! attaches the disk to the minion's instance (`ops::disks`); GCE shows it
//! there as `/dev/disk/by-id/google-NAME` (the device name kctl gives it
//! is the disk's name, as v0.5's), a partition as `…-partN`. The pod's
//! volume is a Docker volume of the `local` driver over that device:
//! Docker mounts it with the disk's filesystem when the pod's first
//! container starts and unmounts it after the last one stops, so the disk
//! is free to be detached once the pod has left the minion.
//!
//! Before a pod starts, its disks are checked to be there: a disk not yet
//! attached (the helper moved the pod, and no `kctl apply` has run since)
//! keeps the pod from starting, with the reason, until it is. The disk's
//! name, filesystem and partition come from etcd and are checked again
//! here before a path or a mount option is built from them.

use crate::argv;
use crate::exec::Exec;
use crate::model::{disk_volume_problem, VolumeSource};
use crate::state::PodRecord;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Where GCE shows an attached disk (or one of its partitions) on the
/// instance, for a disk attached with its name as device name.
pub fn device_path(pd_name: &str, partition: Option<u32>) -> String {
    match partition {
        Some(n) => format!("/dev/disk/by-id/google-{pd_name}-part{n}"),
        None => format!("/dev/disk/by-id/google-{pd_name}"),
    }
}

/// The Docker volume of a pod's persistent disk volume: the pod's volume
/// name and a digest of how the disk is mounted, so that a pod whose disk
/// changed under the same id gets a volume with the new options (Docker
/// keeps a volume's options for as long as it exists).
pub fn docker_volume_name(cluster: &str, pod: &str, volume: &str, source: &VolumeSource) -> String {
    let options = device_options(source);
    let digest = Sha256::digest(
        serde_json::to_string(&options)
            .unwrap_or_default()
            .as_bytes(),
    );
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}_{short}",
        super::docker::pod_volume_name(cluster, pod, volume)
    )
}

/// The `local` driver's options that mount `source`'s disk: its device,
/// its filesystem, read-only when the disk is attached so. Empty for any
/// other source, or for a disk whose record does not check out (the pod
/// was kept from starting by `unattached`).
pub fn device_options(source: &VolumeSource) -> BTreeMap<String, String> {
    let VolumeSource::GcePersistentDisk {
        pd_name,
        fs_type,
        partition,
        read_only,
    } = source
    else {
        return BTreeMap::new();
    };
    if disk_volume_problem(pd_name, fs_type, *partition).is_some() {
        return BTreeMap::new();
    }
    let mut options = BTreeMap::from([
        ("type".to_string(), fs_type.clone()),
        ("device".to_string(), device_path(pd_name, *partition)),
    ]);
    if *read_only {
        options.insert("o".to_string(), "ro".to_string());
    }
    options
}

/// The pods of `pods` whose persistent disks are not all on the minion (or
/// whose records do not check out), with why. One `stat` for them all.
pub async fn unattached<E: Exec>(exec: &E, pods: &[PodRecord]) -> BTreeMap<String, String> {
    let mut failed = BTreeMap::new();
    // (pod, disk, device path)
    let mut wanted: Vec<(&str, &str, String)> = Vec::new();
    for pod in pods {
        for volume in &pod.pod.spec.volumes {
            let VolumeSource::GcePersistentDisk {
                pd_name,
                fs_type,
                partition,
                ..
            } = &volume.source
            else {
                continue;
            };
            match disk_volume_problem(pd_name, fs_type, *partition) {
                Some(problem) => {
                    failed
                        .entry(pod.pod.id.clone())
                        .or_insert(format!("persistent disk volume {}: {problem}", volume.name));
                }
                None => wanted.push((&pod.pod.id, pd_name, device_path(pd_name, *partition))),
            }
        }
    }
    if wanted.is_empty() {
        return failed;
    }
    let paths: Vec<String> = wanted.iter().map(|(_, _, path)| path.clone()).collect();
    let present = match block_devices(exec, &paths).await {
        Ok(present) => present,
        Err(e) => {
            for (pod, disk, _) in &wanted {
                failed.entry(pod.to_string()).or_insert(format!(
                    "persistent disk {disk}: could not look for it on {}: {e}",
                    exec.target()
                ));
            }
            return failed;
        }
    };
    for (pod, disk, path) in &wanted {
        if !present.contains(path) {
            failed.entry(pod.to_string()).or_insert(format!(
                "persistent disk {disk} is not attached to {} ({path} is missing)",
                exec.target()
            ));
        }
    }
    failed
}

/// Which of `paths` are block devices on the machine (following GCE's
/// links), in one round trip: stat prints a line per block device and
/// nothing on stdout for a missing path. Paths hold no tab or line break
/// (disk names are checked).
pub async fn block_devices<E: Exec>(
    exec: &E,
    paths: &[String],
) -> Result<BTreeSet<String>, crate::exec::ExecError> {
    let mut ask = argv!["stat", "-L", "--printf", "%F\t%n\n", "--"];
    ask.extend(paths.iter().cloned());
    let out = exec.run(&ask, None).await?;
    Ok(out
        .stdout_text()
        .lines()
        .filter_map(|line| line.strip_prefix("block special file\t"))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Output, RecordingExec};
    use crate::model::{Container, Pod, PodSpec, RestartPolicy, Volume};

    fn disk(pd_name: &str, partition: Option<u32>, read_only: bool) -> VolumeSource {
        VolumeSource::GcePersistentDisk {
            pd_name: pd_name.into(),
            fs_type: "ext4".into(),
            partition,
            read_only,
        }
    }

    fn pod_with(id: &str, source: VolumeSource) -> PodRecord {
        PodRecord {
            pod: Pod {
                id: id.into(),
                labels: Default::default(),
                spec: PodSpec {
                    containers: vec![Container {
                        name: "db".into(),
                        image: "redis".into(),
                        ..Container::default()
                    }],
                    restart_policy: RestartPolicy::Always,
                    volumes: vec![Volume {
                        name: "data".into(),
                        source,
                    }],
                },
            },
            host: "minion-1".into(),
            owner: None,
            draining: false,
        }
    }

    #[test]
    fn the_device_is_gces_name_for_the_disk_and_read_only_mounts_ro() {
        assert_eq!(device_path("db", None), "/dev/disk/by-id/google-db");
        assert_eq!(
            device_path("db", Some(2)),
            "/dev/disk/by-id/google-db-part2"
        );
        assert_eq!(
            device_options(&disk("db", Some(1), true)),
            BTreeMap::from([
                ("type".into(), "ext4".into()),
                ("device".into(), "/dev/disk/by-id/google-db-part1".into()),
                ("o".into(), "ro".into()),
            ])
        );
        assert!(!device_options(&disk("db", None, false)).contains_key("o"));
        // A record that does not check out mounts nothing.
        assert!(device_options(&disk("../../sda", None, false)).is_empty());
        let mut bad_fs = disk("db", None, false);
        if let VolumeSource::GcePersistentDisk { fs_type, .. } = &mut bad_fs {
            *fs_type = "ext4,bind".into();
        }
        assert!(device_options(&bad_fs).is_empty());
        // Another way of mounting is another Docker volume.
        assert_ne!(
            docker_volume_name("c1", "p", "data", &disk("db", None, false)),
            docker_volume_name("c1", "p", "data", &disk("db", None, true))
        );
        assert!(
            docker_volume_name("c1", "p", "data", &disk("db", None, false))
                .starts_with("kctl_c1_p_data_")
        );
    }

    #[tokio::test]
    async fn a_pod_waits_for_a_disk_that_is_not_attached_and_a_bad_record_is_refused() {
        let mut exec = RecordingExec::default();
        exec.answers.insert(
            "stat".into(),
            Output {
                code: Some(1),
                stdout: b"block special file\t/dev/disk/by-id/google-there\n".to_vec(),
                stderr: b"stat: cannot statx '/dev/disk/by-id/google-gone': No such file\n"
                    .to_vec(),
            },
        );
        let pods = [
            pod_with("a", disk("there", None, false)),
            pod_with("b", disk("gone", None, false)),
            pod_with("c", disk("-rf", None, false)),
        ];
        let failed = unattached(&exec, &pods).await;
        assert!(!failed.contains_key("a"), "{failed:?}");
        assert!(
            failed["b"].contains("gone is not attached")
                && failed["b"].contains("/dev/disk/by-id/google-gone is missing"),
            "{failed:?}"
        );
        assert!(failed["c"].contains("disk name"), "{failed:?}");
        // The bad name never reached the minion.
        assert_eq!(
            exec.calls(),
            [argv![
                "stat",
                "-L",
                "--printf",
                "%F\t%n\n",
                "--",
                "/dev/disk/by-id/google-there",
                "/dev/disk/by-id/google-gone"
            ]]
        );
    }

    #[tokio::test]
    async fn pods_without_disks_ask_nothing() {
        let exec = RecordingExec::default();
        let failed = unattached(&exec, &[pod_with("a", VolumeSource::EmptyDir)]).await;
        assert!(failed.is_empty() && exec.calls().is_empty());
    }
}
