//! Why converging a minion stopped. A pod that fails to start does not stop
//! it: that failure is data in the report (`MinionReport::failures`).

use super::engine::EngineError;
use crate::exec::ExecError;
use crate::store::StoreError;

/// What the converge layer was doing on the minion when a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MinionStage {
    #[error("listing containers")]
    Observe,
    #[error("removing containers")]
    Remove,
    #[error("restarting a container")]
    Restart,
    #[error("checking images")]
    Images,
    #[error("setting hairpin mode")]
    Hairpin,
    #[error("writing service rules")]
    Rules,
}

/// What the converge layer was doing with the store when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreStage {
    #[error("taking the minion's lock")]
    Lock,
    #[error("reading the cluster's state")]
    Snapshot,
    #[error("recording pod statuses")]
    Statuses,
    #[error("recording the service rules' digest")]
    RuleDigest,
    #[error("recording endpoints")]
    Endpoints,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    /// A command on the minion failed or could not be run.
    #[error("{stage}: {source}")]
    Exec {
        minion: String,
        stage: MinionStage,
        #[source]
        source: ExecError,
    },
    /// Docker's API failed or could not be reached.
    #[error("{stage}: {source}")]
    Engine {
        minion: String,
        stage: MinionStage,
        #[source]
        source: EngineError,
    },
    /// etcd failed while working on a minion (`minion`) or on the whole
    /// cluster (`None`: endpoints).
    #[error("{stage}: {source}")]
    Store {
        minion: Option<String>,
        stage: StoreStage,
        #[source]
        source: StoreError,
    },
}

impl ConvergeError {
    pub(crate) fn exec(minion: &str, stage: MinionStage) -> impl FnOnce(ExecError) -> Self + '_ {
        move |source| ConvergeError::Exec {
            minion: minion.to_string(),
            stage,
            source,
        }
    }

    pub(crate) fn engine(
        minion: &str,
        stage: MinionStage,
    ) -> impl FnOnce(EngineError) -> Self + '_ {
        move |source| ConvergeError::Engine {
            minion: minion.to_string(),
            stage,
            source,
        }
    }

    pub(crate) fn store(
        minion: Option<&str>,
        stage: StoreStage,
    ) -> impl FnOnce(StoreError) -> Self + '_ {
        move |source| ConvergeError::Store {
            minion: minion.map(str::to_string),
            stage,
            source,
        }
    }

    /// The minion it happened on, if it was one minion's work.
    pub fn minion(&self) -> Option<&str> {
        match self {
            ConvergeError::Exec { minion, .. } | ConvergeError::Engine { minion, .. } => {
                Some(minion)
            }
            ConvergeError::Store { minion, .. } => minion.as_deref(),
        }
    }
}
