//! v1beta1 objects, as Kubernetes v0.5 wrote them, into the validated model.
//!
//! Choices where v1beta1 left room:
//! - A missing `replicas` is 0, as v0.5 read it (update-demo's controllers
//!   leave it to `rollingupdate`), with a warning: it is rarely meant.
//! - A `List` may hold other `List`s; its items inherit its `apiVersion`.
//! - A port given as a string of digits (`"8080"`) is a number, not a name.
//! - Service ids follow v0.5's DNS-952 rule (lower case, starts with a
//!   letter, at most 24 characters) because they become DNS names and
//!   environment variable names.

use std::collections::HashMap;

mod lifecycle;
mod security;
mod v1;
mod volumes;

use super::error::closest;
use super::reader::{Fields, FileContext, Shape};
use super::tree::{Entry, Node, Span, Value};
use crate::model::names::{
    dns_label_problem, dns_subdomain_problem, is_c_identifier, service_id_problem, MAX_LABEL_LEN,
    MAX_SERVICE_ID_LEN, MAX_SUBDOMAIN_LEN,
};
use crate::model::{
    format_labels, probe_host_problem, probe_path_problem, selector_matches, Container, EnvVar,
    Kind, Labels, NodePort, Object, Pod, PodSpec, PodTemplate, Port, PortRef, Probe, ProbeAction,
    Protocol, ReplicationController, RestartPolicy, Service, Volume,
};

/// v1beta1 `TypeMeta` fields that say nothing about what to run.
macro_rules! meta_ignored {
    ($($extra:literal),*) => {
        &[$($extra,)* "uid", "creationTimestamp", "deletionTimestamp", "selfLink", "resourceVersion", "namespace", "annotations"]
    };
}

static POD: Shape = Shape {
    what: "a Pod",
    fields: &["kind", "apiVersion", "id", "labels", "desiredState"],
    ignored: meta_ignored!("currentState"),
};
static POD_STATE: Shape = Shape {
    what: "a pod's `desiredState`",
    fields: &["manifest"],
    ignored: &["host", "hostIP", "podIP", "status", "info"],
};
static MANIFEST: Shape = Shape {
    what: "a pod `manifest`",
    fields: &["version", "id", "containers", "restartPolicy", "volumes"],
    ignored: &["uuid", "dnsPolicy"],
};
static RESTART_POLICY: Shape = Shape {
    what: "`restartPolicy`",
    fields: &["always", "onFailure", "never"],
    ignored: &[],
};
static RESTART_POLICY_OPTION: Shape = Shape {
    what: "a restart policy option",
    fields: &[],
    ignored: &[],
};
static CONTAINER: Shape = Shape {
    what: "a container",
    fields: &[
        "name",
        "image",
        "command",
        "workingDir",
        "ports",
        "env",
        "cpu",
        "memory",
        "livenessProbe",
        "volumeMounts",
        "privileged",
        // v1's, which `kctl get` prints for what v1beta1 cannot say.
        "securityContext",
        "entrypoint",
        "lifecycle",
        "imagePullPolicy",
    ],
    ignored: &["readinessProbe", "terminationMessagePath"],
};
static PORT: Shape = Shape {
    what: "a port",
    fields: &["name", "containerPort", "hostPort", "protocol"],
    ignored: &["hostIP"],
};
static ENV_VAR: Shape = Shape {
    what: "an `env` entry",
    fields: &["name", "value", "key"],
    ignored: &[],
};
/// With v1beta1's first form, still in v0.5's own examples: `enabled` and
/// `type` beside the action, which v0.5 read past (the action decides).
static PROBE: Shape = Shape {
    what: "a `livenessProbe`",
    fields: &[
        "httpGet",
        "tcpSocket",
        "exec",
        "initialDelaySeconds",
        "timeoutSeconds",
        "enabled",
        "type",
    ],
    ignored: &[],
};
static HTTP_GET: Shape = Shape {
    what: "`httpGet`",
    fields: &["path", "port", "host"],
    ignored: &[],
};
static TCP_SOCKET: Shape = Shape {
    what: "`tcpSocket`",
    fields: &["port"],
    ignored: &[],
};
static EXEC: Shape = Shape {
    what: "`exec`",
    fields: &["command"],
    ignored: &[],
};
static CONTROLLER: Shape = Shape {
    what: "a ReplicationController",
    fields: &["kind", "apiVersion", "id", "labels", "desiredState"],
    ignored: meta_ignored!("currentState"),
};
static CONTROLLER_STATE: Shape = Shape {
    what: "a ReplicationController's `desiredState`",
    fields: &["replicas", "replicaSelector", "podTemplate"],
    ignored: &[],
};
static POD_TEMPLATE: Shape = Shape {
    what: "a `podTemplate`",
    fields: &["desiredState", "labels"],
    ignored: &[],
};
static SERVICE: Shape = Shape {
    what: "a Service",
    fields: &[
        "kind",
        "apiVersion",
        "id",
        "labels",
        "selector",
        "port",
        "containerPort",
        "protocol",
        "portalIP",
        "createExternalLoadBalancer",
        "publicIPs",
        "nodePort",
    ],
    ignored: meta_ignored!(
        // `kctl get` adds a service's endpoints for convenience.
        "endpoints",
        "proxyPort",
        "sessionAffinity"
    ),
};
static LIST: Shape = Shape {
    what: "a List",
    fields: &["kind", "apiVersion", "items"],
    ignored: meta_ignored!("id", "metadata"),
};

/// Every shape, so that a field in the wrong place can be told where it
/// belongs.
pub(crate) static ALL_SHAPES: &[&Shape] = &[
    &POD,
    &POD_STATE,
    &MANIFEST,
    &RESTART_POLICY,
    &CONTAINER,
    &PORT,
    &ENV_VAR,
    &PROBE,
    &HTTP_GET,
    &TCP_SOCKET,
    &EXEC,
    &CONTROLLER,
    &CONTROLLER_STATE,
    &POD_TEMPLATE,
    &SERVICE,
    &LIST,
    &volumes::VOLUME,
    &volumes::VOLUME_SOURCE,
    &volumes::EMPTY_DIR,
    &volumes::HOST_DIR,
    &volumes::VOLUME_MOUNT,
    &lifecycle::LIFECYCLE,
];

const KINDS: [&str; 4] = ["Pod", "ReplicationController", "Service", "List"];
const API_VERSION: &str = "v1beta1";
/// v0.5 checked port names as DNS labels; v1 allows 15 characters (an
/// IANA service name).
const MAX_PORT_NAME_LEN: usize = MAX_LABEL_LEN;

/// An object and where its id was written, for the duplicate check.
pub(crate) struct Decoded {
    pub object: Object,
    pub id_span: Span,
    /// Where a value that only the cluster can refuse was written (a
    /// service's `portalIP`), so that its error can point there.
    pub portal_ip_span: Option<Span>,
    /// Where its `nodePort` was written, for the same reason.
    pub node_port_span: Option<Span>,
}

/// Decodes one document (an object, or a `List` of them) into `out`.
/// `inherited`: the apiVersion of the `List` holding it, if any.
pub(crate) fn document(
    cx: &mut FileContext<'_>,
    node: &Node,
    inherited: Option<&'static str>,
    out: &mut Vec<Decoded>,
) {
    let Value::Mapping(entries) = &node.value else {
        let head = first_char(&cx.file.text, node.span);
        let error = cx
            .error(
                head,
                format!("a manifest must be an object with a `kind`, found {}", node.value.describe()),
                "not an object",
            )
            .with_help("to put several objects in one file, use a `List` or YAML documents separated by `---`");
        cx.push(error);
        return;
    };
    let (kind, kind_span) = match entries.iter().find(|e| e.key.eq_ignore_ascii_case("kind")) {
        Some(entry) => match cx.string(&entry.value, "`kind`") {
            Some(kind) => (kind, entry.value.span),
            None => return,
        },
        None => match kind_without_field(cx, node, entries) {
            Some(kind) => (kind, cx.anchor(node, entries)),
            None => return,
        },
    };
    // `None` for a `List`.
    let (shape, object_kind) = match kind {
        "Pod" => (&POD, Some(Kind::Pod)),
        "ReplicationController" => (&CONTROLLER, Some(Kind::ReplicationController)),
        "Service" => (&SERVICE, Some(Kind::Service)),
        // What `kctl get` prints for several objects is a List too.
        "List" | "PodList" | "ReplicationControllerList" | "ServiceList" => (&LIST, None),
        _ => {
            let help = match closest(kind, &KINDS) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None => "kctl manages `Pod`, `ReplicationController` and `Service` objects (alone or in a `List`)"
                    .to_string(),
            };
            let error = cx
                .error(kind_span, format!("unknown kind `{kind}`"), "unknown kind")
                .with_help(help);
            cx.push(error);
            return;
        }
    };
    // Its own apiVersion, else its List's; one kctl does not know goes
    // the v1beta1 way, which reports it.
    let version = match entries.iter().find(|e| e.key == "apiVersion") {
        None => inherited,
        Some(e) if matches!(&e.value.value, Value::String(v) if v == v1::API_VERSION) => {
            Some(v1::API_VERSION)
        }
        Some(_) => Some(API_VERSION),
    };
    if version == Some(v1::API_VERSION) {
        if let Some(kind) = object_kind {
            out.extend(v1::object(cx, node, kind));
            return;
        }
    }
    let Some(fields) = cx.fields(node, shape) else {
        return;
    };
    api_version(cx, &fields, inherited.is_some());
    match object_kind {
        Some(Kind::Pod) => out.extend(pod(cx, &fields)),
        Some(Kind::ReplicationController) => out.extend(replication_controller(cx, &fields)),
        Some(Kind::Service) => out.extend(service(cx, &fields)),
        // Items without their own apiVersion are of the List's (v1beta1
        // when it says none either: the warning is given once, here).
        None => list(cx, &fields, Some(version.unwrap_or(API_VERSION)), out),
    }
}

/// The kind of an object that names none: the command line's (`--kind`),
/// else what its shape says, with a warning. v0.5's kubecfg took it from
/// its command line (`kubecfg -c pod1.yaml create pods`).
fn kind_without_field(
    cx: &mut FileContext<'_>,
    node: &Node,
    entries: &[Entry],
) -> Option<&'static str> {
    if let Some(kind) = cx.options.kind {
        return Some(kind_name(kind));
    }
    let anchor = cx.anchor(node, entries);
    let Some((kind, because)) = kind_from_shape(entries) else {
        let error = cx
            .error(
                anchor,
                "manifest object is missing `kind`".to_string(),
                "no `kind` here",
            )
            .with_help(
                "add `\"kind\": \"Pod\"`, `\"ReplicationController\"`, `\"Service\"` or `\"List\"`, \
                 or give the kind on the command line (`kctl apply --kind pod -f FILE`)",
            );
        cx.push(error);
        return None;
    };
    let warning = cx
        .warning(
            anchor,
            format!("manifest has no `kind`; read as a {kind} because it has {because}"),
            "no `kind` here",
        )
        .with_help(format!(
            "add `\"kind\": \"{kind}\"`, or give it on the command line (`--kind`)"
        ));
    cx.warn(warning);
    Some(kind)
}

/// What an object without `kind` is by its fields, and which field says so.
fn kind_from_shape(entries: &[Entry]) -> Option<(&'static str, &'static str)> {
    fn field<'e>(entries: &'e [Entry], name: &str) -> Option<&'e Node> {
        entries
            .iter()
            .find(|e| e.key.eq_ignore_ascii_case(name))
            .map(|e| &e.value)
    }
    let has = |node: Option<&Node>, name: &str| match node.map(|n| &n.value) {
        Some(Value::Mapping(inner)) => field(inner, name).is_some(),
        _ => false,
    };
    let desired = field(entries, "desiredState");
    let spec = field(entries, "spec");
    if has(desired, "manifest") {
        Some(("Pod", "`desiredState.manifest`"))
    } else if has(desired, "podTemplate") {
        Some(("ReplicationController", "`desiredState.podTemplate`"))
    } else if field(entries, "port").is_some() && field(entries, "selector").is_some() {
        Some(("Service", "`port` and `selector`"))
    } else if has(spec, "containers") {
        Some(("Pod", "`spec.containers`"))
    } else if has(spec, "template") {
        Some(("ReplicationController", "`spec.template`"))
    } else if has(spec, "ports") {
        Some(("Service", "`spec.ports`"))
    } else if field(entries, "items").is_some() {
        Some(("List", "`items`"))
    } else {
        None
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Pod => "Pod",
        Kind::ReplicationController => "ReplicationController",
        Kind::Service => "Service",
    }
}

/// Checks `apiVersion`; warns once per file when neither this object nor
/// its `List` gives one.
fn api_version(cx: &mut FileContext<'_>, fields: &Fields<'_>, inherited: bool) {
    let Some(node) = fields.get("apiVersion") else {
        if !inherited && !cx.warned_missing_api_version {
            cx.warned_missing_api_version = true;
            let warning = cx
                .warning(fields.anchor, "manifest has no `apiVersion`; reading it as v1beta1".to_string(), "")
                .with_help("add `\"apiVersion\": \"v1beta1\"` (this is the only such warning for this file)");
            cx.warn(warning);
        }
        return;
    };
    if let Some(version) = cx.string(node, "`apiVersion`") {
        if version != API_VERSION && version != v1::API_VERSION {
            let error = cx
                .error(node.span, format!("unsupported apiVersion `{version}`"), "not v1beta1 or v1")
                .with_help("kctl reads v1beta1 manifests, as Kubernetes v0.5 did, and today's v1 Pod, ReplicationController and Service; write `\"apiVersion\": \"v1beta1\"` or `\"v1\"`");
            cx.push(error);
        }
    }
}

fn list(
    cx: &mut FileContext<'_>,
    fields: &Fields<'_>,
    version: Option<&'static str>,
    out: &mut Vec<Decoded>,
) {
    let Some(items) = cx.require(fields, "items") else {
        return;
    };
    let Some(items) = cx.sequence(items, "`items`") else {
        return;
    };
    for item in items {
        document(cx, item, version, out);
    }
}

fn pod(cx: &mut FileContext<'_>, fields: &Fields<'_>) -> Option<Decoded> {
    let labels = labels_or_empty(cx, fields.get("labels"), "`labels`");
    let state = cx
        .require(fields, "desiredState")
        .and_then(|node| pod_state(cx, node));
    let manifest_id = state.as_ref().and_then(|state| state.manifest_id);
    let id_node = match fields.get("id").or(manifest_id) {
        Some(node) => Some(node),
        None => {
            let error = cx
                .error(fields.anchor, "a Pod is missing `id`".to_string(), "`id` is required here")
                .with_help("set `id` (or `desiredState.manifest.id`) to the pod's name, e.g. `\"id\": \"web\"`");
            cx.push(error);
            None
        }
    };
    let id = id_node.and_then(|node| object_id(cx, node, Kind::Pod));
    let (id, id_span) = id?;
    Some(Decoded {
        object: Object::Pod(Pod {
            id,
            labels: labels?,
            spec: state?.spec?,
        }),
        id_span,
        portal_ip_span: None,
        node_port_span: None,
    })
}

fn replication_controller(cx: &mut FileContext<'_>, fields: &Fields<'_>) -> Option<Decoded> {
    let id = cx
        .require(fields, "id")
        .and_then(|node| object_id(cx, node, Kind::ReplicationController));
    let labels = labels_or_empty(cx, fields.get("labels"), "`labels`");
    let state = cx
        .require(fields, "desiredState")
        .and_then(|node| cx.fields(node, &CONTROLLER_STATE));
    let (replicas, selector, template) = match &state {
        Some(state) => (
            replicas(cx, state),
            cx.require(state, "replicaSelector")
                .and_then(|node| selector(cx, node, "`replicaSelector`")),
            cx.require(state, "podTemplate")
                .and_then(|node| pod_template(cx, node)),
        ),
        None => (None, None, None),
    };
    // Checked even when the rest of the template is wrong: it is a
    // separate mistake.
    let template_labels = template.as_ref().and_then(|t| t.labels.as_ref());
    if let (Some((selector, selector_node)), Some(template_labels)) = (&selector, template_labels) {
        if !selector_matches(selector, template_labels) {
            report_selector_mismatch(cx, selector, selector_node, template_labels);
            return None;
        }
    }
    let (id, id_span) = id?;
    let template = template?;
    Some(Decoded {
        object: Object::ReplicationController(ReplicationController {
            id,
            labels: labels?,
            replicas: replicas?,
            selector: selector?.0,
            template: PodTemplate {
                labels: template.labels?,
                spec: template.spec?,
            },
        }),
        id_span,
        portal_ip_span: None,
        node_port_span: None,
    })
}

/// A controller's count; 0, with a warning, when it gives none.
fn replicas(cx: &mut FileContext<'_>, state: &Fields<'_>) -> Option<u32> {
    if state.get("replicas").is_none() && state.has_typo_of("replicas") {
        // A misspelt count is an error (at the typo), not a silent 0.
        cx.require(state, "replicas");
        return None;
    }
    let Some(node) = state.get("replicas") else {
        let warning = cx
            .warning(
                state.anchor,
                "a ReplicationController without `replicas` runs no pods (v0.5 read it as 0)"
                    .to_string(),
                "no `replicas` here",
            )
            .with_help("set `\"replicas\"` to the number of pods to run");
        cx.warn(warning);
        return Some(0);
    };
    cx.integer(node, "`replicas`", 0, u32::MAX.into())
        .and_then(|n| u32::try_from(n).ok())
}

fn report_selector_mismatch(
    cx: &mut FileContext<'_>,
    selector: &Labels,
    selector_node: &Node,
    template_labels: &Labels,
) {
    let help = if template_labels.is_empty() {
        format!(
            "the pod template has no labels; add `\"labels\": {{{}}}` to `podTemplate`",
            labels_as_json(selector)
        )
    } else {
        format!(
            "the template's labels are `{}`; every pair of the selector must be among them, \
             or the controller could never find the pods it starts",
            format_labels(template_labels)
        )
    };
    let error = cx
        .error(
            selector_node.span,
            "`replicaSelector` does not match the pod template's labels".to_string(),
            &format!("selects `{}`", format_labels(selector)),
        )
        .with_help(help);
    cx.push(error);
}

/// A `podTemplate`'s parts, each `None` when it is wrong.
struct TemplateParts {
    labels: Option<Labels>,
    spec: Option<PodSpec>,
}

fn pod_template(cx: &mut FileContext<'_>, node: &Node) -> Option<TemplateParts> {
    let fields = cx.fields(node, &POD_TEMPLATE)?;
    let labels = labels_or_empty(cx, fields.get("labels"), "`labels`");
    let state = cx
        .require(&fields, "desiredState")
        .and_then(|node| pod_state(cx, node));
    Some(TemplateParts {
        labels,
        spec: state.and_then(|state| state.spec),
    })
}

fn service(cx: &mut FileContext<'_>, fields: &Fields<'_>) -> Option<Decoded> {
    let id = cx
        .require(fields, "id")
        .and_then(|node| object_id(cx, node, Kind::Service));
    let labels = labels_or_empty(cx, fields.get("labels"), "`labels`");
    let selector = cx
        .require(fields, "selector")
        .and_then(|node| selector(cx, node, "`selector`"));
    let port = cx
        .require(fields, "port")
        .and_then(|node| port_number(cx, node, "`port`"));
    let container_port = optional(fields.get("containerPort"), |node| {
        port_ref(cx, node, "`containerPort`").map(|(port, _)| port)
    });
    let protocol = optional(fields.get("protocol"), |node| protocol(cx, node));
    let portal_ip = optional(fields.get("portalIP"), |node| {
        portal_ip(cx, node, "`portalIP`")
    });
    let external = optional(
        fields.get("createExternalLoadBalancer"),
        |node| match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                cx.type_error(node, "`createExternalLoadBalancer`", "true or false");
                None
            }
        },
    );
    let public_ips = optional(fields.get("publicIPs"), |node| {
        addresses(cx, node, "`publicIPs`")
    });
    // Not a v1beta1 field: kctl writes it in v1beta1 output of a v1
    // NodePort service, and reads it back so that output applies unchanged.
    let node_port = optional(fields.get("nodePort"), |node| {
        node_port_number(cx, node).map(NodePort::Port)
    });
    let published = published(
        cx,
        port,
        external.flatten().unwrap_or(false),
        public_ips
            .as_ref()
            .and_then(|p| p.as_deref())
            .unwrap_or(&[]),
        fields
            .get("createExternalLoadBalancer")
            .or(fields.get("publicIPs")),
    );
    let (id, id_span) = id?;
    Some(Decoded {
        object: Object::Service(Service {
            id,
            labels: labels?,
            selector: selector?.0,
            port: port?,
            container_port: container_port?,
            protocol: protocol?.unwrap_or_default(),
            portal_ip: portal_ip?.flatten(),
            external: external?.unwrap_or(false),
            public_ips: public_ips?.unwrap_or_default(),
            node_port: node_port?,
        }),
        id_span,
        portal_ip_span: fields.get("portalIP").map(|node| node.span),
        node_port_span: fields.get("nodePort").map(|node| node.span),
    })
    .filter(|_| published)
}

/// A list of IPv4 addresses (`publicIPs`, v1 `externalIPs`).
fn addresses(cx: &mut FileContext<'_>, node: &Node, what: &str) -> Option<Vec<std::net::Ipv4Addr>> {
    let items = cx.sequence(node, what)?;
    each(items, |item| {
        let text = cx.string(item, what)?;
        match text.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                let error = cx
                    .error(
                        item.span,
                        format!("`{text}` is no IPv4 address"),
                        "not an address",
                    )
                    .with_help("write an address of one of the minions, e.g. `10.240.0.5`");
                cx.push(error);
                None
            }
        }
    })
}

/// A service answered on the machines' own addresses must not take a
/// port the machines need themselves.
fn published(
    cx: &mut FileContext<'_>,
    port: Option<u16>,
    external: bool,
    public_ips: &[std::net::Ipv4Addr],
    at: Option<&Node>,
) -> bool {
    let (Some(port), Some(at)) = (port, at) else {
        return true;
    };
    let on_machines = external || !public_ips.is_empty();
    if !on_machines || !crate::model::CONTROL_PLANE_PORTS.contains(&port) {
        return true;
    }
    let error = cx
        .error(
            at.span,
            format!("a service on the minions' own addresses cannot take port {port}: the machines need it (sshd, etcd)"),
            "published here",
        )
        .with_help("give the service another `port`; its pods may still listen on this one (`containerPort`)");
    cx.push(error);
    false
}

/// A node port a service names: one of [`NODE_PORT_RANGE`], which keeps
/// clear of the machines' own ports.
pub(crate) fn node_port_number(cx: &mut FileContext<'_>, node: &Node) -> Option<u16> {
    let range = crate::model::NODE_PORT_RANGE;
    cx.integer(
        node,
        "`nodePort`",
        (*range.start()).into(),
        (*range.end()).into(),
    )
    .and_then(|n| u16::try_from(n).ok())
}

/// A portal IP a service asks for: an IPv4 address, or empty for none.
fn portal_ip(
    cx: &mut FileContext<'_>,
    node: &Node,
    what: &str,
) -> Option<Option<std::net::Ipv4Addr>> {
    let text = cx.string(node, what)?;
    if text.is_empty() {
        return Some(None);
    }
    if text == "None" {
        let error = cx
            .error(
                node.span,
                "kctl has no headless services".to_string(),
                "not available",
            )
            .with_help("every kctl service has a portal IP: leave the field out");
        cx.push(error);
        return None;
    }
    match text.parse() {
        Ok(ip) => Some(Some(ip)),
        Err(_) => {
            let error = cx
                .error(node.span, format!("{what} `{text}` is no IPv4 address"), "not an address")
                .with_help("write an address of the cluster's portal range, e.g. `10.0.0.20`, or leave it out");
            cx.push(error);
            None
        }
    }
}

/// What a pod's `desiredState` yields: its spec, and the manifest's `id`,
/// which names the pod when the pod has no `id` of its own.
struct PodState<'n> {
    spec: Option<PodSpec>,
    manifest_id: Option<&'n Node>,
}

fn pod_state<'n>(cx: &mut FileContext<'_>, node: &'n Node) -> Option<PodState<'n>> {
    let fields = cx.fields(node, &POD_STATE)?;
    let manifest = cx.require(&fields, "manifest")?;
    let manifest = cx.fields(manifest, &MANIFEST)?;
    if let Some(version) = manifest.get("version") {
        if let Some(text) = cx.string(version, "`version`") {
            if !text.eq_ignore_ascii_case(API_VERSION) {
                let error = cx
                    .error(
                        version.span,
                        format!("unsupported manifest version `{text}`"),
                        "not v1beta1",
                    )
                    .with_help("write `\"version\": \"v1beta1\"`, or leave it out");
                cx.push(error);
            }
        }
    }
    let restart_policy = optional(manifest.get("restartPolicy"), |node| {
        restart_policy(cx, node)
    });
    let volumes = optional(manifest.get("volumes"), |node| {
        volumes::volumes(cx, node, false)
    })
    .map(Option::unwrap_or_default);
    let containers = cx
        .require(&manifest, "containers")
        .and_then(|node| containers(cx, node, volumes.as_deref()));
    let spec = containers.zip(restart_policy).zip(volumes).map(
        |((containers, restart_policy), volumes)| PodSpec {
            containers,
            restart_policy: restart_policy.unwrap_or_default(),
            volumes,
        },
    );
    Some(PodState {
        spec,
        manifest_id: manifest.get("id"),
    })
}

fn restart_policy(cx: &mut FileContext<'_>, node: &Node) -> Option<RestartPolicy> {
    if let Value::String(text) = &node.value {
        let error = cx
            .error(
                node.span,
                "`restartPolicy` must be an object in v1beta1".to_string(),
                "a string",
            )
            .with_help(format!(
                "write it as `{{\"{}\": {{}}}}`",
                closest(text, RESTART_POLICY.fields).unwrap_or("always")
            ));
        cx.push(error);
        return None;
    }
    let fields = cx.fields(node, &RESTART_POLICY)?;
    let mut chosen = None;
    for (name, policy) in [
        ("always", RestartPolicy::Always),
        ("onFailure", RestartPolicy::OnFailure),
        ("never", RestartPolicy::Never),
    ] {
        let Some(entry) = fields.entry(name) else {
            continue;
        };
        cx.fields(&entry.value, &RESTART_POLICY_OPTION)?;
        if chosen.is_some() {
            let error = cx
                .error(
                    entry.key_span,
                    "`restartPolicy` has more than one policy".to_string(),
                    "second policy",
                )
                .with_help("keep one of `always`, `onFailure` and `never`");
            cx.push(error);
            return None;
        }
        chosen = Some(policy);
    }
    // `{}` was v1beta1's way of asking for the default.
    Some(chosen.unwrap_or_default())
}

/// What holds for every container of a pod.
#[derive(Default)]
struct PodRules {
    max_port_name: usize,
    run_as_user: Option<u32>,
    /// Where the pod asks for a non-root user.
    run_as_non_root: Option<Span>,
}

/// Names and host ports already used in one pod, and probe port names to
/// check once every container's ports are known.
struct PodScope {
    /// The longest port name this API version allows.
    max_port_name: usize,
    /// The pod's `securityContext`: its containers' user unless they say,
    /// and where it asks for a non-root user.
    pod_run_as_user: Option<u32>,
    pod_run_as_non_root: Option<Span>,
    container_names: HashMap<String, Span>,
    port_names: HashMap<String, Span>,
    host_ports: HashMap<(u16, Protocol), Span>,
    probe_port_names: Vec<(String, Span)>,
    /// Volume names the containers mount, to check against the pod's.
    mount_names: Vec<(String, Span)>,
}

fn containers(
    cx: &mut FileContext<'_>,
    node: &Node,
    volumes: Option<&[Volume]>,
) -> Option<Vec<Container>> {
    let rules = PodRules {
        max_port_name: MAX_PORT_NAME_LEN,
        ..PodRules::default()
    };
    containers_with(cx, node, &rules, volumes, container)
}

/// A pod's containers, each read by `read` (v1beta1's or v1's shape), and
/// the checks across them.
fn containers_with(
    cx: &mut FileContext<'_>,
    node: &Node,
    rules: &PodRules,
    // None when they were wrong: their mounts are not checked then.
    volumes: Option<&[Volume]>,
    mut read: impl FnMut(&mut FileContext<'_>, &Node, &mut PodScope) -> Option<Container>,
) -> Option<Vec<Container>> {
    let items = cx.sequence(node, "`containers`")?;
    if items.is_empty() {
        let error = cx
            .error(
                node.span,
                "a pod needs at least one container".to_string(),
                "empty",
            )
            .with_help("add a container, e.g. `{\"name\": \"web\", \"image\": \"nginx\"}`");
        cx.push(error);
        return None;
    }
    let mut scope = PodScope {
        max_port_name: rules.max_port_name,
        pod_run_as_user: rules.run_as_user,
        pod_run_as_non_root: rules.run_as_non_root,
        container_names: HashMap::new(),
        port_names: HashMap::new(),
        host_ports: HashMap::new(),
        probe_port_names: Vec::new(),
        mount_names: Vec::new(),
    };
    let containers = each(items, |item| read(cx, item, &mut scope));
    let mut names_ok = true;
    for (name, span) in &scope.probe_port_names {
        if !scope.port_names.contains_key(name) {
            names_ok = false;
            let mut known: Vec<&str> = scope.port_names.keys().map(String::as_str).collect();
            known.sort_unstable();
            let help = match closest(name, &known) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None if known.is_empty() => {
                    "no port of this pod has a name; name one in `ports` (`\"name\": \"http\"`) or use the port number"
                        .to_string()
                }
                None => format!("the pod's port names are: {}", known.join(", ")),
            };
            let error = cx
                .error(
                    *span,
                    format!("no port named `{name}` in this pod"),
                    "unknown port name",
                )
                .with_help(help);
            cx.push(error);
        }
    }
    let mounts_ok = volumes.is_none_or(|volumes| volumes::check_mount_names(cx, &scope, volumes));
    containers.filter(|_| names_ok && mounts_ok)
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
    let entrypoint = optional(fields.get("entrypoint"), |node| {
        cx.strings(node, "`entrypoint`")
    });
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
    let cpu = optional(fields.get("cpu"), |node| {
        cx.integer(node, "`cpu` (thousandths of a core)", 0, u32::MAX.into())
            .and_then(|n| u32::try_from(n).ok())
    });
    let memory = optional(fields.get("memory"), |node| {
        cx.integer(node, "`memory` (bytes)", 0, u64::MAX.into())
            .and_then(|n| u64::try_from(n).ok())
    });
    let liveness_probe = optional(fields.get("livenessProbe"), |node| probe(cx, node, scope));
    let volume_mounts = optional(fields.get("volumeMounts"), |node| {
        volumes::volume_mounts(cx, node, scope, false)
    });
    let privileged = optional(fields.get("privileged"), |node| {
        security::v1beta1_privileged(cx, node)
    });
    let context = optional(fields.get("securityContext"), |node| {
        let security = security::v1_container(cx, node)?;
        security::check_non_root(cx, node.span, &security).then_some(security)
    });
    let hooks = optional(fields.get("lifecycle"), |node| {
        lifecycle::lifecycle(cx, node, scope)
    });
    let pull = optional(fields.get("imagePullPolicy"), |node| {
        pull_policy(cx, node, false)
    });
    let security = privileged.zip(context).map(|(privileged, context)| {
        let mut security = context.unwrap_or_default();
        security.privileged |= privileged.is_some_and(|p| p.privileged);
        security
    });
    let (post_start, pre_stop) = hooks?.unwrap_or_default();
    Some(Container {
        name: name?,
        image: image?,
        entrypoint: entrypoint?.unwrap_or_default(),
        command: command?.unwrap_or_default(),
        working_dir: working_dir?,
        ports: ports?.unwrap_or_default(),
        env: env?.unwrap_or_default(),
        cpu: cpu?,
        memory: memory?,
        liveness_probe: liveness_probe?,
        volume_mounts: volume_mounts?.unwrap_or_default(),
        security: security?,
        post_start,
        pre_stop,
        image_pull_policy: pull?,
    })
}

fn container_name(cx: &mut FileContext<'_>, node: &Node, scope: &mut PodScope) -> Option<String> {
    let name = cx.string(node, "container `name`")?;
    if let Some(problem) = dns_label_problem(name, MAX_LABEL_LEN) {
        let error = cx
            .error(
                node.span,
                format!("invalid container name `{name}`: it {problem}"),
                "invalid name",
            )
            .with_help(label_help(name, MAX_LABEL_LEN, false));
        cx.push(error);
        return None;
    }
    if !claim(
        cx,
        &mut scope.container_names,
        name.to_string(),
        node.span,
        "container name",
    ) {
        return None;
    }
    Some(name.to_string())
}

fn image(cx: &mut FileContext<'_>, node: &Node) -> Option<String> {
    let image = cx.string(node, "`image`")?;
    if let Some(problem) = crate::model::names::image_problem(image) {
        let error = cx
            .error(node.span, format!("`image` {problem}"), "invalid image")
            .with_help("an image is written like `tutum/tomcat` or `registry:5000/web:1.2`");
        cx.push(error);
        return None;
    }
    Some(image.to_string())
}

fn port(cx: &mut FileContext<'_>, node: &Node, scope: &mut PodScope) -> Option<Port> {
    let fields = cx.fields(node, &PORT)?;
    let name = optional(fields.get("name"), |node| port_name(cx, node, scope)).map(Option::flatten);
    let container_port = cx
        .require(&fields, "containerPort")
        .and_then(|node| port_number(cx, node, "`containerPort`"));
    let host_port = optional(fields.get("hostPort"), |node| {
        cx.integer(node, "`hostPort`", 0, u16::MAX.into())
            .and_then(|n| u16::try_from(n).ok())
            .map(|n| (n, node.span))
    });
    let protocol =
        optional(fields.get("protocol"), |node| protocol(cx, node)).map(Option::unwrap_or_default);
    // 0 was v1beta1's "no host port".
    let host_port = host_port.map(|port| port.filter(|(n, _)| *n != 0));
    if let (Some(Some((number, span))), Some(protocol)) = (host_port, protocol) {
        let described = format!("host port {number}/{}", protocol.as_upper());
        if !claim(
            cx,
            &mut scope.host_ports,
            (number, protocol),
            span,
            &described,
        ) {
            return None;
        }
    }
    Some(Port {
        name: name?,
        container_port: container_port?,
        host_port: host_port?.map(|(n, _)| n),
        protocol: protocol?,
    })
}

/// A port's `name`; `Some(None)` for an empty one, which v1beta1 treated as
/// no name.
fn port_name(
    cx: &mut FileContext<'_>,
    node: &Node,
    scope: &mut PodScope,
) -> Option<Option<String>> {
    let name = cx.string(node, "port `name`")?;
    if name.is_empty() {
        return Some(None);
    }
    if let Some(problem) = dns_label_problem(name, scope.max_port_name) {
        let error = cx
            .error(
                node.span,
                format!("invalid port name `{name}`: it {problem}"),
                "invalid name",
            )
            .with_help(label_help(name, scope.max_port_name, false));
        cx.push(error);
        return None;
    }
    if !claim(
        cx,
        &mut scope.port_names,
        name.to_string(),
        node.span,
        "port name",
    ) {
        return None;
    }
    Some(Some(name.to_string()))
}

fn port_number(cx: &mut FileContext<'_>, node: &Node, what: &str) -> Option<u16> {
    cx.integer(node, what, 1, u16::MAX.into())
        .and_then(|n| u16::try_from(n).ok())
}

/// A port by number or by name; the name's span is returned so that it can
/// be checked against the pod's ports.
fn port_ref(cx: &mut FileContext<'_>, node: &Node, what: &str) -> Option<(PortRef, Option<Span>)> {
    match &node.value {
        Value::Integer(_) | Value::Float(_) => {
            port_number(cx, node, what).map(|n| (PortRef::Number(n), None))
        }
        Value::String(text) if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) => {
            let number = Node {
                span: node.span,
                value: text
                    .parse::<i128>()
                    .map_or(Value::Integer(i128::MAX), Value::Integer),
            };
            port_number(cx, &number, what).map(|n| (PortRef::Number(n), None))
        }
        Value::String(text) if !text.is_empty() => {
            Some((PortRef::Name(text.clone()), Some(node.span)))
        }
        _ => {
            cx.type_error(node, what, "a port number or a port name");
            None
        }
    }
}

fn protocol(cx: &mut FileContext<'_>, node: &Node) -> Option<Protocol> {
    let text = cx.string(node, "`protocol`")?;
    if text.is_empty() || text.eq_ignore_ascii_case("TCP") {
        Some(Protocol::Tcp)
    } else if text.eq_ignore_ascii_case("UDP") {
        Some(Protocol::Udp)
    } else {
        let error = cx
            .error(
                node.span,
                format!("unknown protocol `{text}`"),
                "not TCP or UDP",
            )
            .with_help("use `TCP` or `UDP`");
        cx.push(error);
        None
    }
}

/// `imagePullPolicy`: v1beta1's `PullAlways`, `PullIfNotPresent`,
/// `PullNever`, or v1's `Always`, `IfNotPresent`, `Never` (each version
/// reads the other's too).
fn pull_policy(
    cx: &mut FileContext<'_>,
    node: &Node,
    v1: bool,
) -> Option<crate::model::PullPolicy> {
    use crate::model::PullPolicy;
    let text = cx.string(node, "`imagePullPolicy`")?;
    let bare = text.strip_prefix("Pull").unwrap_or(text);
    let policy = match bare {
        "Always" => PullPolicy::Always,
        "IfNotPresent" => PullPolicy::IfNotPresent,
        "Never" => PullPolicy::Never,
        _ => {
            let names: &[&str] = if v1 {
                &["Always", "IfNotPresent", "Never"]
            } else {
                &["PullAlways", "PullIfNotPresent", "PullNever"]
            };
            let help = match closest(text, names) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None => format!("one of `{}`", names.join("`, `")),
            };
            let error = cx
                .error(
                    node.span,
                    format!("unknown imagePullPolicy `{text}`"),
                    "unknown policy",
                )
                .with_help(help);
            cx.push(error);
            return None;
        }
    };
    Some(policy)
}

fn env_var(cx: &mut FileContext<'_>, node: &Node) -> Option<EnvVar> {
    let fields = cx.fields(node, &ENV_VAR)?;
    // `key` is v1beta1's older spelling of `name`, which v0.5 still read.
    let name_node = match (fields.get("name"), fields.entry("key")) {
        (None, Some(key)) => {
            let warning = cx
                .warning(
                    key.key_span,
                    "`key` is the old spelling of an env entry's `name`".to_string(),
                    "read as `name`",
                )
                .with_help("write `name`, as v1beta1 has since Kubernetes v0.3");
            cx.warn(warning);
            Some(&key.value)
        }
        (Some(name), Some(key)) => {
            let warning = cx
                .warning(
                    key.key_span,
                    "an env entry has both `name` and its old spelling `key`; `key` is ignored"
                        .to_string(),
                    "ignored",
                )
                .with_help("remove `key`");
            cx.warn(warning);
            Some(name)
        }
        (name, None) => name,
    };
    if name_node.is_none() {
        cx.require(&fields, "name");
    }
    let name = name_node.and_then(|node| {
        let name = cx.string(node, "`name`")?;
        if is_c_identifier(name) {
            return Some(name.to_string());
        }
        let error = cx
            .error(
                node.span,
                format!("invalid environment variable name `{name}`"),
                "invalid name",
            )
            .with_help("use letters, digits and `_`, not starting with a digit, e.g. `DB_HOST`");
        cx.push(error);
        None
    });
    let value = optional(fields.get("value"), |node| {
        cx.string(node, "`value`").map(str::to_string)
    });
    Some(EnvVar {
        name: name?,
        value: value?.unwrap_or_default(),
    })
}

fn probe(cx: &mut FileContext<'_>, node: &Node, scope: &mut PodScope) -> Option<Probe> {
    let probe = probe_shaped(cx, node, scope, &PROBE, &HTTP_GET)?;
    legacy_probe_form(cx, node, &probe.action);
    Some(probe)
}

/// Warns of v1beta1's first probe form (`enabled`, `type`), which v0.5
/// read past: the action alone says what the probe does.
fn legacy_probe_form(cx: &mut FileContext<'_>, node: &Node, action: &ProbeAction) {
    let Value::Mapping(entries) = &node.value else {
        return;
    };
    let entry = |name: &str| entries.iter().find(|e| e.key.eq_ignore_ascii_case(name));
    let action_type = match action {
        ProbeAction::HttpGet { .. } => "http",
        ProbeAction::TcpSocket { .. } => "tcp",
        ProbeAction::Exec { .. } => "exec",
    };
    if let Some(enabled) = entry("enabled") {
        let (message, help) = if enabled.value.value == Value::Bool(false) {
            (
                "`enabled: false` does not turn this probe off: v0.5 read past it, and so does kctl",
                "remove the `livenessProbe` to run no probe",
            )
        } else {
            (
                "`enabled` is the legacy form of a probe; its action says what it does",
                "remove `enabled` (and `type`): a probe with an action is enabled",
            )
        };
        let warning = cx
            .warning(enabled.key_span, message.to_string(), "legacy field")
            .with_help(help);
        cx.warn(warning);
    }
    if let Some(kind) = entry("type") {
        let said = match &kind.value.value {
            Value::String(text) => text.to_ascii_lowercase(),
            other => other.describe().to_string(),
        };
        let message = if said == action_type {
            "`type` is the legacy form of a probe; its action says what it does".to_string()
        } else {
            format!("`type` says `{said}` but the probe's action is `{action_type}`; the action decides")
        };
        let warning = cx
            .warning(kind.key_span, message, "legacy field")
            .with_help("remove `type`: the action (`httpGet`, `tcpSocket` or `exec`) is enough");
        cx.warn(warning);
    }
}

/// A probe by `shape`, its `httpGet` by `http_shape` (v1 adds fields kctl
/// passes by).
fn probe_shaped(
    cx: &mut FileContext<'_>,
    node: &Node,
    scope: &mut PodScope,
    shape: &'static Shape,
    http_shape: &'static Shape,
) -> Option<Probe> {
    let fields = cx.fields(node, shape)?;
    let actions: Vec<_> = ["httpGet", "tcpSocket", "exec"]
        .into_iter()
        .filter_map(|name| fields.entry(name).map(|entry| (name, entry)))
        .collect();
    let action = match actions.as_slice() {
        [] => {
            let error = cx
                .error(
                    fields.anchor,
                    "a `livenessProbe` needs an action".to_string(),
                    "no action",
                )
                .with_help("add one of `httpGet`, `tcpSocket` or `exec`");
            cx.push(error);
            None
        }
        [(name, entry)] => probe_action(cx, name, &entry.value, scope, http_shape, "probe"),
        [(first, _), (second, entry), ..] => {
            let error = cx
                .error(
                    entry.key_span,
                    "a `livenessProbe` takes only one action".to_string(),
                    "second action",
                )
                .with_help(format!("keep either `{first}` or `{second}`"));
            cx.push(error);
            None
        }
    };
    let initial_delay_seconds = optional(fields.get("initialDelaySeconds"), |node| {
        cx.integer(node, "`initialDelaySeconds`", 0, u32::MAX.into())
            .and_then(|n| u32::try_from(n).ok())
    });
    let timeout_seconds = optional(fields.get("timeoutSeconds"), |node| {
        cx.integer(node, "`timeoutSeconds`", 0, u32::MAX.into())
            .and_then(|n| u32::try_from(n).ok())
    });
    Some(Probe {
        action: action?,
        initial_delay_seconds: initial_delay_seconds?.unwrap_or(0),
        // v0.5 read 0 (or nothing) as one second.
        timeout_seconds: timeout_seconds?.filter(|n| *n > 0).unwrap_or(1),
    })
}

/// A probe's action, or a lifecycle hook's (`role` says which, for
/// messages): they read the same.
fn probe_action(
    cx: &mut FileContext<'_>,
    name: &str,
    node: &Node,
    scope: &mut PodScope,
    http_shape: &'static Shape,
    role: &str,
) -> Option<ProbeAction> {
    let mut probe_port = |cx: &mut FileContext<'_>, fields: &Fields<'_>| {
        let node = cx.require(fields, "port")?;
        let (port, name_span) = port_ref(cx, node, &format!("{role} `port`"))?;
        if let (PortRef::Name(name), Some(span)) = (&port, name_span) {
            scope.probe_port_names.push((name.clone(), span));
        }
        Some(port)
    };
    match name {
        "httpGet" => {
            let fields = cx.fields(node, http_shape)?;
            let path = optional(fields.get("path"), |node| {
                let path = cx.string(node, "`path`")?;
                match probe_path_problem(path) {
                    Some(problem) if !path.is_empty() => {
                        let error = cx
                            .error(node.span, format!("{role} `path` {problem}"), "bad path")
                            .with_help(
                                "give an absolute path such as `/healthz`; percent-encode \
                                 spaces and control characters (`%20`, `%0D`)",
                            );
                        cx.push(error);
                        None
                    }
                    _ => Some(path.to_string()),
                }
            });
            let host = optional(fields.get("host"), |node| {
                let host = cx.string(node, "`host`")?;
                match probe_host_problem(host) {
                    Some(problem) if !host.is_empty() => {
                        let error = cx
                            .error(node.span, format!("{role} `host` {problem}"), "bad host")
                            .with_help(
                                "give the IP address to probe, or leave `host` out to probe \
                                 the pod's own IP",
                            );
                        cx.push(error);
                        None
                    }
                    _ => Some(host.to_string()),
                }
            });
            let port = probe_port(cx, &fields);
            Some(ProbeAction::HttpGet {
                path: path?
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/".to_string()),
                port: port?,
                host: host?.filter(|h| !h.is_empty()),
            })
        }
        "tcpSocket" => {
            let fields = cx.fields(node, &TCP_SOCKET)?;
            Some(ProbeAction::TcpSocket {
                port: probe_port(cx, &fields)?,
            })
        }
        _ => {
            let fields = cx.fields(node, &EXEC)?;
            let command = cx.require(&fields, "command").and_then(|node| {
                let command = cx.strings(node, "`command`")?;
                if command.is_empty() {
                    let error = cx
                        .error(node.span, "`exec` `command` is empty".to_string(), "empty")
                        .with_help("give the command to run, e.g. `[\"cat\", \"/tmp/healthy\"]`");
                    cx.push(error);
                    return None;
                }
                Some(command)
            })?;
            Some(ProbeAction::Exec { command })
        }
    }
}

/// Labels for a selector, which must not be empty (an empty selector
/// matches nothing in kctl, and everything in later Kubernetes).
fn selector<'n>(
    cx: &mut FileContext<'_>,
    node: &'n Node,
    what: &str,
) -> Option<(Labels, &'n Node)> {
    let labels = cx.labels(node, what)?;
    if labels.is_empty() {
        let error = cx
            .error(node.span, format!("{what} is empty"), "empty selector")
            .with_help("select the pods by their labels, e.g. `{\"name\": \"web\"}`");
        cx.push(error);
        return None;
    }
    Some((labels, node))
}

fn labels_or_empty(cx: &mut FileContext<'_>, node: Option<&Node>, what: &str) -> Option<Labels> {
    optional(node, |node| cx.labels(node, what)).map(Option::unwrap_or_default)
}

/// An object's `id` and its span, checked by the rules for its kind.
fn object_id(cx: &mut FileContext<'_>, node: &Node, kind: Kind) -> Option<(String, Span)> {
    let id = cx.string(node, "`id`")?;
    let (problem, help) = match kind {
        Kind::Service => (
            service_id_problem(id),
            label_help(id, MAX_SERVICE_ID_LEN, true),
        ),
        // v0.5 checked pod and controller ids as DNS subdomains.
        Kind::Pod | Kind::ReplicationController => (dns_subdomain_problem(id), subdomain_help(id)),
    };
    if let Some(problem) = problem {
        let kind_name = kind_name(kind);
        let error = cx
            .error(
                node.span,
                format!("invalid {kind_name} id `{id}`: it {problem}"),
                "invalid id",
            )
            .with_help(help);
        cx.push(error);
        return None;
    }
    Some((id.to_string(), node.span))
}

fn subdomain_help(name: &str) -> String {
    let rule = format!(
        "use at most {MAX_SUBDOMAIN_LEN} letters, digits, `-` and `.`, each part between dots \
         starting and ending with a letter or digit"
    );
    let fixed: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_SUBDOMAIN_LEN)
        .collect();
    let fixed: Vec<&str> = fixed
        .split('.')
        .map(|label| label.trim_matches('-'))
        .filter(|label| !label.is_empty())
        .collect();
    let fixed = fixed.join(".");
    if fixed.is_empty() || fixed == name {
        rule
    } else {
        format!("{rule}, e.g. `{fixed}`")
    }
}

/// How to fix a name that broke the label rules, with a corrected example
/// when one can be made.
fn label_help(name: &str, max_len: usize, lower_case: bool) -> String {
    let rule = if lower_case {
        format!("use at most {max_len} lower-case letters, digits and `-`, starting with a letter and ending with a letter or digit")
    } else {
        format!("use at most {max_len} letters, digits and `-`, starting and ending with a letter or digit")
    };
    let mut fixed: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if lower_case {
        fixed = fixed.to_ascii_lowercase();
    }
    let fixed: String = fixed
        .trim_start_matches(|c: char| c == '-' || (lower_case && c.is_ascii_digit()))
        .chars()
        .take(max_len)
        .collect();
    let fixed = fixed.trim_end_matches('-');
    if fixed.is_empty() || fixed == name {
        rule
    } else {
        format!("{rule}, e.g. `{fixed}`")
    }
}

/// Records `key` as used in the pod; false (after an error pointing at the
/// second use) when it already was.
fn claim<K: std::hash::Hash + Eq>(
    cx: &mut FileContext<'_>,
    used: &mut HashMap<K, Span>,
    key: K,
    span: Span,
    what: &str,
) -> bool {
    if let Some(first) = used.get(&key) {
        let (line, column) = cx.file.line_col(first.start);
        let error = cx
            .error(
                span,
                format!("{what} is used twice in this pod"),
                "used again here",
            )
            .with_help(format!("it is first used at line {line}, column {column}"));
        cx.push(error);
        return false;
    }
    used.insert(key, span);
    true
}

/// Reads an optional field: `Some(None)` when absent, `None` when present
/// but wrong (the error is already reported).
fn optional<'n, T>(
    node: Option<&'n Node>,
    read: impl FnOnce(&'n Node) -> Option<T>,
) -> Option<Option<T>> {
    match node {
        None => Some(None),
        Some(node) => read(node).map(Some),
    }
}

/// Reads every item, so that all bad items are reported, not just the first.
fn each<T>(items: &[Node], mut read: impl FnMut(&Node) -> Option<T>) -> Option<Vec<T>> {
    let results: Vec<Option<T>> = items.iter().map(&mut read).collect();
    results.into_iter().collect()
}

/// The first character of `span`, for pointing at the start of something
/// long.
fn first_char(text: &str, span: Span) -> Span {
    let len = text
        .get(span.start..)
        .and_then(|rest| rest.chars().next())
        .map_or(0, char::len_utf8);
    Span::new(span.start, span.start + len)
}

fn labels_as_json(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key:?}: {value:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
