//! Docker commands as argv vectors, and reading back what Docker reports.

use super::RunContext;
use crate::argv;
use crate::exec::{Exec, ExecError};
use crate::model::{Container, RestartPolicy};
use crate::state::PodRecord;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The container name (label value) of a pod's infrastructure container.
pub const INFRA_CONTAINER: &str = "POD";
/// Built by `image::pause_image_tar` and imported on every minion by
/// bootstrap; nothing is pulled.
pub const PAUSE_IMAGE: &str = "kctl/pause:0.1";

/// The Docker network every pod's infrastructure container joins: a bridge
/// over the minion's pod range, made by bootstrap through Docker's API, so
/// the daemon's own settings (and its other containers) stay untouched.
pub const POD_NETWORK: &str = "kctl";
/// The Linux bridge behind [`POD_NETWORK`].
pub const POD_BRIDGE: &str = "kctl0";

pub const LABEL_CLUSTER: &str = "io.kctl.cluster";
pub const LABEL_POD: &str = "io.kctl.pod";
pub const LABEL_CONTAINER: &str = "io.kctl.container";
pub const LABEL_SPEC: &str = "io.kctl.spec";

/// A kctl container as Docker reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: String,
    pub pod: String,
    pub container: String,
    pub spec_hash: String,
    pub running: bool,
    /// Exited and not being restarted by Docker.
    pub finished: bool,
    pub exit_code: i64,
    pub restart_count: u32,
    pub ip: Option<Ipv4Addr>,
}

pub fn container_name(pod: &str, container: &str) -> String {
    format!("{pod}_{container}")
}

fn labels(ctx: &RunContext, pod: &PodRecord, container: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in [
        (LABEL_CLUSTER, ctx.cluster.as_str()),
        (LABEL_POD, pod.pod.id.as_str()),
        (LABEL_CONTAINER, container),
        (LABEL_SPEC, &pod.spec_hash()),
    ] {
        out.push("--label".into());
        out.push(format!("{k}={v}"));
    }
    out
}

/// The `docker run` commands that start a pod: infra container first.
pub fn run_argvs(pod: &PodRecord, ctx: &RunContext) -> Vec<Vec<String>> {
    let id = &pod.pod.id;
    let infra_name = container_name(id, INFRA_CONTAINER);
    let mut infra = argv!["docker", "run", "--detach", "--name", infra_name.clone()];
    infra.extend(argv![
        "--hostname",
        id.to_ascii_lowercase(),
        "--network",
        POD_NETWORK,
        "--restart",
        "always"
    ]);
    infra.extend(labels(ctx, pod, INFRA_CONTAINER));
    for c in &pod.pod.spec.containers {
        for p in &c.ports {
            if let Some(host_port) = p.host_port {
                infra.push("--publish".into());
                infra.push(format!(
                    "{host_port}:{}/{}",
                    p.container_port,
                    p.protocol.as_lower()
                ));
            }
        }
    }
    infra.extend(pull_policy(ctx));
    infra.extend(argv!["--", PAUSE_IMAGE]);
    let mut all = vec![infra];
    for c in &pod.pod.spec.containers {
        all.push(app_argv(pod, c, ctx, &infra_name));
    }
    all
}

fn pull_policy(ctx: &RunContext) -> Vec<String> {
    if ctx.offline_images {
        argv!["--pull", "never"]
    } else {
        vec![]
    }
}

fn app_argv(pod: &PodRecord, c: &Container, ctx: &RunContext, infra_name: &str) -> Vec<String> {
    let mut a = argv![
        "docker",
        "run",
        "--detach",
        "--name",
        container_name(&pod.pod.id, &c.name),
        "--network",
        format!("container:{infra_name}"),
        "--restart",
        restart_policy(pod.pod.spec.restart_policy),
    ];
    a.extend(labels(ctx, pod, &c.name));
    // The container's own variables come last, so they win over a
    // service's of the same name.
    for e in ctx.service_env.iter().chain(&c.env) {
        a.push("--env".into());
        a.push(format!("{}={}", e.name, e.value));
    }
    if let Some(dir) = &c.working_dir {
        a.push("--workdir".into());
        a.push(dir.clone());
    }
    if let Some(bytes) = c.memory {
        a.push("--memory".into());
        a.push(bytes.to_string());
    }
    if let Some(milli) = c.cpu {
        // Docker's shares are relative weights with 1024 for one core.
        a.push("--cpu-shares".into());
        a.push((u64::from(milli) * 1024 / 1000).max(2).to_string());
    }
    a.extend(pull_policy(ctx));
    // `--` ends Docker's options: an image or command that starts with '-'
    // stays an image or command.
    a.push("--".into());
    a.push(c.image.clone());
    a.extend(c.command.iter().cloned());
    a
}

fn restart_policy(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "no",
    }
}

pub fn remove_argv(ids: &[String]) -> Vec<String> {
    let mut a = argv!["docker", "rm", "--force", "--volumes"];
    a.extend(ids.iter().cloned());
    a
}

pub fn list_argv(cluster: &str) -> Vec<String> {
    argv![
        "docker",
        "ps",
        "--all",
        "--quiet",
        "--no-trunc",
        "--filter",
        format!("label={LABEL_CLUSTER}={cluster}")
    ]
}

pub fn inspect_argv(ids: &[String]) -> Vec<String> {
    let mut a = argv!["docker", "inspect", "--type", "container"];
    a.extend(ids.iter().cloned());
    a
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    id: String,
    state: InspectState,
    #[serde(default)]
    restart_count: u32,
    config: InspectConfig,
    network_settings: InspectNetwork,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    status: String,
    running: bool,
    exit_code: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectNetwork {
    #[serde(rename = "IPAddress", default)]
    ip_address: String,
    #[serde(default)]
    networks: Option<HashMap<String, InspectEndpoint>>,
}

#[derive(Deserialize)]
struct InspectEndpoint {
    #[serde(rename = "IPAddress", default)]
    ip_address: String,
}

impl InspectNetwork {
    /// The address on the pod network; Docker's default bridge only for
    /// containers started before pods had a network of their own.
    fn pod_ip(&self) -> Option<Ipv4Addr> {
        self.networks
            .as_ref()
            .and_then(|n| n.get(POD_NETWORK))
            .and_then(|e| e.ip_address.parse().ok())
            .or_else(|| self.ip_address.parse().ok())
    }
}

/// Parses `docker inspect` output; containers without kctl labels are skipped.
pub fn parse_inspect(json: &str) -> Result<Vec<Observed>, serde_json::Error> {
    let items: Vec<Inspect> = serde_json::from_str(json)?;
    Ok(items
        .into_iter()
        .filter_map(|i| {
            let labels = i.config.labels.unwrap_or_default();
            Some(Observed {
                id: i.id,
                pod: labels.get(LABEL_POD)?.clone(),
                container: labels.get(LABEL_CONTAINER)?.clone(),
                spec_hash: labels.get(LABEL_SPEC).cloned().unwrap_or_default(),
                running: i.state.running,
                finished: matches!(i.state.status.as_str(), "exited" | "dead"),
                exit_code: i.state.exit_code,
                restart_count: i.restart_count,
                ip: i.network_settings.pod_ip(),
            })
        })
        .collect())
}

/// Every kctl container of `cluster` on the minion.
pub async fn observe<E: Exec>(exec: &E, cluster: &str) -> Result<Vec<Observed>, ExecError> {
    let ids: Vec<String> = exec
        .run_ok(&list_argv(cluster))
        .await?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let out = exec.run(&inspect_argv(&ids), None).await?;
    // A container removed between `ps` and `inspect` makes inspect exit 1
    // but still print the others.
    parse_inspect(&out.stdout_text()).map_err(|e| ExecError::Transport {
        target: exec.target().to_string(),
        message: format!("unexpected `docker inspect` output: {e}"),
    })
}
