//! The renewal signer (`kctl-node sign`), beside each etcd member: it
//! signs the helpers' renewal requests with the cluster's CA. It runs
//! where etcd's data is, whose machine holds the whole cluster's state
//! already; the CA's key goes nowhere else but the workstation.
//!
//! A request is read from the minion's own request key (only that
//! minion's certificate may write it) and signed for that minion alone,
//! whatever it asks for; minions without a record get nothing.

use crate::model::names::minion_id_problem;
use crate::pki::{self, Credentials, KeyedCert, Wanted};
use crate::store::{Store, StoreError};
use std::path::PathBuf;
use std::time::Duration;
use tracing::{error, info, warn};

/// What the signer is started with.
#[derive(Debug, Clone)]
pub struct SignerConfig {
    pub cluster: String,
    pub etcd: Vec<String>,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

/// Runs for as long as the process lives, reconnecting whenever etcd is
/// lost.
pub async fn run(config: SignerConfig) {
    info!(
        "kctl-signer {} for cluster {}",
        env!("CARGO_PKG_VERSION"),
        config.cluster
    );
    loop {
        if let Err(e) = serve(&config).await {
            error!("{e}; starting over");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn serve(config: &SignerConfig) -> Result<(), String> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let ca = KeyedCert {
        cert: read(&config.ca_cert)?,
        key: read(&config.ca_key)?,
    };
    // Its own etcd identity, made at each start: nothing to renew.
    let own = pki::issue(
        &ca,
        &Wanted::client(pki::SIGNER_NAME),
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| e.to_string())?;
    let credentials = Credentials {
        ca: ca.cert.clone(),
        own,
    };
    let store = Store::connect(&config.etcd, &config.cluster, Some(&credentials))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let seen = sign_pending(&store, &ca).await.map_err(|e| e.to_string())?;
        store
            .wait_for_renewal_requests(seen)
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// Answers every request waiting; returns the revision read at.
pub async fn sign_pending(store: &Store, ca: &KeyedCert) -> Result<i64, StoreError> {
    let (pending, seen) = store.pending_renewals().await?;
    for request in pending {
        if let Some(problem) = minion_id_problem(&request.minion) {
            warn!("a renewal request under a bad name: {problem}");
            continue;
        }
        let now = time::OffsetDateTime::now_utc();
        let signed = pki::sign_request(ca, &request.request, &request.minion, now)
            .map_err(|e| e.to_string())
            .and_then(|cert| Ok((pki::serial_hex(&cert)?, cert)));
        match signed {
            Ok((serial, cert)) => {
                if store.answer_renewal(&request, &cert, &serial).await? {
                    info!("renewed the certificate of {}", request.minion);
                }
            }
            Err(e) => warn!("{}'s renewal request: {e}", request.minion),
        }
    }
    Ok(seen)
}
