//! gitRepo volumes: before a pod's containers start on a minion, the
//! minion's git clones the repository into the pod's volume, as v0.5's
//! kubelet did (`git clone -- REPO` inside the volume, then `git checkout
//! REVISION` in the one directory it made). A volume that already holds
//! files (the pod started there before) is left as it is.
//!
//! Every step is an argv run through `Exec` (a login on the minion, or the
//! helper's own machine); the repository, revision and directory were
//! checked when the manifest was read, and are checked again here, since
//! records read back from etcd are not trusted. Docker's answer (the
//! volume's mount point) is checked before any path is built from it.

use super::docker::{pod_volume_name, LABEL_CLUSTER, LABEL_POD};
use super::RunContext;
use crate::argv;
use crate::exec::Exec;
use crate::model::{
    git_directory_problem, git_repository_problem, git_revision_problem, VolumeSource,
};
use crate::state::PodRecord;
use std::collections::BTreeMap;

const NO_GIT: &str = "git is not installed on the minion (apt-get install git)";

/// How long one clone may take before the pod's start fails.
const CLONE_LIMIT_SECONDS: u32 = 300;

/// Clones the repositories of `pods`' gitRepo volumes that are not there
/// yet. Returns the pods that cannot start, with why; a volume whose
/// clone failed is removed, so that the next round clones afresh.
pub async fn fill<E: Exec>(
    exec: &E,
    ctx: &RunContext,
    pods: &[PodRecord],
) -> BTreeMap<String, String> {
    let mut failed = BTreeMap::new();
    for pod in pods {
        for volume in &pod.pod.spec.volumes {
            let VolumeSource::GitRepo {
                repository,
                revision,
                directory,
            } = &volume.source
            else {
                continue;
            };
            let name = pod_volume_name(&ctx.cluster, &pod.pod.id, &volume.name);
            let repo = Repo {
                repository,
                revision: revision.as_deref(),
                directory: directory.as_deref(),
            };
            if let Err(why) = clone_into(exec, ctx, &pod.pod.id, &name, &repo).await {
                let _ = exec
                    .run(
                        &argv!["docker", "volume", "rm", "--force", name.clone()],
                        None,
                    )
                    .await;
                failed.insert(
                    pod.pod.id.clone(),
                    format!("gitRepo volume {} on {}: {why}", volume.name, exec.target()),
                );
                break;
            }
        }
    }
    failed
}

struct Repo<'a> {
    repository: &'a str,
    revision: Option<&'a str>,
    directory: Option<&'a str>,
}

async fn clone_into<E: Exec>(
    exec: &E,
    ctx: &RunContext,
    pod: &str,
    name: &str,
    repo: &Repo<'_>,
) -> Result<(), String> {
    let refused = [
        git_repository_problem(repo.repository).map(|p| format!("repository {p}")),
        repo.revision
            .and_then(git_revision_problem)
            .map(|p| format!("revision {p}")),
        repo.directory
            .and_then(git_directory_problem)
            .map(|p| format!("directory {p}")),
    ];
    if let Some(why) = refused.into_iter().flatten().next() {
        return Err(why);
    }
    let create = argv![
        "docker",
        "volume",
        "create",
        "--label",
        format!("{LABEL_CLUSTER}={}", ctx.cluster),
        "--label",
        format!("{LABEL_POD}={pod}"),
        name
    ];
    run(exec, "docker volume create", &create).await?;
    let inspect = argv![
        "docker",
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        name
    ];
    let mount_point = run(exec, "docker volume inspect", &inspect).await?;
    let mount_point = checked_mount_point(mount_point.trim_end_matches('\n'), name)?;
    if !entries(exec, &mount_point).await?.is_empty() {
        return Ok(());
    }
    let mut clone = argv![
        "timeout",
        "--kill-after=10",
        CLONE_LIMIT_SECONDS.to_string(),
        // No question can be answered here: a repository that wants
        // credentials fails at once rather than waiting for them.
        "env",
        "GIT_TERMINAL_PROMPT=0",
        "GIT_SSH_COMMAND=ssh -o BatchMode=yes",
        "git",
        "-C",
        mount_point.clone(),
        // Only the network's transports, also for submodules and
        // redirects: never `file` (the minion's own files) or `ext`.
        "-c",
        "protocol.allow=never",
        "-c",
        "protocol.https.allow=always",
        "-c",
        "protocol.http.allow=always",
        "-c",
        "protocol.git.allow=always",
        "-c",
        "protocol.ssh.allow=always",
        "clone",
        "--quiet",
        "--",
        repo.repository
    ];
    if let Some(directory) = repo.directory {
        clone.push(directory.to_string());
    }
    run(exec, "git clone", &clone).await?;
    let Some(revision) = repo.revision else {
        return Ok(());
    };
    let work_tree = match repo.directory {
        Some(".") => mount_point.clone(),
        Some(directory) => format!("{mount_point}/{directory}"),
        // The one directory git named after the repository.
        None => match entries(exec, &mount_point).await?.as_slice() {
            [one] => one.clone(),
            other => {
                return Err(format!(
                    "the clone left {} entries in the volume, not one directory",
                    other.len()
                ))
            }
        },
    };
    let checkout = argv!["git", "-C", work_tree, "checkout", "--quiet", revision, "--"];
    run(exec, "git checkout", &checkout).await?;
    Ok(())
}

/// Runs `argv`, `what` for messages; its standard output, or why it
/// failed (the end of what it said, bounded).
async fn run<E: Exec>(exec: &E, what: &str, argv: &[String]) -> Result<String, String> {
    let out = exec.run(argv, None).await.map_err(|e| e.to_string())?;
    if out.success() {
        return Ok(out.stdout_text());
    }
    let said = out.stderr_text();
    let said = said.trim();
    let tail: String = said
        .chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let git = argv.iter().any(|a| a == "git");
    // `timeout` exits 124 when its limit passes, 127 when the program is
    // missing; sudo says so in its own words.
    Err(match out.code {
        Some(124) if git => format!("{what} ran longer than {CLONE_LIMIT_SECONDS}s"),
        Some(127) if git => NO_GIT.into(),
        _ if git && tail.contains("git: command not found") => NO_GIT.into(),
        _ => format!("{what} failed: {tail}"),
    })
}

/// The entries directly inside `dir`, each checked to be one.
async fn entries<E: Exec>(exec: &E, dir: &str) -> Result<Vec<String>, String> {
    let listed = run(
        exec,
        "find",
        &argv!["find", dir, "-mindepth", "1", "-maxdepth", "1"],
    )
    .await?;
    let prefix = format!("{dir}/");
    listed
        .lines()
        .map(|line| {
            line.strip_prefix(&prefix)
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .map(|_| line.to_string())
                .ok_or_else(|| format!("unexpected entry in the volume: {line:?}"))
        })
        .collect()
}

/// Docker's mount point of volume `name`, if it is one a path may be
/// built from: absolute, plain, and the volume's own (`…/NAME/_data`).
fn checked_mount_point(answer: &str, name: &str) -> Result<String, String> {
    let plain = answer.starts_with('/')
        && !answer.chars().any(|c| c.is_control())
        && !answer.split('/').any(|part| part == ".." || part == ".")
        && answer.ends_with(&format!("/{name}/_data"));
    if plain {
        Ok(answer.to_string())
    } else {
        Err(format!(
            "Docker gave the volume's mount point as {answer:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Output, RecordingExec};
    use crate::model::{Container, Pod, PodSpec, RestartPolicy, Volume};

    fn pod_with(source: VolumeSource) -> PodRecord {
        PodRecord {
            pod: Pod {
                id: "web".into(),
                labels: Default::default(),
                spec: PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: "nginx".into(),
                        ..Container::default()
                    }],
                    restart_policy: RestartPolicy::Always,
                    volumes: vec![Volume {
                        name: "site".into(),
                        source,
                    }],
                },
            },
            host: "minion-1".into(),
            owner: None,
            draining: false,
        }
    }

    fn answer(stdout: &str) -> Output {
        Output {
            code: Some(0),
            stdout: stdout.as_bytes().to_vec(),
            stderr: vec![],
        }
    }

    fn context() -> RunContext {
        RunContext {
            cluster: "c1".into(),
            offline_images: true,
            service_env: vec![],
            starts_in_flight: 1,
        }
    }

    const MOUNT: &str = "/var/lib/docker/volumes/kctl_c1_web_site/_data";

    #[tokio::test]
    async fn clones_into_an_empty_volume_then_checks_out_the_revision() {
        let mut exec = RecordingExec::default();
        exec.answers.insert(
            "docker volume inspect".into(),
            answer(&format!("{MOUNT}\n")),
        );
        let ctx = context();
        let pod = pod_with(VolumeSource::GitRepo {
            repository: "https://example.com/site.git".into(),
            revision: Some("v1.2".into()),
            directory: Some("code".into()),
        });
        let failed = fill(&exec, &ctx, &[pod]).await;
        assert!(failed.is_empty(), "{failed:?}");
        let calls: Vec<String> = exec.calls().iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            calls[0],
            "docker volume create --label io.kctl.cluster=c1 --label io.kctl.pod=web kctl_c1_web_site"
        );
        assert!(
            calls.contains(&format!(
                "timeout --kill-after=10 300 env GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND=ssh -o BatchMode=yes git -C {MOUNT} -c protocol.allow=never -c protocol.https.allow=always -c protocol.http.allow=always -c protocol.git.allow=always -c protocol.ssh.allow=always clone --quiet -- https://example.com/site.git code"
            )),
            "{calls:#?}"
        );
        assert_eq!(
            calls.last().unwrap(),
            &format!("git -C {MOUNT}/code checkout --quiet v1.2 --")
        );
    }

    #[tokio::test]
    async fn a_filled_volume_is_kept_and_a_bad_answer_is_refused() {
        let mut exec = RecordingExec::default();
        exec.answers.insert(
            "docker volume inspect".into(),
            answer(&format!("{MOUNT}\n")),
        );
        exec.answers
            .insert("find".into(), answer(&format!("{MOUNT}/site\n")));
        let ctx = context();
        let repo = VolumeSource::GitRepo {
            repository: "https://example.com/site.git".into(),
            revision: None,
            directory: None,
        };
        assert!(fill(&exec, &ctx, &[pod_with(repo.clone())])
            .await
            .is_empty());
        assert!(
            !exec
                .calls()
                .iter()
                .any(|c| c.contains(&"clone".to_string())),
            "{:?}",
            exec.calls()
        );
        // Docker's answer leads elsewhere: nothing is cloned, and the
        // volume goes.
        let mut exec = RecordingExec::default();
        exec.answers.insert(
            "docker volume inspect".into(),
            answer("/var/lib/docker/volumes/kctl_c1_web_site/_data/../../../../etc\n"),
        );
        let failed = fill(&exec, &ctx, &[pod_with(repo.clone())]).await;
        assert!(failed["web"].contains("mount point"), "{failed:?}");
        let calls: Vec<String> = exec.calls().iter().map(|c| c.join(" ")).collect();
        assert!(!calls.iter().any(|c| c.contains("clone")), "{calls:?}");
        assert_eq!(
            calls.last().unwrap(),
            "docker volume rm --force kctl_c1_web_site"
        );
        // A record from etcd naming a remote helper is refused here too.
        let exec = RecordingExec::default();
        let helper = VolumeSource::GitRepo {
            repository: "ext::touch%/tmp/pwned".into(),
            revision: None,
            directory: None,
        };
        let failed = fill(&exec, &ctx, &[pod_with(helper)]).await;
        assert!(failed["web"].contains("remote helper"), "{failed:?}");
        assert!(!exec.calls().iter().any(|c| c.contains(&"git".to_string())));
    }
}
