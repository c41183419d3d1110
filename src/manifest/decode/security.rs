//! What a container may do beyond Docker's defaults: v1beta1's
//! `privileged`, v1's `securityContext` (the container's, and the pod's
//! `runAsUser`/`runAsNonRoot` for all its containers). Privileges the
//! cluster does not allow are refused at their line.

use super::*;
use crate::model::SecurityContext;

static V1_SECURITY_CONTEXT: Shape = Shape {
    what: "a container's `securityContext`",
    fields: &[
        "privileged",
        "runAsUser",
        "runAsNonRoot",
        "readOnlyRootFilesystem",
        "capabilities",
        "allowPrivilegeEscalation",
    ],
    ignored: &[],
};
static V1_CAPABILITIES: Shape = Shape {
    what: "`capabilities`",
    fields: &["add", "drop"],
    ignored: &[],
};
pub(super) static V1_POD_SECURITY_CONTEXT: Shape = Shape {
    what: "a pod's `securityContext`",
    fields: &["runAsUser", "runAsNonRoot"],
    ignored: &[],
};

fn boolean(cx: &mut FileContext<'_>, node: &Node, what: &str) -> Option<bool> {
    match node.value {
        Value::Bool(b) => Some(b),
        _ => {
            cx.type_error(node, what, "true or false");
            None
        }
    }
}

fn user_id(cx: &mut FileContext<'_>, node: &Node) -> Option<u32> {
    cx.integer(node, "`runAsUser`", 0, u32::MAX.into())
        .and_then(|n| u32::try_from(n).ok())
}

/// v1beta1's `privileged: true`.
pub(super) fn v1beta1_privileged(cx: &mut FileContext<'_>, node: &Node) -> Option<SecurityContext> {
    let privileged = boolean(cx, node, "`privileged`")?;
    let security = SecurityContext {
        privileged,
        ..SecurityContext::default()
    };
    allowed(cx, node.span, &security).then_some(security)
}

/// A v1 container's `securityContext`.
pub(super) fn v1_container(cx: &mut FileContext<'_>, node: &Node) -> Option<SecurityContext> {
    let fields = cx.fields(node, &V1_SECURITY_CONTEXT)?;
    let privileged = optional(fields.get("privileged"), |n| boolean(cx, n, "`privileged`"));
    let run_as_user = optional(fields.get("runAsUser"), |n| user_id(cx, n));
    let run_as_non_root = optional(fields.get("runAsNonRoot"), |n| {
        boolean(cx, n, "`runAsNonRoot`")
    });
    let read_only = optional(fields.get("readOnlyRootFilesystem"), |n| {
        boolean(cx, n, "`readOnlyRootFilesystem`")
    });
    let escalation = optional(fields.get("allowPrivilegeEscalation"), |n| {
        boolean(cx, n, "`allowPrivilegeEscalation`")
    });
    let capabilities = optional(fields.get("capabilities"), |n| {
        let caps = cx.fields(n, &V1_CAPABILITIES)?;
        let add = optional(caps.get("add"), |n| capability_names(cx, n, false));
        let drop = optional(caps.get("drop"), |n| capability_names(cx, n, true));
        Some((add?.unwrap_or_default(), drop?.unwrap_or_default()))
    });
    let (capabilities_add, capabilities_drop) = capabilities?.unwrap_or_default();
    let security = SecurityContext {
        privileged: privileged?.unwrap_or(false),
        run_as_user: run_as_user?,
        run_as_non_root: run_as_non_root?.unwrap_or(false),
        read_only_root_filesystem: read_only?.unwrap_or(false),
        capabilities_add,
        capabilities_drop,
        allow_privilege_escalation: escalation?,
    };
    allowed(cx, node.span, &security).then_some(security)
}

/// A pod's `securityContext`: what its containers run as unless they say.
pub(super) fn v1_pod(cx: &mut FileContext<'_>, node: &Node) -> Option<(Option<u32>, bool)> {
    let fields = cx.fields(node, &V1_POD_SECURITY_CONTEXT)?;
    let run_as_user = optional(fields.get("runAsUser"), |n| user_id(cx, n));
    let run_as_non_root = optional(fields.get("runAsNonRoot"), |n| {
        boolean(cx, n, "`runAsNonRoot`")
    });
    Some((run_as_user?, run_as_non_root?.unwrap_or(false)))
}

/// `runAsNonRoot` holds only with a user id kctl can see: Docker would
/// run the image's own user, which kctl does not read.
pub(super) fn check_non_root(
    cx: &mut FileContext<'_>,
    span: Span,
    security: &SecurityContext,
) -> bool {
    if !security.run_as_non_root {
        return true;
    }
    let problem = match security.run_as_user {
        Some(0) => "`runAsNonRoot` with `runAsUser: 0`",
        Some(_) => return true,
        None => "`runAsNonRoot` without `runAsUser`",
    };
    let error = cx
        .error(
            span,
            format!("{problem}: kctl cannot promise a non-root user"),
            "here",
        )
        .with_help("give `runAsUser` a user id other than 0 (kctl does not read the image's user)");
    cx.push(error);
    false
}

fn capability_names(
    cx: &mut FileContext<'_>,
    node: &Node,
    may_be_all: bool,
) -> Option<Vec<String>> {
    let names = cx.strings(node, "capabilities")?;
    let mut ok = Some(Vec::with_capacity(names.len()));
    for name in names {
        let bare = name
            .strip_prefix("CAP_")
            .unwrap_or(&name)
            .to_ascii_uppercase();
        let valid = crate::model::names::is_capability_name(&bare, may_be_all);
        if valid {
            if let Some(list) = &mut ok {
                list.push(bare);
            }
        } else {
            let error = cx
                .error(
                    node.span,
                    format!("`{name}` is no capability name"),
                    "bad capability",
                )
                .with_help("write names such as `NET_ADMIN` (`ALL` only under `drop`)");
            cx.push(error);
            ok = None;
        }
    }
    ok
}

/// Privileges only a cluster made with `kctl up --allow-privileged` runs.
fn allowed(cx: &mut FileContext<'_>, span: Span, security: &SecurityContext) -> bool {
    if !security.is_privileged() || cx.options.allow_privileged {
        return true;
    }
    let what = if security.privileged {
        "a privileged container"
    } else {
        "a container with added capabilities"
    };
    let error = cx
        .error(
            span,
            format!("{what} is refused: this cluster does not allow privileged containers"),
            "refused",
        )
        .with_help(
            "such a container owns its minion; a cluster made with `kctl up --allow-privileged` \
             runs it (as v0.5's --allow_privileged)",
        );
    cx.push(error);
    false
}
