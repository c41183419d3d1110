//! `kctl image load`: copy images to every minion over SSH, so a cluster
//! with no registry can run anything the workstation has.

use super::Cluster;
use crate::argv;
use crate::bootstrap::loaded_images_file;
use crate::exec::Exec;
use crate::provider::host;
use crate::ui::Ui;
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
    // archive, written once and streamed to every minion; its directory
    // is removed when this returns, however it returns.
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
            let dir = private_temp_dir("kctl-images-")?;
            let saved = dir.path().join("images.tar");
            temporary = Some(dir);
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
        let minion = cluster.config.minion(&id).cloned();
        async move {
            let exec = conn.map_err(|e| e.to_string())?;
            let before = exec
                .run(&list_images_argv(), None)
                .await
                .map(|o| o.stdout_text())
                .unwrap_or_default();
            let out = exec.run_with_file(&argv!["docker", "load"], &archive).await;
            let out = match out {
                Ok(out) if out.success() => out,
                Ok(out) => {
                    exec.close().await;
                    return Err(format!(
                        "{id}: docker load failed: {}",
                        out.stderr_text().trim()
                    ));
                }
                Err(e) => {
                    exec.close().await;
                    return Err(e.to_string());
                }
            };
            let new = newly_loaded(&before, &out.stdout_text());
            let recorded = match &minion {
                Some(m) if !new.is_empty() => record_loaded(&exec, m, &new).await,
                _ => Ok(()),
            };
            exec.close().await;
            recorded.map_err(|e| e.to_string())?;
            Ok(out.stdout_text())
        }
    });
    let results = super::per_minion(loads).await;
    drop(temporary);
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

/// Gives minions that joined a running cluster the images `kctl image
/// load` put on the others (the minions cannot pull): saved on minion
/// `from`, loaded on each of `to`.
pub async fn copy_loaded(
    ui: &Ui,
    cluster: &Cluster,
    from: &str,
    to: &[String],
) -> miette::Result<()> {
    let Some(source) = cluster.config.minion(from).cloned() else {
        return Ok(());
    };
    let mut connections = cluster.connect(&[from.to_string()]).await;
    let Some((_, Ok(exec))) = connections.pop() else {
        return Err(miette!("cannot reach {from} to copy its images"));
    };
    let listed = exec
        .run(&argv!["cat", loaded_images_file(&source)], None)
        .await
        .map(|o| o.stdout_text())
        .unwrap_or_default();
    let mut images: Vec<String> = listed
        .lines()
        .map(str::trim)
        .filter(|l| is_image_name(l))
        .map(str::to_string)
        .collect();
    images.sort();
    images.dedup();
    if images.is_empty() {
        exec.close().await;
        return Ok(());
    }
    let task = ui.task(format!(
        "copying {} image(s) to {}",
        images.len(),
        to.join(", ")
    ));
    let mut save = argv!["docker", "save"];
    save.extend(images.iter().cloned());
    let saved = exec.run(&save, None).await.map_err(super::report);
    exec.close().await;
    let saved = saved?.check(from, &save).map_err(super::report)?;
    let dir = private_temp_dir("kctl-copy-")?;
    let archive = dir.path().join("images.tar");
    std::fs::write(&archive, &saved.stdout).map_err(super::report)?;
    let loads = cluster.connect(to).await.into_iter().map(|(id, conn)| {
        let archive = archive.clone();
        let minion = cluster.config.minion(&id).cloned();
        let images = images.clone();
        async move {
            let exec = conn.map_err(|e| e.to_string())?;
            let loaded = exec
                .run_with_file(&argv!["docker", "load"], &archive)
                .await
                .map_err(|e| e.to_string())
                .and_then(|out| {
                    out.check(&id, &argv!["docker", "load"])
                        .map_err(|e| e.to_string())
                });
            let recorded = match (&loaded, &minion) {
                (Ok(_), Some(m)) => record_loaded(&exec, m, &images)
                    .await
                    .map_err(|e| e.to_string()),
                _ => Ok(()),
            };
            exec.close().await;
            loaded.and(recorded)
        }
    });
    let results = super::per_minion(loads).await;
    drop(dir);
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        task.done(format!("copied {} to {}", images.join(", "), to.join(", ")));
        Ok(())
    } else {
        task.fail("copying images failed");
        Err(miette!(
            help = "`kctl image load` puts them there from this machine",
            "{}",
            errors.join("\n")
        ))
    }
}

fn list_images_argv() -> Vec<String> {
    argv![
        "docker",
        "image",
        "ls",
        "--format",
        "{{.Repository}}:{{.Tag}}"
    ]
}

/// Images `docker load` reports that the minion did not have before.
pub fn newly_loaded(before: &str, load_output: &str) -> Vec<String> {
    let had: std::collections::BTreeSet<&str> = before.lines().map(str::trim).collect();
    load_output
        .lines()
        .filter_map(|l| l.strip_prefix("Loaded image: "))
        .map(str::trim)
        .filter(|image| !had.contains(image) && is_image_name(image))
        .map(str::to_string)
        .collect()
}

/// Docker's answers and the minion's file are read back: only what reads
/// as an image name is kept, to reach argv later.
fn is_image_name(line: &str) -> bool {
    !line.starts_with('-') && crate::model::names::image_problem(line).is_none()
}

async fn record_loaded<E: Exec>(
    exec: &E,
    minion: &crate::cluster::MinionConfig,
    images: &[String],
) -> Result<(), crate::exec::ExecError> {
    exec.run_ok(&argv!["mkdir", "-p", minion.helper_dir.clone()])
        .await?;
    let append = argv![
        "dd",
        format!("of={}", loaded_images_file(minion)),
        "oflag=append",
        "conv=notrunc",
        "status=none"
    ];
    let text = images.join("\n") + "\n";
    exec.run(&append, Some(text.as_bytes()))
        .await?
        .check(exec.target(), &append)?;
    Ok(())
}

/// A directory of an unguessable name in the system temp directory that
/// only this user may enter (the images may hold what others must not
/// read), removed with everything in it when dropped.
fn private_temp_dir(prefix: &str) -> miette::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(super::report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_images_the_minion_lacked_count_as_loaded() {
        let before = "busybox:latest\nnginx:1.25\n";
        let out = "Loaded image: nginx:1.25\nLoaded image: tutum/tomcat:latest\nLoaded image: --output=/etc/x\nLoaded image: \n";
        assert_eq!(newly_loaded(before, out), ["tutum/tomcat:latest"]);
    }
}
