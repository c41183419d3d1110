//! `kctl clusters`: every cluster this workstation knows, its provider,
//! its size, and whether its etcd answers.

use super::Cluster;
use crate::cluster::{kctl_home, ClusterDir};
use crate::output::table;
use crate::ui::Ui;
use std::time::Duration;

/// How long a cluster's etcd gets to answer before it counts as down.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The names of the clusters recorded under `$KCTL_HOME/clusters`, sorted.
pub fn known_clusters() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(kctl_home().join("clusters"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| ClusterDir::new(n).is_ok_and(|d| d.exists()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn status(name: &str) -> (String, String, String) {
    let cluster = match Cluster::open(name) {
        Ok(c) => c,
        Err(e) => return ("?".into(), "?".into(), format!("unreadable: {e}")),
    };
    let provider = cluster.config.provider.name().to_string();
    let minions = cluster.config.minions.len().to_string();
    let answer = tokio::time::timeout(ANSWER_WITHIN, async {
        let mut store = cluster.store().await?;
        let state = store.snapshot().await?.state;
        let ready = state.minions.keys().filter(|m| state.ready(m)).count();
        Ok::<_, miette::Report>(format!(
            "up, {ready} of {} minions Ready",
            state.minions.len()
        ))
    })
    .await;
    let status = match answer {
        Ok(Ok(text)) => text,
        Ok(Err(_)) | Err(_) => "etcd does not answer (`kctl up` repairs it)".into(),
    };
    (provider, minions, status)
}

pub async fn clusters(ui: &Ui) -> miette::Result<()> {
    let names = known_clusters();
    if names.is_empty() {
        ui.note(format!(
            "no clusters under {}; `kctl up` makes one",
            kctl_home().display()
        ));
        return Ok(());
    }
    let statuses = futures::future::join_all(names.iter().map(|n| status(n))).await;
    let rows = names
        .iter()
        .zip(statuses)
        .map(|(name, (provider, minions, status))| vec![name.clone(), provider, minions, status])
        .collect();
    ui.out(table(&["NAME", "PROVIDER", "MINIONS", "STATUS"], rows));
    Ok(())
}
