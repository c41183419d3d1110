//! `up`'s work on one minion in two or three SSH sessions, whatever it
//! involves: the workstation uploads `kctl-node` if the minion's differs,
//! then runs `kctl-node setup` there, which bootstraps the minion and
//! installs the helper's service locally — the same code as over SSH, with
//! the local `Exec` — and answers whether anything changed. Every command
//! of bootstrap used to be a session of its own (22 per minion).

use super::helper::{helper_service, helper_tls_dir, sha256_file, Helper};
use super::{bootstrap_minion, service};
use crate::argv;
use crate::cluster::ClusterConfig;
use crate::exec::{Exec, ExecError};
use crate::pki::{Credentials, NODE_CA_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use serde::{Deserialize, Serialize};

/// What `kctl-node setup` reads on its standard input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupRequest {
    pub cluster: ClusterConfig,
    /// The minion it runs on.
    pub minion: String,
    /// Where the new binary was uploaded, when the helper is replaced: it
    /// is moved into place once the old helper has stopped.
    pub staged: Option<String>,
    /// The SHA-256 the staged binary must have: checked before anything
    /// stops, so a damaged upload never replaces a working helper.
    #[serde(default)]
    pub staged_sha256: Option<String>,
    /// The helper's credentials for etcd, written to its `tls/` directory
    /// (never to the saved copy of the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_credentials: Option<Credentials>,
}

impl SetupRequest {
    /// Reads a request (from `kctl up`, or the copy kept beside the
    /// helper, which anyone with the minion's disk could have changed)
    /// and refuses one whose cluster record holds names, hosts or paths
    /// kctl would not write: they reach unit files and iptables rules.
    pub fn parse(text: &str) -> Result<SetupRequest, String> {
        let request: SetupRequest = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut problems = request.cluster.problems();
        if request.cluster.minion(&request.minion).is_none() {
            problems.push(format!(
                "minion {:?} is not in the cluster record",
                request.minion
            ));
        }
        if let Some(p) = request
            .staged
            .as_deref()
            .and_then(crate::model::names::machine_path_problem)
        {
            problems.push(format!("staged: {p}"));
        }
        match problems.is_empty() {
            true => Ok(request),
            false => Err(problems.join("; ")),
        }
    }
}

/// Where `kctl-node setup` keeps its request: beside the helper's binary.
pub fn saved_request_path(program: &str) -> String {
    let dir = program.rsplit_once('/').map_or(".", |(dir, _)| dir);
    format!("{dir}/setup.json")
}

/// The kernel's id of the running boot: a new one means that what the
/// bootstrap put into the kernel (routes, rules, sysctls, the bridge) is
/// gone, whatever else a boot brought back (saved iptables rules).
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Where the bootstrap records the boot it ran in, beside the helper.
pub fn boot_record_path(program: &str) -> String {
    let dir = program.rsplit_once('/').map_or(".", |(dir, _)| dir);
    format!("{dir}/bootstrapped-boot-id")
}

async fn record_boot<E: Exec>(exec: &E, program: &str) -> Result<(), ExecError> {
    exec.run_ok(&argv!["cp", BOOT_ID, boot_record_path(program)])
        .await
        .map(drop)
}

/// Minion side: whether the bootstrap ran in this boot of the machine.
pub async fn bootstrapped_this_boot<E: Exec>(exec: &E, program: &str) -> bool {
    let same = argv!["cmp", "-s", BOOT_ID, boot_record_path(program)];
    matches!(exec.run(&same, None).await, Ok(out) if out.success())
}

/// Minion side, when the helper starts: bootstraps the minion again from
/// the request `setup` kept (`saved`, its text), so what a reboot wiped
/// comes back without `kctl up`. True if anything changed.
pub async fn restore_here<E: Exec>(exec: &E, saved: &str) -> Result<bool, ExecError> {
    let request = SetupRequest::parse(saved).map_err(|e| ExecError::Transport {
        target: exec.target().to_string(),
        message: format!("the saved setup request: {e}"),
    })?;
    let minion = request
        .cluster
        .minion(&request.minion)
        .ok_or_else(|| ExecError::Transport {
            target: request.minion.clone(),
            message: "not in the saved cluster record".into(),
        })?;
    let mut changed = bootstrap_minion(exec, &request.cluster, minion).await?;
    // On an etcd host, etcd's guard too: systemd brings etcd back at boot,
    // its firewall chain nobody but kctl.
    if let Some(host) = request.cluster.etcd_host_at(minion.host_ip) {
        let minions: Vec<_> = request.cluster.minions.iter().map(|m| m.host_ip).collect();
        let members = super::etcd::member_ips(&request.cluster.etcd_hosts);
        changed |= super::etcd::install_etcd_firewall(exec, host, &minions, &members).await?;
    }
    let program = helper_service(minion, &Helper::of(&request.cluster)).program;
    record_boot(exec, &program).await?;
    Ok(changed)
}

/// Uploads `local` to `remote` (mode 0755) unless the file there has the
/// same SHA-256; true if it uploaded.
pub(crate) async fn upload_if_different<E: Exec>(
    exec: &E,
    local: &std::path::Path,
    remote: &str,
) -> Result<bool, ExecError> {
    let digest = sha256_file(local).map_err(|e| ExecError::Transport {
        target: exec.target().to_string(),
        message: format!("{}: {e}", local.display()),
    })?;
    let there = exec.run(&argv!["sha256sum", remote], None).await?;
    if there.stdout_text().split_whitespace().next() == Some(digest.as_str()) {
        return Ok(false);
    }
    let upload = argv!["install", "-D", "-m", "0755", "/dev/stdin", remote];
    exec.run_with_file(&upload, local)
        .await?
        .check(exec.target(), &upload)?;
    Ok(true)
}

/// Minion side: whether anything `restore_here` puts in place is gone
/// ([`network_drift`]): cheap enough to run every few seconds, where the
/// whole restore is not.
pub async fn drifted_here<E: Exec>(exec: &E, saved: &str) -> Result<bool, ExecError> {
    let request = SetupRequest::parse(saved).map_err(|e| ExecError::Transport {
        target: exec.target().to_string(),
        message: format!("the saved setup request: {e}"),
    })?;
    Ok(!network_drift(exec, &request.cluster, &request.minion)
        .await?
        .is_empty())
}

/// What of minion `minion`'s network the bootstrap puts in place is gone,
/// a line each: the jumps into kctl's chains (a reboot or a flush removes
/// them with the rest), the routes to the other minions' pods and to the
/// portals, the kernel's forwarding. A few `iptables --check`, one `ip
/// route show`, one read of a sysctl. Empty when all is there.
pub async fn network_drift<E: Exec>(
    exec: &E,
    cluster: &ClusterConfig,
    minion: &str,
) -> Result<Vec<String>, ExecError> {
    let mut drift = vec![];
    let mut checks = vec![
        (
            super::guard_jump("INPUT", "--check"),
            format!("INPUT does not jump to {}", super::GUARD_CHAIN),
        ),
        (
            argv![
                "iptables",
                "--wait",
                "--check",
                "FORWARD",
                "--jump",
                super::FORWARD_CHAIN
            ],
            format!("FORWARD does not jump to {}", super::FORWARD_CHAIN),
        ),
    ];
    let config = cluster.minion(minion);
    if config.is_some_and(|m| cluster.etcd_host_at(m.host_ip).is_some()) {
        checks.push((
            super::etcd::jump("--check"),
            format!("INPUT does not jump to {}", super::etcd::ETCD_CHAIN),
        ));
    }
    for (check, missing) in checks {
        if !exec.run(&check, None).await?.success() {
            drift.push(missing);
        }
    }
    if let Some(config) = config {
        // A record whose routes do not parse is for the restore to report.
        let routes = super::minion_routes(cluster, config).unwrap_or_default();
        if !routes.is_empty() {
            let listed = exec.run(&argv!["ip", "-4", "route", "show"], None).await?;
            for (range, via) in super::missing_routes(&routes, &listed.stdout_text()) {
                drift.push(format!("no route to {range} via {via}"));
            }
        }
    }
    if !super::forwarding_on(exec).await? {
        drift.push("IPv4 forwarding is off".into());
    }
    Ok(drift)
}

/// What `kctl-node setup` prints on success.
const CHANGED: &str = "changed";
const UNCHANGED: &str = "unchanged";

/// Workstation side: brings `minion` to what `cluster` says, with
/// `binary` as its helper and `credentials` for etcd. Returns true if
/// anything changed.
pub async fn setup_minion<E: Exec>(
    exec: &E,
    cluster: &ClusterConfig,
    minion: &str,
    binary: &std::path::Path,
    credentials: Option<&Credentials>,
) -> Result<bool, ExecError> {
    let transport = |message: String| ExecError::Transport {
        target: exec.target().to_string(),
        message,
    };
    let config = cluster
        .minion(minion)
        .ok_or_else(|| transport("not in the cluster record".into()))?;
    let service = helper_service(config, &Helper::of(cluster));
    let local = sha256_file(binary).map_err(|e| transport(format!("{}: {e}", binary.display())))?;
    let remote = exec
        .run(&argv!["sha256sum", service.program.clone()], None)
        .await?;
    let stale = remote.stdout_text().split_whitespace().next() != Some(local.as_str());
    let staged = stale.then(|| format!("{}.new", service.program));
    if let Some(staged) = &staged {
        // Directory, file and mode in one command, fed the binary.
        let upload = argv!["install", "-D", "-m", "0755", "/dev/stdin", staged.clone()];
        exec.run_with_file(&upload, binary)
            .await?
            .check(exec.target(), &upload)?;
    }
    let request = SetupRequest {
        // The workstation's own paths are no business of the minion's.
        cluster: ClusterConfig {
            ssh_identity: None,
            ..cluster.clone()
        },
        minion: minion.to_string(),
        staged: staged.clone(),
        staged_sha256: stale.then_some(local),
        etcd_credentials: credentials.cloned(),
    };
    let input = serde_json::to_vec(&request).map_err(|e| transport(e.to_string()))?;
    let setup = argv![staged.unwrap_or(service.program), "setup"];
    let out = exec
        .run(&setup, Some(&input))
        .await?
        .check(exec.target(), &setup)?;
    match out.stdout_text().trim() {
        CHANGED => Ok(true),
        UNCHANGED => Ok(stale),
        other => Err(transport(format!(
            "`kctl-node setup` answered {other:?}, not {CHANGED:?} or {UNCHANGED:?}"
        ))),
    }
}

/// Minion side (`kctl-node setup`): bootstraps the minion and makes sure
/// its helper runs, replacing the binary if a new one was staged. Returns
/// the line to print.
pub async fn setup_here<E: Exec>(
    exec: &E,
    request: &SetupRequest,
) -> Result<&'static str, ExecError> {
    let minion = request
        .cluster
        .minion(&request.minion)
        .ok_or_else(|| ExecError::Transport {
            target: request.minion.clone(),
            message: "not in the cluster record it was given".into(),
        })?;
    let service = helper_service(minion, &Helper::of(&request.cluster));
    if let (Some(staged), Some(want)) = (&request.staged, &request.staged_sha256) {
        let out = exec.run_ok(&argv!["sha256sum", staged.clone()]).await?;
        if out.split_whitespace().next() != Some(want.as_str()) {
            return Err(ExecError::Transport {
                target: request.minion.clone(),
                message: format!(
                    "the uploaded {staged} is damaged (its SHA-256 differs); run `kctl up` again"
                ),
            });
        }
    }
    let mut changed = bootstrap_minion(exec, &request.cluster, minion).await?;
    record_boot(exec, &service.program).await?;
    let credentials_changed = match &request.etcd_credentials {
        Some(credentials) => {
            let dir = helper_tls_dir(minion);
            let files = CredentialFiles {
                ca: format!("{dir}/{NODE_CA_FILE}"),
                cert: format!("{dir}/{NODE_CERT_FILE}"),
                key: format!("{dir}/{NODE_KEY_FILE}"),
            };
            install_credentials(exec, &files, credentials).await?
        }
        None => false,
    };
    changed |= credentials_changed;
    // Kept beside the helper, which bootstraps from it again when it
    // starts: a reboot wipes routes and rules, and `up` is not there.
    let saved = saved_request_path(&service.program);
    let keep = argv!["install", "-D", "-m", "0600", "/dev/stdin", saved];
    let without_secrets = SetupRequest {
        etcd_credentials: None,
        ..request.clone()
    };
    let text = serde_json::to_vec(&without_secrets).map_err(|e| ExecError::Transport {
        target: request.minion.clone(),
        message: e.to_string(),
    })?;
    exec.run(&keep, Some(&text))
        .await?
        .check(exec.target(), &keep)?;
    let systemd = service::has_systemd(exec).await?;
    if let Some(staged) = &request.staged {
        service::stop(exec, &service, systemd).await?;
        let moved = exec
            .run_ok(&argv!["mv", "-f", staged.clone(), service.program.clone()])
            .await;
        if let Err(e) = moved {
            // The old helper goes back to work rather than stay stopped.
            let _ = service::ensure_running(exec, &service, systemd, false).await;
            return Err(e);
        }
        changed = true;
    }
    // A new certificate is read at the next connection; a restart makes
    // that now (and drops a connection made with the old one).
    let restart = (request.staged.is_some() && systemd) || credentials_changed;
    changed |= service::ensure_running(exec, &service, systemd, restart).await?;
    Ok(if changed { CHANGED } else { UNCHANGED })
}

/// Where one party's credentials go on its machine.
pub(crate) struct CredentialFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// Writes `credentials` to `files` (all 0600: even the certificates are
/// nobody else's business) unless they are there already; true if they
/// were not. The key is compared through its certificate, never read back.
pub(crate) async fn install_credentials<E: Exec>(
    exec: &E,
    files: &CredentialFiles,
    credentials: &Credentials,
) -> Result<bool, ExecError> {
    let have = exec
        .run(&argv!["cat", files.ca.clone(), files.cert.clone()], None)
        .await?;
    let want = format!("{}{}", credentials.ca, credentials.own.cert);
    if have.success() && have.stdout == want.as_bytes() {
        return Ok(false);
    }
    for (path, text) in [
        (&files.key, &credentials.own.key),
        (&files.cert, &credentials.own.cert),
        (&files.ca, &credentials.ca),
    ] {
        let write = argv!["install", "-D", "-m", "0600", "/dev/stdin", path.clone()];
        exec.run(&write, Some(text.as_bytes()))
            .await?
            .check(exec.target(), &write)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::tests::cluster;
    use crate::exec::{Output, RecordingExec};

    fn answer(code: i32, stdout: &str) -> Output {
        Output {
            code: Some(code),
            stdout: stdout.as_bytes().to_vec(),
            stderr: vec![],
        }
    }

    #[tokio::test]
    async fn a_new_helper_is_uploaded_and_set_up_in_three_commands() {
        let cluster = cluster();
        let binary = std::env::current_exe().unwrap();
        let fresh = RecordingExec {
            answers: [
                ("sha256sum".to_string(), answer(1, "")),
                (
                    "/var/lib/kctl/kctl-node.new setup".to_string(),
                    answer(0, "changed\n"),
                ),
            ]
            .into(),
            ..Default::default()
        };
        assert!(setup_minion(&fresh, &cluster, "minion-1", &binary, None)
            .await
            .unwrap());
        let calls = fresh.calls();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(
            calls[1],
            argv![
                "install",
                "-D",
                "-m",
                "0755",
                "/dev/stdin",
                "/var/lib/kctl/kctl-node.new"
            ]
        );
        assert_eq!(
            fresh.inputs.lock().unwrap()[1],
            std::fs::read(&binary).unwrap()
        );
        assert_eq!(calls[2], argv!["/var/lib/kctl/kctl-node.new", "setup"]);
        let request: SetupRequest = serde_json::from_str(
            &fresh
                .input_of(&argv!["/var/lib/kctl/kctl-node.new", "setup"])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(request.minion, "minion-1");
        assert_eq!(
            request.staged.as_deref(),
            Some("/var/lib/kctl/kctl-node.new")
        );
        assert_eq!(request.cluster.minions, cluster.minions);
        assert_eq!(request.staged_sha256, Some(sha256_file(&binary).unwrap()));

        // The same binary there: no upload, the installed one sets up.
        let digest = sha256_file(&binary).unwrap();
        let current = RecordingExec {
            answers: [
                (
                    "sha256sum".to_string(),
                    answer(0, &format!("{digest}  /var/lib/kctl/kctl-node\n")),
                ),
                (
                    "/var/lib/kctl/kctl-node setup".to_string(),
                    answer(0, "unchanged\n"),
                ),
            ]
            .into(),
            ..Default::default()
        };
        assert!(!setup_minion(&current, &cluster, "minion-1", &binary, None)
            .await
            .unwrap());
        assert_eq!(current.calls().len(), 2);

        // Anything else from the minion is an error, not a guess.
        let odd = RecordingExec {
            answers: [(
                "/var/lib/kctl/kctl-node.new setup".to_string(),
                answer(0, "??"),
            )]
            .into(),
            ..Default::default()
        };
        assert!(setup_minion(&odd, &cluster, "minion-1", &binary, None)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn setup_on_the_minion_replaces_the_helper_and_restarts_it() {
        let request = SetupRequest {
            cluster: cluster(),
            minion: "minion-2".into(),
            staged: Some("/var/lib/kctl/kctl-node.new".into()),
            staged_sha256: Some("abc".into()),
            etcd_credentials: None,
        };
        // systemd present (the recorder answers success by default), no
        // unit yet, service inactive.
        let answers = |digest: &str| {
            [
                ("systemctl is-active".to_string(), answer(1, "")),
                ("cat /etc/systemd".to_string(), answer(1, "")),
                ("docker network inspect".to_string(), answer(1, "")),
                (
                    "sha256sum".to_string(),
                    answer(0, &format!("{digest}  /var/lib/kctl/kctl-node.new\n")),
                ),
            ]
            .into()
        };
        // A damaged upload stops nothing and changes nothing.
        let damaged = RecordingExec {
            answers: answers("bad"),
            ..Default::default()
        };
        let err = setup_here(&damaged, &request)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("damaged"), "{err}");
        assert_eq!(damaged.calls().len(), 1, "{:?}", damaged.calls());
        let exec = RecordingExec {
            answers: answers("abc"),
            ..Default::default()
        };
        assert_eq!(setup_here(&exec, &request).await.unwrap(), CHANGED);
        let calls = exec.calls();
        let at = |argv: Vec<String>| calls.iter().position(|c| *c == argv);
        let stop = at(argv!["systemctl", "stop", "kctl-node-c1.service"]).unwrap();
        let moved = at(argv![
            "mv",
            "-f",
            "/var/lib/kctl/kctl-node.new",
            "/var/lib/kctl/kctl-node"
        ])
        .unwrap();
        let restart = at(argv!["systemctl", "restart", "kctl-node-c1.service"]).unwrap();
        assert!(stop < moved && moved < restart, "{calls:?}");
        assert!(at(argv![
            "dd",
            "of=/etc/systemd/system/kctl-node-c1.service",
            "status=none"
        ])
        .is_some());
        // The request is kept beside the helper, for its restarts.
        let kept = exec
            .input_of(&argv![
                "install",
                "-D",
                "-m",
                "0600",
                "/dev/stdin",
                "/var/lib/kctl/setup.json"
            ])
            .unwrap();
        assert_eq!(
            serde_json::from_str::<SetupRequest>(&kept).unwrap(),
            request
        );
        // Bootstrap ran here too: the pod network, through the local exec.
        assert!(calls
            .iter()
            .any(|c| c.starts_with(&argv!["docker", "network"])));
        assert!(!calls
            .iter()
            .any(|c| c[0] == "start-stop-daemon" && c.contains(&"--start".to_string())));
        // The boot it ran in is recorded before the helper starts: a helper
        // that starts in the same boot has nothing to restore.
        let recorded = at(argv![
            "cp",
            "/proc/sys/kernel/random/boot_id",
            "/var/lib/kctl/bootstrapped-boot-id"
        ])
        .unwrap();
        assert!(recorded < restart, "{calls:?}");
    }

    #[tokio::test]
    async fn drift_is_told_by_the_jumps_into_kctls_chains() {
        let mut cluster = cluster();
        let request = |cluster: &ClusterConfig| {
            serde_json::to_string(&SetupRequest {
                cluster: cluster.clone(),
                minion: "minion-1".into(),
                staged: None,
                staged_sha256: None,
                etcd_credentials: None,
            })
            .unwrap()
        };
        let routes = "10.101.2.0/24 via 10.101.0.12 dev eth0\n\
                      10.101.3.0/24 via 10.101.0.13 dev eth0\n";
        let with = |route_list: &str, forwarding: &str| RecordingExec {
            answers: [
                ("ip -4 route show".to_string(), answer(0, route_list)),
                (
                    "cat /proc/sys/net/ipv4/ip_forward".to_string(),
                    answer(0, forwarding),
                ),
            ]
            .into(),
            ..Default::default()
        };
        let intact = with(routes, "1\n");
        assert!(!drifted_here(&intact, &request(&cluster)).await.unwrap());
        assert_eq!(
            intact.calls().len(),
            4,
            "two jumps, the routes, forwarding off the etcd host"
        );
        // A route gone, or forwarding off: the restore puts them back.
        let route_gone = with("10.101.2.0/24 via 10.101.0.12 dev eth0\n", "1\n");
        assert!(drifted_here(&route_gone, &request(&cluster)).await.unwrap());
        assert_eq!(
            network_drift(&route_gone, &cluster, "minion-1")
                .await
                .unwrap(),
            ["no route to 10.101.3.0/24 via 10.101.0.13"]
        );
        let not_forwarding = with(routes, "0\n");
        assert!(drifted_here(&not_forwarding, &request(&cluster))
            .await
            .unwrap());
        let wiped = RecordingExec {
            answers: [("iptables --wait --check".to_string(), answer(1, ""))].into(),
            ..Default::default()
        };
        assert!(drifted_here(&wiped, &request(&cluster)).await.unwrap());
        // On the etcd host, etcd's guard is checked too.
        cluster.etcd_hosts = vec![crate::cluster::EtcdHost {
            name: "minion-1".into(),
            ssh_host: "10.101.0.11".into(),
            ssh_port: 22,
            ssh_user: "root".into(),
            ip: cluster.minions[0].host_ip,
            dir: "/var/lib/kctl/c1/etcd".into(),
            joined: false,
        }];
        let etcd_gone = RecordingExec {
            answers: [(
                "iptables --wait --check INPUT --jump KCTL-ETCD".to_string(),
                answer(1, ""),
            )]
            .into(),
            ..Default::default()
        };
        assert!(drifted_here(&etcd_gone, &request(&cluster)).await.unwrap());
        let said = network_drift(&etcd_gone, &cluster, "minion-1")
            .await
            .unwrap();
        assert!(
            said.contains(&"INPUT does not jump to KCTL-ETCD".to_string()),
            "{said:?}"
        );
    }

    #[tokio::test]
    async fn a_restarted_helper_bootstraps_again_from_what_setup_kept() {
        let request = SetupRequest {
            cluster: cluster(),
            minion: "minion-1".into(),
            staged: None,
            staged_sha256: None,
            etcd_credentials: None,
        };
        let exec = RecordingExec {
            answers: [
                ("docker network inspect".to_string(), answer(1, "")),
                ("iptables --wait --check".to_string(), answer(1, "")),
                ("ip6tables --wait --check".to_string(), answer(1, "")),
            ]
            .into(),
            ..Default::default()
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(restore_here(&exec, &text).await.unwrap());
        let calls = exec.calls();
        assert!(calls
            .iter()
            .any(|c| c.starts_with(&argv!["docker", "network", "create"])));
        assert!(calls.iter().any(|c| c == &guard_jump_insert("INPUT")));
        assert!(calls
            .iter()
            .any(|c| c == &crate::bootstrap::ipv6_guard("--insert")));
        // A record that names a minion it does not hold is refused.
        let stranger = serde_json::to_string(&SetupRequest {
            minion: "minion-9".into(),
            ..request.clone()
        })
        .unwrap();
        let refused = restore_here(&RecordingExec::default(), &stranger).await;
        assert!(refused.unwrap_err().to_string().contains("minion-9"));
        // Nothing of the helper itself is touched.
        assert!(!calls.iter().any(|c| c[0] == "systemctl" || c[0] == "mv"));
        assert!(calls
            .iter()
            .any(|c| c[0] == "cp" && c[1].ends_with("boot_id")));
        // The same boot is told by comparing the ids.
        let same = RecordingExec::default();
        assert!(bootstrapped_this_boot(&same, "/var/lib/kctl/kctl-node").await);
        let other = RecordingExec {
            answers: [("cmp -s".to_string(), answer(1, ""))].into(),
            ..Default::default()
        };
        assert!(!bootstrapped_this_boot(&other, "/var/lib/kctl/kctl-node").await);
        assert!(restore_here(&exec, "not json").await.is_err());
        assert_eq!(
            saved_request_path("/var/lib/kctl/c1/m1/kctl-node"),
            "/var/lib/kctl/c1/m1/setup.json"
        );
    }

    fn guard_jump_insert(hook: &str) -> Vec<String> {
        crate::bootstrap::guard_jump(hook, "--insert")
    }
}
