//! Undoing bootstrap on a machine kctl did not make (ssh and gce
//! providers): everything kctl installed or started goes, the rest of the
//! machine stays as it was. Each step checks first, so a half-bootstrapped
//! or already-clean machine is fine, and reports what it removed.

use super::helper::{helper_service, Helper};
use super::service;
use super::{
    masquerade_jump, network_inspect_argv, parse_network_inspect, FORWARD_CHAIN, MASQ_CHAIN,
};
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

/// What teardown did on one machine: every step runs even when an earlier
/// one failed (a user's container on the `kctl` network must not keep the
/// rules and routes in place), and both lists are reported.
#[derive(Debug, Default)]
pub struct Teardown {
    pub removed: Vec<String>,
    pub errors: Vec<String>,
}

impl Teardown {
    fn record(&mut self, step: Result<Option<String>, ExecError>) {
        match step {
            Ok(Some(line)) => self.removed.push(line),
            Ok(None) => {}
            Err(e) => self.errors.push(e.to_string()),
        }
    }
}

pub async fn teardown_minion<E: Exec>(
    exec: &E,
    cluster: &ClusterConfig,
    minion: &MinionConfig,
) -> Teardown {
    let mut done = Teardown::default();

    // The helper first, so it restarts nothing while the rest goes.
    let helper = Helper::of(cluster);
    done.record(
        async {
            let systemd = service::has_systemd(exec).await?;
            let was = service::remove(exec, &helper_service(minion, &helper), systemd).await?;
            Ok(was.then(|| "kctl-node".to_string()))
        }
        .await,
    );

    // Images `kctl image load` added (listed before the directory goes).
    let loaded: Vec<String> = match exec
        .run(&argv!["cat", super::loaded_images_file(minion)], None)
        .await
    {
        Ok(out) if out.success() => out
            .stdout_text()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        _ => vec![],
    };

    // The words a listing command prints: ids or names.
    let listed = |argv: Vec<String>| async move {
        let words = exec.run_ok(&argv).await?;
        Ok::<Vec<String>, ExecError>(words.split_whitespace().map(str::to_string).collect())
    };
    let containers = async {
        let ids = listed(docker::list_argv(&cluster.name)).await?;
        if !ids.is_empty() {
            exec.run_ok(&docker::remove_argv(&ids)).await?;
        }
        // The pods' emptyDir volumes, free once their containers are gone.
        let volumes = listed(docker::list_volumes_argv(&cluster.name)).await?;
        if !volumes.is_empty() {
            let mut remove = argv!["docker", "volume", "rm", "--force"];
            remove.extend(volumes.iter().cloned());
            exec.run_ok(&remove).await?;
        }
        Ok(match (ids.len(), volumes.len()) {
            (0, 0) => None,
            (c, 0) => Some(format!("{c} containers")),
            (c, v) => Some(format!("{c} containers, {v} pod volumes")),
        })
    };

    let network = async {
        let inspect = exec.run(&network_inspect_argv(), None).await?;
        if !inspect.success() {
            return Ok(None);
        }
        match parse_network_inspect(&inspect.stdout_text()) {
            Some((owner, subnet)) if owner == cluster.name => {
                exec.run_ok(&argv!["docker", "network", "rm", POD_NETWORK])
                    .await?;
                Ok(Some(format!("Docker network {POD_NETWORK} ({subnet})")))
            }
            _ => Ok(None),
        }
    };

    let images = async {
        let mut gone = vec![];
        for image in loaded.iter().collect::<std::collections::BTreeSet<_>>() {
            // In use by a container that is not kctl's: the host keeps it.
            let rm = exec
                .run(&argv!["docker", "image", "rm", image.clone()], None)
                .await?;
            if rm.success() {
                gone.push(image.clone());
            }
        }
        Ok((!gone.is_empty()).then(|| format!("loaded images {}", gone.join(" "))))
    };

    let pause = async {
        let pause = exec
            .run(&argv!["docker", "image", "inspect", PAUSE_IMAGE], None)
            .await?;
        if !pause.success() {
            return Ok(None);
        }
        exec.run_ok(&argv!["docker", "image", "rm", PAUSE_IMAGE])
            .await?;
        Ok(Some(format!("image {PAUSE_IMAGE}")))
    };

    let nft = async {
        let table = exec
            .run(&argv!["nft", "list", "table", "ip", TABLE], None)
            .await?;
        if !table.success() {
            return Ok(None);
        }
        exec.run_ok(&argv!["nft", "delete", "table", "ip", TABLE])
            .await?;
        Ok(Some(format!("nftables table ip {TABLE}")))
    };

    // KCTL-FORWARD first: it jumps to KCTL-GUARD, which cannot go while
    // anything does. Then the guard's jumps (up to three hooks) and chain.
    let filter_chains = async {
        let jump = |op: &str| argv!["iptables", "--wait", op, "FORWARD", "--jump", FORWARD_CHAIN];
        let forward = remove_chain(exec, "filter", FORWARD_CHAIN, jump)
            .await
            .map(|had| had.then(|| format!("iptables chain {FORWARD_CHAIN}")));
        let guard = async {
            remove_jumps(exec, |op| super::guard_jump("INPUT", op)).await?;
            remove_jumps(exec, |op| super::guard_jump("DOCKER-USER", op)).await?;
            remove_jumps(exec, super::ipv6_guard).await?;
            let jump = |op: &str| super::guard_jump("FORWARD", op);
            let had = remove_chain(exec, "filter", super::GUARD_CHAIN, jump).await?;
            Ok(had.then(|| format!("iptables chain {}", super::GUARD_CHAIN)))
        }
        .await;
        (forward, guard)
    };
    let masquerade_chain = async {
        let jump = |op: &str| masquerade_jump(minion, op);
        let had = remove_chain(exec, "nat", MASQ_CHAIN, jump).await?;
        Ok(had.then(|| format!("iptables nat chain {MASQ_CHAIN}")))
    };

    let routes = futures::future::join_all(
        cluster
            .minions
            .iter()
            .filter(|o| cluster.pod_network.host_routes && o.id != minion.id)
            .map(|other| async move {
                // Only kctl's route: to that range, via that minion.
                let via = other.host_ip.to_string();
                let route = exec
                    .run(
                        &argv!["ip", "-4", "route", "show", "exact", other.pod_cidr.clone()],
                        None,
                    )
                    .await?;
                let ours = route.success()
                    && route.stdout_text().lines().any(|l| {
                        l.split_whitespace()
                            .collect::<Vec<_>>()
                            .windows(2)
                            .any(|w| w == ["via", via.as_str()])
                    });
                if !ours {
                    return Ok(None);
                }
                exec.run_ok(&argv![
                    "ip",
                    "route",
                    "del",
                    other.pod_cidr.clone(),
                    "via",
                    via
                ])
                .await?;
                Ok(Some(format!("route {}", other.pod_cidr)))
            }),
    );
    // Docker's steps in order (containers before their network and
    // images); rules and routes alongside.
    let docker_steps = async { vec![containers.await, network.await, images.await, pause.await] };
    let (docker_results, nft_result, (chain_result, guard_result), masq_result, route_results) =
        futures::join!(docker_steps, nft, filter_chains, masquerade_chain, routes);
    for result in docker_results
        .into_iter()
        .chain([nft_result, chain_result, masq_result, guard_result])
        .chain(route_results)
    {
        done.record(result);
    }

    // The helper's directory last: it lists the loaded images, so it goes
    // only when everything else did.
    if done.errors.is_empty() && is_kctl_dir(&minion.helper_dir) {
        let dir = minion.helper_dir.trim_end_matches('/').to_string();
        done.record(
            async {
                if !exec
                    .run(&argv!["test", "-e", dir.clone()], None)
                    .await?
                    .success()
                {
                    return Ok(None);
                }
                exec.run_ok(&argv!["rm", "-rf", "--one-file-system", dir.clone()])
                    .await?;
                Ok(Some(dir.clone()))
            }
            .await,
        );
    }
    done
}

/// Removes kctl's iptables chain `chain` of `table` and every jump into it
/// (`jump(op)` is the jump rule for `--check` and `--delete`). True if
/// anything was there.
pub async fn remove_chain<E: Exec>(
    exec: &E,
    table: &str,
    chain: &str,
    jump: impl Fn(&str) -> Vec<String>,
) -> Result<bool, ExecError> {
    let mut had = remove_jumps(exec, jump).await?;
    let iptables = |op: &str| argv!["iptables", "--wait", "--table", table, op, chain];
    if exec.run(&iptables("--flush"), None).await?.success() {
        exec.run_ok(&iptables("--delete-chain")).await?;
        had = true;
    }
    Ok(had)
}

/// Removes every copy of the jump `jump(op)`; true if there was one.
async fn remove_jumps<E: Exec>(
    exec: &E,
    jump: impl Fn(&str) -> Vec<String>,
) -> Result<bool, ExecError> {
    let mut had = false;
    // Bounded: a jump inserted twice goes in two rounds, never forever.
    for _ in 0..8 {
        if !exec.run(&jump("--check"), None).await?.success() {
            break;
        }
        exec.run_ok(&jump("--delete")).await?;
        had = true;
    }
    Ok(had)
}

/// Removes a directory kctl made on a machine (etcd's), then its empty
/// parents up to and including `.../kctl` — never anything non-empty that
/// another cluster or minion still uses.
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
    remove_empty_parents(exec, dir).await?;
    Ok(exists)
}

/// `rmdir` of each parent of `dir` below and including the `kctl`
/// directory; non-empty ones stay.
pub async fn remove_empty_parents<E: Exec>(exec: &E, dir: &str) -> Result<(), ExecError> {
    let mut path = std::path::Path::new(dir.trim_end_matches('/'));
    while let Some(parent) = path.parent() {
        let text = parent.display().to_string();
        if !(is_kctl_dir(&text) || parent.file_name() == Some("kctl".as_ref())) {
            break;
        }
        exec.run(&argv!["rmdir", "--ignore-fail-on-non-empty", text], None)
            .await?;
        if parent.file_name() == Some("kctl".as_ref()) {
            break;
        }
        path = parent;
    }
    Ok(())
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
                ("iptables --wait --table nat --check".to_string(), gone.clone()),
                ("ip -4 route show exact 10.101.2.0/24".to_string(), ok("10.101.2.0/24 via 10.101.0.12 dev eth0\n")),
                ("ip -4 route show exact 10.101.3.0/24".to_string(), ok("")),
            ]
            .into(),
            ..Default::default()
        };
        let done = teardown_minion(&exec, &cluster, &cluster.minions[0]).await;
        assert!(done.errors.is_empty(), "{:?}", done.errors);
        let removed = done.removed;
        assert!(removed.contains(&"kctl-node".to_string()), "{removed:?}");
        assert!(removed.contains(&"2 containers".to_string()));
        assert!(removed.contains(&"Docker network kctl (10.101.1.0/24)".to_string()));
        assert!(removed.contains(&"route 10.101.2.0/24".to_string()));
        assert!(removed.contains(&"iptables nat chain KCTL-MASQ".to_string()));
        assert!(removed.contains(&"iptables chain KCTL-GUARD".to_string()));
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
                (
                    "iptables --wait --table nat --check".to_string(),
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
