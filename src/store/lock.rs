//! A minion's lock: the queue of etcd's own lock recipe (a key per waiter
//! on the waiter's lease, served in order of creation), kept by plain
//! reads, writes and watches.
//!
//! Not etcd's Lock RPC: under certificate authentication a Lock that has
//! to wait for another holder is refused with "permission denied" now and
//! then (etcd-io/etcd#14850; the server-side lock loses the caller's
//! certificate name on the requests it makes for it). The keys are those
//! the RPC makes (`<name>/<lease in hex>`), so a helper of an older kctl
//! and this one still take turns.

use super::{keep_lease_alive, Store, StoreError};
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions,
};
use std::time::Duration;

/// How long a minion lock outlives a kctl that died holding it.
const LOCK_TTL_SECONDS: i64 = 10;
/// How long to wait for another kctl to finish with a minion.
const LOCK_WAIT: Duration = Duration::from_secs(180);

/// Exclusive use of one minion's containers, held through a key on a lease
/// that a background task keeps alive; if the holder dies, the lease
/// expires and the lock frees itself.
pub struct MinionLock {
    store: Store,
    lease: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl MinionLock {
    /// Revoking the lease deletes the key, which wakes the next waiter.
    pub async fn release(self) {
        self.keeper.abort();
        self.store.revoke(self.lease).await;
    }
}

impl Store {
    /// Waits for exclusive use of a minion: two kctl processes (or kctl and
    /// the node helper) never converge one minion at the same time. The
    /// lock's lease is kept alive through whichever member serves, so a
    /// member's death does not free it under its holder.
    pub async fn lock_minion(&self, minion: &str) -> Result<MinionLock, StoreError> {
        let lease = self.lease_grant(LOCK_TTL_SECONDS).await?;
        let members = self.members.clone();
        let mut keeper = tokio::spawn(async move {
            let ttl = Duration::from_secs(LOCK_TTL_SECONDS as u64);
            keep_lease_alive(&members, lease, ttl, ttl / 3, None).await;
        });
        // Outside the state's prefix: taken and freed every round, the
        // lock keys would otherwise reach every helper's watch.
        let queue = format!("{}minions/{minion}/", self.locks_prefix);
        let turn = tokio::select! {
            turn = tokio::time::timeout(LOCK_WAIT, self.wait_turn(minion, &queue, lease)) => {
                turn.unwrap_or_else(|_| Err(StoreError::LockBusy {
                    minion: minion.to_string(),
                    waited: LOCK_WAIT.as_secs(),
                }))
            }
            // The keeper ends only when the lease is gone.
            _ = &mut keeper => Err(StoreError::LockLost { minion: minion.to_string() }),
        };
        match turn {
            Ok(()) => Ok(MinionLock {
                store: self.clone(),
                lease,
                keeper,
            }),
            Err(e) => {
                keeper.abort();
                self.revoke(lease).await;
                Err(e)
            }
        }
    }

    /// Joins the queue under `queue` with a key on `lease` and returns when
    /// no key made before it is left.
    async fn wait_turn(&self, minion: &str, queue: &str, lease: i64) -> Result<(), StoreError> {
        let key = format!("{queue}{lease:x}");
        let join = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                "",
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let joined = self.raw_txn(join).await?;
        let place = if joined.succeeded() {
            joined.header().map(|h| h.revision()).unwrap_or_default()
        } else {
            // A retried request that had in fact been applied.
            own_create_revision(&joined).unwrap_or_default()
        };
        loop {
            // The waiter just ahead: the newest key made before ours.
            let ahead = self
                .call(|mut c| {
                    let options = GetOptions::new()
                        .with_prefix()
                        .with_max_create_revision(place - 1)
                        .with_sort(SortTarget::Create, SortOrder::Descend)
                        .with_limit(1);
                    let queue = queue.to_string();
                    async move { c.get(queue, Some(options)).await }
                })
                .await?;
            let Some(waiter) = ahead.kvs().first() else {
                break;
            };
            let seen = ahead.header().map(|h| h.revision()).unwrap_or_default();
            self.wait_deleted(waiter.key(), seen).await?;
        }
        // Our key went with our lease while we waited: not ours after all.
        let ours = self
            .call(|mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        if ours.kvs().is_empty() {
            return Err(StoreError::LockLost {
                minion: minion.to_string(),
            });
        }
        Ok(())
    }

    /// Returns once `key` is deleted after revision `seen`, or when the
    /// watch breaks (a member went away): the caller looks again.
    async fn wait_deleted(&self, key: &[u8], seen: i64) -> Result<(), StoreError> {
        let (member, mut client) = self.members.client();
        let options = WatchOptions::new().with_start_revision(seen + 1);
        let mut stream = match client.watch(key, Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                return match StoreError::from(e) {
                    StoreError::Lost(_) => self.members.fail_over(member).await,
                    other => Err(other),
                }
            }
        };
        while let Ok(Some(response)) = stream.message().await {
            if response.canceled()
                || response
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
            {
                return Ok(());
            }
        }
        Ok(())
    }
}

fn own_create_revision(resp: &etcd_client::TxnResponse) -> Option<i64> {
    resp.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.create_revision()),
        _ => None,
    })
}
