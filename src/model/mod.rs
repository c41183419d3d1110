//! The validated object model: what a manifest means once it has been parsed
//! and checked. Everything past `manifest` (planning, the store, converge)
//! works on these types only, never on raw input.
//!
//! The serde form of these types is the value format in etcd (camelCase, close
//! to v1beta1 names so that a human reading etcd recognises them).

pub mod names;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub type Labels = BTreeMap<String, String>;

/// The kinds of object kctl manages, in the order `apply` creates them
/// (services first so pods started in the same apply see their variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Service,
    ReplicationController,
    Pod,
}

impl Kind {
    /// The name `kctl get` and the plan use, as v0.5's kubecfg spelled it.
    pub fn display_name(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::ReplicationController => "replicationController",
            Kind::Pod => "pod",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
    pub fn as_upper(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// A port given either by number or by the name of a container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeAction {
    HttpGet {
        path: String,
        port: PortRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    TcpSocket {
        port: PortRef,
    },
    Exec {
        command: Vec<String>,
    },
}

/// The longest `httpGet` path kctl sends.
pub const MAX_PROBE_PATH_LEN: usize = 2048;

/// Why an `httpGet` path cannot go on an HTTP request line as it is, if it
/// cannot: the helper writes it there verbatim, so a CR or LF would add
/// lines of the manifest author's choosing to the request.
pub fn probe_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        Some("does not start with `/`")
    } else if path.len() > MAX_PROBE_PATH_LEN {
        Some("is longer than 2048 bytes")
    } else if path.chars().any(char::is_control) {
        Some("contains a control character (CR, LF, tab, ...)")
    } else if path.chars().any(char::is_whitespace) {
        Some("contains a space")
    } else {
        None
    }
}

/// Why an `httpGet` host is not one the helper can probe, if it is not:
/// it connects to an address, it does not resolve names.
pub fn probe_host_problem(host: &str) -> Option<&'static str> {
    host.parse::<std::net::IpAddr>()
        .is_err()
        .then_some("is not an IP address")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub action: ProbeAction,
    #[serde(default)]
    pub initial_delay_seconds: u32,
    /// Seconds; v0.5 defaulted to 1.
    #[serde(default = "default_probe_timeout")]
    pub timeout_seconds: u32,
}

fn default_probe_timeout() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint (v1's `command`); empty: the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// The arguments after the entrypoint (v1beta1's `command`, v1's
    /// `args`); empty: the image's own, unless the entrypoint is replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// CPU in thousandths of a core (v1beta1 `cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Memory limit in bytes (v1beta1 `memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "SecurityContext::is_default")]
    pub security: SecurityContext,
    /// Run right after the container starts (`lifecycle.postStart`); a
    /// failure fails the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<Hook>,
    /// Run before the container is stopped (`lifecycle.preStop`), for at
    /// most [`PRE_STOP_GRACE_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<Hook>,
    /// When the image is pulled; None is [`PullPolicy::IfNotPresent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
}

/// When a minion pulls a container's image before starting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PullPolicy {
    /// At every start.
    Always,
    /// When the minion does not have it.
    IfNotPresent,
    /// Never: the image must be there (`kctl image load`).
    Never,
}

impl PullPolicy {
    /// v1's spelling; v1beta1's has `Pull` in front.
    pub fn v1_name(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// How long a preStop hook may run before its container is stopped anyway.
pub const PRE_STOP_GRACE_SECONDS: u64 = 10;

/// What a lifecycle hook does. A command is stored as the bare list, as
/// records held it before hooks could be requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Hook {
    /// A command run in the container (`exec`).
    Exec(Vec<String>),
    /// A GET the minion sends to the pod (`httpGet`), as a probe's: to the
    /// pod's IP unless `host` names another; healthy on 200–399.
    HttpGet(HttpGetHook),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetHook {
    pub path: String,
    pub port: PortRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Hook {
    /// Why the hook must not run as it is, if it must not: it came from a
    /// record or a label, which are not trusted.
    pub fn problem(&self) -> Option<String> {
        match self {
            Hook::Exec(argv) => {
                let bytes: usize = argv.iter().map(String::len).sum();
                if argv.is_empty() {
                    Some("its command is empty".into())
                } else if argv.len() > MAX_HOOK_ARGS || bytes > MAX_HOOK_BYTES {
                    Some("its command is too long".into())
                } else {
                    None
                }
            }
            Hook::HttpGet(get) => probe_path_problem(&get.path)
                .map(|p| format!("its path {p}"))
                .or_else(|| {
                    get.host
                        .as_deref()
                        .and_then(probe_host_problem)
                        .map(|p| format!("its host {p}"))
                }),
        }
    }
}
/// How long a postStart hook may run before the start counts as failed.
pub const POST_START_LIMIT_SECONDS: u64 = 30;
/// The most arguments, and bytes in all, a preStop hook may have: it
/// travels in a container label.
pub const MAX_HOOK_ARGS: usize = 64;
pub const MAX_HOOK_BYTES: usize = 16 * 1024;

/// What a container may do beyond Docker's defaults, or less: v1beta1's
/// `privileged`, v1's `securityContext`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// Every device and capability of the minion (needs `kctl up
    /// --allow-privileged`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    /// Checked when the manifest is read: `run_as_user` is given and not 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_as_non_root: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,
    /// Capability names without `CAP_` (needs `--allow-privileged`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_add: Vec<String>,
    /// Capability names without `CAP_`, or `ALL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_drop: Vec<String>,
    /// `Some(false)`: the process cannot gain privileges (no-new-privileges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
}

impl SecurityContext {
    pub fn is_default(&self) -> bool {
        *self == SecurityContext::default()
    }

    /// More than Docker gives a container by default: what only a cluster
    /// made with `kctl up --allow-privileged` runs.
    pub fn is_privileged(&self) -> bool {
        self.privileged || !self.capabilities_add.is_empty()
    }
}

/// Where a pod's volume keeps its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeSource {
    /// A directory of the pod's own on its minion: empty when the pod
    /// starts there, kept across its containers' restarts, removed with
    /// the pod (a pod moved to another minion starts with an empty one).
    EmptyDir,
    /// A path of the minion's own filesystem (v1 `hostPath`).
    HostDir { path: String },
    /// A directory of the pod's own, as `EmptyDir`, into which the
    /// minion clones `repository` before the pod's containers start (at
    /// `revision` if given): into a directory git names after the
    /// repository, as v0.5 did, or into `directory` (v1; `.` is the
    /// volume itself).
    GitRepo {
        repository: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        directory: Option<String>,
    },
    /// A GCE persistent disk (v1 `gcePersistentDisk`): attached to the
    /// pod's minion by `gcloud` on the workstation (read-only when
    /// `read_only`), and mounted there with `fs_type`, whole or the one
    /// `partition`. Its files outlive the pod and follow it to another
    /// minion.
    #[serde(rename_all = "camelCase")]
    GcePersistentDisk {
        pd_name: String,
        fs_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<u32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        read_only: bool,
    },
}

/// The filesystem a persistent disk is mounted with when `fsType` is not
/// given (as Kubernetes).
pub const DEFAULT_DISK_FS_TYPE: &str = "ext4";

/// The filesystems kctl mounts a persistent disk with: what a GCE Debian
/// image's kernel reads. Anything else would reach mount(8) as it is.
pub const DISK_FS_TYPES: &[&str] = &["ext4", "ext3", "ext2", "xfs", "btrfs"];

/// The highest partition number kctl names (a GPT disk's default table).
pub const MAX_DISK_PARTITION: u32 = 128;

/// Why `name` cannot be a GCE disk's name, if it cannot: GCE names are
/// RFC 1035 labels (`[a-z]([-a-z0-9]{0,61}[a-z0-9])?`), which is also
/// what makes `/dev/disk/by-id/google-NAME` a plain path and no gcloud
/// option.
pub fn disk_name_problem(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 63 {
        Some("is longer than 63 characters")
    } else if !bytes[0].is_ascii_lowercase() {
        Some("does not start with a lower-case letter")
    } else if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        Some("has characters other than a-z, 0-9 and `-`")
    } else if name.ends_with('-') {
        Some("ends with `-`")
    } else {
        None
    }
}

/// Why a persistent disk volume cannot be mounted as it is, if it cannot
/// (each part as `disk_name_problem`, `DISK_FS_TYPES`, `MAX_DISK_PARTITION`).
pub fn disk_volume_problem(name: &str, fs_type: &str, partition: Option<u32>) -> Option<String> {
    if let Some(problem) = disk_name_problem(name) {
        return Some(format!("disk name {name:?} {problem}"));
    }
    if !DISK_FS_TYPES.contains(&fs_type) {
        return Some(format!(
            "filesystem {fs_type:?} is none of {}",
            DISK_FS_TYPES.join(", ")
        ));
    }
    match partition {
        Some(n) if n == 0 || n > MAX_DISK_PARTITION => {
            Some(format!("partition {n} is not in 1..={MAX_DISK_PARTITION}"))
        }
        _ => None,
    }
}

/// The longest repository address and revision kctl hands to git.
pub const MAX_GIT_ARG_LEN: usize = 2048;

/// Why `text` cannot go to git as a repository address, if it cannot.
/// git reads an argument starting with `-` as an option, and an address
/// `<transport>::<address>` runs a helper program of that name.
pub fn git_repository_problem(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("is empty")
    } else if text.len() > MAX_GIT_ARG_LEN {
        Some("is longer than 2048 bytes")
    } else if text.starts_with('-') {
        Some("starts with `-`")
    } else if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("holds a space or a control character")
    } else if text
        .split_once("::")
        .is_some_and(|(transport, _)| !transport.contains('/'))
    {
        Some("names a git remote helper (`<transport>::`), which would run a program")
    } else if !is_remote_git_address(text) {
        Some("is no remote address (https://, http://, git://, ssh:// or host:path): a path on the minion would clone its files, another pod's volume too")
    } else {
        None
    }
}

/// `https://…`, `http://…`, `git://…`, `ssh://…`, or scp's `[user@]host:path`.
fn is_remote_git_address(text: &str) -> bool {
    const SCHEMES: [&str; 4] = ["https://", "http://", "git://", "ssh://"];
    if let Some(at) = text.find("://") {
        return SCHEMES.iter().any(|s| text.starts_with(s)) && text.len() > at + 3;
    }
    // git reads `host:path` as scp's form only when no `/` comes before
    // the first `:`.
    match text.split_once(':') {
        Some((host, path)) => !host.is_empty() && !host.contains('/') && !path.is_empty(),
        None => false,
    }
}

/// Why `text` cannot go to git as a revision, if it cannot.
pub fn git_revision_problem(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("is empty")
    } else if text.len() > MAX_GIT_ARG_LEN {
        Some("is longer than 2048 bytes")
    } else if text.starts_with('-') {
        Some("starts with `-`")
    } else if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("holds a space or a control character")
    } else {
        None
    }
}

/// Why `text` cannot be where a repository is cloned inside its volume,
/// if it cannot: a relative path that stays inside.
pub fn git_directory_problem(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("is empty")
    } else if text.len() > 255 {
        Some("is longer than 255 bytes")
    } else if text.starts_with('/') {
        Some("is absolute")
    } else if text.starts_with('-') {
        Some("starts with `-`")
    } else if text.split('/').any(|part| part == "..") {
        Some("leads out of the volume (`..`)")
    } else if text.chars().any(|c| c.is_control()) {
        Some("holds a control character")
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
}

/// A volume of the pod, seen at `mount_path` in one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Why a path cannot be a mount path or a host directory as it is, if it
/// cannot: absolute, no `..`, nothing Docker's `SOURCE:TARGET[:ro]` binds
/// would split on, no control characters.
pub fn mount_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        Some("is not an absolute path")
    } else if path.contains(':') {
        Some("contains `:`")
    } else if path.chars().any(char::is_control) {
        Some("contains a control character")
    } else if path.split('/').any(|part| part == "..") {
        Some("contains `..`")
    } else if path.len() > 4096 {
        Some("is longer than 4096 bytes")
    } else {
        None
    }
}

/// Paths whose bind would hand a pod the machine, its container engine or
/// kctl itself: each, what is under it, and what holds it (`/var` holds
/// `/var/lib/docker`).
const SENSITIVE_HOST_PATHS: &[&str] = &[
    "/",
    "/etc",
    "/root",
    "/home",
    "/boot",
    "/proc",
    "/sys",
    "/dev",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/docker",
    "/run/docker",
    "/run/containerd",
    "/run/dbus",
    "/run/systemd",
    "/var/spool/cron",
    "/var/lib/kctl",
    "/run/kctl",
    "/var/lib/etcd",
];

/// The sensitive path a host directory is, lies under or holds, if any
/// (an error unless the cluster was made with `kctl up --allow-host-dir`).
pub fn sensitive_host_path(path: &str) -> Option<&'static str> {
    let parts = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|part| !part.is_empty() && *part != ".")
            .map(str::to_string)
            .collect()
    };
    // `/var/run` is a link to `/run` on today's systems.
    let mut given = parts(path);
    if given.len() >= 2 && given[0] == "var" && given[1] == "run" {
        given.splice(0..2, ["run".to_string()]);
    }
    SENSITIVE_HOST_PATHS.iter().copied().find(|sensitive| {
        let sensitive_parts = parts(sensitive);
        // `/` itself holds everything; otherwise the path is under the
        // sensitive one or holds it.
        match sensitive_parts.is_empty() {
            true => given.is_empty(),
            false => given.starts_with(&sensitive_parts) || sensitive_parts.starts_with(&given),
        }
    })
}

/// What v1beta1 calls the pod's `manifest`: the containers and how to run them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
}

impl PodSpec {
    /// The number of `port`: itself, or the container port of that name.
    pub fn port_number(&self, port: &PortRef) -> Option<u16> {
        match port {
            PortRef::Number(n) => Some(*n),
            PortRef::Name(name) => self
                .containers
                .iter()
                .flat_map(|c| &c.ports)
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        }
    }

    /// Every host port the pod claims, with its protocol.
    pub fn host_ports(&self) -> impl Iterator<Item = (u16, Protocol)> + '_ {
        self.containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .filter_map(|p| p.host_port.map(|hp| (hp, p.protocol)))
    }

    pub fn images(&self) -> Vec<&str> {
        self.containers.iter().map(|c| c.image.as_str()).collect()
    }

    /// The GCE persistent disks the pod uses, each with whether every use
    /// of it here is read-only.
    pub fn disks(&self) -> Vec<DiskUse> {
        let mut disks: Vec<DiskUse> = Vec::new();
        for volume in &self.volumes {
            if let VolumeSource::GcePersistentDisk {
                pd_name, read_only, ..
            } = &volume.source
            {
                match disks.iter_mut().find(|d| &d.disk == pd_name) {
                    Some(known) => known.read_only &= *read_only,
                    None => disks.push(DiskUse {
                        disk: pd_name.clone(),
                        read_only: *read_only,
                    }),
                }
            }
        }
        disks
    }
}

/// A pod's use of one persistent disk.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiskUse {
    pub disk: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub id: String,
    #[serde(default)]
    pub labels: Labels,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    #[serde(default)]
    pub labels: Labels,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationController {
    pub id: String,
    #[serde(default)]
    pub labels: Labels,
    pub replicas: u32,
    pub selector: Labels,
    pub template: PodTemplate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub id: String,
    #[serde(default)]
    pub labels: Labels,
    pub selector: Labels,
    /// The portal's port.
    pub port: u16,
    /// Where the pods listen; `None` means the first port of the first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<PortRef>,
    #[serde(default)]
    pub protocol: Protocol,
    /// The portal IP the manifest asks for (v1beta1 `portalIP`, v1
    /// `clusterIP`); the plan gives it or refuses. Never stored: the
    /// service's record holds the portal it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_ip: Option<std::net::Ipv4Addr>,
    /// Also answered on every minion's own address (v1beta1
    /// `createExternalLoadBalancer`, v1 `type: LoadBalancer`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// More addresses the portal answers on (v1beta1 `publicIPs`, v1
    /// `externalIPs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_ips: Vec<std::net::Ipv4Addr>,
    /// Also answered on every minion's own address at a port of
    /// [`NODE_PORT_RANGE`] (v1 `type: NodePort`, or `nodePort` on a
    /// LoadBalancer). The plan gives the port; the record holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<NodePort>,
}

/// The node port a service asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodePort {
    /// Any free port of the range; a service keeps the one it got.
    Any,
    /// This port (`nodePort`).
    Port(u16),
}

/// Where node ports come from: Kubernetes' default range, so that
/// manifests written for it name ports kctl gives.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Ports of the machines themselves that a service published on their
/// addresses would take over: sshd, etcd's client and peer ports.
pub const CONTROL_PLANE_PORTS: [u16; 5] = [22, 2379, 2380, 4001, 7001];

/// One object from a manifest, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Pod(Pod),
    ReplicationController(ReplicationController),
    Service(Service),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::ReplicationController(_) => Kind::ReplicationController,
            Object::Service(_) => Kind::Service,
        }
    }
    pub fn id(&self) -> &str {
        match self {
            Object::Pod(p) => &p.id,
            Object::ReplicationController(r) => &r.id,
            Object::Service(s) => &s.id,
        }
    }
}

/// True when every pair of `selector` is among `labels` (an empty selector
/// matches nothing, so a typo cannot select the whole cluster).
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `a=b,c=d`, as v0.5 printed label sets.
pub fn format_labels(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What a cluster allows beyond a manifest's own rules, which every record
/// read back must also keep to: as `kctl up` was told (`--allow-host-dir`,
/// `--allow-privileged`), and where its portals come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordPolicy {
    pub allow_host_dir: bool,
    pub allow_privileged: bool,
    /// The portal range; None where it is not known (an older helper's
    /// arguments), and then a portal is only kept off the machines' own
    /// addresses.
    pub portal_net: Option<ipnet::Ipv4Net>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_needs_every_pair() {
        let l = labels(&[("name", "web"), ("tier", "front")]);
        assert!(selector_matches(&labels(&[("name", "web")]), &l));
        assert!(!selector_matches(
            &labels(&[("name", "web"), ("tier", "back")]),
            &l
        ));
        assert!(!selector_matches(&labels(&[]), &l));
    }

    #[test]
    fn host_paths_that_hand_over_the_machine_are_sensitive() {
        for (path, because) in [
            ("/", "/"),
            ("/etc", "/etc"),
            ("/etc/ssl", "/etc"),
            ("/var", "/var/lib/docker"),
            ("/var/run", "/run/docker.sock"),
            ("/run/", "/run/docker.sock"),
            ("/var/lib/docker/volumes", "/var/lib/docker"),
            ("/root/.ssh", "/root"),
            ("/var/run/kctl", "/run/kctl"),
            ("/var/run/dbus", "/run/dbus"),
            ("/run/systemd/private", "/run/systemd"),
            ("//etc", "/etc"),
            ("/./etc", "/etc"),
        ] {
            assert_eq!(sensitive_host_path(path), Some(because), "{path}");
        }
        for path in [
            "/srv/redis",
            "/tmp/data",
            "/data",
            "/var/log/app",
            "/mnt/disk",
        ] {
            assert_eq!(sensitive_host_path(path), None, "{path}");
        }
    }

    #[test]
    fn mount_paths_are_absolute_and_bind_safe() {
        assert_eq!(mount_path_problem("/data/redis"), None);
        assert_eq!(mount_path_problem("data"), Some("is not an absolute path"));
        assert_eq!(mount_path_problem("/a:/b"), Some("contains `:`"));
        assert_eq!(mount_path_problem("/a/../etc"), Some("contains `..`"));
        assert_eq!(
            mount_path_problem("/a\nb"),
            Some("contains a control character")
        );
    }

    #[test]
    fn labels_format_sorted() {
        assert_eq!(format_labels(&labels(&[("b", "2"), ("a", "1")])), "a=1,b=2");
    }
}
