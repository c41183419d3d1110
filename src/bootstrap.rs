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
    let out = exec
        .run(&restore, Some(forward_rules(all).as_bytes()))
        .await?;
    if !out.success() {
        return Err(ExecError::Failed {
            target: exec.target().to_string(),
            argv: restore,
            code: out.code,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
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
        let out = exec.run(&import, Some(&image::pause_rootfs_tar())).await?;
        if !out.success() {
            return Err(ExecError::Failed {
                target: exec.target().to_string(),
                argv: import,
                code: out.code,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }
    Ok(())
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
}
