//! `kctl describe`: one object, everything known about it, and its
//! recent events.

use super::get::Resource;
use super::Cluster;
use crate::events::{now_ms, Subject};
use crate::output::describe;
use crate::ui::Ui;
use miette::miette;

pub async fn describe(ui: &Ui, name: &str, resource: Resource, id: &str) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let mut store = cluster.store().await?;
    let state = store.snapshot().await?.state;
    super::warn_rejected(ui, &store);
    let subject = match resource {
        Resource::Pods => Subject::Pod,
        Resource::Controllers => Subject::ReplicationController,
        Resource::Services | Resource::Endpoints => Subject::Service,
        Resource::Minions => Subject::Minion,
        Resource::Events => {
            return Err(super::usage_error(
                "events are not described",
                "kctl get events, or kctl describe pod|rc|service|minion ID",
            ))
        }
    };
    let events = store.events(Some(subject), Some(id)).await?;
    let now = now_ms();
    let text = match subject {
        Subject::Pod => state
            .pods
            .get(id)
            .map(|p| describe::describe_pod(&state, p, &events, now)),
        Subject::ReplicationController => state
            .controllers
            .get(id)
            .map(|rc| describe::describe_controller(&state, rc, &events, now)),
        Subject::Service => state
            .services
            .get(id)
            .map(|s| describe::describe_service(&state, s, &events, now)),
        Subject::Minion => describe::describe_minion(&state, id, &events, now),
    };
    match text {
        Some(text) => {
            ui.out(text.trim_end());
            Ok(())
        }
        None => Err(miette!(
            help = format!("`kctl get {}` lists them", resource_word(subject)),
            "{} {id:?} not found in cluster {}",
            subject.name(),
            cluster.config.name
        )),
    }
}

fn resource_word(subject: Subject) -> &'static str {
    match subject {
        Subject::Pod => "pods",
        Subject::ReplicationController => "rc",
        Subject::Service => "services",
        Subject::Minion => "minions",
    }
}
