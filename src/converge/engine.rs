//! The narrow interface to a minion's container engine: what the converge
//! layer asks of Docker. `DockerApi` (src/docker_api.rs) speaks Docker's
//! Engine API over a Unix socket (the minion's own for `kctl-node`, one
//! forwarded over SSH for `kctl apply`); unit tests use `RecordingEngine`.

use super::docker::Observed;
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::future::Future;

/// One container to create and start, as data: nothing in it is ever
/// interpreted by a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when not empty.
    pub entrypoint: Vec<String>,
    /// Arguments after the entrypoint.
    pub command: Vec<String>,
    /// `NAME=value`, later entries winning.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub hostname: Option<String>,
    /// A network's name, or `container:<name>` to join another's.
    pub network: String,
    pub restart: RestartKind,
    pub published: Vec<Published>,
    pub working_dir: Option<String>,
    pub memory_bytes: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub mounts: Vec<MountSpec>,
    /// The container's `securityContext` with kctl's hardening added.
    pub security: crate::model::SecurityContext,
    /// How many processes and threads it may have at once.
    pub pids_limit: Option<i64>,
}

/// A pod volume or a host directory seen inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A Docker volume of the pod's, made with `labels` on first use and
    /// kept until the pod leaves the minion.
    Volume {
        name: String,
        labels: BTreeMap<String, String>,
        /// Options of Docker's `local` driver for a volume that is a
        /// block device (`type`, `device`, `o`): mounted when a container
        /// first uses it, unmounted after the last. Empty for a directory.
        device_options: BTreeMap<String, String>,
        target: String,
        read_only: bool,
    },
    /// A directory of the minion's, made when missing (as v0.5's binds).
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
}

/// Docker's restart policy of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartKind {
    Always,
    OnFailure,
    No,
}

/// A container port published on the minion's own address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
}

/// What Docker tells about a container of the cluster as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    pub container_id: String,
    /// Docker's action: `start`, `die`, `destroy`, ...
    pub action: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Docker answered, and said no: its own words.
    #[error("{message}")]
    Refused {
        target: String,
        status: u16,
        message: String,
    },
    /// An image a pod needs is not on the minion and cannot be had.
    #[error("{0}")]
    ImageUnavailable(String),
    /// A container's postStart hook failed: the pod did not start.
    #[error("{0}")]
    HookFailed(String),
    /// A pod volume cannot be had: a host directory that leads elsewhere
    /// than it says, a repository that would not clone.
    #[error("{0}")]
    VolumeUnavailable(String),
    /// Docker could not be reached or answered nonsense.
    #[error("{target}: Docker Engine API: {message}")]
    Transport { target: String, message: String },
}

impl EngineError {
    /// Docker answered 404: no such container or image.
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::Refused { status: 404, .. })
    }
}

/// The container engine of one minion.
pub trait ContainerEngine: Send + Sync {
    /// A name for messages: the minion's id.
    fn target(&self) -> &str;

    /// Every container labelled as the cluster's, running or not.
    fn observe(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<Observed>, EngineError>> + Send;

    fn has_image(&self, image: &str) -> impl Future<Output = Result<bool, EngineError>> + Send;

    /// Creates the container and starts it.
    fn run(&self, spec: &ContainerSpec) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Starts an existing, stopped container.
    fn start(&self, id: &str) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Stops (SIGTERM, then SIGKILL after `grace_seconds`) and starts again.
    fn restart(
        &self,
        id: &str,
        grace_seconds: i32,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Runs `command` inside a running container; its exit code.
    fn exec(
        &self,
        id: &str,
        command: &[String],
    ) -> impl Future<Output = Result<Option<i64>, EngineError>> + Send;

    /// Removes containers, running or not, with their anonymous volumes;
    /// one already gone is not an error.
    fn remove(&self, ids: &[String]) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Starts and exits of the cluster's containers from now on.
    fn events(&self, cluster: &str) -> BoxStream<'static, Result<EngineEvent, EngineError>>;

    /// Removes the cluster's pod volumes of every pod not in `keep`; their
    /// names. One still in use is left for a later round.
    fn remove_volumes_except(
        &self,
        cluster: &str,
        keep: &std::collections::BTreeSet<String>,
    ) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;
}

/// Records every request and answers from a script: for unit tests of
/// logic built on `ContainerEngine`.
#[cfg(test)]
#[derive(Default)]
pub struct RecordingEngine {
    /// Each request as a line: `run web-1_POD`, `start c2`, `remove c1 c2`.
    pub requests: std::sync::Mutex<Vec<String>>,
    /// The specs of every `run`, in order.
    pub runs: std::sync::Mutex<Vec<ContainerSpec>>,
    /// What `observe` returns.
    pub containers: Vec<Observed>,
    /// Images that are there; None: all are.
    pub images: Option<Vec<String>>,
    /// `run` of these container names fails with this message.
    pub refuse: BTreeMap<String, String>,
    /// What every `exec` exits with.
    pub exec_exit_code: i64,
    /// How long each `run` takes, to show that starts overlap.
    pub run_delay: std::time::Duration,
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// The pods the engine holds volumes of.
    pub volumes_of: Vec<String>,
    /// The most `run`s that were in progress at once.
    pub most_in_flight: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl RecordingEngine {
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
    pub fn runs(&self) -> Vec<ContainerSpec> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }
    fn record(&self, line: String) {
        if let Ok(mut r) = self.requests.lock() {
            r.push(line);
        }
    }
}

#[cfg(test)]
impl ContainerEngine for RecordingEngine {
    fn target(&self) -> &str {
        "recording"
    }
    async fn observe(&self, _cluster: &str) -> Result<Vec<Observed>, EngineError> {
        self.record("observe".into());
        Ok(self.containers.clone())
    }
    async fn has_image(&self, image: &str) -> Result<bool, EngineError> {
        self.record(format!("has_image {image}"));
        Ok(self
            .images
            .as_ref()
            .is_none_or(|have| have.iter().any(|i| i == image)))
    }
    async fn run(&self, spec: &ContainerSpec) -> Result<(), EngineError> {
        use std::sync::atomic::Ordering;
        self.record(format!("run {}", spec.name));
        if let Ok(mut runs) = self.runs.lock() {
            runs.push(spec.clone());
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.run_delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match self.refuse.get(&spec.name) {
            Some(message) => Err(EngineError::Refused {
                target: "recording".into(),
                status: 404,
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }
    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.record(format!("start {id}"));
        Ok(())
    }
    async fn restart(&self, id: &str, grace_seconds: i32) -> Result<(), EngineError> {
        self.record(format!("restart {id} {grace_seconds}"));
        Ok(())
    }
    async fn exec(&self, id: &str, command: &[String]) -> Result<Option<i64>, EngineError> {
        self.record(format!("exec {id} {}", command.join(" ")));
        Ok(Some(self.exec_exit_code))
    }
    async fn remove(&self, ids: &[String]) -> Result<(), EngineError> {
        self.record(format!("remove {}", ids.join(" ")));
        Ok(())
    }
    fn events(&self, _cluster: &str) -> BoxStream<'static, Result<EngineEvent, EngineError>> {
        Box::pin(futures::stream::pending())
    }
    async fn remove_volumes_except(
        &self,
        _cluster: &str,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>, EngineError> {
        let gone: Vec<String> = self
            .volumes_of
            .iter()
            .filter(|pod| !keep.contains(*pod))
            .cloned()
            .collect();
        self.record(format!("remove_volumes_except {}", gone.join(" ")));
        Ok(gone)
    }
}
