//! Helpers' certificate renewals, through etcd: a helper puts a request
//! (a CSR) under its own key, which only its certificate may write; the
//! signer beside each etcd member signs it for that minion and puts the
//! certificate under the answer key, which only that minion reads. The
//! key layout is the narrow path: a minion can ask only for itself.

use super::{renewal_answer_key, renewal_request_key, Store, StoreError};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use serde::{Deserialize, Serialize};

/// The signer's answer: the certificate made for the request of that
/// revision (an answer to an older request is not the one waited for),
/// and the serial numbers (hex) of every certificate the signer made for
/// the minion, this one last: all are revoked when it leaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    request_revision: i64,
    certificate: String,
    #[serde(default)]
    issued: Vec<String>,
}

/// A request the signer has not answered.
#[derive(Debug, Clone)]
pub struct PendingRenewal {
    pub minion: String,
    /// The CSR (PEM) as the minion's key wrote it: untrusted.
    pub request: String,
    revision: i64,
    /// The minion's record's revision when the request was read: the
    /// answer is written only while the minion is still a member.
    minion_revision: i64,
    /// The serials of the certificates made for it before.
    issued: Vec<String>,
}

impl Store {
    /// Puts `minion`'s renewal request; returns the revision to wait for
    /// the answer of.
    pub async fn request_renewal(&self, minion: &str, request: &str) -> Result<i64, StoreError> {
        let key = renewal_request_key(&self.cluster, minion);
        let put = Txn::new().and_then([TxnOp::put(key, request, None)]);
        let resp = self.raw_txn(put).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// The certificate answering `minion`'s request of `revision`, once
    /// there is one.
    pub async fn renewal_answer(
        &self,
        minion: &str,
        revision: i64,
    ) -> Result<Option<String>, StoreError> {
        let key = renewal_answer_key(&self.cluster, minion);
        let resp = self.get(&key, None).await?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<Answer>(kv.value()).ok())
            .filter(|a| a.request_revision == revision)
            .map(|a| a.certificate))
    }

    /// The requests of minions that exist and have no answer yet, and the
    /// revision they were read at (to watch for the next from).
    pub async fn pending_renewals(&self) -> Result<(Vec<PendingRenewal>, i64), StoreError> {
        let prefix = Some(GetOptions::new().with_prefix());
        let requests = self
            .get(&renewal_request_key(&self.cluster, ""), prefix.clone())
            .await?;
        let read_at = requests.header().map(|h| h.revision()).unwrap_or_default();
        let answers = self
            .get(&renewal_answer_key(&self.cluster, ""), prefix.clone())
            .await?;
        let minions = self.get(&self.key("minions", ""), prefix).await?;
        let answer_of = |minion: &str| {
            let key = renewal_answer_key(&self.cluster, minion);
            answers
                .kvs()
                .iter()
                .find(|kv| kv.key() == key.as_bytes())
                .and_then(|kv| serde_json::from_slice::<Answer>(kv.value()).ok())
        };
        let request_prefix = renewal_request_key(&self.cluster, "");
        let mut pending = vec![];
        for kv in requests.kvs() {
            let Some(minion) = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|k| k.strip_prefix(&request_prefix))
            else {
                continue;
            };
            let record = self.key("minions", minion);
            let Some(member) = minions.kvs().iter().find(|m| m.key() == record.as_bytes()) else {
                continue;
            };
            let before = answer_of(minion);
            if before
                .as_ref()
                .is_some_and(|a| a.request_revision == kv.mod_revision())
            {
                continue;
            }
            pending.push(PendingRenewal {
                minion: minion.to_string(),
                request: String::from_utf8_lossy(kv.value()).into_owned(),
                revision: kv.mod_revision(),
                minion_revision: member.mod_revision(),
                issued: before.map(|a| a.issued).unwrap_or_default(),
            });
        }
        Ok((pending, read_at))
    }

    /// Answers `pending` with `certificate` (serial `serial`, hex), unless
    /// the request was replaced, the minion left, or another signer
    /// answered since it was read: one certificate per request. True if
    /// answered.
    pub async fn answer_renewal(
        &self,
        pending: &PendingRenewal,
        certificate: &str,
        serial: &str,
    ) -> Result<bool, StoreError> {
        let mut issued = pending.issued.clone();
        issued.push(serial.to_string());
        let answer = serde_json::to_vec(&Answer {
            request_revision: pending.revision,
            certificate: certificate.to_string(),
            issued,
        })
        .unwrap_or_default();
        let answer_key = renewal_answer_key(&self.cluster, &pending.minion);
        let txn = Txn::new()
            .when([
                Compare::mod_revision(answer_key.as_str(), CompareOp::Less, pending.revision),
                Compare::mod_revision(
                    renewal_request_key(&self.cluster, &pending.minion),
                    CompareOp::Equal,
                    pending.revision,
                ),
                Compare::mod_revision(
                    self.key("minions", &pending.minion),
                    CompareOp::Equal,
                    pending.minion_revision,
                ),
            ])
            .and_then([TxnOp::put(answer_key, answer, None)]);
        Ok(self.raw_txn(txn).await?.succeeded())
    }

    /// Returns when a request is put after revision `seen`, or when the
    /// watch breaks: the caller reads the requests again either way.
    pub async fn wait_for_renewal_requests(&self, seen: i64) -> Result<(), StoreError> {
        // Not `serving_client`: the signer may not read the state's keys.
        let (_, mut client) = self.members.client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(seen + 1);
        let mut stream = client
            .watch(renewal_request_key(&self.cluster, ""), Some(options))
            .await?;
        while let Ok(Some(response)) = stream.message().await {
            if response.canceled() || !response.events().is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// The serial numbers (hex) of the certificates the signer made for
    /// `minion`, with its request and answer forgotten: for a minion that
    /// leaves, whose renewed certificates are revoked too. Call after its
    /// record is deleted, so that no answer can follow.
    pub async fn take_renewed_serials(&self, minion: &str) -> Result<Vec<String>, StoreError> {
        let answer_key = renewal_answer_key(&self.cluster, minion);
        let txn = Txn::new().and_then([
            TxnOp::get(answer_key.as_str(), None),
            TxnOp::delete(answer_key.as_str(), None),
            TxnOp::delete(renewal_request_key(&self.cluster, minion), None),
        ]);
        let resp = self.raw_txn(txn).await?;
        Ok(resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .and_then(|kv| serde_json::from_slice::<Answer>(kv.value()).ok())
                    .map(|a| a.issued),
                _ => None,
            })
            .unwrap_or_default())
    }
}
