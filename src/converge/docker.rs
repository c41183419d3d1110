//! What a pod is in Docker's terms (pure): its containers as specs, their
//! labels, and what kctl reads back about them.

use super::engine::{ContainerSpec, MountSpec, Published, RestartKind};
use super::RunContext;
use crate::argv;
use crate::model::{Container, Hook, RestartPolicy, SecurityContext, VolumeSource};
use crate::state::PodRecord;
use std::collections::BTreeMap;
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
/// The container's preStop hook, as JSON (a command's list, or a GET with
/// its port as a number): what to run before stopping it, also when its
/// pod is gone from etcd.
pub const LABEL_PRE_STOP: &str = "io.kctl.pre-stop";

/// The preStop hook a container's label holds, if it holds a sane one:
/// the label is Docker's answer, read back, and not trusted.
pub fn pre_stop_of(label: Option<&String>) -> Option<Hook> {
    label
        .filter(|text| text.len() <= 2 * crate::model::MAX_HOOK_BYTES)
        .and_then(|text| serde_json::from_str::<Hook>(text).ok())
        .filter(|hook| hook.problem().is_none())
}

/// `hook` with a named port replaced by its number in `spec`: a label
/// read back has no pod spec to look the name up in.
pub fn with_port_number(hook: &Hook, spec: &crate::model::PodSpec) -> Hook {
    match hook {
        Hook::HttpGet(get) => Hook::HttpGet(crate::model::HttpGetHook {
            port: spec
                .port_number(&get.port)
                .map_or_else(|| get.port.clone(), crate::model::PortRef::Number),
            ..get.clone()
        }),
        exec => exec.clone(),
    }
}

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
    /// What to run before it stops (its preStop hook).
    pub pre_stop: Option<Hook>,
}

pub fn container_name(pod: &str, container: &str) -> String {
    format!("{pod}_{container}")
}

fn labels(ctx: &RunContext, pod: &PodRecord, container: &str) -> BTreeMap<String, String> {
    [
        (LABEL_CLUSTER, ctx.cluster.clone()),
        (LABEL_POD, pod.pod.id.clone()),
        (LABEL_CONTAINER, container.to_string()),
        (LABEL_SPEC, pod.spec_hash()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The containers that make a pod, in the order they start: the infra
/// container first (it holds the network namespace, IP and host ports),
/// then one per manifest container, joined to it.
pub fn pod_containers(pod: &PodRecord, ctx: &RunContext) -> Vec<ContainerSpec> {
    let id = &pod.pod.id;
    let infra_name = container_name(id, INFRA_CONTAINER);
    let published = pod
        .pod
        .spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            p.host_port.map(|host_port| Published {
                host_port,
                container_port: p.container_port,
                protocol: p.protocol.as_lower(),
            })
        })
        .collect();
    let infra = ContainerSpec {
        name: infra_name.clone(),
        image: PAUSE_IMAGE.into(),
        entrypoint: vec![],
        command: vec![],
        env: vec![],
        labels: labels(ctx, pod, INFRA_CONTAINER),
        hostname: Some(pod_hostname(id)),
        network: POD_NETWORK.into(),
        restart: RestartKind::Always,
        published,
        working_dir: None,
        memory_bytes: None,
        cpu_shares: None,
        mounts: vec![],
        // It only holds the network namespace: it needs no capability.
        security: SecurityContext {
            capabilities_drop: vec!["ALL".into()],
            allow_privilege_escalation: Some(false),
            ..Default::default()
        },
        pids_limit: Some(PIDS_PER_CONTAINER),
    };
    let mut all = vec![infra];
    for c in &pod.pod.spec.containers {
        all.push(app_container(pod, c, ctx, &infra_name));
    }
    all
}

/// A pod's hostname: its id, in lower case and cut to the 63 characters a
/// Linux hostname may have (pod ids are DNS subdomains of up to 253).
fn pod_hostname(id: &str) -> String {
    let mut name = id.to_ascii_lowercase();
    name.truncate(63);
    name.trim_end_matches(['-', '.']).to_string()
}

fn app_container(
    pod: &PodRecord,
    c: &Container,
    ctx: &RunContext,
    infra_name: &str,
) -> ContainerSpec {
    ContainerSpec {
        name: container_name(&pod.pod.id, &c.name),
        image: c.image.clone(),
        entrypoint: c.entrypoint.clone(),
        command: c.command.clone(),
        // The container's own variables come last, so they win over a
        // service's of the same name.
        env: ctx
            .service_env
            .iter()
            .chain(&c.env)
            .map(|e| format!("{}={}", e.name, e.value))
            .collect(),
        labels: {
            let mut labels = labels(ctx, pod, &c.name);
            if let Some(hook) = &c.pre_stop {
                let hook = with_port_number(hook, &pod.pod.spec);
                labels.insert(
                    LABEL_PRE_STOP.to_string(),
                    serde_json::to_string(&hook).unwrap_or_default(),
                );
            }
            labels
        },
        hostname: None,
        network: format!("container:{infra_name}"),
        restart: restart_kind(pod.pod.spec.restart_policy),
        published: vec![],
        working_dir: c.working_dir.clone(),
        memory_bytes: c.memory.and_then(|b| i64::try_from(b).ok()),
        // Docker's shares are relative weights with 1024 for one core.
        cpu_shares: c.cpu.map(|milli| (i64::from(milli) * 1024 / 1000).max(2)),
        mounts: mounts(ctx, pod, c),
        security: hardened(&c.security),
        pids_limit: Some(PIDS_PER_CONTAINER),
    }
}

/// Processes and threads one container may have: a fork bomb stays in
/// its container, and the minion's helper keeps forking (podman's
/// default; a JVM's few hundred threads fit well).
pub const PIDS_PER_CONTAINER: i64 = 2048;

/// What a container gets beyond Docker's defaults unless its
/// `securityContext` asks otherwise: no raw sockets (with them a pod
/// forges ARP and NDP answers for its neighbours on the pod bridge), and
/// no privileges gained through set-user-ID files. A privileged container
/// is left as asked: it has the whole machine anyway.
pub fn hardened(asked: &SecurityContext) -> SecurityContext {
    let mut security = asked.clone();
    if security.privileged {
        return security;
    }
    let named = |list: &[String], cap: &str| list.iter().any(|c| c == cap || c == "ALL");
    if !named(&security.capabilities_add, "NET_RAW")
        && !named(&security.capabilities_drop, "NET_RAW")
    {
        security.capabilities_drop.push("NET_RAW".into());
    }
    security.allow_privilege_escalation.get_or_insert(false);
    security
}

/// The Docker volume that holds a pod's emptyDir volume on its minion.
pub fn pod_volume_name(cluster: &str, pod: &str, volume: &str) -> String {
    format!("kctl_{cluster}_{pod}_{volume}")
}

fn mounts(ctx: &RunContext, pod: &PodRecord, c: &Container) -> Vec<MountSpec> {
    c.volume_mounts
        .iter()
        .filter_map(|mount| {
            let volume = pod.pod.spec.volumes.iter().find(|v| v.name == mount.name)?;
            let target = mount.mount_path.clone();
            let read_only = mount.read_only;
            let labels: BTreeMap<String, String> = [
                (LABEL_CLUSTER.to_string(), ctx.cluster.clone()),
                (LABEL_POD.to_string(), pod.pod.id.clone()),
            ]
            .into();
            Some(match &volume.source {
                // A repository is cloned into the same kind of volume.
                VolumeSource::EmptyDir | VolumeSource::GitRepo { .. } => MountSpec::Volume {
                    name: pod_volume_name(&ctx.cluster, &pod.pod.id, &volume.name),
                    labels,
                    device_options: BTreeMap::new(),
                    target,
                    read_only,
                },
                // (A disk that would not mount was refused before the
                // pod's start: `disk_volumes::unattached`.)
                VolumeSource::GcePersistentDisk { read_only: ro, .. } => MountSpec::Volume {
                    name: super::disk_volumes::docker_volume_name(
                        &ctx.cluster,
                        &pod.pod.id,
                        &volume.name,
                        &volume.source,
                    ),
                    labels,
                    device_options: super::disk_volumes::device_options(&volume.source),
                    target,
                    read_only: read_only || *ro,
                },
                VolumeSource::HostDir { path } => MountSpec::Bind {
                    source: path.clone(),
                    target,
                    read_only,
                },
            })
        })
        .collect()
}

fn restart_kind(policy: RestartPolicy) -> RestartKind {
    match policy {
        RestartPolicy::Always => RestartKind::Always,
        RestartPolicy::OnFailure => RestartKind::OnFailure,
        RestartPolicy::Never => RestartKind::No,
    }
}

pub fn remove_argv(ids: &[String]) -> Vec<String> {
    let mut a = argv!["docker", "rm", "--force", "--volumes"];
    a.extend(ids.iter().cloned());
    a
}

/// The cluster's pod volumes on a minion, by name.
pub fn list_volumes_argv(cluster: &str) -> Vec<String> {
    argv![
        "docker",
        "volume",
        "ls",
        "--quiet",
        "--filter",
        format!("label={LABEL_CLUSTER}={cluster}")
    ]
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
