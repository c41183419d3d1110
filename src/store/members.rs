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

/// The members a store may talk to, as the caller knows them.
#[derive(Debug, Clone, Default)]
pub struct MemberSet {
    /// Where each reachable member answers.
    pub endpoints: Vec<String>,
    /// How messages name each of `endpoints` (a tunnel's loopback port
    /// means nothing to a user; the member's host does).
    pub names: Vec<String>,
    /// Members the caller could not even reach (no tunnel to them), with
    /// why: they count against the quorum and are named in its error.
    pub absent: Vec<MemberProblem>,
}

impl MemberSet {
    /// Members known by their endpoints, all of them reachable.
    pub fn of(endpoints: &[String]) -> MemberSet {
        MemberSet {
            endpoints: endpoints.to_vec(),
            names: endpoints.to_vec(),
            absent: vec![],
        }
    }

    fn name(&self, index: usize) -> String {
        self.names
            .get(index)
            .unwrap_or(&self.endpoints[index])
            .clone()
    }
}

pub(super) struct Members {
    set: MemberSet,
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
    /// Connects to the first member, from the first endpoint on, that
    /// answers and knows a leader.
    pub(super) async fn connect(
        set: MemberSet,
        options: ConnectOptions,
    ) -> Result<Members, StoreError> {
        let (index, client) = pick(&set, &options, 0).await?;
        Ok(Members {
            set,
            options,
            current: std::sync::Mutex::new((index, client)),
        })
    }

    pub(super) fn count(&self) -> usize {
        self.set.endpoints.len()
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
        let start = (failed + 1) % self.set.endpoints.len();
        let (index, client) = pick(&self.set, &self.options, start).await?;
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
    set: &MemberSet,
    options: &ConnectOptions,
    start: usize,
) -> Result<(usize, Client), StoreError> {
    let endpoints = &set.endpoints;
    let deadline = std::time::Instant::now() + ELECTION_WAIT;
    loop {
        let mut problems = Vec::new();
        for offset in 0..endpoints.len() {
            let index = (start + offset) % endpoints.len();
            match serving(&endpoints[index], options).await {
                Ok(client) => return Ok((index, client)),
                Err(problem) => problems.push((
                    index,
                    MemberProblem {
                        endpoint: set.name(index),
                        problem,
                    },
                )),
            }
        }
        let electing = problems.iter().any(|(_, p)| p.problem == LEADERLESS);
        if !electing || std::time::Instant::now() >= deadline {
            // In the caller's order, whichever member the round began at.
            problems.sort_by_key(|(index, _)| *index);
            let mut all: Vec<MemberProblem> = problems.into_iter().map(|(_, p)| p).collect();
            all.extend(set.absent.iter().cloned());
            return Err(no_member_serves(all));
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
    } else if text.contains("tls handshake eof") {
        // Through an SSH tunnel, a refused connection at the far end
        // closes the forwarded one before TLS could begin.
        "down (its connection closed before TLS began)".to_string()
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

    #[tokio::test]
    async fn members_are_named_as_the_caller_knows_them_absent_ones_too() {
        let closed = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let set = MemberSet {
            endpoints: vec![closed(), closed()],
            names: vec!["master (10.0.0.2)".into(), "master-2 (10.0.0.3)".into()],
            absent: vec![MemberProblem {
                endpoint: "master-3 (10.0.0.4)".into(),
                problem: "SSH to 34.1.1.6 failed".into(),
            }],
        };
        let error = pick(&set, &ConnectOptions::new(), 1)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("none of its 3 members serves"), "{error}");
        let lines: Vec<&str> = error.lines().skip(1).map(str::trim).collect();
        assert_eq!(
            lines,
            [
                "master (10.0.0.2): down (connection refused)",
                "master-2 (10.0.0.3): down (connection refused)",
                "master-3 (10.0.0.4): SSH to 34.1.1.6 failed"
            ],
            "{error}"
        );
        // One member that could not be reached is still no quorum of two.
        let one = MemberSet {
            endpoints: vec![closed()],
            ..set
        };
        let error = pick(&one, &ConnectOptions::new(), 0).await.err().unwrap();
        assert!(
            matches!(error, StoreError::NoQuorum { members: 2, .. }),
            "{error}"
        );
    }

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
