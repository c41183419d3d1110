//! A helper's copy of its cluster's keys, kept current by one watch: its
//! rounds read the copy instead of the whole state from etcd each time,
//! so what an idle cluster costs etcd grows with its changes, not with
//! its size times its minions.
//!
//! One watch over the whole prefix delivers each transaction's events in
//! one response, so the copy is always the state at some revision, never
//! half a commit: writes planned from it are guarded by the generation as
//! from a read. It answers only once it holds every change up to the
//! store's own last write (a helper reads its own writes), and not at all
//! while the watch is down: then the store reads etcd as before.

use super::Store;
use etcd_client::{EventType, GetOptions, WatchOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a read waits for the copy to catch up with the store's own
/// last write before reading etcd instead.
const CATCH_UP: Duration = Duration::from_millis(300);

#[derive(Default)]
struct Copy {
    /// key → (value, mod revision), but the helpers' `seen/` times and
    /// lock keys, which no round reads.
    kvs: BTreeMap<String, (Vec<u8>, i64)>,
    /// The revision the copy is the state at; 0 while it is not live.
    revision: i64,
}

pub(super) struct StateCache {
    copy: Arc<Mutex<Copy>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StateCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keys no round reads: kept out of the copy.
fn unread(rest: &str) -> bool {
    rest.starts_with("seen/") || rest.starts_with("locks/")
}

impl StateCache {
    /// Starts keeping a copy of `store`'s keys.
    pub(super) fn start(store: Store) -> StateCache {
        let copy = Arc::new(Mutex::new(Copy::default()));
        let keeping = copy.clone();
        let task = tokio::spawn(async move {
            loop {
                keep(&store, &keeping).await;
                if let Ok(mut copy) = keeping.lock() {
                    copy.revision = 0;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        StateCache { copy, task }
    }

    /// The copy's keys, if it is live and has every change up to
    /// `written` (the store's last write), waiting a little for it.
    pub(super) async fn read(&self, written: &AtomicI64) -> Option<Vec<(String, Vec<u8>, i64)>> {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            {
                let copy = self.copy.lock().ok()?;
                if copy.revision > 0 && copy.revision >= written.load(Ordering::SeqCst) {
                    return Some(
                        copy.kvs
                            .iter()
                            .map(|(k, (v, rev))| (k.clone(), v.clone(), *rev))
                            .collect(),
                    );
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Loads the keys, then applies the watch's changes until it ends.
async fn keep(store: &Store, copy: &Mutex<Copy>) {
    let prefix = store.prefix.clone();
    let Ok(loaded) = store
        .get(&prefix, Some(GetOptions::new().with_prefix()))
        .await
    else {
        return;
    };
    let Some(revision) = loaded.header().map(|h| h.revision()) else {
        return;
    };
    let Ok(mut client) = store.serving_client().await else {
        return;
    };
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let Ok(mut stream) = client.watch(prefix.as_str(), Some(options)).await else {
        return;
    };
    {
        let Ok(mut copy) = copy.lock() else {
            return;
        };
        copy.kvs.clear();
        for kv in loaded.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if key.strip_prefix(&prefix).is_some_and(|rest| !unread(rest)) {
                copy.kvs
                    .insert(key, (kv.value().to_vec(), kv.mod_revision()));
            }
        }
        copy.revision = revision;
    }
    while let Ok(Some(response)) = stream.message().await {
        if response.canceled() || response.compact_revision() > 0 {
            return;
        }
        let Ok(mut copy) = copy.lock() else {
            return;
        };
        // A response's events are whole transactions: after them the
        // copy is the state at their revision.
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            copy.revision = copy.revision.max(kv.mod_revision());
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if key.strip_prefix(&prefix).is_none_or(unread) {
                continue;
            }
            match event.event_type() {
                EventType::Put => {
                    copy.kvs
                        .insert(key, (kv.value().to_vec(), kv.mod_revision()));
                }
                EventType::Delete => {
                    copy.kvs.remove(&key);
                }
            }
        }
    }
}
