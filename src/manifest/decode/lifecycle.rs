//! A container's `lifecycle` hooks (the same in v1beta1 and v1): `exec`
//! commands kctl runs in the container after it starts and before it is
//! stopped. `httpGet` hooks are refused with the reason.

use super::*;

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

/// The postStart and preStop commands (empty: none).
pub(super) fn lifecycle(
    cx: &mut FileContext<'_>,
    node: &Node,
) -> Option<(Vec<String>, Vec<String>)> {
    let fields = cx.fields(node, &LIFECYCLE)?;
    let post_start = optional(fields.get("postStart"), |n| handler(cx, n));
    let pre_stop = optional(fields.get("preStop"), |n| handler(cx, n));
    Some((
        post_start?.unwrap_or_default(),
        pre_stop?.unwrap_or_default(),
    ))
}

fn handler(cx: &mut FileContext<'_>, node: &Node) -> Option<Vec<String>> {
    let fields = cx.fields(node, &HANDLER)?;
    if let Some(entry) = ["httpGet", "tcpSocket", "sleep"]
        .into_iter()
        .find_map(|name| fields.entry(name))
    {
        let error = cx
            .error(
                entry.key_span,
                format!("kctl runs `exec` hooks; `{}` hooks are not available yet", entry.key),
                "not available",
            )
            .with_help("write the hook as a command, e.g. `\"exec\": {\"command\": [\"wget\", \"-q\", \"-O-\", \"http://127.0.0.1:8080/quit\"]}`");
        cx.push(error);
        return None;
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
    Some(argv)
}
