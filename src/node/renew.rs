//! The helper keeps its own etcd certificate fresh, with no `kctl` run:
//! once it has less than [`RENEW_LEAF_DAYS_LEFT`] days left, the helper
//! makes a new key, puts a request for it in etcd under its own key, and
//! takes the certificate the signer (beside each etcd member) answers
//! with. The key never leaves the minion.

use super::NodeConfig;
use crate::pki::{self, Wanted, RENEW_LEAF_DAYS_LEFT};
use crate::store::{jittered, Store};
use std::path::Path;
use std::time::Duration;
use tracing::{info, warn};

/// How often the helper looks at its certificate's end.
const CHECK_PERIOD: Duration = Duration::from_secs(3600);
/// How soon it tries again after a renewal that did not come through.
const RETRY_PERIOD: Duration = Duration::from_secs(60);
/// How long it waits for the signer's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// Runs for the helper's life: a check at start, then every hour.
pub async fn keep_certificate_fresh(node: NodeConfig) {
    let Some(dir) = node.etcd_tls_dir.clone() else {
        return;
    };
    loop {
        let next = match renew_if_due(&node, &dir).await {
            Ok(Some(days)) => {
                info!("renewed this helper's etcd certificate: good for {days} days");
                CHECK_PERIOD
            }
            Ok(None) => CHECK_PERIOD,
            Err(e) => {
                warn!("renewing this helper's etcd certificate: {e}");
                RETRY_PERIOD
            }
        };
        tokio::time::sleep(jittered(next)).await;
    }
}

/// Renews the certificate in `dir` if it nears its end; the days the new
/// one has, if it did.
async fn renew_if_due(node: &NodeConfig, dir: &Path) -> Result<Option<i64>, String> {
    let now = time::OffsetDateTime::now_utc();
    let credentials = pki::read_node_credentials(dir).map_err(|e| e.to_string())?;
    let left = pki::days_left(&credentials.own.cert, now)
        .ok_or("its certificate is not one".to_string())?;
    if left >= RENEW_LEAF_DAYS_LEFT {
        return Ok(None);
    }
    info!("this helper's etcd certificate ends in {left} days: asking for a new one");
    let store = Store::connect(&node.etcd, &node.cluster, Some(&credentials))
        .await
        .map_err(|e| e.to_string())?;
    let (key, request) = pki::certificate_request(&node.minion).map_err(|e| e.to_string())?;
    let revision = store
        .request_renewal(&node.minion, &request)
        .await
        .map_err(|e| e.to_string())?;
    let waited = std::time::Instant::now();
    let cert = loop {
        if let Some(cert) = store
            .renewal_answer(&node.minion, revision)
            .await
            .map_err(|e| e.to_string())?
        {
            break cert;
        }
        if waited.elapsed() > ANSWER_WAIT {
            return Err(format!(
                "no signer answered within {} s (is kctl-signer running beside etcd?)",
                ANSWER_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // What etcd hands back is checked as anything read back is: the
    // cluster's CA signed it, for this minion, for the key made here.
    let wanted = Wanted::client(&node.minion);
    if let Some(reason) = pki::renewal_reason(
        &cert,
        &credentials.ca,
        Some(&wanted),
        RENEW_LEAF_DAYS_LEFT,
        now,
    ) {
        return Err(format!("the answer is no good: {reason}"));
    }
    if !pki::certifies_key(&cert, &key) {
        return Err("the answer is for another key".into());
    }
    // Each file is replaced whole; a connection made between the two
    // fails its handshake and the next one, a second later, has both.
    pki::write_private(&dir.join(pki::NODE_KEY_FILE), &key).map_err(|e| e.to_string())?;
    pki::write_private(&dir.join(pki::NODE_CERT_FILE), &cert).map_err(|e| e.to_string())?;
    Ok(pki::days_left(&cert, now))
}
