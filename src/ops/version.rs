//! `kctl version`: this kctl, the kctl-node it installs, and the helper
//! each minion of the cluster runs, so a stale minion shows.

use super::Cluster;
use crate::cluster::ClusterDir;
use crate::output::table;
use crate::state::HelperVersion;
use crate::ui::Ui;

/// The rows of the minions' table (pure): a helper that differs from the
/// one `up` would install says so.
pub fn helper_rows(
    minions: &[String],
    running: &std::collections::BTreeMap<String, HelperVersion>,
    installable: Option<&HelperVersion>,
) -> Vec<Vec<String>> {
    minions
        .iter()
        .map(|m| match running.get(m) {
            Some(v) => vec![
                m.clone(),
                v.version.clone(),
                v.sha256.clone(),
                match installable {
                    Some(i) if i == v => "same as this kctl's".into(),
                    Some(_) => "differs: `kctl up` replaces it".into(),
                    None => String::new(),
                },
            ],
            None => vec![m.clone(), "unknown".into(), String::new(), String::new()],
        })
        .collect()
}

pub async fn version(ui: &Ui, name: &str) -> miette::Result<()> {
    ui.out(format!("kctl {}", env!("CARGO_PKG_VERSION")));
    let installable = super::helper_binary()
        .ok()
        .and_then(|b| HelperVersion::of_file(&b).ok());
    if let Some(v) = &installable {
        ui.out(format!("kctl-node {} (sha256 {}…)", v.version, v.sha256));
    }
    // Without a cluster, the client's version is all there is.
    if !ClusterDir::new(name)?.exists() {
        return Ok(());
    }
    let cluster = Cluster::open(name)?;
    let state = cluster.store().await?.snapshot().await?.state;
    let minions: Vec<String> = state.minions.keys().cloned().collect();
    ui.out(format!("\nCluster {name}:"));
    ui.out(table(
        &["MINION", "KCTL-NODE", "SHA256", ""],
        helper_rows(&minions, &state.helper_versions, installable.as_ref()),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_or_silent_helper_shows() {
        let v = |sha: &str| HelperVersion {
            version: "0.1.0".into(),
            sha256: sha.into(),
            protocol: crate::state::HELPER_PROTOCOL,
        };
        let running = [
            ("minion-1".to_string(), v("aaa")),
            ("minion-2".to_string(), v("bbb")),
        ]
        .into_iter()
        .collect();
        let minions = ["minion-1", "minion-2", "minion-3"].map(String::from);
        let rows = helper_rows(&minions, &running, Some(&v("aaa")));
        assert_eq!(rows[0][3], "same as this kctl's");
        assert_eq!(rows[1][3], "differs: `kctl up` replaces it");
        assert_eq!(rows[2][1], "unknown");
    }
}
