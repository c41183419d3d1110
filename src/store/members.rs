//! The members of a cluster's etcd, and the one a store talks to.
//!
//! etcd-client can balance over several endpoints, but its channel fails
//! whole while any one of them refuses connections (etcd-client issue
//! #39), which is exactly when several members matter. So a store talks
//! to one member at a time, chosen because it answers and knows a leader,
//! and moves to another when that one stops answering.

use super::{sentence, StoreError};
use etcd_client::{Client, ConnectOptions};
use std::time::Duration;

/// How long one member may take to say whether it knows a leader.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) struct Members {
    endpoints: Vec<String>,
    options: ConnectOptions,
    /// The member in use (its index in `endpoints`) and its client.
    current: std::sync::Mutex<(usize, Client)>,
}

/// Why a member cannot serve: it does not answer, or answers without a
/// leader (it is cut off from the majority).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberProblem {
    pub endpoint: String,
    pub problem: String,
}

impl Members {
    /// Connects to the first member, from `endpoints[0]` on, that answers
    /// and knows a leader.
    pub(super) async fn connect(
        endpoints: &[String],
        options: ConnectOptions,
    ) -> Result<Members, StoreError> {
        let (index, client) = pick(endpoints, &options, 0).await?;
        Ok(Members {
            endpoints: endpoints.to_vec(),
            options,
            current: std::sync::Mutex::new((index, client)),
        })
    }

    pub(super) fn count(&self) -> usize {
        self.endpoints.len()
    }

    /// The member in use and its client.
    pub(super) fn client(&self) -> (usize, Client) {
        match self.current.lock() {
            Ok(current) => (current.0, current.1.clone()),
            Err(poisoned) => {
                let current = poisoned.into_inner();
                (current.0, current.1.clone())
            }
        }
    }

    /// Moves off member `failed` (which stopped answering) to the next
    /// one that serves. Another caller may have moved already: then the
    /// member it chose stays.
    pub(super) async fn fail_over(&self, failed: usize) -> Result<(), StoreError> {
        if self.client().0 != failed {
            return Ok(());
        }
        let start = (failed + 1) % self.endpoints.len();
        let (index, client) = pick(&self.endpoints, &self.options, start).await?;
        if let Ok(mut current) = self.current.lock() {
            if current.0 == failed {
                *current = (index, client);
            }
        }
        Ok(())
    }
}

/// How long members that answer without a leader get to elect one (etcd
/// elects within its election timeout, a second, when a majority runs).
const ELECTION_WAIT: Duration = Duration::from_secs(3);

/// What a member that answers says when it knows no leader.
const LEADERLESS: &str = "answers, but knows no leader (cut off from the majority)";

/// The first member from `start` on (round the list) that answers and
/// knows a leader; every member's problem when none does, after a wait
/// for an election should some answer without a leader.
async fn pick(
    endpoints: &[String],
    options: &ConnectOptions,
    start: usize,
) -> Result<(usize, Client), StoreError> {
    let deadline = std::time::Instant::now() + ELECTION_WAIT;
    loop {
        let mut problems = Vec::new();
        for offset in 0..endpoints.len() {
            let index = (start + offset) % endpoints.len();
            let endpoint = &endpoints[index];
            match serving(endpoint, options).await {
                Ok(client) => return Ok((index, client)),
                Err(problem) => problems.push(MemberProblem {
                    endpoint: endpoint.clone(),
                    problem,
                }),
            }
        }
        let electing = problems.iter().any(|p| p.problem == LEADERLESS);
        if !electing || std::time::Instant::now() >= deadline {
            return Err(no_member_serves(problems));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A client of the member at `endpoint`, if it answers and knows a leader.
async fn serving(endpoint: &str, options: &ConnectOptions) -> Result<Client, String> {
    let attempt = async {
        let mut client = Client::connect([endpoint], Some(options.clone()))
            .await
            .map_err(|e| problem(&e))?;
        // `connect` is lazy about some failures; a status call proves the
        // member answers, and says whether it knows a leader.
        let status = client.status().await.map_err(|e| problem(&e))?;
        if status.leader() == 0 {
            return Err(LEADERLESS.to_string());
        }
        Ok(client)
    };
    match tokio::time::timeout(STATUS_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} s", STATUS_TIMEOUT.as_secs())),
    }
}

/// A member's failure in a few words: the client's chain repeats itself
/// ("tcp connect error: transport error: tcp connect error: ...").
fn problem(e: &etcd_client::Error) -> String {
    let text = sentence(e);
    if text.contains("no leader") {
        // Asked with require-leader, a member without one refuses.
        LEADERLESS.to_string()
    } else if text.contains("Connection refused") {
        "down (connection refused)".to_string()
    } else if text.contains("No route to host") || text.contains("Network is unreachable") {
        "unreachable (no route to it)".to_string()
    } else {
        text
    }
}

/// The error when no member serves: unreachable for a single member (as
/// it always was), no quorum for several, naming each member's problem.
pub(super) fn no_member_serves(problems: Vec<MemberProblem>) -> StoreError {
    match problems.as_slice() {
        [only] => StoreError::Unreachable {
            endpoints: only.endpoint.clone(),
            message: only.problem.clone(),
        },
        _ => StoreError::NoQuorum {
            members: problems.len(),
            problems: problems
                .iter()
                .map(|p| format!("\n  {}: {}", p.endpoint, p.problem))
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_member_is_unreachable_and_several_have_no_quorum() {
        let problem = |endpoint: &str, problem: &str| MemberProblem {
            endpoint: endpoint.into(),
            problem: problem.into(),
        };
        let one = no_member_serves(vec![problem("https://10.1.0.1:2379", "refused")]);
        assert!(matches!(one, StoreError::Unreachable { .. }), "{one}");
        let three = no_member_serves(vec![
            problem("https://10.1.0.1:2379", "answers, but knows no leader"),
            problem(
                "https://10.1.0.2:2379",
                "tcp connect error: Connection refused",
            ),
            problem("https://10.1.0.3:2379", "no answer within 3 s"),
        ])
        .to_string();
        assert!(three.contains("no quorum"), "{three}");
        assert!(
            three.contains("https://10.1.0.2:2379: tcp connect error: Connection refused"),
            "{three}"
        );
        assert!(
            three.contains("https://10.1.0.3:2379: no answer"),
            "{three}"
        );
    }
}
