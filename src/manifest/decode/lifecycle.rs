//! A container's `lifecycle` hooks (the same in v1beta1 and v1): an `exec`
//! command kctl runs in the container, or an `httpGet` the minion sends to
//! the pod, after it starts and before it is stopped. `tcpSocket` and
//! `sleep` hooks are refused with the reason.

use super::*;
use crate::model::{Hook, HttpGetHook};

pub(super) static LIFECYCLE: Shape = Shape {
    what: "`lifecycle`",
    fields: &["postStart", "preStop"],
    ignored: &[],
};
static HANDLER: Shape = Shape {
    what: "a lifecycle hook",
    fields: &["exec", "httpGet", "tcpSocket", "sleep"],
    ignored: &[],
};

/// The postStart and preStop hooks.
pub(super) fn lifecycle(
    cx: &mut FileContext<'_>,
    node: &Node,
    scope: &mut PodScope,
) -> Option<(Option<Hook>, Option<Hook>)> {
    let fields = cx.fields(node, &LIFECYCLE)?;
    let post_start = optional(fields.get("postStart"), |n| handler(cx, n, scope));
    let pre_stop = optional(fields.get("preStop"), |n| handler(cx, n, scope));
    Some((post_start?, pre_stop?))
}

fn handler(cx: &mut FileContext<'_>, node: &Node, scope: &mut PodScope) -> Option<Hook> {
    let fields = cx.fields(node, &HANDLER)?;
    if let Some(entry) = ["tcpSocket", "sleep"]
        .into_iter()
        .find_map(|name| fields.entry(name))
    {
        let error = cx
            .error(
                entry.key_span,
                format!(
                    "kctl runs `exec` and `httpGet` hooks; `{}` hooks are not available",
                    entry.key
                ),
                "not available",
            )
            .with_help(
                "write the hook as a command, e.g. `\"exec\": {\"command\": [\"sleep\", \"5\"]}`",
            );
        cx.push(error);
        return None;
    }
    if let (Some(_), Some(second)) = (fields.entry("exec"), fields.entry("httpGet")) {
        let error = cx
            .error(
                second.key_span,
                "a lifecycle hook takes only one action".to_string(),
                "second action",
            )
            .with_help("keep either `exec` or `httpGet`");
        cx.push(error);
        return None;
    }
    if let Some(get) = fields.get("httpGet") {
        let action = probe_action(cx, "httpGet", get, scope, &HTTP_GET, "hook")?;
        let ProbeAction::HttpGet { path, port, host } = action else {
            return None;
        };
        return Some(Hook::HttpGet(HttpGetHook { path, port, host }));
    }
    let exec = cx.require(&fields, "exec")?;
    let exec = cx.fields(exec, &EXEC)?;
    let command = cx.require(&exec, "command")?;
    let argv = cx.strings(command, "hook `command`")?;
    let bytes: usize = argv.iter().map(String::len).sum();
    if argv.len() > crate::model::MAX_HOOK_ARGS || bytes > crate::model::MAX_HOOK_BYTES {
        let error = cx
            .error(
                command.span,
                "a hook's `command` is too long".to_string(),
                "too long",
            )
            .with_help(format!(
                "at most {} arguments and {} bytes: put a longer script in the image",
                crate::model::MAX_HOOK_ARGS,
                crate::model::MAX_HOOK_BYTES
            ));
        cx.push(error);
        return None;
    }
    if argv.is_empty() {
        let error = cx
            .error(
                command.span,
                "a hook's `command` is empty".to_string(),
                "empty",
            )
            .with_help("give the command to run, e.g. `[\"sh\", \"-c\", \"nginx -s quit\"]`");
        cx.push(error);
        return None;
    }
    Some(Hook::Exec(argv))
}
