//! The cluster's state in etcd. One key per object, JSON values, under a
//! per-cluster prefix:
//!
//! ```text
//! /kctl/<cluster>/minions/<id>        MinionRecord
//! /kctl/<cluster>/services/<id>       ServiceRecord (service + portal IP)
//! /kctl/<cluster>/endpoints/<id>      [Endpoint]   (derived: running pods behind it)
//! /kctl/<cluster>/loadbalancers/<id>  LoadBalancerStatus (observed: the cloud's external IP)
//! /kctl/<cluster>/rules/<minion>      digest of the service rules last written there
//! /kctl/<cluster>/controllers/<id>    ReplicationController
//! /kctl/<cluster>/pods/<id>           PodRecord    (desired: spec + minion)
//! /kctl/<cluster>/status/pods/<id>    PodStatus    (observed)
//! /kctl/<cluster>/heartbeats/<minion> present while the minion's helper lives (on a lease)
//! /kctl/<cluster>/versions/<minion>   the helper's version and binary digest
//! /kctl/<cluster>/generation          bumped by every change of desired state
//! /kctl/<cluster>/rollouts/<rc>       Rollout, on the lease of the kctl running it
//! /kctl/<cluster>/cordoned/<minion>   present while the minion is being removed
//! /kctl/<cluster>/owners/<kind>/<id>  the set of files that last applied it
//!
//! /kctl-events/<cluster>/<kind>/<id>/<time>-<nonce>   Event (on a lease of 2 h)
//! /kctl-seen/<cluster>/<minion>       unix time of the helper's last heartbeat
//! /kctl-locks/<cluster>/minions/<id>  etcd lock keys while a minion is converged
//! ```
//!
//! Events live beside the state, not in it, so the snapshots that every
//! helper takes each round do not carry them.
//!
//! Every change of desired state is one transaction guarded by the
//! generation key's revision as read in the snapshot the plan was made from:
//! if anyone changed desired state in between, the transaction fails and the
//! caller re-plans. Observed state (`status/`) is written per pod, guarded by
//! the pod's existence, so it never brings back a deleted pod.

mod access;
mod cache;
mod lock;
mod members;
mod renewal;

pub use lock::MinionLock;
pub use members::{MemberProblem, MemberSet};
pub use renewal::PendingRenewal;

use crate::model::{Kind, ReplicationController};
use members::Members;

/// A kind as owner keys spell it.
fn kind_named(name: &str) -> Option<Kind> {
    [Kind::Service, Kind::ReplicationController, Kind::Pod]
        .into_iter()
        .find(|k| k.display_name() == name)
}
use crate::model::names::minion_id_problem;
use crate::pki::Credentials;
use crate::plan::Op;
use crate::state::checks::{RecordPolicy, Rejected};
use crate::state::{
    ClusterState, Endpoint, HelperVersion, MinionCondition, MinionRecord, PodRecord, PodStatus,
    ServiceRecord,
};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp,
};
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StoreError {
    #[error("cannot reach etcd at {endpoints}: {message}")]
    #[diagnostic(help(
        "is the cluster up? `kctl up` starts its etcd; `kctl get minions` checks it"
    ))]
    Unreachable { endpoints: String, message: String },
    /// etcd went away in the middle of the command: killed, restarting,
    /// or the network to it is gone.
    #[error("etcd stopped answering: {0}")]
    #[diagnostic(help(
        "what was committed before stays, nothing else changed; run the command again once etcd is back (`kctl up` restarts it)"
    ))]
    Lost(String),
    /// Several members, and none that answers knows a leader: fewer
    /// than a majority are up (or can reach each other).
    #[error("etcd has no quorum: none of its {members} members serves{problems}")]
    #[diagnostic(help(
        "nothing was changed; pods keep running as they are. A majority of the members must be up: `kctl up` starts or replaces those that are down"
    ))]
    NoQuorum { members: usize, problems: String },
    #[error("cannot read the certificate for etcd: {0}")]
    #[diagnostic(help("`kctl up` makes the cluster's certificates again"))]
    Credentials(String),
    #[error("etcd refused the request: {0}")]
    Etcd(String),
    /// etcd's authorization refused the identity of this certificate.
    #[error("etcd refused this identity the request: {0}")]
    #[diagnostic(help(
        "a minion's certificate may write only its own keys and its pods' state; changing what runs takes the workstation's certificate, which `kctl` uses"
    ))]
    Denied(String),
    #[error("the cluster's state changed while this command was working")]
    #[diagnostic(help(
        "another kctl changed the cluster at the same time; run the command again"
    ))]
    Conflict,
    #[error("bad value at {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error("the heartbeat lease of {minion} expired")]
    LeaseLost { minion: String },
    #[error("{minion} is still in use by another kctl after {waited} s")]
    #[diagnostic(help(
        "`kctl get pods` shows what runs there; a kctl that was stopped frees the minion within 10 s"
    ))]
    LockBusy { minion: String, waited: u64 },
    #[error("the lock on {minion} expired while this kctl waited for it")]
    LockLost { minion: String },
    #[error("replicationController {controller} is in a rolling update already ({by})")]
    #[diagnostic(help(
        "wait for it to finish; if its kctl was stopped, it ends by itself within 15 s"
    ))]
    RolloutBusy { controller: String, by: String },
}

impl From<etcd_client::Error> for StoreError {
    /// A sentence, not the gRPC client's debug dump.
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        use tonic::Code;
        let text = sentence(&e);
        match e {
            E::GRpcStatus(status) => match status.code() {
                Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => {
                    StoreError::Lost(text)
                }
                Code::PermissionDenied => StoreError::Denied(text),
                // Made by the client from a broken connection (a member
                // killed mid-stream), not said by etcd: it carries the
                // transport's error as its cause.
                _ if std::error::Error::source(&status).is_some() => StoreError::Lost(text),
                _ => StoreError::Etcd(text),
            },
            E::TransportError(_) | E::IoError(_) => StoreError::Lost(text),
            _ => StoreError::Etcd(text),
        }
    }
}

/// What went wrong talking to etcd, as one line: a gRPC status's message
/// and its causes (e.g. "tcp connect error: Connection refused"), never
/// the status's debug form with its metadata.
fn sentence(e: &etcd_client::Error) -> String {
    use std::error::Error as _;
    match e {
        etcd_client::Error::GRpcStatus(status) => match status.source() {
            Some(cause) => format!("{}: {}", status.message(), error_chain(cause)),
            None => format!("{} ({})", status.message(), status.code()),
        },
        etcd_client::Error::TransportError(e) => error_chain(e),
        other => other.to_string(),
    }
}

/// An error and its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

#[derive(Clone)]
pub struct Store {
    members: std::sync::Arc<Members>,
    /// A copy of the cluster's keys kept by a watch (the node helper's),
    /// which `snapshot` reads instead of etcd.
    cache: Option<std::sync::Arc<cache::StateCache>>,
    /// The revision of this store's last write: a snapshot from the copy
    /// includes it.
    written: std::sync::Arc<std::sync::atomic::AtomicI64>,
    cluster: String,
    prefix: String,
    events_prefix: String,
    /// Where helpers record their heartbeats' times, outside `prefix` so
    /// the watches on the state do not carry a write per minion per
    /// second.
    seen_prefix: String,
    /// Where the minion locks' keys live, outside `prefix` likewise.
    locks_prefix: String,
    /// Who records events through this store: `kctl`, `kctl-node/<minion>`.
    source: String,
    /// The lease events are put on, and when it was granted.
    events_lease: std::sync::Arc<std::sync::Mutex<Option<(i64, std::time::Instant)>>>,
    /// What records read back must pass (`state::checks`).
    policy: RecordPolicy,
    /// Records left out so far, and those of them not yet taken by
    /// `new_rejections`: each is reported once.
    rejections: std::sync::Arc<std::sync::Mutex<Rejections>>,
}

#[derive(Default)]
struct Rejections {
    seen: std::collections::BTreeSet<Rejected>,
    pending: Vec<Rejected>,
}

/// Events expire between one and two hours after they are recorded: a
/// lease lasts two, and a new one is taken after one.
const EVENT_LEASE_SECONDS: i64 = 7200;
const EVENT_LEASE_RENEWAL: Duration = Duration::from_secs(3600);

/// A consistent read of the whole cluster, and the revision that guards
/// writes made from it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: ClusterState,
    generation_revision: i64,
    /// Records that could not be read or failed their checks: left out of
    /// `state`, for the reader to report.
    pub rejected: Vec<Rejected>,
}

impl Snapshot {
    /// etcd's revision of the last change of desired state it holds.
    pub fn revision(&self) -> i64 {
        self.generation_revision
    }
}

impl Store {
    /// Connects to etcd at `endpoints`; over TLS, with the cluster CA and a
    /// client certificate, when `tls` is given (every cluster kctl makes).
    pub async fn connect(
        endpoints: &[String],
        cluster: &str,
        tls: Option<&Credentials>,
    ) -> Result<Store, StoreError> {
        Store::connect_to(MemberSet::of(endpoints), cluster, tls).await
    }

    /// Like `connect`, to members the caller names (and some it could not
    /// reach), so errors speak of them as the user knows them.
    pub async fn connect_to(
        set: MemberSet,
        cluster: &str,
        tls: Option<&Credentials>,
    ) -> Result<Store, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            // Streams (watches, lease renewals) notice a member that stops
            // answering without closing the connection.
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member cut off from the others ends its watches rather than
            // keep them open and silent: the copy and the wake-ups move on.
            .with_require_leader(true);
        if let Some(tls) = tls {
            options = options.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(&tls.ca))
                    .identity(Identity::from_pem(&tls.own.cert, &tls.own.key)),
            );
        }
        let members = Members::connect(set, options).await?;
        Ok(Store {
            members: std::sync::Arc::new(members),
            cache: None,
            written: Default::default(),
            cluster: cluster.to_string(),
            prefix: format!("/kctl/{cluster}/"),
            events_prefix: format!("/kctl-events/{cluster}/"),
            seen_prefix: format!("/kctl-seen/{cluster}/"),
            locks_prefix: format!("/kctl-locks/{cluster}/"),
            source: "kctl".into(),
            events_lease: Default::default(),
            policy: RecordPolicy::default(),
            rejections: Default::default(),
        })
    }

    /// Like `connect`, for an etcd that was just started: it may accept
    /// connections a moment before it serves requests.
    pub async fn connect_waiting(
        endpoints: &[String],
        cluster: &str,
        tls: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<Store, StoreError> {
        Store::connect_to_waiting(MemberSet::of(endpoints), cluster, tls, timeout).await
    }

    /// `connect_to`, waiting as `connect_waiting` does.
    pub async fn connect_to_waiting(
        set: MemberSet,
        cluster: &str,
        tls: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<Store, StoreError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match Store::connect_to(set.clone(), cluster, tls).await {
                Err(StoreError::Unreachable { .. } | StoreError::NoQuorum { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                result => return result,
            }
        }
    }

    /// The same store, reading snapshots from a copy of the cluster's keys
    /// that one watch keeps current (see `cache`), instead of from etcd.
    pub fn cached(mut self) -> Store {
        let uncached = Store {
            cache: None,
            ..self.clone()
        };
        self.cache = Some(std::sync::Arc::new(cache::StateCache::start(uncached)));
        self
    }

    /// Notes the revision of a write this store made.
    fn wrote(&self, header: Option<&etcd_client::ResponseHeader>) {
        if let Some(header) = header {
            self.written
                .fetch_max(header.revision(), std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The same store, recording events as `source`.
    /// What records read back must pass: the cluster's `--allow-*` choices
    /// and portal range (the default allows neither and knows no range).
    pub fn with_policy(mut self, policy: RecordPolicy) -> Store {
        self.policy = policy;
        self
    }

    pub fn with_source(mut self, source: &str) -> Store {
        self.source = source.to_string();
        self
    }

    /// Runs `request` against the member in use; if that member stopped
    /// answering, again against the next one that serves. Every request
    /// kctl makes may run twice: commits are guarded by the generation
    /// (a second try of one that landed conflicts, and the caller re-plans
    /// to nothing), the other writes put the same value again.
    async fn call<T, Fut>(&self, request: impl Fn(Client) -> Fut) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut tries = self.members.count();
        loop {
            let (member, client) = self.members.client();
            match request(client).await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let e = StoreError::from(e);
                    tries -= 1;
                    if tries == 0 || !matches!(e, StoreError::Lost(_)) {
                        return Err(e);
                    }
                    self.members.fail_over(member).await?;
                }
            }
        }
    }

    /// A transaction on the cluster's state: a cached snapshot after it
    /// includes it.
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        let resp = self.raw_txn(txn).await?;
        if resp.succeeded() {
            self.wrote(resp.header());
        }
        Ok(resp)
    }

    /// A transaction on keys outside the state (events).
    async fn raw_txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// Makes the next cached snapshots at least as new as the desired
    /// state in etcd now: one small read of the generation key. A helper
    /// calls it when it takes a minion's lock (so it sees what the lock's
    /// last holder committed) and after a lost commit race. Nothing for a
    /// store without a copy.
    pub async fn sync_copy(&self) -> Result<(), StoreError> {
        if self.cache.is_none() {
            return Ok(());
        }
        let now = self
            .get(
                &self.generation_key(),
                Some(GetOptions::new().with_keys_only()),
            )
            .await?;
        if let Some(kv) = now.kvs().first() {
            self.written
                .fetch_max(kv.mod_revision(), std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }

    async fn get(
        &self,
        key: &str,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        self.call(|mut c| {
            let options = options.clone();
            async move { c.get(key, options).await }
        })
        .await
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        options: Option<etcd_client::PutOptions>,
    ) -> Result<(), StoreError> {
        let resp = self
            .call(|mut c| {
                let (value, options) = (value.clone(), options.clone());
                async move { c.put(key, value, options).await }
            })
            .await?;
        self.wrote(resp.header());
        Ok(())
    }

    async fn lease_grant(&self, seconds: i64) -> Result<i64, StoreError> {
        Ok(self
            .call(|mut c| async move { c.lease_grant(seconds, None).await })
            .await?
            .id())
    }

    /// A client of a member that serves now (a request first: if the
    /// member in use went away, the store moves to another), for streams
    /// that outlive one call.
    async fn serving_client(&self) -> Result<Client, StoreError> {
        self.get(&self.generation_key(), None).await?;
        Ok(self.members.client().1)
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}/{id}", self.prefix)
    }

    fn owner_key(&self, kind: Kind, id: &str) -> String {
        format!("{}owners/{}/{id}", self.prefix, kind.display_name())
    }

    /// Records that `set` applied these objects last (for `apply --prune`).
    pub async fn set_owners(
        &mut self,
        set: &str,
        objects: &[(Kind, String)],
    ) -> Result<(), StoreError> {
        if objects.is_empty() {
            return Ok(());
        }
        let ops: Vec<TxnOp> = objects
            .iter()
            .map(|(kind, id)| TxnOp::put(self.owner_key(*kind, id), json(&set), None))
            .collect();
        self.txn(Txn::new().and_then(ops)).await?;
        Ok(())
    }

    fn generation_key(&self) -> String {
        format!("{}generation", self.prefix)
    }

    /// The transaction guard that holds while nothing was committed since
    /// `base` was read.
    fn unchanged_since(&self, base: &Snapshot) -> Compare {
        let generation = self.generation_key();
        if base.generation_revision == 0 {
            Compare::version(generation, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(generation, CompareOp::Equal, base.generation_revision)
        }
    }

    pub async fn snapshot(&mut self) -> Result<Snapshot, StoreError> {
        let snapshot = self.read_snapshot().await?;
        self.note_rejections(&snapshot.rejected);
        Ok(snapshot)
    }

    fn note_rejections(&self, rejected: &[Rejected]) {
        if rejected.is_empty() {
            return;
        }
        let mut rejections = self
            .rejections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in rejected {
            if rejections.seen.insert(r.clone()) {
                rejections.pending.push(r.clone());
            }
        }
    }

    /// Deletes the records kctl left out as `rejected` (read from this
    /// store's snapshots: their keys are the keys they were read from).
    /// Returns how many keys went.
    pub async fn delete_rejected(&self, rejected: &[Rejected]) -> Result<usize, StoreError> {
        let keys: Vec<String> = rejected
            .iter()
            .map(|r| match r.key.strip_prefix("seen/") {
                Some(minion) => format!("{}{minion}", self.seen_prefix),
                None => format!("{}{}", self.prefix, r.key),
            })
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let deletes: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::delete(k.as_str(), None))
            .collect();
        self.txn(Txn::new().and_then(deletes)).await?;
        Ok(keys.len())
    }

    /// The records left out of snapshots since the last call, each once
    /// in this store's life: for the reader to report.
    pub fn new_rejections(&self) -> Vec<Rejected> {
        std::mem::take(
            &mut self
                .rejections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pending,
        )
    }

    async fn read_snapshot(&mut self) -> Result<Snapshot, StoreError> {
        if let Some(cache) = &self.cache {
            if let Some(kvs) = cache.read(&self.written).await {
                return self.decode_state(
                    kvs.iter()
                        .map(|(k, v, rev)| (k.as_str(), v.as_slice(), *rev)),
                );
            }
        }
        let resp = self
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut snapshot = self.decode_state(resp.kvs().iter().map(|kv| {
            (
                std::str::from_utf8(kv.key()).unwrap_or_default(),
                kv.value(),
                kv.mod_revision(),
            )
        }))?;
        // When each helper last beat: for people (`get minions`); the
        // helpers' own copies leave it out.
        let seen = self
            .get(&self.seen_prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        for kv in seen.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            if let Some(minion) = key.strip_prefix(&self.seen_prefix) {
                let seen = decode::<u64>(&key, kv.value()).map_err(|e| e.to_string());
                match seen.and_then(|time| match minion_id_problem(minion) {
                    Some(problem) => Err(problem),
                    None => Ok(time),
                }) {
                    Ok(time) => {
                        snapshot.state.last_seen.insert(minion.to_string(), time);
                    }
                    Err(reason) => snapshot.rejected.push(Rejected {
                        key: format!("seen/{minion}"),
                        reason,
                    }),
                }
            }
        }
        Ok(snapshot)
    }

    /// The cluster state in the keys `kvs` (key, value, mod revision).
    fn decode_state<'k>(
        &self,
        kvs: impl Iterator<Item = (&'k str, &'k [u8], i64)>,
    ) -> Result<Snapshot, StoreError> {
        let mut state = ClusterState::default();
        let mut generation_revision = 0;
        let mut unreadable = Vec::new();
        // A value that does not parse is left out and reported, as one that
        // fails its checks is.
        macro_rules! read {
            ($ty:ty, $key:expr, $value:expr) => {
                match decode::<$ty>($key, $value) {
                    Ok(value) => value,
                    Err(e) => {
                        unreadable.push(Rejected {
                            key: $key.strip_prefix(&self.prefix).unwrap_or($key).to_string(),
                            reason: format!("unreadable: {e}"),
                        });
                        continue;
                    }
                }
            };
        }
        for (key, value, mod_revision) in kvs {
            let Some(rest) = key.strip_prefix(&self.prefix) else {
                continue;
            };
            match rest.split_once('/') {
                Some(("minions", id)) => {
                    state
                        .minions
                        .insert(id.into(), read!(MinionRecord, key, value));
                }
                Some(("services", id)) => {
                    state
                        .services
                        .insert(id.into(), read!(ServiceRecord, key, value));
                }
                Some(("loadbalancers", id)) => {
                    state.load_balancers.insert(
                        id.into(),
                        read!(crate::state::LoadBalancerStatus, key, value),
                    );
                }
                Some(("endpoints", id)) => {
                    state
                        .endpoints
                        .insert(id.into(), read!(Vec<Endpoint>, key, value));
                }
                Some(("heartbeats", minion)) => {
                    state.heartbeats.insert(minion.into());
                    if !value.is_empty() {
                        let condition = read!(MinionCondition, key, value);
                        state.not_ready.insert(minion.into(), condition.reason);
                    }
                }
                Some(("versions", minion)) => {
                    state
                        .helper_versions
                        .insert(minion.into(), read!(HelperVersion, key, value));
                }
                Some(("seen", minion)) => {
                    // Where earlier builds kept it: a helper not yet
                    // replaced still beats here.
                    state
                        .last_seen
                        .insert(minion.into(), read!(u64, key, value));
                }
                Some(("rules", minion)) => {
                    state
                        .rule_digests
                        .insert(minion.into(), read!(String, key, value));
                }
                Some(("controllers", id)) => {
                    state
                        .controllers
                        .insert(id.into(), read!(ReplicationController, key, value));
                }
                Some(("owners", path)) => {
                    if let Some((kind, id)) = path.split_once('/') {
                        if let Some(kind) = kind_named(kind) {
                            let set = read!(String, key, value);
                            state.owners.insert((kind, id.to_string()), set);
                        }
                    }
                }
                Some(("cordoned", minion)) => {
                    state.cordoned.insert(minion.into());
                }
                Some(("rollouts", id)) => {
                    state
                        .rollouts
                        .insert(id.into(), read!(crate::state::Rollout, key, value));
                }
                Some(("pods", id)) => {
                    state.pods.insert(id.into(), read!(PodRecord, key, value));
                }
                Some(("status", path)) => {
                    if let Some(id) = path.strip_prefix("pods/") {
                        state
                            .statuses
                            .insert(id.into(), read!(PodStatus, key, value));
                    }
                }
                _ if rest == "generation" => generation_revision = mod_revision,
                _ => {}
            }
        }
        let (state, mut rejected) = crate::state::checks::checked(state, &self.policy);
        rejected.extend(unreadable);
        rejected.sort();
        Ok(Snapshot {
            state,
            generation_revision,
            rejected,
        })
    }

    /// Writes a plan's ops in one transaction, if desired state is still as
    /// `base` saw it; `StoreError::Conflict` otherwise.
    pub async fn commit(&mut self, base: &Snapshot, ops: &[Op]) -> Result<(), StoreError> {
        let generation = self.generation_key();
        let guard = self.unchanged_since(base);
        // (key, Some(value)) puts, (key, None) deletes.
        let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(ops.len() + 1);
        for op in ops {
            match op {
                Op::PutService(s) => {
                    writes.push((self.key("services", &s.service.id), Some(json(s))))
                }
                Op::DeleteService(id) => {
                    writes.push((self.key("services", id), None));
                    writes.push((self.key("endpoints", id), None));
                    writes.push((self.owner_key(Kind::Service, id), None));
                }
                Op::PutController(rc) => {
                    writes.push((self.key("controllers", &rc.id), Some(json(rc))))
                }
                Op::DeleteController(id) => {
                    writes.push((self.key("controllers", id), None));
                    writes.push((self.owner_key(Kind::ReplicationController, id), None));
                }
                Op::PutPod(p) => writes.push((self.key("pods", &p.pod.id), Some(json(p)))),
                Op::PutOwner(kind, id, set) => {
                    writes.push((self.owner_key(*kind, id), Some(json(set))))
                }
                Op::DeletePod(id) => {
                    writes.push((self.key("pods", id), None));
                    writes.push((self.key("status/pods", id), None));
                    // A pod replaced under its id keeps its owner.
                    let replaced = ops
                        .iter()
                        .any(|o| matches!(o, Op::PutPod(p) if &p.pod.id == id));
                    if !replaced {
                        writes.push((self.owner_key(Kind::Pod, id), None));
                    }
                }
            }
        }
        // A pod deleted and put again in one plan (a replaced bare pod)
        // appears twice; etcd refuses two ops on one key in a transaction,
        // and the last one is what the plan means.
        let mut txn_ops: Vec<TxnOp> = last_write_per_key(writes)
            .into_iter()
            .map(|(key, value)| match value {
                Some(v) => TxnOp::put(key, v, None),
                None => TxnOp::delete(key, None),
            })
            .collect();
        let nonce = format!("{:016x}", rand::random::<u64>());
        txn_ops.push(TxnOp::put(generation.as_str(), nonce.as_str(), None));
        if self
            .guarded_txn(Txn::new().when([guard]).and_then(txn_ops), &nonce)
            .await?
        {
            Ok(())
        } else {
            // The plan came from an older state: the next read is newer.
            self.sync_copy().await?;
            Err(StoreError::Conflict)
        }
    }

    /// Runs a transaction guarded by the generation that writes `nonce`
    /// into it; true if it committed. If the member dies with the
    /// transaction in flight, it may have committed anyway: before trying
    /// again elsewhere, a read of the generation (linearizable, through a
    /// member with a leader) tells, so a commit that landed is never
    /// reported as lost, nor as a conflict with itself.
    async fn guarded_txn(&self, txn: Txn, nonce: &str) -> Result<bool, StoreError> {
        let mut tries = self.members.count();
        loop {
            let (member, mut client) = self.members.client();
            match client.txn(txn.clone()).await {
                Ok(resp) => {
                    if resp.succeeded() {
                        self.wrote(resp.header());
                    }
                    return Ok(resp.succeeded());
                }
                Err(e) => {
                    let e = StoreError::from(e);
                    tries -= 1;
                    if tries == 0 || !matches!(e, StoreError::Lost(_)) {
                        return Err(e);
                    }
                    self.members.fail_over(member).await?;
                    let now = self.get(&self.generation_key(), None).await?;
                    if now
                        .kvs()
                        .first()
                        .is_some_and(|kv| kv.value() == nonce.as_bytes())
                    {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Records what was observed of a pod, unless the pod was deleted since.
    pub async fn put_status(&mut self, pod_id: &str, status: &PodStatus) -> Result<(), StoreError> {
        let pod_key = self.key("pods", pod_id);
        let txn = Txn::new()
            .when([Compare::version(pod_key, CompareOp::Greater, 0)])
            .and_then([TxnOp::put(
                self.key("status/pods", pod_id),
                json(status),
                None,
            )]);
        self.txn(txn).await?;
        Ok(())
    }

    /// Records a service's endpoints, unless the service was deleted since.
    pub async fn put_endpoints(
        &mut self,
        service: &str,
        endpoints: &[Endpoint],
    ) -> Result<(), StoreError> {
        let service_key = self.key("services", service);
        let txn = Txn::new()
            .when([Compare::version(service_key, CompareOp::Greater, 0)])
            .and_then([TxnOp::put(
                self.key("endpoints", service),
                json(&endpoints),
                None,
            )]);
        self.txn(txn).await?;
        Ok(())
    }

    /// Records a service's load balancer address, unless the service was
    /// deleted since; `None` forgets it.
    pub async fn put_load_balancer(
        &mut self,
        service: &str,
        status: Option<&crate::state::LoadBalancerStatus>,
    ) -> Result<(), StoreError> {
        let key = self.key("loadbalancers", service);
        let op = match status {
            Some(s) => TxnOp::put(key, json(s), None),
            None => TxnOp::delete(key, None),
        };
        let service_key = self.key("services", service);
        let txn = match status {
            Some(_) => Txn::new()
                .when([Compare::version(service_key, CompareOp::Greater, 0)])
                .and_then([op]),
            None => Txn::new().and_then([op]),
        };
        self.txn(txn).await?;
        Ok(())
    }

    /// Records the digest of the rules just written to a minion.
    pub async fn put_rule_digest(&mut self, minion: &str, digest: &str) -> Result<(), StoreError> {
        self.put(&self.key("rules", minion), json(&digest), None)
            .await?;
        Ok(())
    }

    /// Marks minions as on their way out: the scheduler passes them by.
    /// The marks live on a lease this process keeps alive, as a rolling
    /// update's does: should this kctl die, they go within
    /// [`MARK_LEASE_SECONDS`] and the minions take pods again. A change of
    /// desired state (the generation moves), so the helpers act.
    pub async fn cordon(&self, minions: &[String]) -> Result<LeasedMark, StoreError> {
        let lease = self.lease_grant(MARK_LEASE_SECONDS).await?;
        let ops: Vec<TxnOp> = minions
            .iter()
            .map(|m| {
                TxnOp::put(
                    self.key("cordoned", m),
                    "",
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )
            })
            .chain([TxnOp::put(self.generation_key(), "", None)])
            .collect();
        if let Err(e) = self.txn(Txn::new().and_then(ops)).await {
            self.revoke(lease).await;
            return Err(e);
        }
        Ok(LeasedMark::keep(self.members.clone(), lease))
    }

    /// Forgets a minion that was removed: its record and everything its
    /// helper kept.
    pub async fn forget_minion(&mut self, minion: &str) -> Result<(), StoreError> {
        let ops: Vec<TxnOp> = [
            "minions",
            "heartbeats",
            "seen",
            "versions",
            "rules",
            "cordoned",
        ]
        .iter()
        .map(|kind| TxnOp::delete(self.key(kind, minion), None))
        .chain([
            TxnOp::delete(format!("{}{minion}", self.seen_prefix), None),
            TxnOp::put(self.generation_key(), "", None),
        ])
        .collect();
        self.txn(Txn::new().and_then(ops)).await?;
        Ok(())
    }

    pub async fn put_minion(&mut self, minion: &MinionRecord) -> Result<(), StoreError> {
        self.put(&self.key("minions", &minion.id), json(minion), None)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Records events with this store's source and the time now, and
    /// deletes each object's events beyond the newest
    /// [`EVENTS_PER_OBJECT`](crate::events::EVENTS_PER_OBJECT).
    pub async fn record_events(&self, events: &[crate::events::Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let lease = self.event_lease().await?;
        let now = crate::events::now_ms();
        let mut objects = std::collections::BTreeSet::new();
        let mut puts = Vec::with_capacity(events.len());
        let nonce = rand::random();
        for (seq, e) in events.iter().enumerate() {
            let e = crate::events::Event {
                time_ms: now,
                source: self.source.clone(),
                ..e.clone()
            };
            let object = format!("{}{}/{}/", self.events_prefix, e.subject.name(), e.id);
            let key = format!("{object}{}", crate::events::key_name(&e, seq, nonce));
            let options = etcd_client::PutOptions::new().with_lease(lease);
            puts.push(TxnOp::put(key, json(&e), Some(options)));
            objects.insert(object);
        }
        // Outside the state: the copy never sees these, so they are not
        // writes a read must wait for (`raw_txn`).
        if let Err(e) = self.raw_txn(Txn::new().and_then(puts)).await {
            // The lease may be gone (etcd lost it, or it expired early): the
            // next call takes a new one.
            if let Ok(mut cached) = self.events_lease.lock() {
                *cached = None;
            }
            return Err(e);
        }
        for object in objects {
            let keys = self
                .get(
                    object.as_str(),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await?;
            if keys.kvs().len() <= crate::events::EVENTS_PER_OBJECT {
                continue;
            }
            let names = keys
                .kvs()
                .iter()
                .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                .collect();
            let old = crate::events::beyond_newest(names, crate::events::EVENTS_PER_OBJECT);
            let deletes: Vec<TxnOp> = old.into_iter().map(|k| TxnOp::delete(k, None)).collect();
            self.raw_txn(Txn::new().and_then(deletes)).await?;
        }
        Ok(())
    }

    async fn event_lease(&self) -> Result<i64, StoreError> {
        if let Ok(cached) = self.events_lease.lock() {
            if let Some((lease, granted)) = *cached {
                if granted.elapsed() < EVENT_LEASE_RENEWAL {
                    return Ok(lease);
                }
            }
        }
        let lease = self.lease_grant(EVENT_LEASE_SECONDS).await?;
        if let Ok(mut cached) = self.events_lease.lock() {
            *cached = Some((lease, std::time::Instant::now()));
        }
        Ok(lease)
    }

    /// The events recorded, oldest first: of one object, of one kind, or
    /// all.
    pub async fn events(
        &mut self,
        subject: Option<crate::events::Subject>,
        id: Option<&str>,
    ) -> Result<Vec<crate::events::Event>, StoreError> {
        let mut prefix = self.events_prefix.clone();
        if let Some(subject) = subject {
            prefix.push_str(subject.name());
            prefix.push('/');
            if let Some(id) = id {
                prefix.push_str(id);
                prefix.push('/');
            }
        }
        let resp = self
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        // An event that does not read is left out: events only inform.
        let mut events: Vec<crate::events::Event> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                decode::<crate::events::Event>(&String::from_utf8_lossy(kv.key()), kv.value()).ok()
            })
            .collect();
        // Keys sort by object, then time and order of recording; a stable
        // sort by time keeps that order within one millisecond.
        events.sort_by_key(|e| e.time_ms);
        Ok(events)
    }
}

/// How long a minion stays Ready after its helper's last heartbeat. The
/// helper beats every second, so 3 beats in a row may be late before its
/// minion counts as lost; failover cannot start sooner than this.
pub const HEARTBEAT_TTL_SECONDS: i64 = 4;

impl Store {
    /// Puts the minion's heartbeat key on a fresh lease and keeps that lease
    /// alive in a background task, recording the time of each beat under
    /// `/kctl-seen/`. The task ends (with the error) when the lease is lost.
    pub async fn start_heartbeat(&self, minion: &str) -> Result<Heartbeat, StoreError> {
        let lease = self.lease_grant(HEARTBEAT_TTL_SECONDS).await?;
        self.put(
            &self.key("heartbeats", minion),
            Vec::new(),
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await?;
        let seen_key = format!("{}{minion}", self.seen_prefix);
        let minion = minion.to_string();
        let members = self.members.clone();
        let task = tokio::spawn(async move {
            let ttl = Duration::from_secs(HEARTBEAT_TTL_SECONDS as u64);
            keep_lease_alive(
                &members,
                lease,
                ttl,
                Duration::from_secs(1),
                Some(&seen_key),
            )
            .await;
            Err(StoreError::LeaseLost { minion })
        });
        Ok(Heartbeat { lease, task })
    }

    /// Records which helper runs on `minion`.
    pub async fn put_helper_version(
        &self,
        minion: &str,
        version: &HelperVersion,
    ) -> Result<(), StoreError> {
        self.put(&self.key("versions", minion), json(version), None)
            .await?;
        Ok(())
    }

    /// Says in the minion's heartbeat (on its `lease`) whether it can run
    /// pods: `Some(reason)` makes it NotReady with that reason, `None`
    /// Ready again.
    pub async fn set_condition(
        &self,
        minion: &str,
        lease: i64,
        not_ready: Option<&str>,
    ) -> Result<(), StoreError> {
        let value = match not_ready {
            Some(reason) => json(&MinionCondition {
                reason: reason.to_string(),
            }),
            None => Vec::new(),
        };
        self.put(
            &self.key("heartbeats", minion),
            value,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await?;
        Ok(())
    }

    /// A watch on the cluster's desired state: every change of it bumps the
    /// generation key, and each bump wakes `DesiredChanges::changed`. Lets
    /// a helper act on a commit at once instead of at its next round.
    /// A minion's heartbeat going away (its lease expired: the minion is
    /// not ready), or changing its condition, wakes it too, so the leader
    /// acts at once; a heartbeat that begins does not.
    pub async fn watch_desired(&self) -> Result<DesiredChanges, StoreError> {
        let mut client = self.serving_client().await?;
        // A round woken by a change reads a copy that holds it.
        let floor = self.written.clone();
        let mut generation = client.watch(self.generation_key(), None).await?;
        let prefix = etcd_client::WatchOptions::new().with_prefix();
        let mut heartbeats = client
            .watch(self.key("heartbeats", ""), Some(prefix))
            .await?;
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let wake = notify.clone();
        let task = tokio::spawn(async move {
            // Ends with either stream (etcd gone): the helper's own period
            // still drives it, and its next life watches again.
            loop {
                let (response, of_heartbeats) = tokio::select! {
                    r = generation.message() => (r, false),
                    r = heartbeats.message() => (r, true),
                };
                let Ok(Some(response)) = response else {
                    break;
                };
                // A heartbeat key made anew (version 1) is a helper that
                // began; any other event of one is news.
                let news = response.events().iter().any(|e| {
                    !of_heartbeats
                        || e.event_type() == etcd_client::EventType::Delete
                        || e.kv().is_some_and(|kv| kv.version() > 1)
                });
                if news {
                    let newest = response
                        .events()
                        .iter()
                        .filter_map(|e| e.kv().map(|kv| kv.mod_revision()))
                        .max()
                        .unwrap_or_default();
                    floor.fetch_max(newest, std::sync::atomic::Ordering::SeqCst);
                    wake.notify_one();
                }
            }
        });
        Ok(DesiredChanges { notify, task })
    }

    /// A watch on everything kctl keeps of the cluster, for `kctl get -w`:
    /// wakes on any change (the helpers' once-a-second heartbeat times are
    /// kept outside the state, under `/kctl-seen/`).
    pub async fn watch_everything(&self) -> Result<DesiredChanges, StoreError> {
        let mut client = self.serving_client().await?;
        let options = etcd_client::WatchOptions::new().with_prefix();
        let mut stream = client.watch(self.prefix.as_str(), Some(options)).await?;
        let seen = self.key("seen", "");
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let wake = notify.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                let news = response.events().iter().any(|e| {
                    e.kv()
                        .is_some_and(|kv| !kv.key().starts_with(seen.as_bytes()))
                });
                if news {
                    wake.notify_one();
                }
            }
        });
        Ok(DesiredChanges { notify, task })
    }

    /// Becomes the cluster's leader if nobody is, by putting the leader key
    /// on `lease` (the caller's heartbeat lease: a dead leader's key goes
    /// with it). True if `minion` is the leader now. One request a round:
    /// the key as it is comes back with a failed claim.
    pub async fn try_lead(&mut self, minion: &str, lease: i64) -> Result<bool, StoreError> {
        let key = self.key("leader", "");
        let key = key.trim_end_matches('/').to_string();
        let txn = Txn::new()
            .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                minion,
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            return Ok(true);
        }
        Ok(resp.op_responses().into_iter().any(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .is_some_and(|kv| kv.value() == minion.as_bytes()),
            _ => false,
        }))
    }
}

/// How long a rolling update's mark, or a cordon, outlives the kctl that
/// holds it.
pub const MARK_LEASE_SECONDS: i64 = 15;

impl Store {
    /// Marks `controller` as in a rolling update, on a lease this process
    /// keeps alive: the mark ends with the process if it dies. The mark
    /// is taken only if nothing was committed since `base` was read (the
    /// update is planned from it), and counts as a commit itself, so a
    /// change planned before the mark cannot land after it:
    /// `StoreError::Conflict` then, to read again. Fails with
    /// `RolloutBusy` if another update of it runs.
    pub async fn begin_rollout(
        &self,
        base: &Snapshot,
        controller: &str,
        rollout: &crate::state::Rollout,
    ) -> Result<LeasedMark, StoreError> {
        let lease = self.lease_grant(MARK_LEASE_SECONDS).await?;
        let key = self.key("rollouts", controller);
        let txn = Txn::new()
            .when([
                Compare::version(key.as_str(), CompareOp::Equal, 0),
                self.unchanged_since(base),
            ])
            .and_then([
                TxnOp::put(
                    key.as_str(),
                    json(rollout),
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                ),
                TxnOp::put(self.generation_key(), "", None),
            ])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = match self.txn(txn).await {
            Ok(resp) => resp,
            Err(e) => {
                self.revoke(lease).await;
                return Err(e);
            }
        };
        if !resp.succeeded() {
            let held = resp.op_responses().into_iter().find_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => {
                    g.kvs().first().map(|kv| (kv.lease(), kv.value().to_vec()))
                }
                _ => None,
            });
            // Our own mark: a first try landed on a member that died
            // before it answered.
            if held.as_ref().is_some_and(|(held_by, _)| *held_by == lease) {
                return Ok(LeasedMark::keep(self.members.clone(), lease));
            }
            self.revoke(lease).await;
            let held = held.map(|(_, value)| value);
            let Some(held) = held else {
                return Err(StoreError::Conflict);
            };
            let by = serde_json::from_slice::<crate::state::Rollout>(&held)
                .map_or_else(|_| "by another kctl".to_string(), |r| r.by);
            return Err(StoreError::RolloutBusy {
                controller: controller.to_string(),
                by,
            });
        }
        Ok(LeasedMark::keep(self.members.clone(), lease))
    }

    /// Replaces the etcd member `name` (its data was lost) by a new one at
    /// `peer_url`: the old is removed from the membership, found by its
    /// name (its machine may have a new address, as a remade VM does) or by
    /// its address, and the new added, to be started with
    /// `--initial-cluster-state existing`. A member added before at that
    /// address and never started (it has no name yet) is replaced too.
    pub async fn replace_member(&self, name: &str, peer_url: &str) -> Result<(), StoreError> {
        let listed = self
            .call(|mut c| async move { c.member_list().await })
            .await?;
        let old: Vec<u64> = listed
            .members()
            .iter()
            .filter(|m| m.name() == name || m.peer_urls().iter().any(|u| u == peer_url))
            .map(|m| m.id())
            .collect();
        for id in old {
            self.reconfigure(|mut c| async move { c.member_remove(id).await.map(drop) })
                .await?;
        }
        self.reconfigure(|mut c| async move { c.member_add([peer_url], None).await.map(drop) })
            .await
    }

    /// A change of etcd's membership. etcd refuses one ("unhealthy
    /// cluster") until every member it counts has been connected for a
    /// few seconds, as right after members started: asked again until it
    /// takes it, for a while.
    async fn reconfigure<Fut>(&self, change: impl Fn(Client) -> Fut) -> Result<(), StoreError>
    where
        Fut: std::future::Future<Output = Result<(), etcd_client::Error>>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.call(&change).await {
                Err(StoreError::Lost(why))
                    if why.contains("unhealthy cluster")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                result => return result,
            }
        }
    }

    /// Ends a lease now, and what was put on it; at worst it expires.
    async fn revoke(&self, lease: i64) {
        let _ = self
            .call(|mut c| async move { c.lease_revoke(lease).await })
            .await;
    }
}

/// `period` give or take a tenth, at random: timers of many helpers that
/// started together (by one `up`) drift apart instead of reaching etcd in
/// the same instant every round.
pub fn jittered(period: Duration) -> Duration {
    period.mul_f64(rand::random_range(0.9..1.1))
}

/// Keeps `lease` alive every `period` through whichever member serves,
/// putting the unix time into `seen` after each renewal: a member that
/// goes is replaced by another before the lease (of `ttl`) runs out.
/// Returns when the lease expired, or `ttl` passed without a renewal.
async fn keep_lease_alive(
    members: &Members,
    lease: i64,
    ttl: Duration,
    period: Duration,
    seen: Option<&str>,
) {
    let mut last_renewal = std::time::Instant::now();
    loop {
        let (member, mut client) = members.client();
        if let Ok((mut keeper, mut responses)) = client.lease_keep_alive(lease).await {
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                // A member that hangs (rather than closes) must not hold
                // the renewal past the lease's life.
                let answer =
                    tokio::time::timeout(period + Duration::from_secs(1), responses.message());
                let Ok(answer) = answer.await else {
                    break;
                };
                match answer {
                    Ok(Some(r)) if r.ttl() > 0 => {
                        last_renewal = std::time::Instant::now();
                        if let Some(key) = seen {
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_secs())
                                .unwrap_or_default();
                            let _ = client.put(key, json(&now), None).await;
                        }
                    }
                    // A TTL of 0: the lease expired.
                    Ok(Some(_)) => return,
                    _ => break,
                }
                tokio::time::sleep(jittered(period)).await;
            }
        }
        if last_renewal.elapsed() >= ttl {
            return;
        }
        let _ = members.fail_over(member).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Marks in etcd on a lease this process keeps alive (a rolling update's,
/// a shrink's cordons): they hold while this value lives and go with the
/// lease when it is dropped or the process dies.
pub struct LeasedMark {
    members: std::sync::Arc<Members>,
    lease: i64,
    keep: tokio::task::JoinHandle<()>,
}

impl LeasedMark {
    /// Keeps `lease` alive in the background, through whichever member
    /// serves: a member that goes is replaced by another before the lease
    /// runs out. The task ends when the lease is gone or could not be
    /// renewed in time.
    fn keep(members: std::sync::Arc<Members>, lease: i64) -> LeasedMark {
        let keeping = members.clone();
        let keep = tokio::spawn(async move {
            let ttl = Duration::from_secs(MARK_LEASE_SECONDS as u64);
            keep_lease_alive(&keeping, lease, ttl, Duration::from_secs(3), None).await;
        });
        LeasedMark {
            members,
            lease,
            keep,
        }
    }

    /// Whether the marks still hold (their lease is kept alive).
    pub fn holds(&self) -> bool {
        !self.keep.is_finished()
    }

    /// Ends them: the marks go at once, with their lease.
    pub async fn end(self) {
        self.keep.abort();
        let mut tries = self.members.count();
        loop {
            let (member, mut client) = self.members.client();
            let lost = match client.lease_revoke(self.lease).await {
                Err(e) => matches!(StoreError::from(e), StoreError::Lost(_)),
                Ok(_) => false,
            };
            // Revoked, or it expires by itself.
            if !lost || tries <= 1 || self.members.fail_over(member).await.is_err() {
                return;
            }
            tries -= 1;
        }
    }
}

impl Drop for LeasedMark {
    fn drop(&mut self) {
        self.keep.abort();
    }
}

/// See `Store::watch_desired`.
pub struct DesiredChanges {
    notify: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl DesiredChanges {
    /// Returns once desired state has changed since the last call (or
    /// since the watch began).
    pub async fn changed(&self) {
        self.notify.notified().await
    }

    /// The watch stream ended (etcd cancelled it, or the connection
    /// broke): `changed` will not fire again.
    pub fn ended(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for DesiredChanges {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A minion's heartbeat: its lease, and the task that keeps it alive.
pub struct Heartbeat {
    pub lease: i64,
    pub task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

/// Where minion `minion` of `cluster` asks for a renewed certificate (a
/// CSR, PEM); with an empty `minion`, the prefix of all requests.
pub(crate) fn renewal_request_key(cluster: &str, minion: &str) -> String {
    format!("/kctl-certs/{cluster}/requests/{minion}")
}

/// Where the signer answers minion `minion`'s request.
pub(crate) fn renewal_answer_key(cluster: &str, minion: &str) -> String {
    format!("/kctl-certs/{cluster}/issued/{minion}")
}

/// Keeps, for each key, only the last write to it, in order.
fn last_write_per_key(writes: Vec<(String, Option<Vec<u8>>)>) -> Vec<(String, Option<Vec<u8>>)> {
    let keys: Vec<String> = writes.iter().map(|(k, _)| k.clone()).collect();
    writes
        .into_iter()
        .enumerate()
        .filter(|(i, (key, _))| !keys[i + 1..].contains(key))
        .map(|(_, w)| w)
        .collect()
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our own plain data types: serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_per_key_wins_in_order() {
        let writes = vec![
            ("a".to_string(), None),
            ("b".to_string(), Some(b"1".to_vec())),
            ("a".to_string(), Some(b"2".to_vec())),
        ];
        let kept = last_write_per_key(writes);
        assert_eq!(
            kept,
            vec![
                ("b".to_string(), Some(b"1".to_vec())),
                ("a".to_string(), Some(b"2".to_vec()))
            ]
        );
    }

    #[test]
    fn jittered_periods_stay_within_a_tenth_and_differ() {
        let period = Duration::from_secs(1);
        let drawn: Vec<Duration> = (0..100).map(|_| jittered(period)).collect();
        assert!(drawn
            .iter()
            .all(|d| *d >= Duration::from_millis(900) && *d < Duration::from_millis(1100)));
        let distinct: std::collections::BTreeSet<_> = drawn.iter().collect();
        assert!(distinct.len() > 50, "{distinct:?}");
    }

    #[test]
    fn etcd_errors_read_as_sentences() {
        let lost = StoreError::from(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
            "tcp connect error",
        )));
        assert!(matches!(lost, StoreError::Lost(_)), "{lost:?}");
        let text = lost.to_string();
        assert!(
            text.starts_with("etcd stopped answering: tcp connect error"),
            "{text}"
        );
        assert!(
            !text.contains("MetadataMap") && !text.contains("details"),
            "{text}"
        );
        let refused = StoreError::from(etcd_client::Error::GRpcStatus(
            tonic::Status::invalid_argument("etcdserver: too many operations in txn request"),
        ));
        assert!(matches!(refused, StoreError::Etcd(_)), "{refused:?}");
        assert!(refused.to_string().contains("too many operations"));
    }
}
