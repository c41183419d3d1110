//! `kctl image load`: copy images to every minion over SSH, so a cluster
//! with no registry can run anything the workstation has.

use super::Cluster;
use crate::argv;
use crate::exec::Exec;
use crate::provider::host;
use crate::ui::Ui;
use futures::future::join_all;
use miette::miette;
use std::path::{Path, PathBuf};

pub async fn load(
    ui: &Ui,
    name: &str,
    images: &[String],
    archive: Option<&Path>,
) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    // Images from the workstation's Docker go through a `docker save`
    // archive, written once and streamed to every minion.
    let mut temporary = None;
    let archive: PathBuf = match archive {
        Some(path) => {
            std::fs::metadata(path).map_err(|e| miette!("{}: {e}", path.display()))?;
            path.to_path_buf()
        }
        None => {
            if images.is_empty() {
                return Err(miette!(
                    help = "kctl image load IMAGE... or kctl image load -i FILE.tar",
                    "no image given"
                ));
            }
            let task = ui.task(format!("docker save {}", images.join(" ")));
            let saved = tempfile_path("kctl-images", "tar");
            temporary = Some(saved.clone());
            let out = saved.display().to_string();
            let mut cmd = vec!["docker", "save", "--output", out.as_str()];
            cmd.extend(images.iter().map(String::as_str));
            host::run(&cmd).await?;
            task.done(format!("saved {}", images.join(" ")));
            saved
        }
    };
    let ids: Vec<String> = cluster
        .config
        .minions
        .iter()
        .map(|m| m.id.clone())
        .collect();
    let task = ui.task(format!("loading into {} minions", ids.len()));
    let connections = cluster.connect(&ids).await;
    let loads = connections.into_iter().map(|(id, conn)| {
        let archive = archive.clone();
        async move {
            let exec = conn.map_err(|e| e.to_string())?;
            let out = exec.run_with_file(&argv!["docker", "load"], &archive).await;
            exec.close().await;
            let out = out.map_err(|e| e.to_string())?;
            if out.success() {
                Ok(out.stdout_text())
            } else {
                Err(format!(
                    "{id}: docker load failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    });
    let results = join_all(loads).await;
    if let Some(path) = temporary {
        let _ = std::fs::remove_file(path);
    }
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    if !errors.is_empty() {
        task.fail("image load failed");
        return Err(miette!("{}", errors.join("\n")));
    }
    let loaded: Vec<String> = results
        .into_iter()
        .flatten()
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("Loaded image: ").map(str::to_string))
        .collect();
    task.done(format!(
        "loaded {} into {} minions",
        loaded.join(", "),
        ids.len()
    ));
    Ok(())
}

fn tempfile_path(prefix: &str, ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}.{ext}",
        std::process::id(),
        rand::random::<u32>()
    ))
}
