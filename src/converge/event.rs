//! What the converge layer did, as it happens. The layer never prints: it
//! hands each event to the caller's `EventSink`, and the caller renders it
//! (`kctl apply` on its progress line, `kctl-node` in its log).

use std::fmt;
use std::sync::Mutex;

/// One thing the converge layer did on a minion or in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvergeEvent {
    /// Containers removed: stale, orphaned, or of a pod being started anew.
    ContainersRemoved {
        minion: String,
        ids: Vec<String>,
        why: String,
    },
    /// The emptyDir volumes of pods that left the minion were removed.
    VolumesRemoved { minion: String, names: Vec<String> },
    /// All of a pod's containers were started.
    PodStarted { minion: String, pod: String },
    /// A pod's start failed; `message` is docker's own words.
    PodFailed {
        minion: String,
        pod: String,
        message: String,
    },
    /// An exited container was started again, as its pod's policy says.
    ContainerRestarted {
        minion: String,
        pod: String,
        container: String,
    },
    /// An exited container's restart waits out the back-off.
    RestartDeferred {
        minion: String,
        pod: String,
        container: String,
    },
    /// A container's liveness probe failed; `restarted` if the container
    /// was restarted for it (its policy allows, its back-off is over).
    ProbeFailed {
        minion: String,
        pod: String,
        container: String,
        message: String,
        restarted: bool,
    },
    /// A container's postStart hook failed after the container was
    /// started again in place; it was restarted if it may be.
    PostStartFailed {
        minion: String,
        pod: String,
        container: String,
        message: String,
        restarted: bool,
    },
    /// A container's preStop hook failed or outlasted its grace; the
    /// container was stopped anyway.
    PreStopFailed {
        minion: String,
        pod: String,
        container: String,
        message: String,
    },
    /// Hairpin mode was turned on on these ports of the pod bridge.
    HairpinEnabled { minion: String, ports: Vec<String> },
    /// A pod's observed status differed from the recorded one and was
    /// recorded.
    StatusRecorded {
        minion: String,
        pod: String,
        phase: &'static str,
    },
    /// A service's endpoints changed and were recorded.
    EndpointsChanged { service: String, endpoints: usize },
    /// The minion's service rules were rewritten.
    RulesSynced { minion: String },
    /// What happened could not be recorded as events in etcd (the work
    /// itself is done).
    EventsNotRecorded { message: String },
}

impl ConvergeEvent {
    /// Bookkeeping rather than a change on a minion: statuses recorded
    /// every time they move, restarts waiting out their back-off. The
    /// helper logs these at debug level; `kctl apply` does not list them.
    pub fn is_detail(&self) -> bool {
        matches!(
            self,
            ConvergeEvent::StatusRecorded { .. } | ConvergeEvent::RestartDeferred { .. }
        )
    }
}

impl fmt::Display for ConvergeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConvergeEvent::*;
        match self {
            ContainersRemoved { minion, ids, why } => {
                write!(f, "removed {} container(s) on {minion}: {why}", ids.len())
            }
            VolumesRemoved { minion, names } => {
                write!(f, "removed {} pod volume(s) on {minion}", names.len())
            }
            PodStarted { minion, pod } => write!(f, "started pod {pod} on {minion}"),
            PodFailed {
                minion,
                pod,
                message,
            } => write!(f, "pod {pod} on {minion} did not start: {message}"),
            ContainerRestarted {
                minion,
                pod,
                container,
            } => write!(
                f,
                "restarted container {container} of pod {pod} on {minion}"
            ),
            RestartDeferred {
                minion,
                pod,
                container,
            } => write!(
                f,
                "restart of container {container} of pod {pod} on {minion} backs off"
            ),
            ProbeFailed {
                minion,
                pod,
                container,
                message,
                restarted,
            } => write!(
                f,
                "probe of {pod}/{container} on {minion} failed: {message}{}",
                if *restarted { "; restarted it" } else { "" }
            ),
            PostStartFailed {
                minion,
                pod,
                container,
                message,
                restarted,
            } => write!(
                f,
                "postStart hook of {pod}/{container} on {minion} failed: {message}{}",
                if *restarted { "; restarted it" } else { "" }
            ),
            PreStopFailed {
                minion,
                pod,
                container,
                message,
            } => write!(
                f,
                "preStop hook of {pod}/{container} on {minion} failed: {message}"
            ),
            HairpinEnabled { minion, ports } => {
                write!(f, "hairpin on for {} on {minion}", ports.join(", "))
            }
            StatusRecorded { minion, pod, phase } => {
                write!(f, "pod {pod} on {minion} is {phase}")
            }
            EndpointsChanged { service, endpoints } => {
                write!(f, "service {service} has {endpoints} endpoint(s)")
            }
            RulesSynced { minion } => write!(f, "service rules rewritten on {minion}"),
            EventsNotRecorded { message } => write!(f, "events not recorded: {message}"),
        }
    }
}

/// Where the converge layer sends its events. Any `Fn(ConvergeEvent)` is
/// one; `EventLog` keeps them.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: ConvergeEvent);
}

impl<F: Fn(ConvergeEvent) + Send + Sync> EventSink for F {
    fn emit(&self, event: ConvergeEvent) {
        self(event)
    }
}

/// Passes each event on and keeps a copy, to record once the work is done.
pub struct Tee<'a> {
    pub inner: &'a dyn EventSink,
    pub kept: EventLog,
}

impl<'a> Tee<'a> {
    pub fn new(inner: &'a dyn EventSink) -> Tee<'a> {
        Tee {
            inner,
            kept: EventLog::default(),
        }
    }
}

impl EventSink for Tee<'_> {
    fn emit(&self, event: ConvergeEvent) {
        self.kept.emit(event.clone());
        self.inner.emit(event);
    }
}

/// Keeps every event, in the order they came.
#[derive(Debug, Default)]
pub struct EventLog(Mutex<Vec<ConvergeEvent>>);

impl EventLog {
    /// The events so far, leaving the log empty.
    pub fn take(&self) -> Vec<ConvergeEvent> {
        self.0
            .lock()
            .map(|mut events| std::mem::take(&mut *events))
            .unwrap_or_default()
    }
}

impl EventSink for EventLog {
    fn emit(&self, event: ConvergeEvent) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }
}
