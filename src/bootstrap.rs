//! Installing kctl's parts on a machine over SSH: whatever made the machine
//! (the local provider's namespaces today; cloud VMs or users' hosts later),
//! this is the one path that prepares it to run pods.

use crate::argv;
use crate::cluster::MinionConfig;
use crate::converge::docker::PAUSE_IMAGE;
use crate::exec::{Exec, ExecError};
use crate::image;

/// The filter-table chain kctl owns on every minion.
pub const FORWARD_CHAIN: &str = "KCTL-FORWARD";

/// `ip route replace` for every other minion's pod range: pods reach each
/// other by pod IP, across minions, without NAT.
pub fn route_argvs(minion: &MinionConfig, all: &[MinionConfig]) -> Vec<Vec<String>> {
    all.iter()
        .filter(|other| other.id != minion.id)
        .map(|other| {
            argv![
                "ip",
                "route",
                "replace",
                other.pod_cidr.clone(),
                "via",
                other.host_ip.to_string()
            ]
        })
        .collect()
}

/// The `iptables-restore --noflush` input that accepts forwarded traffic to
/// and from every pod range (Docker's own FORWARD rules would drop
/// connections from other minions' pods). Declaring the chain flushes it,
/// so the rules are replaced whole, atomically.
pub fn forward_rules(all: &[MinionConfig]) -> String {
    let mut rules = format!("*filter\n:{FORWARD_CHAIN} - [0:0]\n");
    for m in all {
        rules.push_str(&format!("-A {FORWARD_CHAIN} -d {} -j ACCEPT\n", m.pod_cidr));
        rules.push_str(&format!("-A {FORWARD_CHAIN} -s {} -j ACCEPT\n", m.pod_cidr));
    }
    rules.push_str("COMMIT\n");
    rules
}

/// Prepares one minion. Idempotent: running it again changes nothing.
pub async fn bootstrap_minion<E: Exec>(
    exec: &E,
    minion: &MinionConfig,
    all: &[MinionConfig],
) -> Result<(), ExecError> {
    exec.run_ok(&argv![
        "docker",
        "version",
        "--format",
        "{{.Server.Version}}"
    ])
    .await?;
    // Service rules are written with nft (see services::rules).
    exec.run_ok(&argv!["nft", "--version"]).await?;
    for route in route_argvs(minion, all) {
        exec.run_ok(&route).await?;
    }
    let restore = argv!["iptables-restore", "--wait", "--noflush"];
    exec.run(&restore, Some(forward_rules(all).as_bytes()))
        .await?
        .check(exec.target(), &restore)?;
    let jump = |op: &str| argv!["iptables", "--wait", op, "FORWARD", "--jump", FORWARD_CHAIN];
    if !exec.run(&jump("--check"), None).await?.success() {
        exec.run_ok(&jump("--insert")).await?;
    }
    let has_pause = exec
        .run(
            &argv![
                "docker",
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                PAUSE_IMAGE
            ],
            None,
        )
        .await?;
    if !has_pause.success() {
        let import = argv![
            "docker",
            "import",
            "--change",
            r#"ENTRYPOINT ["/pause"]"#,
            "-",
            PAUSE_IMAGE
        ];
        exec.run(&import, Some(&image::pause_rootfs_tar()))
            .await?
            .check(exec.target(), &import)?;
    }
    Ok(())
}

/// What the node helper on a minion is started with.
#[derive(Debug, Clone)]
pub struct Helper<'a> {
    /// The `kctl-node` binary on the workstation.
    pub binary: &'a std::path::Path,
    pub cluster: &'a str,
    pub etcd_endpoints: &'a [String],
    pub offline_images: bool,
}

/// Where the helper's files live on a minion.
struct HelperPaths {
    dir: String,
    binary: String,
    pid: String,
    log: String,
}

impl HelperPaths {
    fn of(minion: &MinionConfig) -> HelperPaths {
        let dir = minion.helper_dir.trim_end_matches('/').to_string();
        HelperPaths {
            binary: format!("{dir}/kctl-node"),
            pid: format!("{dir}/kctl-node.pid"),
            log: format!("{dir}/kctl-node.log"),
            dir,
        }
    }
}

/// The helper's command line after `start-stop-daemon … --`.
pub fn helper_args(minion: &MinionConfig, helper: &Helper) -> Vec<String> {
    let mut args = argv![
        "run",
        "--cluster",
        helper.cluster,
        "--minion",
        minion.id.clone()
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

/// The systemd unit that runs the helper where systemd runs.
pub fn systemd_unit(minion: &MinionConfig, helper: &Helper) -> String {
    let paths = HelperPaths::of(minion);
    // Every argument is a validated name, an id or a URL: no spaces or
    // quotes, so systemd's own word splitting keeps them apart.
    let args = helper_args(minion, helper).join(" ");
    format!(
        "[Unit]\nDescription=kctl node helper of cluster {} on {}\nAfter=network-online.target docker.service\n\n\
         [Service]\nExecStart={} {args}\nRestart=always\nRestartSec=1\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        helper.cluster, minion.id, paths.binary
    )
}

fn systemd_unit_name(helper: &Helper) -> String {
    format!("kctl-node-{}.service", helper.cluster)
}

/// Installs the node helper on a minion and makes sure it runs: as a
/// systemd service where systemd runs, else as a supervised daemon
/// (`start-stop-daemon`, pid file, log). A helper whose binary differs from
/// the workstation's is stopped, replaced and started again: re-running
/// `up` after building a new kctl upgrades it in place. Returns true if
/// anything changed.
pub async fn install_helper<E: Exec>(
    exec: &E,
    minion: &MinionConfig,
    helper: &Helper<'_>,
) -> Result<bool, ExecError> {
    let paths = HelperPaths::of(minion);
    let local = sha256_file(helper.binary).map_err(|e| ExecError::Transport {
        target: exec.target().to_string(),
        message: format!("{}: {e}", helper.binary.display()),
    })?;
    let remote = exec
        .run(&argv!["sha256sum", paths.binary.clone()], None)
        .await?;
    let remote = remote.stdout_text();
    let systemd = exec
        .run(&argv!["test", "-d", "/run/systemd/system"], None)
        .await?
        .success();
    let unit = systemd_unit_name(helper);
    let mut changed = false;
    if remote.split_whitespace().next() != Some(local.as_str()) {
        if systemd {
            exec.run(&argv!["systemctl", "stop", unit.clone()], None)
                .await?;
        }
        exec.run(
            &argv![
                "start-stop-daemon",
                "--stop",
                "--quiet",
                "--oknodo",
                "--pidfile",
                paths.pid.clone(),
                "--retry",
                "TERM/5/KILL/2",
                "--remove-pidfile"
            ],
            None,
        )
        .await?;
        let staged = format!("{}.new", paths.binary);
        exec.run_ok(&argv!["mkdir", "-p", paths.dir.clone()])
            .await?;
        let upload = argv!["dd", format!("of={staged}"), "bs=1M", "status=none"];
        exec.run_with_file(&upload, helper.binary)
            .await?
            .check(exec.target(), &upload)?;
        exec.run_ok(&argv!["chmod", "0755", staged.clone()]).await?;
        exec.run_ok(&argv!["mv", "-f", staged, paths.binary.clone()])
            .await?;
        changed = true;
    }
    if systemd {
        let unit_path = format!("/etc/systemd/system/{unit}");
        let text = systemd_unit(minion, helper);
        let current = exec.run(&argv!["cat", unit_path.clone()], None).await?;
        if current.stdout != text.as_bytes() {
            let write = argv!["dd", format!("of={unit_path}"), "status=none"];
            exec.run(&write, Some(text.as_bytes()))
                .await?
                .check(exec.target(), &write)?;
            exec.run_ok(&argv!["systemctl", "daemon-reload"]).await?;
            changed = true;
        }
        let active = exec
            .run(
                &argv!["systemctl", "is-active", "--quiet", unit.clone()],
                None,
            )
            .await?
            .success();
        if changed || !active {
            exec.run_ok(&argv!["systemctl", "enable", unit.clone()])
                .await?;
            exec.run_ok(&argv!["systemctl", "restart", unit]).await?;
            changed = true;
        }
        return Ok(changed);
    }
    let status = exec
        .run(
            &argv![
                "start-stop-daemon",
                "--status",
                "--pidfile",
                paths.pid.clone()
            ],
            None,
        )
        .await?;
    if !status.success() {
        let mut start = argv![
            "start-stop-daemon",
            "--start",
            "--quiet",
            "--background",
            "--make-pidfile",
            "--pidfile",
            paths.pid.clone(),
            "--output",
            paths.log.clone(),
            "--exec",
            paths.binary.clone(),
            "--"
        ];
        start.extend(helper_args(minion, helper));
        exec.run_ok(&start).await?;
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Output, RecordingExec};

    fn minions() -> Vec<MinionConfig> {
        (1..=3)
            .map(|i| MinionConfig {
                id: format!("minion-{i}"),
                host_ip: format!("10.101.0.{}", 10 + i).parse().unwrap(),
                ssh_port: 22,
                ssh_user: "root".into(),
                pod_cidr: format!("10.101.{i}.0/24"),
                helper_dir: "/var/lib/kctl/".into(),
            })
            .collect()
    }

    #[test]
    fn routes_go_to_the_other_minions() {
        let all = minions();
        let routes = route_argvs(&all[0], &all);
        assert_eq!(
            routes,
            vec![
                argv![
                    "ip",
                    "route",
                    "replace",
                    "10.101.2.0/24",
                    "via",
                    "10.101.0.12"
                ],
                argv![
                    "ip",
                    "route",
                    "replace",
                    "10.101.3.0/24",
                    "via",
                    "10.101.0.13"
                ],
            ]
        );
    }

    #[test]
    fn forward_rules_cover_every_pod_range() {
        let rules = forward_rules(&minions());
        assert!(rules.starts_with("*filter\n:KCTL-FORWARD - [0:0]\n"));
        assert_eq!(rules.matches("-j ACCEPT").count(), 6);
        assert!(rules.ends_with("COMMIT\n"));
    }

    #[tokio::test]
    async fn bootstrap_imports_pause_only_when_missing() {
        let all = minions();
        let missing = Output {
            code: Some(1),
            stdout: vec![],
            stderr: b"No such image".to_vec(),
        };
        let exec = RecordingExec {
            answers: [
                ("docker image".to_string(), missing.clone()),
                ("iptables --wait --check".to_string(), missing),
            ]
            .into(),
            ..Default::default()
        };
        bootstrap_minion(&exec, &all[0], &all).await.unwrap();
        let calls = exec.calls();
        assert!(calls.iter().any(|c| c[..2] == ["docker", "import"]));
        assert!(calls.iter().any(|c| c.contains(&"--insert".to_string())));

        let present = RecordingExec::default();
        bootstrap_minion(&present, &all[0], &all).await.unwrap();
        let calls = present.calls();
        assert!(!calls.iter().any(|c| c[..2] == ["docker", "import"]));
        assert!(!calls.iter().any(|c| c.contains(&"--insert".to_string())));
    }

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
            etcd_endpoints: &["http://10.240.0.2:2379".to_string()],
            offline_images: false,
        };
        let unit = systemd_unit(&all[1], &helper);
        assert!(unit.contains(
            "ExecStart=/var/lib/kctl/kctl-node run --cluster c1 --minion minion-2 --etcd http://10.240.0.2:2379\n"
        ), "{unit}");
        assert!(unit.contains("Restart=always"));
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
            .any(|c| c == &argv!["systemctl", "daemon-reload"]));
        assert!(calls
            .iter()
            .any(|c| c == &argv!["systemctl", "restart", "kctl-node-c1.service"]));
        assert!(!calls
            .iter()
            .any(|c| c[0] == "start-stop-daemon" && c.contains(&"--start".to_string())));
    }
}
