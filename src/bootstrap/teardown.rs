//! Undoing bootstrap on a machine kctl did not make (ssh and gce
//! providers): everything kctl installed or started goes, the rest of the
//! machine stays as it was. Each step checks first, so a half-bootstrapped
//! or already-clean machine is fine, and reports what it removed.

use super::helper::{helper_service, Helper};
use super::service;
use super::{network_inspect_argv, parse_network_inspect, FORWARD_CHAIN};
use crate::argv;
use crate::cluster::{ClusterConfig, MinionConfig};
use crate::converge::docker::{self, PAUSE_IMAGE, POD_NETWORK};
use crate::exec::{Exec, ExecError};
use crate::services::rules::TABLE;

/// A directory kctl may delete whole: one it made, under a `kctl` path.
pub fn is_kctl_dir(dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    let parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    // Something below a `kctl` directory, never `kctl` itself.
    dir.starts_with('/')
        && !parts.contains(&"..")
        && parts
            .iter()
            .position(|p| *p == "kctl")
            .is_some_and(|i| i + 1 < parts.len())
}

pub async fn teardown_minion<E: Exec>(
    exec: &E,
    cluster: &ClusterConfig,
    minion: &MinionConfig,
) -> Result<Vec<String>, ExecError> {
    let mut removed = vec![];

    // The helper first, so it restarts nothing while the rest goes.
    let helper = Helper {
        binary: std::path::Path::new("kctl-node"),
        cluster: &cluster.name,
        etcd_endpoints: &cluster.etcd_endpoints,
        offline_images: cluster.offline_images,
    };
    let systemd = service::has_systemd(exec).await?;
    if service::remove(exec, &helper_service(minion, &helper), systemd).await? {
        removed.push("kctl-node".to_string());
    }
    // Images `kctl image load` added (listed before the directory goes).
    let loaded = exec
        .run(&argv!["cat", super::loaded_images_file(minion)], None)
        .await?;
    let loaded: Vec<String> = if loaded.success() {
        loaded
            .stdout_text()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        vec![]
    };
    if is_kctl_dir(&minion.helper_dir) {
        let dir = minion.helper_dir.trim_end_matches('/').to_string();
        if exec
            .run(&argv!["test", "-e", dir.clone()], None)
            .await?
            .success()
        {
            exec.run_ok(&argv!["rm", "-rf", "--one-file-system", dir.clone()])
                .await?;
            removed.push(dir);
        }
    }

    let ids: Vec<String> = exec
        .run_ok(&docker::list_argv(&cluster.name))
        .await?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        exec.run_ok(&docker::remove_argv(&ids)).await?;
        removed.push(format!("{} containers", ids.len()));
    }

    let inspect = exec.run(&network_inspect_argv(), None).await?;
    if inspect.success() {
        if let Some((owner, subnet)) = parse_network_inspect(&inspect.stdout_text()) {
            if owner == cluster.name {
                exec.run_ok(&argv!["docker", "network", "rm", POD_NETWORK])
                    .await?;
                removed.push(format!("Docker network {POD_NETWORK} ({subnet})"));
            }
        }
    }
    let mut images_gone = vec![];
    for image in loaded.iter().collect::<std::collections::BTreeSet<_>>() {
        // In use by a container that is not kctl's: the host keeps it.
        let rm = exec
            .run(&argv!["docker", "image", "rm", image.clone()], None)
            .await?;
        if rm.success() {
            images_gone.push(image.clone());
        }
    }
    if !images_gone.is_empty() {
        removed.push(format!("loaded images {}", images_gone.join(" ")));
    }
    let pause = exec
        .run(&argv!["docker", "image", "inspect", PAUSE_IMAGE], None)
        .await?;
    if pause.success() {
        exec.run_ok(&argv!["docker", "image", "rm", PAUSE_IMAGE])
            .await?;
        removed.push(format!("image {PAUSE_IMAGE}"));
    }

    let table = exec
        .run(&argv!["nft", "list", "table", "ip", TABLE], None)
        .await?;
    if table.success() {
        exec.run_ok(&argv!["nft", "delete", "table", "ip", TABLE])
            .await?;
        removed.push(format!("nftables table ip {TABLE}"));
    }

    let jump = |op: &str| argv!["iptables", "--wait", op, "FORWARD", "--jump", FORWARD_CHAIN];
    let mut had_chain = false;
    // Bounded: a jump inserted twice goes in two rounds, never forever.
    for _ in 0..8 {
        if !exec.run(&jump("--check"), None).await?.success() {
            break;
        }
        exec.run_ok(&jump("--delete")).await?;
        had_chain = true;
    }
    if exec
        .run(&argv!["iptables", "--wait", "--flush", FORWARD_CHAIN], None)
        .await?
        .success()
    {
        exec.run_ok(&argv![
            "iptables",
            "--wait",
            "--delete-chain",
            FORWARD_CHAIN
        ])
        .await?;
        had_chain = true;
    }
    if had_chain {
        removed.push(format!("iptables chain {FORWARD_CHAIN}"));
    }

    if cluster.pod_network.host_routes {
        for other in cluster.minions.iter().filter(|o| o.id != minion.id) {
            let route = exec
                .run(
                    &argv!["ip", "-4", "route", "show", "exact", other.pod_cidr.clone()],
                    None,
                )
                .await?;
            if route.success() && !route.stdout_text().trim().is_empty() {
                exec.run_ok(&argv!["ip", "route", "del", other.pod_cidr.clone()])
                    .await?;
                removed.push(format!("route {}", other.pod_cidr));
            }
        }
    }
    Ok(removed)
}

/// Removes the cluster's directory on a machine once its parts are gone,
/// and `/var/lib/kctl` itself if nothing else is left in it.
pub async fn remove_state_dir<E: Exec>(exec: &E, dir: &str) -> Result<bool, ExecError> {
    if !is_kctl_dir(dir) {
        return Ok(false);
    }
    let exists = exec
        .run(&argv!["test", "-e", dir.to_string()], None)
        .await?
        .success();
    if exists {
        exec.run_ok(&argv!["rm", "-rf", "--one-file-system", dir.to_string()])
            .await?;
    }
    if let Some(parent) = std::path::Path::new(dir.trim_end_matches('/')).parent() {
        let parent = parent.display().to_string();
        if is_kctl_dir(&parent) || parent.ends_with("/kctl") {
            exec.run(&argv!["rmdir", "--ignore-fail-on-non-empty", parent], None)
                .await?;
        }
    }
    Ok(exists)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::tests::cluster;
    use crate::exec::{Output, RecordingExec};

    #[test]
    fn only_kctl_directories_are_deleted_whole() {
        for ok in ["/var/lib/kctl/demo/minion-1", "/var/lib/kctl/demo/etcd/"] {
            assert!(is_kctl_dir(ok), "{ok}");
        }
        for bad in [
            "/",
            "/var/lib/kctl",
            "var/lib/kctl/demo",
            "/var/lib/docker/x",
            "/var/lib/kctl/../../etc",
            "/var/lib/kctl/x/..",
        ] {
            assert!(!is_kctl_dir(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn teardown_removes_what_bootstrap_made_and_says_so() {
        let mut cluster = cluster();
        cluster.minions[0].helper_dir = "/var/lib/kctl/c1/minion-1".into();
        let ok = |out: &str| Output {
            code: Some(0),
            stdout: out.as_bytes().to_vec(),
            stderr: vec![],
        };
        let gone = Output {
            code: Some(1),
            stdout: vec![],
            stderr: vec![],
        };
        let exec = RecordingExec {
            answers: [
                ("docker ps".to_string(), ok("aaa\nbbb\n")),
                (
                    "docker network inspect".to_string(),
                    ok(r#"{"IPAM":{"Config":[{"Subnet":"10.101.1.0/24"}]},"Labels":{"io.kctl.cluster":"c1"}}"#),
                ),
                ("test -d /run/systemd/system".to_string(), gone.clone()),
                // The jump exists once, then no more.
                ("iptables --wait --check".to_string(), gone.clone()),
                ("ip -4 route show exact 10.101.2.0/24".to_string(), ok("10.101.2.0/24 via 10.101.0.12 dev eth0\n")),
                ("ip -4 route show exact 10.101.3.0/24".to_string(), ok("")),
            ]
            .into(),
            ..Default::default()
        };
        let removed = teardown_minion(&exec, &cluster, &cluster.minions[0])
            .await
            .unwrap();
        assert!(removed.contains(&"kctl-node".to_string()), "{removed:?}");
        assert!(removed.contains(&"2 containers".to_string()));
        assert!(removed.contains(&"Docker network kctl (10.101.1.0/24)".to_string()));
        assert!(removed.contains(&"route 10.101.2.0/24".to_string()));
        assert!(!removed.contains(&"route 10.101.3.0/24".to_string()));
        let calls = exec.calls();
        assert!(calls.contains(&argv!["docker", "network", "rm", "kctl"]));
        assert!(calls.contains(&argv!["nft", "delete", "table", "ip", "kctl"]));
        assert!(calls.contains(&argv![
            "rm",
            "-rf",
            "--one-file-system",
            "/var/lib/kctl/c1/minion-1"
        ]));
    }

    #[tokio::test]
    async fn another_clusters_network_is_left_alone() {
        let cluster = cluster();
        let exec = RecordingExec {
            answers: [
                (
                    "docker network inspect".to_string(),
                    Output {
                        code: Some(0),
                        stdout: br#"{"IPAM":{"Config":[{"Subnet":"10.9.1.0/24"}]},"Labels":{"io.kctl.cluster":"other"}}"#.to_vec(),
                        stderr: vec![],
                    },
                ),
                (
                    "iptables --wait --check".to_string(),
                    Output {
                        code: Some(1),
                        stdout: vec![],
                        stderr: vec![],
                    },
                ),
            ]
            .into(),
            ..Default::default()
        };
        let _ = teardown_minion(&exec, &cluster, &cluster.minions[0]).await;
        assert!(!exec
            .calls()
            .contains(&argv!["docker", "network", "rm", "kctl"]));
    }
}
