//! A pod's volumes and its containers' mounts, in v1beta1's shape
//! (`source: {emptyDir: {}}`, `hostDir`, `persistentDisk`) and v1's
//! (`emptyDir: {}`, `hostPath`, `gcePersistentDisk`), and `gitRepo`. What
//! kctl cannot provide (a persistent disk outside GCE, v1's newer sources)
//! is an error with the reason, never dropped.

use super::*;
use crate::model::{
    disk_name_problem, mount_path_problem, sensitive_host_path, Volume, VolumeMount, VolumeSource,
    DEFAULT_DISK_FS_TYPE, DISK_FS_TYPES, MAX_DISK_PARTITION,
};

pub(super) static VOLUME: Shape = Shape {
    what: "a volume",
    fields: &["name", "source"],
    ignored: &[],
};
pub(super) static VOLUME_SOURCE: Shape = Shape {
    what: "a volume's `source`",
    fields: &["emptyDir", "hostDir", "persistentDisk", "gitRepo"],
    ignored: &[],
};
static V1_VOLUME: Shape = Shape {
    what: "a v1 volume",
    fields: &[
        "name",
        "emptyDir",
        "hostPath",
        "gcePersistentDisk",
        "gitRepo",
        "persistentVolumeClaim",
        "configMap",
        "secret",
        "nfs",
    ],
    ignored: &[],
};
pub(super) static EMPTY_DIR: Shape = Shape {
    what: "`emptyDir`",
    fields: &[],
    ignored: &[],
};
static V1_EMPTY_DIR: Shape = Shape {
    what: "v1 `emptyDir`",
    fields: &["medium", "sizeLimit"],
    ignored: &[],
};
pub(super) static HOST_DIR: Shape = Shape {
    what: "`hostDir`",
    fields: &["path"],
    ignored: &[],
};
static V1_HOST_PATH: Shape = Shape {
    what: "`hostPath`",
    fields: &["path", "type"],
    ignored: &[],
};
/// v1beta1's `persistentDisk` and v1's `gcePersistentDisk` alike.
static PERSISTENT_DISK: Shape = Shape {
    what: "a persistent disk",
    fields: &["pdName", "fsType", "partition", "readOnly"],
    ignored: &[],
};
/// `directory` came with v1; v1beta1 output of such a volume carries it
/// too, and reads back.
pub(super) static GIT_REPO: Shape = Shape {
    what: "`gitRepo`",
    fields: &["repository", "revision", "directory"],
    ignored: &[],
};
pub(super) static VOLUME_MOUNT: Shape = Shape {
    what: "a volume mount",
    // `path` and `mountType` are v1beta1's older spellings.
    fields: &["name", "mountPath", "readOnly", "path", "mountType"],
    ignored: &[],
};
static V1_VOLUME_MOUNT: Shape = Shape {
    what: "a v1 volume mount",
    fields: &["name", "mountPath", "readOnly", "subPath"],
    ignored: &["mountPropagation"],
};

/// The pod's volumes, each checked; `None` when any is wrong.
pub(super) fn volumes(cx: &mut FileContext<'_>, node: &Node, v1: bool) -> Option<Vec<Volume>> {
    let items = cx.sequence(node, "`volumes`")?;
    let mut names: HashMap<String, Span> = HashMap::new();
    each(items, |item| {
        let volume = if v1 {
            v1_volume(cx, item)
        } else {
            v1beta1_volume(cx, item)
        }?;
        let (name, span) = volume;
        if !claim(cx, &mut names, name.name.clone(), span, "volume name") {
            return None;
        }
        Some(name)
    })
}

fn volume_name(cx: &mut FileContext<'_>, fields: &Fields<'_>) -> Option<(String, Span)> {
    let node = cx.require(fields, "name")?;
    let name = cx.string(node, "volume `name`")?;
    if let Some(problem) = dns_label_problem(name, MAX_LABEL_LEN) {
        let error = cx
            .error(
                node.span,
                format!("invalid volume name `{name}`: it {problem}"),
                "invalid name",
            )
            .with_help(label_help(name, MAX_LABEL_LEN, false));
        cx.push(error);
        return None;
    }
    Some((name.to_string(), node.span))
}

fn v1beta1_volume(cx: &mut FileContext<'_>, node: &Node) -> Option<(Volume, Span)> {
    let fields = cx.fields(node, &VOLUME)?;
    let name = volume_name(cx, &fields);
    let source = match fields.get("source") {
        // v0.5's kubelet made a volume without a source an empty directory.
        None => {
            let warning = cx
                .warning(
                    fields.anchor,
                    "a volume without `source` is an empty directory, as v0.5 made it".to_string(),
                    "no `source`",
                )
                .with_help("write `\"source\": {\"emptyDir\": {}}`");
            cx.warn(warning);
            Some(VolumeSource::EmptyDir)
        }
        Some(source) => {
            let source_fields = cx.fields(source, &VOLUME_SOURCE)?;
            let given: Vec<(&str, &Entry)> = VOLUME_SOURCE
                .fields
                .iter()
                .filter_map(|name| source_fields.entry(name).map(|e| (*name, e)))
                .collect();
            one_source(cx, source_fields.anchor, &given, false)
        }
    };
    let (name, span) = name?;
    Some((
        Volume {
            name,
            source: source?,
        },
        span,
    ))
}

fn v1_volume(cx: &mut FileContext<'_>, node: &Node) -> Option<(Volume, Span)> {
    let fields = cx.fields(node, &V1_VOLUME)?;
    let name = volume_name(cx, &fields);
    let given: Vec<(&str, &Entry)> = V1_VOLUME.fields[1..]
        .iter()
        .filter_map(|name| fields.entry(name).map(|e| (*name, e)))
        .collect();
    let source = one_source(cx, fields.anchor, &given, true);
    let (name, span) = name?;
    Some((
        Volume {
            name,
            source: source?,
        },
        span,
    ))
}

/// Exactly one source, and one kctl can provide.
fn one_source(
    cx: &mut FileContext<'_>,
    anchor: Span,
    given: &[(&str, &Entry)],
    v1: bool,
) -> Option<VolumeSource> {
    let (kind, entry) = match given {
        [] => {
            let error = cx
                .error(anchor, "a volume needs a source".to_string(), "no source")
                .with_help(if v1 {
                    "add `emptyDir: {}` or `hostPath: {path: /srv/data}`"
                } else {
                    "add `\"source\": {\"emptyDir\": {}}` or `{\"hostDir\": {\"path\": \"/srv/data\"}}`"
                });
            cx.push(error);
            return None;
        }
        [one] => *one,
        [(first, _), (second, entry), ..] => {
            let error = cx
                .error(
                    entry.key_span,
                    "a volume takes only one source".to_string(),
                    "second source",
                )
                .with_help(format!("keep either `{first}` or `{second}`"));
            cx.push(error);
            return None;
        }
    };
    match kind {
        "emptyDir" => {
            let shape = if v1 { &V1_EMPTY_DIR } else { &EMPTY_DIR };
            let fields = cx.fields(&entry.value, shape)?;
            if let Some(medium) = v1.then(|| fields.get("medium")).flatten() {
                let medium = cx.string(medium, "`medium`")?;
                if !medium.is_empty() {
                    let error = cx
                        .error(
                            fields.get("medium").map_or(anchor, |n| n.span),
                            format!("kctl keeps emptyDir volumes on the minion's disk; medium `{medium}` is not available"),
                            "not available",
                        )
                        .with_help("leave `medium` out");
                    cx.push(error);
                    return None;
                }
            }
            Some(VolumeSource::EmptyDir)
        }
        "hostDir" | "hostPath" => {
            let shape = if v1 { &V1_HOST_PATH } else { &HOST_DIR };
            let fields = cx.fields(&entry.value, shape)?;
            if let Some(kind) = v1.then(|| fields.get("type")).flatten() {
                let text = cx.string(kind, "`type`")?;
                if !matches!(text, "" | "DirectoryOrCreate" | "Directory") {
                    let error = cx
                        .error(
                            kind.span,
                            format!("kctl binds host directories; `type: {text}` is not one"),
                            "not a directory",
                        )
                        .with_help("use `DirectoryOrCreate` (or leave `type` out)");
                    cx.push(error);
                    return None;
                }
            }
            let node = cx.require(&fields, "path")?;
            host_path(cx, node).map(|path| VolumeSource::HostDir { path })
        }
        "persistentDisk" | "gcePersistentDisk" => persistent_disk(cx, entry),
        "gitRepo" => git_repo(cx, &entry.value),
        other => {
            let error = cx
                .error(
                    entry.key_span,
                    format!("kctl has no `{other}` volumes"),
                    "not available",
                )
                .with_help("kctl provides `emptyDir` and `hostPath` volumes");
            cx.push(error);
            None
        }
    }
}

/// A GCE persistent disk: its name as GCE takes it, a filesystem kctl
/// mounts, a partition number; refused at once on a cluster that cannot
/// attach one.
fn persistent_disk(cx: &mut FileContext<'_>, entry: &Entry) -> Option<VolumeSource> {
    if let Some(provider) = cx.options.disks_unavailable_on {
        let message = format!("a {provider} cluster cannot attach GCE persistent disks");
        let help = "run the pod on a cluster made with `kctl up --provider gce`, or keep its \
                    data in a `hostDir` (`hostPath`) of a minion";
        let error = cx
            .error(entry.key_span, message, "not attached")
            .with_help(help);
        cx.push(error);
        return None;
    }
    let fields = cx.fields(&entry.value, &PERSISTENT_DISK)?;
    let pd_name = (|| {
        let node = cx.require(&fields, "pdName")?;
        let name = cx.string(node, "`pdName`")?;
        match disk_name_problem(name) {
            None => Some(name.to_string()),
            Some(problem) => {
                let error = cx
                    .error(
                        node.span,
                        format!("disk name `{name}` {problem}"),
                        "not a GCE disk name",
                    )
                    .with_help("give the disk's name as `gcloud compute disks list` shows it");
                cx.push(error);
                None
            }
        }
    })();
    let fs_type = optional(fields.get("fsType"), |node| {
        let text = cx.string(node, "`fsType`")?;
        if text.is_empty() || DISK_FS_TYPES.contains(&text) {
            return Some(text.to_string());
        }
        let error = cx
            .error(
                node.span,
                format!("kctl does not mount `{text}` filesystems"),
                "unknown filesystem",
            )
            .with_help(format!("use one of {}", DISK_FS_TYPES.join(", ")));
        cx.push(error);
        None
    });
    // 0 (or none) is the whole disk, as v0.5 read it.
    let partition = optional(fields.get("partition"), |node| {
        cx.integer(node, "`partition`", 0, MAX_DISK_PARTITION.into())
            .and_then(|n| u32::try_from(n).ok())
    });
    let read_only = optional(fields.get("readOnly"), |node| match node.value {
        Value::Bool(b) => Some(b),
        _ => {
            cx.type_error(node, "`readOnly`", "true or false");
            None
        }
    });
    let fs_type = fs_type?
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| DEFAULT_DISK_FS_TYPE.to_string());
    Some(VolumeSource::GcePersistentDisk {
        pd_name: pd_name?,
        fs_type,
        partition: partition?.filter(|n| *n != 0),
        read_only: read_only?.unwrap_or(false),
    })
}

/// A repository to clone: each part checked as git will read it.
fn git_repo(cx: &mut FileContext<'_>, node: &Node) -> Option<VolumeSource> {
    let fields = cx.fields(node, &GIT_REPO)?;
    let mut checked = |name: &str, problem: fn(&str) -> Option<&'static str>, help: &str| {
        optional(fields.get(name), |node| {
            let text = cx.string(node, &format!("`{name}`"))?;
            match problem(text) {
                None => Some(text.to_string()),
                Some(problem) => {
                    let error = cx
                        .error(node.span, format!("gitRepo `{name}` {problem}"), "refused")
                        .with_help(help.to_string());
                    cx.push(error);
                    None
                }
            }
        })
    };
    let repository = checked(
        "repository",
        crate::model::git_repository_problem,
        "give the repository's address, e.g. `https://github.com/kubernetes/kubernetes.git`",
    );
    let revision = checked(
        "revision",
        crate::model::git_revision_problem,
        "give a commit, tag or branch, or leave `revision` out for the default branch",
    );
    let directory = checked(
        "directory",
        crate::model::git_directory_problem,
        "give a path inside the volume, `.` for the volume itself, or leave it out",
    );
    let repository = match repository? {
        Some(repository) => repository,
        None => {
            cx.require(&fields, "repository")?;
            return None;
        }
    };
    Some(VolumeSource::GitRepo {
        repository,
        revision: revision?,
        directory: directory?,
    })
}

/// A host directory: a bind-safe absolute path, and none that would hand
/// a pod the machine unless the cluster allows it.
fn host_path(cx: &mut FileContext<'_>, node: &Node) -> Option<String> {
    let path = cx.string(node, "host `path`")?;
    if let Some(problem) = mount_path_problem(path) {
        let error = cx
            .error(node.span, format!("host `path` {problem}"), "bad path")
            .with_help("give an absolute path such as `/srv/data`");
        cx.push(error);
        return None;
    }
    if let Some(sensitive) = sensitive_host_path(path).filter(|_| !cx.options.allow_host_dir) {
        let why =
            if path.trim_end_matches('/') == sensitive.trim_end_matches('/') || sensitive == "/" {
                format!("`{path}` would hand the pod the machine's `{sensitive}`")
            } else {
                format!("`{path}` would hand the pod `{sensitive}`")
            };
        let error = cx
            .error(
                node.span,
                format!("host directory refused: {why}"),
                "refused",
            )
            .with_help(
                "bind a directory of its own (e.g. `/srv/NAME`); a cluster made with \
                 `kctl up --allow-host-dir` allows any path",
            );
        cx.push(error);
        return None;
    }
    Some(path.to_string())
}

/// A container's mounts; the volume names are checked against the pod's
/// volumes once all are known (`check_mount_names`).
pub(super) fn volume_mounts(
    cx: &mut FileContext<'_>,
    node: &Node,
    scope: &mut PodScope,
    v1: bool,
) -> Option<Vec<VolumeMount>> {
    let items = cx.sequence(node, "`volumeMounts`")?;
    let mut paths: HashMap<String, Span> = HashMap::new();
    each(items, |item| {
        let fields = cx.fields(item, if v1 { &V1_VOLUME_MOUNT } else { &VOLUME_MOUNT })?;
        let name = cx.require(&fields, "name").and_then(|node| {
            let name = cx.string(node, "mount `name`")?;
            scope.mount_names.push((name.to_string(), node.span));
            Some(name.to_string())
        });
        let path_node = match (
            fields.get("mountPath"),
            (!v1).then(|| fields.entry("path")).flatten(),
        ) {
            (None, Some(old)) => {
                let warning = cx
                    .warning(
                        old.key_span,
                        "`path` is the old spelling of a mount's `mountPath`".to_string(),
                        "read as `mountPath`",
                    )
                    .with_help("write `mountPath`");
                cx.warn(warning);
                Some(&old.value)
            }
            (Some(path), _) => Some(path),
            (None, None) => cx.require(&fields, "mountPath"),
        };
        if let Some(sub) = v1.then(|| fields.entry("subPath")).flatten() {
            let error = cx
                .error(
                    sub.key_span,
                    "kctl mounts whole volumes; `subPath` is not available".to_string(),
                    "not available",
                )
                .with_help("mount the volume and use the sub-directory's path inside it");
            cx.push(error);
            return None;
        }
        let mount_path = path_node.and_then(|node| {
            let path = cx.string(node, "`mountPath`")?;
            if let Some(problem) = mount_path_problem(path) {
                let error = cx
                    .error(node.span, format!("`mountPath` {problem}"), "bad path")
                    .with_help("give an absolute path inside the container, such as `/data`");
                cx.push(error);
                return None;
            }
            let normal = path.trim_end_matches('/').to_string();
            if !claim(cx, &mut paths, normal, node.span, "mount path") {
                return None;
            }
            Some(path.to_string())
        });
        let read_only = optional(fields.get("readOnly"), |node| match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                cx.type_error(node, "`readOnly`", "true or false");
                None
            }
        });
        Some(VolumeMount {
            name: name?,
            mount_path: mount_path?,
            read_only: read_only?.unwrap_or(false),
        })
    })
}

/// Every mount names a volume of the pod.
pub(super) fn check_mount_names(
    cx: &mut FileContext<'_>,
    scope: &PodScope,
    volumes: &[Volume],
) -> bool {
    let known: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    let mut ok = true;
    for (name, span) in &scope.mount_names {
        if known.contains(&name.as_str()) {
            continue;
        }
        ok = false;
        let help = match closest(name, &known) {
            Some(suggestion) => format!("did you mean `{suggestion}`?"),
            None if known.is_empty() => {
                "the pod declares no volumes; add one under `volumes` with this name".to_string()
            }
            None => format!("the pod's volumes are: {}", known.join(", ")),
        };
        let error = cx
            .error(
                *span,
                format!("no volume named `{name}` in this pod"),
                "unknown volume",
            )
            .with_help(help);
        cx.push(error);
    }
    ok
}
