//! The node helper (`kctl-node`) as a service on a minion: its command
//! line and unit. `setup` installs it; `teardown` removes it.

use super::service::Service;
use crate::argv;
use crate::cluster::{ClusterConfig, MinionConfig};

/// What the node helper on a minion is started with.
#[derive(Debug, Clone)]
pub struct Helper<'a> {
    pub cluster: &'a str,
    pub etcd_endpoints: &'a [String],
    pub offline_images: bool,
    /// The cluster addresses of the machines running etcd's members, where
    /// those are the cluster's machines: a helper there starts after etcd.
    pub etcd_hosts: Vec<std::net::Ipv4Addr>,
    /// What records the helper may act on (`state::checks`): it reads
    /// etcd, which every minion's key can write.
    pub policy: crate::model::RecordPolicy,
}

impl<'a> Helper<'a> {
    pub fn of(config: &'a ClusterConfig) -> Helper<'a> {
        Helper {
            cluster: &config.name,
            etcd_endpoints: &config.etcd_endpoints,
            offline_images: config.offline_images,
            etcd_hosts: config.etcd_hosts.iter().map(|h| h.ip).collect(),
            policy: config.record_policy(),
        }
    }
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
    if helper
        .etcd_endpoints
        .iter()
        .any(|e| e.starts_with("https://"))
    {
        args.push("--etcd-tls-dir".into());
        args.push(helper_tls_dir(minion));
    }
    if helper.offline_images {
        args.push("--offline-images".into());
    }
    if let Some(net) = helper.policy.portal_net {
        args.push("--portal-net".into());
        args.push(net.to_string());
    }
    if helper.policy.allow_host_dir {
        args.push("--allow-host-dir".into());
    }
    if helper.policy.allow_privileged {
        args.push("--allow-privileged".into());
    }
    args
}

fn helper_dir(minion: &MinionConfig) -> String {
    minion.helper_dir.trim_end_matches('/').to_string()
}

/// Where the helper's etcd credentials are on its minion.
pub fn helper_tls_dir(minion: &MinionConfig) -> String {
    format!("{}/tls", helper_dir(minion))
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
        // On the etcd host, the helper would otherwise start first and
        // fail its first connection.
        after: if helper.etcd_hosts.contains(&minion.host_ip) {
            vec![format!("kctl-etcd-{}.service", helper.cluster)]
        } else {
            vec![]
        },
        pre_start: vec![],
        supervisor: Some(format!("{dir}/kctl-node")),
    }
}

pub(crate) fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::tests::minions;

    #[test]
    fn helper_unit_runs_kctl_node_for_its_minion() {
        let all = minions();
        let helper = Helper {
            cluster: "c1",
            etcd_endpoints: &["https://10.240.0.2:4001".to_string()],
            offline_images: false,
            etcd_hosts: vec![all[0].host_ip],
            policy: Default::default(),
        };
        let unit = helper_service(&all[1], &helper).systemd_unit();
        assert!(unit.contains(
            "ExecStart=/var/lib/kctl/kctl-node run --cluster c1 --minion minion-2 --docker-socket /var/run/docker.sock --etcd https://10.240.0.2:4001 --etcd-tls-dir /var/lib/kctl/tls\n"
        ), "{unit}");
        assert!(
            unit.contains("After=network-online.target docker.service\n"),
            "{unit}"
        );
        // On the etcd host, after etcd.
        let on_etcd_host = helper_service(&all[0], &helper).systemd_unit();
        assert!(
            on_etcd_host
                .contains("After=network-online.target docker.service kctl-etcd-c1.service\n"),
            "{on_etcd_host}"
        );
        let offline = Helper {
            offline_images: true,
            ..helper.clone()
        };
        assert_eq!(
            helper_args(&all[0], &offline),
            [
                "run",
                "--cluster",
                "c1",
                "--minion",
                "minion-1",
                "--docker-socket",
                "/var/run/docker.sock",
                "--etcd",
                "https://10.240.0.2:4001",
                "--etcd-tls-dir",
                "/var/lib/kctl/tls",
                "--offline-images"
            ]
        );
        // The cluster's choices, for the records the helper acts on.
        let lenient = Helper {
            policy: crate::model::RecordPolicy {
                allow_host_dir: true,
                allow_privileged: true,
                portal_net: Some("10.0.0.0/16".parse().unwrap()),
            },
            ..helper
        };
        assert!(helper_args(&all[0], &lenient).ends_with(&[
            "--portal-net".to_string(),
            "10.0.0.0/16".to_string(),
            "--allow-host-dir".to_string(),
            "--allow-privileged".to_string(),
        ]));
    }
}
