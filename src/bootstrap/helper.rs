//! Installing the node helper (`kctl-node`) on a minion.

use super::service::{self, Service};
use crate::argv;
use crate::cluster::MinionConfig;
use crate::exec::{Exec, ExecError};

/// What the node helper on a minion is started with.
#[derive(Debug, Clone)]
pub struct Helper<'a> {
    /// The `kctl-node` binary on the workstation.
    pub binary: &'a std::path::Path,
    pub cluster: &'a str,
    pub etcd_endpoints: &'a [String],
    pub offline_images: bool,
}

/// The helper's command line after the program.
pub fn helper_args(minion: &MinionConfig, helper: &Helper) -> Vec<String> {
    let mut args = argv![
        "run",
        "--cluster",
        helper.cluster,
        "--minion",
        minion.id.clone(),
        "--docker-socket",
        minion.docker_socket.clone()
    ];
    for e in helper.etcd_endpoints {
        args.push("--etcd".into());
        args.push(e.clone());
    }
    if helper.offline_images {
        args.push("--offline-images".into());
    }
    args
}

fn helper_dir(minion: &MinionConfig) -> String {
    minion.helper_dir.trim_end_matches('/').to_string()
}

/// The helper as a service on `minion`.
pub fn helper_service(minion: &MinionConfig, helper: &Helper) -> Service {
    let dir = helper_dir(minion);
    Service {
        unit: format!("kctl-node-{}", helper.cluster),
        description: format!(
            "kctl node helper of cluster {} on {}",
            helper.cluster, minion.id
        ),
        program: format!("{dir}/kctl-node"),
        args: helper_args(minion, helper),
        pid_file: format!("{dir}/kctl-node.pid"),
        log_file: format!("{dir}/kctl-node.log"),
    }
}

fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Installs the node helper on a minion and makes sure it runs. A helper
/// whose binary differs from the workstation's is stopped, replaced and
/// started again: re-running `up` after building a new kctl upgrades it in
/// place. Returns true if anything changed.
pub async fn install_helper<E: Exec>(
    exec: &E,
    minion: &MinionConfig,
    helper: &Helper<'_>,
) -> Result<bool, ExecError> {
    let service = helper_service(minion, helper);
    let local = sha256_file(helper.binary).map_err(|e| ExecError::Transport {
        target: exec.target().to_string(),
        message: format!("{}: {e}", helper.binary.display()),
    })?;
    let remote = exec
        .run(&argv!["sha256sum", service.program.clone()], None)
        .await?;
    let systemd = service::has_systemd(exec).await?;
    let stale = remote.stdout_text().split_whitespace().next() != Some(local.as_str());
    if stale {
        service::stop(exec, &service, systemd).await?;
        let staged = format!("{}.new", service.program);
        exec.run_ok(&argv!["mkdir", "-p", helper_dir(minion)])
            .await?;
        let upload = argv!["dd", format!("of={staged}"), "bs=1M", "status=none"];
        exec.run_with_file(&upload, helper.binary)
            .await?
            .check(exec.target(), &upload)?;
        exec.run_ok(&argv!["chmod", "0755", staged.clone()]).await?;
        exec.run_ok(&argv!["mv", "-f", staged, service.program.clone()])
            .await?;
    }
    let started = service::ensure_running(exec, &service, systemd, stale && systemd).await?;
    Ok(stale || started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::tests::minions;
    use crate::exec::{Output, RecordingExec};

    #[tokio::test]
    async fn helper_is_uploaded_and_started_only_when_needed() {
        let all = minions();
        let binary = std::env::current_exe().unwrap();
        let helper = Helper {
            binary: &binary,
            cluster: "c1",
            etcd_endpoints: &["http://10.101.0.1:2379".to_string()],
            offline_images: true,
        };
        // Nothing there yet: sha256sum fails, status says not running.
        let absent = Output {
            code: Some(3),
            stdout: vec![],
            stderr: vec![],
        };
        let no_systemd = ("test -d /run/systemd/system".to_string(), absent.clone());
        let fresh = RecordingExec {
            answers: [
                ("sha256sum".to_string(), absent.clone()),
                ("start-stop-daemon --status".to_string(), absent),
                no_systemd.clone(),
            ]
            .into(),
            ..Default::default()
        };
        assert!(install_helper(&fresh, &all[0], &helper).await.unwrap());
        let calls = fresh.calls();
        assert!(calls
            .iter()
            .any(|c| c[0] == "dd" && c[1] == "of=/var/lib/kctl/kctl-node.new"));
        let start = calls
            .iter()
            .find(|c| c.contains(&"--start".to_string()))
            .unwrap();
        let dashdash = start.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            &start[dashdash + 1..],
            [
                "run",
                "--cluster",
                "c1",
                "--minion",
                "minion-1",
                "--docker-socket",
                "/var/run/docker.sock",
                "--etcd",
                "http://10.101.0.1:2379",
                "--offline-images"
            ]
        );
        // Same binary already running: nothing to do.
        let digest = sha256_file(&binary).unwrap();
        let current = RecordingExec {
            answers: [
                (
                    "sha256sum".to_string(),
                    Output {
                        code: Some(0),
                        stdout: format!("{digest}  /var/lib/kctl/kctl-node\n").into_bytes(),
                        stderr: vec![],
                    },
                ),
                no_systemd,
            ]
            .into(),
            ..Default::default()
        };
        assert!(!install_helper(&current, &all[0], &helper).await.unwrap());
        assert!(!current
            .calls()
            .iter()
            .any(|c| c[0] == "dd" || c.contains(&"--start".to_string())));
    }

    #[tokio::test]
    async fn helper_is_a_systemd_service_where_systemd_runs() {
        let all = minions();
        let binary = std::env::current_exe().unwrap();
        let helper = Helper {
            binary: &binary,
            cluster: "c1",
            etcd_endpoints: &["http://10.240.0.2:4001".to_string()],
            offline_images: false,
        };
        let unit = helper_service(&all[1], &helper).systemd_unit();
        assert!(unit.contains(
            "ExecStart=/var/lib/kctl/kctl-node run --cluster c1 --minion minion-2 --docker-socket /var/run/docker.sock --etcd http://10.240.0.2:4001\n"
        ), "{unit}");
        // systemd present (the recorder answers success by default), no
        // binary and no unit yet, service inactive.
        let absent = Output {
            code: Some(1),
            stdout: vec![],
            stderr: vec![],
        };
        let exec = RecordingExec {
            answers: [
                ("sha256sum".to_string(), absent.clone()),
                ("systemctl is-active".to_string(), absent),
            ]
            .into(),
            ..Default::default()
        };
        assert!(install_helper(&exec, &all[1], &helper).await.unwrap());
        let calls = exec.calls();
        assert!(calls.iter().any(|c| c
            == &argv![
                "dd",
                "of=/etc/systemd/system/kctl-node-c1.service",
                "status=none"
            ]));
        assert!(calls
            .iter()
            .any(|c| c == &argv!["systemctl", "restart", "kctl-node-c1.service"]));
        assert!(!calls
            .iter()
            .any(|c| c[0] == "start-stop-daemon" && c.contains(&"--start".to_string())));
    }
}
