//! Bringing one minion's containers to the desired state. The same routine
//! serves `kctl apply` (over SSH from the workstation) and `kctl-node`
//! (locally on the minion): only the transports differ, the Docker socket
//! (`ContainerEngine`) and the command runner (`Exec`).
//!
//! A pod is an infrastructure container (`<pod>_POD`, running kctl's pause
//! image) that holds the pod's network namespace, IP and host ports, plus
//! one container per manifest container joined to that namespace, as
//! Kubernetes v0.5 did. Every container carries labels naming its cluster,
//! pod, container and spec hash, so the minion itself says what runs there.
//!
//! Layout: `plan` decides what must change (pure), `executor` does it
//! through `engine::ContainerEngine` and `Exec`, `locked` wraps it in the minion's lock and records the results in
//! the `Store`. Nothing here prints: what happens is a `ConvergeEvent` sent
//! to the caller's `EventSink`, and failures are `ConvergeError`s.

pub mod disk_volumes;
pub mod docker;
pub mod engine;
pub mod error;
pub mod event;
pub mod executor;
pub mod git_volumes;
pub mod locked;
pub mod plan;
pub mod supervisor;

pub use docker::INFRA_CONTAINER;
pub use engine::{ContainerEngine, EngineError};
pub use error::{ConvergeError, MinionStage, StoreStage};
pub use event::{ConvergeEvent, EventLog, EventSink, Tee};
pub use executor::{converge_minion, ensure_hairpin, listed_rules, sync_rules, MinionReport};
pub use locked::{
    converge_locked, record, settled, settled_report, sync_rules_locked, update_endpoints,
    with_minion_locked,
};
pub use plan::{describe_steps, hairpin_batch, ports_without_hairpin, statuses, steps, Step};
pub use supervisor::Supervisor;

/// Pods started at once on one minion when its CPUs are not known (`kctl
/// apply` from the workstation). Starting a container is CPU work for
/// dockerd, containerd and runc: measured with bench/apply-floor.sh on 3
/// minions sharing 2 cores, 16 in flight took as long in total as 4 or 2
/// but made the median pod wait longest (30 pods: p50 4.7 s at 16, 3.4 s
/// at 4, 3.1 s at 2).
pub const POD_STARTS_IN_FLIGHT: usize = 4;

/// Pods started at once by the helper, which knows its minion: one per
/// CPU, at least 2, at most 16.
pub fn pod_starts_for_cpus(cpus: usize) -> usize {
    cpus.clamp(2, 16)
}

/// [`pod_starts_for_cpus`] of this machine's CPUs.
pub fn pod_starts_here() -> usize {
    pod_starts_for_cpus(std::thread::available_parallelism().map_or(1, usize::from))
}

/// Facts about the cluster that shape how its pods are started.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub cluster: String,
    /// Never pull (local clusters have no registry): fail at once instead.
    pub offline_images: bool,
    /// The services' variables, for containers started now.
    pub service_env: Vec<crate::model::EnvVar>,
    /// Pods started at once on the minion.
    pub starts_in_flight: usize,
}

#[cfg(test)]
mod tests;
