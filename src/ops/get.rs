//! `kctl get`: tables or v1beta1 lists of what the cluster holds.

use super::Cluster;
use crate::model::Labels;
use crate::output::{self, MinionView};
use crate::selector::Selector;
use crate::state::ClusterState;
use crate::ui::Ui;
use miette::miette;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Pods,
    Controllers,
    Services,
    Endpoints,
    Minions,
    Events,
}

impl Resource {
    /// Accepts the names kubecfg and kubectl used, singular or plural.
    pub fn parse(word: &str) -> Option<Resource> {
        Some(match word.to_ascii_lowercase().as_str() {
            "pods" | "pod" | "po" => Resource::Pods,
            "replicationcontrollers" | "replicationcontroller" | "rc" | "rcs" => {
                Resource::Controllers
            }
            "services" | "service" | "svc" => Resource::Services,
            "endpoints" | "endpoint" | "ep" => Resource::Endpoints,
            "minions" | "minion" | "nodes" | "node" | "no" => Resource::Minions,
            "events" | "event" | "ev" => Resource::Events,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    /// The table with more columns.
    Wide,
    Json,
    Yaml,
    /// `kind/id` per line, as kubectl's `-o name`, for scripts.
    Name,
}

/// The shape objects are printed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputVersion {
    /// Kubernetes v0.5's, which kctl reads and writes.
    #[default]
    V1beta1,
    /// Today's `metadata` and `spec`, which kctl reads too.
    V1,
}

/// What `kctl get` was asked to show.
pub struct Query<'a> {
    pub output_version: OutputVersion,
    pub resource: Resource,
    pub id: Option<&'a str>,
    pub selector: Option<&'a Selector>,
    pub format: Format,
    pub headers: bool,
    /// Keep printing what changes (`-w`).
    pub watch: bool,
}

/// The objects a query selects from `state`: each as a table row (keyed
/// by id, with the table's header) and as its v1beta1 JSON. Pure.
pub struct View {
    pub header: String,
    pub rows: Vec<(String, String)>,
    pub objects: Vec<(String, serde_json::Value)>,
    pub list_kind: &'static str,
    pub api_version: &'static str,
}

fn table_rows(table: &str) -> (String, Vec<String>) {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default().to_string();
    (header, lines.map(str::to_string).collect())
}

pub fn view(state: &ClusterState, q: &Query) -> View {
    let keep = |obj_id: &str, labels: &Labels| {
        q.id.is_none_or(|want| want == obj_id) && q.selector.is_none_or(|s| s.matches(labels))
    };
    let wide = q.format == Format::Wide;
    let v1 = q.output_version == OutputVersion::V1;
    let (table, objects, list_kind): (String, Vec<(String, serde_json::Value)>, _) =
        match q.resource {
            Resource::Pods => {
                let pods: Vec<_> = state
                    .pods
                    .values()
                    .filter(|p| keep(&p.pod.id, &p.pod.labels))
                    .collect();
                (
                    output::pods_table(state, &pods, wide),
                    pods.iter()
                        .map(|p| {
                            (
                                p.pod.id.clone(),
                                if v1 {
                                    output::v1::pod(state, p)
                                } else {
                                    output::pod_json(state, p)
                                },
                            )
                        })
                        .collect(),
                    "PodList",
                )
            }
            Resource::Controllers => {
                let rcs: Vec<_> = state
                    .controllers
                    .values()
                    .filter(|r| keep(&r.id, &r.labels))
                    .collect();
                (
                    output::controllers_table(state, &rcs, wide),
                    rcs.iter()
                        .map(|r| {
                            (
                                r.id.clone(),
                                if v1 {
                                    output::v1::controller(state, r)
                                } else {
                                    output::controller_json(state, r)
                                },
                            )
                        })
                        .collect(),
                    "ReplicationControllerList",
                )
            }
            Resource::Services => {
                let svcs: Vec<_> = state
                    .services
                    .values()
                    .filter(|r| keep(&r.service.id, &r.service.labels))
                    .collect();
                (
                    output::services_table(state, &svcs, wide),
                    svcs.iter()
                        .map(|r| {
                            (
                                r.service.id.clone(),
                                if v1 {
                                    output::v1::service_in(state, r)
                                } else {
                                    output::service_json(state, r)
                                },
                            )
                        })
                        .collect(),
                    "ServiceList",
                )
            }
            Resource::Endpoints => {
                let svcs: Vec<_> = state
                    .services
                    .values()
                    .filter(|r| keep(&r.service.id, &r.service.labels))
                    .collect();
                (
                    output::endpoints_table(state, &svcs),
                    svcs.iter()
                        .map(|r| (r.service.id.clone(), output::endpoints_json(state, r)))
                        .collect(),
                    "EndpointsList",
                )
            }
            Resource::Minions | Resource::Events => {
                let none = Labels::new();
                let views: Vec<MinionView> = state
                    .minions
                    .values()
                    .filter(|m| keep(&m.id, &none))
                    .map(|m| MinionView::of(state, m))
                    .collect();
                (
                    output::minions_table(&views, output::unix_now(), wide),
                    views
                        .iter()
                        .map(|m| (m.record.id.clone(), output::minion_json(m)))
                        .collect(),
                    "MinionList",
                )
            }
        };
    let (header, rows) = table_rows(&table);
    let rows = objects.iter().map(|(id, _)| id.clone()).zip(rows).collect();
    View {
        header,
        rows,
        objects,
        list_kind,
        api_version: if v1 { "v1" } else { "v1beta1" },
    }
}

fn plural(resource: Resource) -> &'static str {
    match resource {
        Resource::Pods => "pods",
        Resource::Controllers => "rc",
        Resource::Services => "services",
        Resource::Endpoints => "endpoints",
        Resource::Minions => "minions",
        Resource::Events => "events",
    }
}

fn name_kind(resource: Resource) -> &'static str {
    match resource {
        Resource::Pods => "pod",
        Resource::Controllers => "replicationcontroller",
        Resource::Services => "service",
        Resource::Endpoints => "endpoints",
        Resource::Minions => "minion",
        Resource::Events => "event",
    }
}

pub async fn get(ui: &Ui, name: &str, q: &Query<'_>) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let mut store = cluster.store().await?;
    if q.resource == Resource::Events {
        return events(ui, &mut store, q.format, q.headers).await;
    }
    // Watching starts before the first read, so no change falls between.
    let changes = match q.watch {
        true => Some(store.watch_everything().await?),
        false => None,
    };
    let state = store.snapshot().await?.state;
    super::warn_rejected(ui, &store);
    let first = view(&state, q);
    if let Some(want) = q.id {
        if first.objects.is_empty() && changes.is_none() {
            return Err(miette!(
                help = format!("`kctl get {}` lists what there is", plural(q.resource)),
                "{} {want:?} not found",
                name_kind(q.resource)
            ));
        }
    }
    print_view(ui, q, &first, None)?;
    let Some(changes) = changes else {
        return Ok(());
    };
    // `-w`: each object again whenever what is shown of it changes, until
    // Ctrl-C; one that goes away is shown once more, marked deleted.
    let mut shown = first;
    let mut changes = changes;
    loop {
        tokio::select! {
            _ = changes.changed() => {}
            // A watch whose member went away wakes nobody: look again.
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {
                if !changes.ended() {
                    continue;
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        if changes.ended() {
            // Its etcd member went away: watch again through another.
            changes = store.watch_everything().await.map_err(|e| {
                miette!(
                    help = "run the command again",
                    "the watch on etcd ended: {e}"
                )
            })?;
        }
        let state = store.snapshot().await?.state;
        super::warn_rejected(ui, &store);
        let next = view(&state, q);
        print_view(ui, q, &next, Some(&shown))?;
        shown = next;
    }
}

/// Prints `view`; with `before`, only what changed since it (`-w`).
fn print_view(ui: &Ui, q: &Query, view: &View, before: Option<&View>) -> miette::Result<()> {
    let changed = |id: &str, now: &dyn Fn(&View) -> Option<String>| match before {
        None => true,
        Some(b) => now(b) != now(view) || !b.objects.iter().any(|(i, _)| i == id),
    };
    let row_of = |v: &View, id: &str| v.rows.iter().find(|(i, _)| i == id).map(|(_, r)| r.clone());
    let gone: Vec<&(String, String)> = before
        .map(|b| {
            b.rows
                .iter()
                .filter(|(id, _)| !view.rows.iter().any(|(i, _)| i == id))
                .collect()
        })
        .unwrap_or_default();
    match q.format {
        Format::Table | Format::Wide => {
            let mut lines = Vec::new();
            if before.is_none() && q.headers {
                lines.push(view.header.clone());
            }
            for (id, row) in &view.rows {
                if changed(id, &|v| row_of(v, id)) {
                    lines.push(row.clone());
                }
            }
            for (_, row) in gone {
                lines.push(format!("{row}   (deleted)"));
            }
            if !lines.is_empty() {
                ui.out(lines.join("\n"));
            }
        }
        Format::Name => {
            let kind = name_kind(q.resource);
            let mut lines: Vec<String> = view
                .rows
                .iter()
                .filter(|(id, _)| changed(id, &|v| row_of(v, id)))
                .map(|(id, _)| format!("{kind}/{id}"))
                .collect();
            lines.extend(gone.iter().map(|(id, _)| format!("{kind}/{id} (deleted)")));
            if !lines.is_empty() {
                ui.out(lines.join("\n"));
            }
        }
        Format::Json | Format::Yaml => {
            let json_of = |v: &View, id: &str| {
                v.objects
                    .iter()
                    .find(|(i, _)| i == id)
                    .map(|(_, o)| o.to_string())
            };
            let shown: Vec<serde_json::Value> = match before {
                // One object asked for by id is printed as itself, not in
                // a list, so what `get ID -o yaml` prints applies again.
                None if q.id.is_some() && !q.watch => {
                    view.objects.iter().map(|(_, o)| o.clone()).collect()
                }
                None if !q.watch => {
                    let items = view.objects.iter().map(|(_, o)| o.clone()).collect();
                    let list = if view.api_version == "v1" {
                        output::v1::list(view.list_kind, items)
                    } else {
                        output::list(view.list_kind, items)
                    };
                    vec![list]
                }
                _ => {
                    let now = crate::events::now_ms();
                    let gone = before.into_iter().flat_map(|b| {
                        b.objects
                            .iter()
                            .filter(|(id, _)| !view.objects.iter().any(|(i, _)| i == id))
                            .map(move |(_, o)| output::deleted(o, now))
                    });
                    view.objects
                        .iter()
                        .filter(|(id, _)| changed(id, &|v| json_of(v, id)))
                        .map(|(_, o)| o.clone())
                        .chain(gone)
                        .collect()
                }
            };
            for value in shown {
                match q.format {
                    Format::Json => {
                        ui.out(serde_json::to_string_pretty(&value).unwrap_or_default())
                    }
                    _ => {
                        let text = serde_yaml_ng::to_string(&value).map_err(super::report)?;
                        // Documents, so a watch's output parses as a stream.
                        ui.out(if q.watch {
                            format!("---\n{text}")
                        } else {
                            text
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// `kctl get events`: what happened in the cluster lately, oldest first.
async fn events(
    ui: &Ui,
    store: &mut crate::store::Store,
    format: Format,
    headers: bool,
) -> miette::Result<()> {
    let events = store.events(None, None).await?;
    let now = crate::events::now_ms();
    let items: Vec<serde_json::Value> = events.iter().map(output::event_json).collect();
    match format {
        Format::Table | Format::Wide => {
            let table = output::describe::events_table(&events, now);
            let text = if headers {
                table.as_str()
            } else {
                table.split_once('\n').map_or("", |(_, rows)| rows)
            };
            if !text.is_empty() {
                ui.out(text.trim_end());
            }
        }
        Format::Name => {
            let names: Vec<String> = events
                .iter()
                .map(|e| format!("{}/{}", e.subject.name(), e.id))
                .collect();
            if !names.is_empty() {
                ui.out(names.join("\n"));
            }
        }
        Format::Json => ui.out(
            serde_json::to_string_pretty(&output::list("EventList", items)).unwrap_or_default(),
        ),
        Format::Yaml => ui.out(
            serde_yaml_ng::to_string(&output::list("EventList", items)).map_err(super::report)?,
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        assert_eq!(Resource::parse("po"), Some(Resource::Pods));
        assert_eq!(
            Resource::parse("replicationControllers"),
            Some(Resource::Controllers)
        );
        assert_eq!(Resource::parse("svc"), Some(Resource::Services));
        assert_eq!(Resource::parse("ep"), Some(Resource::Endpoints));
        assert_eq!(Resource::parse("minions"), Some(Resource::Minions));
        assert_eq!(Resource::parse("deployments"), None);
    }
}
