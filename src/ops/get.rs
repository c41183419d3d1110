//! `kctl get`: tables or v1beta1 lists of what the cluster holds.

use super::Cluster;
use crate::model::Labels;
use crate::output::{self, MinionView};
use crate::selector::Selector;
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
    Json,
    Yaml,
    /// `kind/id` per line, as kubectl's `-o name`, for scripts.
    Name,
}

pub async fn get(
    ui: &Ui,
    name: &str,
    resource: Resource,
    id: Option<&str>,
    format: Format,
    selector: Option<&Selector>,
    headers: bool,
) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let mut store = cluster.store().await?;
    if resource == Resource::Events {
        return events(ui, &mut store, format, headers).await;
    }
    let state = store.snapshot().await?.state;
    let keep = |obj_id: &str, labels: &Labels| {
        id.is_none_or(|want| want == obj_id) && selector.is_none_or(|s| s.matches(labels))
    };
    let (table, list) = match resource {
        Resource::Pods => {
            let pods: Vec<_> = state
                .pods
                .values()
                .filter(|p| keep(&p.pod.id, &p.pod.labels))
                .collect();
            let items = pods.iter().map(|p| output::pod_json(&state, p)).collect();
            (
                output::pods_table(&state, &pods),
                output::list("PodList", items),
            )
        }
        Resource::Controllers => {
            let rcs: Vec<_> = state
                .controllers
                .values()
                .filter(|r| keep(&r.id, &r.labels))
                .collect();
            let items = rcs
                .iter()
                .map(|r| output::controller_json(&state, r))
                .collect();
            (
                output::controllers_table(&state, &rcs),
                output::list("ReplicationControllerList", items),
            )
        }
        Resource::Services | Resource::Endpoints => {
            let svcs: Vec<_> = state
                .services
                .values()
                .filter(|r| keep(&r.service.id, &r.service.labels))
                .collect();
            if resource == Resource::Services {
                let items = svcs
                    .iter()
                    .map(|r| output::service_json(&state, r))
                    .collect();
                (
                    output::services_table(&state, &svcs),
                    output::list("ServiceList", items),
                )
            } else {
                let items = svcs
                    .iter()
                    .map(|r| output::endpoints_json(&state, r))
                    .collect();
                (
                    output::endpoints_table(&state, &svcs),
                    output::list("EndpointsList", items),
                )
            }
        }
        Resource::Events => unreachable!("answered above"),
        Resource::Minions => {
            let none = Labels::new();
            let views: Vec<MinionView> = state
                .minions
                .values()
                .filter(|m| keep(&m.id, &none))
                .map(|m| MinionView {
                    record: m,
                    // Ready while its helper's heartbeat lease lives and
                    // says the minion can run pods.
                    ready: state.ready(&m.id),
                    reason: state.not_ready.get(&m.id).cloned(),
                    last_seen: state.last_seen.get(&m.id).copied(),
                })
                .collect();
            let items = views.iter().map(output::minion_json).collect();
            (
                output::minions_table(&views, output::unix_now()),
                output::list("MinionList", items),
            )
        }
    };
    if let Some(want) = id {
        if list["items"].as_array().is_some_and(|a| a.is_empty()) {
            return Err(miette!("{want} not found"));
        }
    }
    // One object asked for by id is printed as itself, not in a list, so
    // what `get ID -o yaml` prints can be applied again.
    let shown = match id {
        Some(_) => list["items"][0].clone(),
        None => list.clone(),
    };
    match format {
        Format::Table if headers => ui.out(table),
        // The header is the first line of every table.
        Format::Table => {
            let rows = table.split_once('\n').map_or("", |(_, rows)| rows);
            if !rows.is_empty() {
                ui.out(rows);
            }
        }
        Format::Name => {
            let kind = match resource {
                Resource::Pods => "pod",
                Resource::Controllers => "replicationcontroller",
                Resource::Services => "service",
                Resource::Endpoints => "endpoints",
                Resource::Minions => "minion",
                Resource::Events => "event",
            };
            let names: Vec<String> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item["id"].as_str())
                .map(|id| format!("{kind}/{id}\n"))
                .collect();
            if !names.is_empty() {
                ui.out(names.concat().trim_end());
            }
        }
        Format::Json => ui.out(serde_json::to_string_pretty(&shown).unwrap_or_default()),
        Format::Yaml => ui.out(serde_yaml_ng::to_string(&shown).map_err(super::report)?),
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
        Format::Table => {
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
