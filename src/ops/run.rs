//! `kctl run`: a replication controller (and optionally a service) from a
//! few flags, as kubecfg's `run` made one in 2014. The flags become a
//! v1beta1 manifest, which goes through the same validation as any file
//! and is then applied; `-o json|yaml` prints it instead, to start a file
//! from.

use crate::manifest::{self, Source};
use serde_json::{json, Value};

/// What `kctl run` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    pub name: String,
    pub image: String,
    pub replicas: u32,
    /// `-p HOSTPORT:CONTAINERPORT` (or `-p CONTAINERPORT`).
    pub ports: Vec<(Option<u16>, u16)>,
    /// `--service PORT`: a service of that port in front of the pods.
    pub service_port: Option<u16>,
}

/// `-p` as kubecfg took it: `8080:80` (host 8080 to container 80) or `80`.
pub fn parse_port(text: &str) -> Option<(Option<u16>, u16)> {
    let port = |s: &str| s.parse::<u16>().ok().filter(|p| *p != 0);
    match text.split_once(':') {
        Some((host, container)) => Some((Some(port(host)?), port(container)?)),
        None => Some((None, port(text)?)),
    }
}

/// The manifest `kctl run` applies: a List of the controller and, with
/// `--service`, the service. Pure.
pub fn manifest(spec: &RunSpec) -> Value {
    let labels = json!({"name": spec.name});
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .map(|(host, container)| match host {
            Some(host) => json!({"containerPort": container, "hostPort": host}),
            None => json!({"containerPort": container}),
        })
        .collect();
    let mut container = json!({"name": spec.name, "image": spec.image});
    if !ports.is_empty() {
        container["ports"] = Value::Array(ports);
    }
    let controller = json!({
        "kind": "ReplicationController", "apiVersion": "v1beta1", "id": spec.name,
        "labels": labels,
        "desiredState": {
            "replicas": spec.replicas,
            "replicaSelector": labels,
            "podTemplate": {
                "labels": labels,
                "desiredState": {"manifest": {
                    "version": "v1beta1", "id": spec.name, "containers": [container]
                }}
            }
        }
    });
    let mut items = vec![controller];
    if let Some(port) = spec.service_port {
        let mut service = json!({
            "kind": "Service", "apiVersion": "v1beta1", "id": spec.name,
            "labels": labels, "selector": labels, "port": port
        });
        if let Some((_, container_port)) = spec.ports.first() {
            service["containerPort"] = json!(container_port);
        }
        items.push(service);
    }
    json!({"kind": "List", "apiVersion": "v1beta1", "items": items})
}

/// The manifest as text and its validated objects.
pub fn load(spec: &RunSpec) -> miette::Result<(Value, manifest::Loaded)> {
    let value = manifest(spec);
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    // What kctl writes itself has nothing to warn of.
    let strict = manifest::LoadOptions {
        strict: true,
        kind: None,
        allow_host_dir: false,
        allow_privileged: false,
        disks_unavailable_on: None,
    };
    let loaded = manifest::parse_sources(
        &[Source {
            name: "<kctl run>".into(),
            text,
        }],
        strict,
    )?;
    Ok((value, loaded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Object;

    fn spec() -> RunSpec {
        RunSpec {
            name: "nginx".into(),
            image: "nginx:1.25".into(),
            replicas: 2,
            ports: vec![(Some(8080), 80)],
            service_port: Some(80),
        }
    }

    #[test]
    fn flags_make_a_controller_and_a_service_that_validate() {
        let (_, loaded) = load(&spec()).unwrap();
        let [Object::ReplicationController(rc), Object::Service(svc)] = loaded.objects.as_slice()
        else {
            panic!("{:?}", loaded.objects)
        };
        assert_eq!((rc.id.as_str(), rc.replicas), ("nginx", 2));
        assert_eq!(rc.selector, rc.template.labels);
        let container = &rc.template.spec.containers[0];
        assert_eq!(container.image, "nginx:1.25");
        assert_eq!(
            (
                container.ports[0].host_port,
                container.ports[0].container_port
            ),
            (Some(8080), 80)
        );
        assert_eq!(svc.port, 80);
        assert_eq!(svc.selector, rc.template.labels);
    }

    #[test]
    fn bad_flags_are_refused_by_validation() {
        let bad = RunSpec {
            name: "Not_A_Name".into(),
            ..spec()
        };
        let err = load(&bad).unwrap_err();
        assert!(format!("{err:?}").contains("Not_A_Name"), "{err:?}");
        assert_eq!(parse_port("8080:80"), Some((Some(8080), 80)));
        assert_eq!(parse_port("80"), Some((None, 80)));
        for bad in ["", "0", "x:80", "80:", "1:2:3", "70000"] {
            assert_eq!(parse_port(bad), None, "{bad}");
        }
    }
}
