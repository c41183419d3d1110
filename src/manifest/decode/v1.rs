//! Today's `apiVersion: v1` Pod, ReplicationController and Service onto
//! the same model as v1beta1: `metadata` and `spec` where v1beta1 had
//! `id`, `labels` and `desiredState`. The same checks apply; what v1 can
//! say and kctl cannot run (several ports on a service, headless
//! services) is refused with a reason.

use super::*;

pub(super) const API_VERSION: &str = "v1";
/// v1 port names are IANA service names.
const MAX_PORT_NAME_LEN: usize = 15;

macro_rules! v1_ignored {
    ($($extra:literal),*) => {
        &[$($extra,)* "status"]
    };
}

static POD: Shape = Shape {
    what: "a v1 Pod",
    fields: &["kind", "apiVersion", "metadata", "spec"],
    ignored: v1_ignored!(),
};
static METADATA: Shape = Shape {
    what: "`metadata`",
    fields: &["name", "labels"],
    ignored: &[
        "namespace",
        "uid",
        "annotations",
        "creationTimestamp",
        "deletionTimestamp",
        "resourceVersion",
        "selfLink",
        "generation",
        "managedFields",
    ],
};
static POD_SPEC: Shape = Shape {
    what: "a pod `spec`",
    fields: &["containers", "restartPolicy", "volumes", "securityContext"],
    ignored: &[
        "dnsPolicy",
        "nodeSelector",
        "terminationGracePeriodSeconds",
        "serviceAccountName",
        "schedulerName",
        "enableServiceLinks",
    ],
};
static CONTAINER: Shape = Shape {
    what: "a v1 container",
    fields: &[
        "name",
        "image",
        "command",
        "args",
        "workingDir",
        "ports",
        "env",
        "resources",
        "livenessProbe",
        "volumeMounts",
        "securityContext",
        "lifecycle",
        "imagePullPolicy",
    ],
    ignored: &[
        "readinessProbe",
        "startupProbe",
        "terminationMessagePath",
        "terminationMessagePolicy",
    ],
};
static RESOURCES: Shape = Shape {
    what: "`resources`",
    fields: &["limits"],
    ignored: &["requests"],
};
static LIMITS: Shape = Shape {
    what: "`limits`",
    fields: &["cpu", "memory"],
    ignored: &[],
};
static PROBE: Shape = Shape {
    what: "a v1 `livenessProbe`",
    fields: &[
        "httpGet",
        "tcpSocket",
        "exec",
        "initialDelaySeconds",
        "timeoutSeconds",
    ],
    ignored: &["periodSeconds", "successThreshold", "failureThreshold"],
};
static HTTP_GET: Shape = Shape {
    what: "v1 `httpGet`",
    fields: &["path", "port", "host"],
    ignored: &["scheme", "httpHeaders"],
};
static CONTROLLER: Shape = Shape {
    what: "a v1 ReplicationController",
    fields: &["kind", "apiVersion", "metadata", "spec"],
    ignored: v1_ignored!(),
};
static CONTROLLER_SPEC: Shape = Shape {
    what: "a ReplicationController's `spec`",
    fields: &["replicas", "selector", "template"],
    ignored: &["minReadySeconds"],
};
static TEMPLATE: Shape = Shape {
    what: "a pod `template`",
    fields: &["metadata", "spec"],
    ignored: &[],
};
static SERVICE: Shape = Shape {
    what: "a v1 Service",
    fields: &["kind", "apiVersion", "metadata", "spec"],
    ignored: v1_ignored!(),
};
static SERVICE_SPEC: Shape = Shape {
    what: "a Service's `spec`",
    fields: &["selector", "ports", "type", "clusterIP", "externalIPs"],
    ignored: &["sessionAffinity"],
};
static SERVICE_PORT: Shape = Shape {
    what: "a service port",
    fields: &["port", "targetPort", "protocol", "name", "nodePort"],
    ignored: &[],
};

/// One v1 object.
pub(super) fn object(cx: &mut FileContext<'_>, node: &Node, kind: Kind) -> Option<Decoded> {
    match kind {
        Kind::Pod => pod(cx, node),
        Kind::ReplicationController => controller(cx, node),
        Kind::Service => service(cx, node),
    }
}

/// `metadata`: the object's name (its id) and labels.
fn metadata(
    cx: &mut FileContext<'_>,
    fields: &Fields<'_>,
    kind: Kind,
) -> (Option<(String, Span)>, Option<Labels>) {
    let Some(meta) = cx
        .require(fields, "metadata")
        .and_then(|n| cx.fields(n, &METADATA))
    else {
        return (None, None);
    };
    let id = cx
        .require(&meta, "name")
        .and_then(|node| object_id(cx, node, kind));
    (id, labels_or_empty(cx, meta.get("labels"), "`labels`"))
}

fn pod(cx: &mut FileContext<'_>, node: &Node) -> Option<Decoded> {
    let fields = cx.fields(node, &POD)?;
    let (id, labels) = metadata(cx, &fields, Kind::Pod);
    let spec = cx.require(&fields, "spec").and_then(|n| pod_spec(cx, n));
    let (id, id_span) = id?;
    Some(Decoded {
        object: Object::Pod(Pod {
            id,
            labels: labels?,
            spec: spec?,
        }),
        id_span,
        portal_ip_span: None,
        node_port_span: None,
    })
}

fn pod_spec(cx: &mut FileContext<'_>, node: &Node) -> Option<PodSpec> {
    let fields = cx.fields(node, &POD_SPEC)?;
    let restart_policy = optional(fields.get("restartPolicy"), |node| {
        let text = cx.string(node, "`restartPolicy`")?;
        match text {
            "Always" => Some(RestartPolicy::Always),
            "OnFailure" => Some(RestartPolicy::OnFailure),
            "Never" => Some(RestartPolicy::Never),
            _ => {
                let error = cx
                    .error(
                        node.span,
                        format!("unknown restartPolicy `{text}`"),
                        "unknown policy",
                    )
                    .with_help(match closest(text, &["Always", "OnFailure", "Never"]) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "one of `Always`, `OnFailure`, `Never`".to_string(),
                    });
                cx.push(error);
                None
            }
        }
    });
    let volumes = optional(fields.get("volumes"), |node| {
        volumes::volumes(cx, node, true)
    })
    .map(Option::unwrap_or_default);
    let pod_security = optional(fields.get("securityContext"), |node| {
        security::v1_pod(cx, node).map(|(user, non_root)| (user, non_root.then_some(node.span)))
    });
    let (run_as_user, run_as_non_root) = pod_security.flatten().unwrap_or_default();
    let rules = PodRules {
        max_port_name: MAX_PORT_NAME_LEN,
        run_as_user,
        run_as_non_root,
    };
    let containers = cx
        .require(&fields, "containers")
        .and_then(|node| containers_with(cx, node, &rules, volumes.as_deref(), container));
    pod_security?;
    Some(PodSpec {
        containers: containers?,
        restart_policy: restart_policy?.unwrap_or_default(),
        volumes: volumes?,
    })
}

fn container(cx: &mut FileContext<'_>, node: &Node, scope: &mut PodScope) -> Option<Container> {
    let fields = cx.fields(node, &CONTAINER)?;
    let name = cx
        .require(&fields, "name")
        .and_then(|node| container_name(cx, node, scope));
    let image = cx
        .require(&fields, "image")
        .and_then(|node| image(cx, node));
    let command = optional(fields.get("command"), |node| cx.strings(node, "`command`"));
    // v1's `command` replaces the image's entrypoint; `args` are what
    // follows it (the image's own entrypoint when there is no `command`).
    let args = optional(fields.get("args"), |node| cx.strings(node, "`args`"));
    let working_dir = optional(fields.get("workingDir"), |node| {
        cx.string(node, "`workingDir`").map(str::to_string)
    });
    let ports = optional(fields.get("ports"), |node| {
        let items = cx.sequence(node, "`ports`")?;
        each(items, |item| port(cx, item, scope))
    });
    let env = optional(fields.get("env"), |node| {
        let items = cx.sequence(node, "`env`")?;
        each(items, |item| env_var(cx, item))
    });
    let limits = optional(fields.get("resources"), |node| {
        let resources = cx.fields(node, &RESOURCES)?;
        let Some(limits) = resources.get("limits") else {
            return Some((None, None));
        };
        let limits = cx.fields(limits, &LIMITS)?;
        let cpu = optional(limits.get("cpu"), |node| quantity(cx, node, Quantity::Cpu));
        let memory = optional(limits.get("memory"), |node| {
            quantity(cx, node, Quantity::Memory)
        });
        // parse_quantity bounds millicores to u32.
        Some((cpu?.map(|c| u32::try_from(c).unwrap_or(u32::MAX)), memory?))
    });
    let liveness_probe = optional(fields.get("livenessProbe"), |node| {
        probe_shaped(cx, node, scope, &PROBE, &HTTP_GET)
    });
    let volume_mounts = optional(fields.get("volumeMounts"), |node| {
        volumes::volume_mounts(cx, node, scope, true)
    });
    let hooks = optional(fields.get("lifecycle"), |node| {
        lifecycle::lifecycle(cx, node, scope)
    });
    let pull = optional(fields.get("imagePullPolicy"), |node| {
        pull_policy(cx, node, true)
    });
    let own = fields.get("securityContext");
    let security = optional(own, |node| security::v1_container(cx, node))
        .map(Option::unwrap_or_default)
        .and_then(|mut security| {
            // The pod's user and non-root rule hold unless the container says.
            let own_non_root = security.run_as_non_root;
            security.run_as_user = security.run_as_user.or(scope.pod_run_as_user);
            security.run_as_non_root |= scope.pod_run_as_non_root.is_some();
            let span = match (own_non_root, own, scope.pod_run_as_non_root) {
                (true, Some(node), _) => node.span,
                (_, _, Some(pod)) => pod,
                _ => node.span,
            };
            security::check_non_root(cx, span, &security).then_some(security)
        });
    let (cpu, memory) = limits?.unwrap_or((None, None));
    let (post_start, pre_stop) = hooks?.unwrap_or_default();
    Some(Container {
        name: name?,
        image: image?,
        entrypoint: command?.unwrap_or_default(),
        command: args?.unwrap_or_default(),
        working_dir: working_dir?,
        ports: ports?.unwrap_or_default(),
        env: env?.unwrap_or_default(),
        cpu,
        memory,
        liveness_probe: liveness_probe?,
        volume_mounts: volume_mounts?.unwrap_or_default(),
        security: security?,
        post_start,
        pre_stop,
        image_pull_policy: pull?,
    })
}

#[derive(Clone, Copy)]
enum Quantity {
    /// In thousandths of a core: `500m`, `0.5`, `2`.
    Cpu,
    /// In bytes: `64Mi`, `1G`, `1000`.
    Memory,
}

/// A Kubernetes quantity, as kctl's model counts it.
fn quantity(cx: &mut FileContext<'_>, node: &Node, kind: Quantity) -> Option<u64> {
    let text = match &node.value {
        Value::String(s) => s.clone(),
        Value::Integer(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        _ => {
            cx.string(node, "a quantity")?;
            return None;
        }
    };
    match parse_quantity(&text, kind) {
        Some(n) => Some(n),
        None => {
            let help = match kind {
                Quantity::Cpu => "write cores (`1`, `0.5`) or thousandths (`500m`)",
                Quantity::Memory => "write bytes with a suffix: `64Mi`, `1Gi`, `500M`",
            };
            let error = cx
                .error(
                    node.span,
                    format!("`{text}` is not a quantity kctl reads"),
                    "bad quantity",
                )
                .with_help(help);
            cx.push(error);
            None
        }
    }
}

fn parse_quantity(text: &str, kind: Quantity) -> Option<u64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale: f64 = match (kind, suffix) {
        (Quantity::Cpu, "") => 1000.0,
        (Quantity::Cpu, "m") => 1.0,
        (Quantity::Memory, "") => 1.0,
        (Quantity::Memory, "k") => 1e3,
        (Quantity::Memory, "M") => 1e6,
        (Quantity::Memory, "G") => 1e9,
        (Quantity::Memory, "T") => 1e12,
        (Quantity::Memory, "Ki") => 1024.0,
        (Quantity::Memory, "Mi") => 1024.0 * 1024.0,
        (Quantity::Memory, "Gi") => 1024.0 * 1024.0 * 1024.0,
        (Quantity::Memory, "Ti") => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let n = (value * scale).round();
    let most = match kind {
        Quantity::Cpu => f64::from(u32::MAX),
        Quantity::Memory => f64::from(u32::MAX) * 1e6,
    };
    (n.is_finite() && n >= 0.0 && n <= most).then_some(n as u64)
}

fn controller(cx: &mut FileContext<'_>, node: &Node) -> Option<Decoded> {
    let fields = cx.fields(node, &CONTROLLER)?;
    let (id, labels) = metadata(cx, &fields, Kind::ReplicationController);
    let spec = cx
        .require(&fields, "spec")
        .and_then(|n| cx.fields(n, &CONTROLLER_SPEC))?;
    // v1 counts 1 replica when none is given.
    let replicas = optional(spec.get("replicas"), |node| {
        cx.integer(node, "`replicas`", 0, u32::MAX.into())
            .and_then(|n| u32::try_from(n).ok())
    });
    let template = cx.require(&spec, "template").and_then(|node| {
        let fields = cx.fields(node, &TEMPLATE)?;
        let labels = match fields.get("metadata") {
            Some(meta) => {
                let meta = cx.fields(meta, &METADATA)?;
                labels_or_empty(cx, meta.get("labels"), "`labels`")
            }
            None => Some(Labels::new()),
        };
        let spec = cx.require(&fields, "spec").and_then(|n| pod_spec(cx, n));
        Some((labels, spec))
    });
    // v1 selects the template's labels when no selector is given.
    let selector = optional(spec.get("selector"), |node| {
        selector(cx, node, "`selector`")
    });
    let template_labels = template.as_ref().and_then(|(l, _)| l.as_ref());
    if let (Some(Some((selector, selector_node))), Some(labels)) = (&selector, template_labels) {
        if !selector_matches(selector, labels) {
            report_selector_mismatch(cx, selector, selector_node, labels);
            return None;
        }
    }
    let (template_labels, template_spec) = template?;
    let template_labels = template_labels?;
    let selector = match selector? {
        Some((selector, _)) => selector,
        None if !template_labels.is_empty() => template_labels.clone(),
        None => {
            let error = cx
                .error(
                    fields.anchor,
                    "a ReplicationController needs a selector".to_string(),
                    "no selector",
                )
                .with_help(
                    "label the pod template (`template.metadata.labels`) or give `spec.selector`",
                );
            cx.push(error);
            return None;
        }
    };
    let (id, id_span) = id?;
    Some(Decoded {
        object: Object::ReplicationController(ReplicationController {
            id,
            labels: labels?,
            replicas: replicas?.unwrap_or(1),
            selector,
            template: PodTemplate {
                labels: template_labels,
                spec: template_spec?,
            },
        }),
        id_span,
        portal_ip_span: None,
        node_port_span: None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

fn service(cx: &mut FileContext<'_>, node: &Node) -> Option<Decoded> {
    let fields = cx.fields(node, &SERVICE)?;
    let (id, labels) = metadata(cx, &fields, Kind::Service);
    let spec = cx
        .require(&fields, "spec")
        .and_then(|n| cx.fields(n, &SERVICE_SPEC))?;
    let selector = cx
        .require(&spec, "selector")
        .and_then(|node| selector(cx, node, "`selector`"));
    let service_type = optional(spec.get("type"), |node| {
        let text = cx.string(node, "`type`")?;
        match text {
            "ClusterIP" => return Some(ServiceType::ClusterIp),
            // What createExternalLoadBalancer was: the minions' addresses.
            "LoadBalancer" => return Some(ServiceType::LoadBalancer),
            "NodePort" => return Some(ServiceType::NodePort),
            _ => {}
        }
        let error = cx
            .error(node.span, format!("service type `{text}` is not one kctl makes"), "unsupported type")
            .with_help("kctl makes `ClusterIP`, `NodePort` and `LoadBalancer` services; reach one from this machine with `kctl port-forward service/NAME`");
        cx.push(error);
        None
    });
    let mut node_port_span = None;
    let port = cx.require(&spec, "ports").and_then(|node| {
        let items = cx.sequence(node, "`ports`")?;
        match items {
            [one] => {
                let fields = cx.fields(one, &SERVICE_PORT)?;
                let port = cx
                    .require(&fields, "port")
                    .and_then(|node| port_number(cx, node, "`port`"));
                let target = optional(fields.get("targetPort"), |node| {
                    port_ref(cx, node, "`targetPort`").map(|(p, _)| p)
                });
                let protocol = optional(fields.get("protocol"), |node| protocol(cx, node));
                node_port_span = fields.get("nodePort").map(|node| node.span);
                let node_port = optional(fields.get("nodePort"), |node| {
                    super::node_port_number(cx, node)
                });
                Some((port?, target?, protocol?.unwrap_or_default(), node_port?))
            }
            _ => {
                let error = cx
                    .error(node.span, format!("a service with {} ports", items.len()), "not one port")
                    .with_help("kctl's services have one port each, as in v1beta1: make one Service per port");
                cx.push(error);
                None
            }
        }
    });
    let cluster_ip = optional(spec.get("clusterIP"), |node| {
        portal_ip(cx, node, "`clusterIP`")
    });
    let external_ips = optional(spec.get("externalIPs"), |node| {
        addresses(cx, node, "`externalIPs`")
    });
    let service_type = service_type?.unwrap_or(ServiceType::ClusterIp);
    let external = service_type == ServiceType::LoadBalancer;
    let (port, container_port, protocol, asked_node_port) = port?;
    let node_port = match (service_type, asked_node_port) {
        (_, Some(p)) if service_type != ServiceType::ClusterIp => Some(NodePort::Port(p)),
        (ServiceType::NodePort, None) => Some(NodePort::Any),
        (_, None) => None,
        (_, Some(_)) => {
            // As Kubernetes: a node port belongs to NodePort and
            // LoadBalancer services.
            let error = cx
                .error(
                    node_port_span.unwrap_or(node.span),
                    "a ClusterIP service has no node port".to_string(),
                    "needs `type: NodePort`",
                )
                .with_help("add `type: NodePort` to the service's spec, or leave `nodePort` out");
            cx.push(error);
            return None;
        }
    };
    let public_ips = external_ips?.unwrap_or_default();
    let at = spec
        .get("type")
        .filter(|_| external)
        .or(spec.get("externalIPs"));
    if !published(cx, Some(port), external, &public_ips, at) {
        return None;
    }
    let (id, id_span) = id?;
    Some(Decoded {
        object: Object::Service(Service {
            id,
            labels: labels?,
            selector: selector?.0,
            port,
            container_port,
            protocol,
            portal_ip: cluster_ip?.flatten(),
            external,
            public_ips,
            node_port,
        }),
        id_span,
        portal_ip_span: spec.get("clusterIP").map(|node| node.span),
        node_port_span,
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_quantity, Quantity};

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(parse_quantity("500m", Quantity::Cpu), Some(500));
        assert_eq!(parse_quantity("0.5", Quantity::Cpu), Some(500));
        assert_eq!(parse_quantity("2", Quantity::Cpu), Some(2000));
        assert_eq!(parse_quantity("64Mi", Quantity::Memory), Some(64 << 20));
        assert_eq!(parse_quantity("1G", Quantity::Memory), Some(1_000_000_000));
        assert_eq!(parse_quantity("1000", Quantity::Memory), Some(1000));
        // Millicores fit in 32 bits or are refused, never cut short.
        assert_eq!(
            parse_quantity("4000000", Quantity::Cpu),
            Some(4_000_000_000)
        );
        assert_eq!(parse_quantity("5000000", Quantity::Cpu), None);
        assert_eq!(parse_quantity("1Mi", Quantity::Cpu), None);
        assert_eq!(parse_quantity("lots", Quantity::Memory), None);
    }
}
