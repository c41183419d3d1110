//! The rules for names and ids, shared by the manifest decoder and the
//! checks of records read back (`state::checks`): one rule, one place.

pub const MAX_LABEL_LEN: usize = 63;
pub const MAX_SUBDOMAIN_LEN: usize = 253;
pub const MAX_SERVICE_ID_LEN: usize = 24;

/// What makes `name` no RFC 1123 DNS label (letters in either case, as
/// v0.5 accepted for pods and controllers), if anything.
pub fn dns_label_problem(name: &str, max_len: usize) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_string());
    }
    let len = name.chars().count();
    if len > max_len {
        return Some(format!("is {len} characters long; the limit is {max_len}"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Some(format!(
            "contains {bad:?}; only letters, digits and `-` are allowed"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("must start and end with a letter or digit".to_string());
    }
    None
}

/// What makes `name` no DNS subdomain (labels joined by dots, at most
/// 253 characters; letters in either case), if anything.
pub fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_string());
    }
    let len = name.chars().count();
    if len > MAX_SUBDOMAIN_LEN {
        return Some(format!(
            "is {len} characters long; the limit is {MAX_SUBDOMAIN_LEN}"
        ));
    }
    name.split('.').find_map(|label| {
        if label.is_empty() {
            return Some("has an empty part between dots".to_string());
        }
        dns_label_problem(label, MAX_LABEL_LEN).map(|problem| {
            match problem.strip_prefix("contains ") {
                Some(rest) => format!("contains {}", rest.replace("and `-`", "`-` and `.`")),
                None => format!("has a part `{label}` that {problem}"),
            }
        })
    })
}

/// The identities etcd knows by certificate name besides the minions:
/// its administrator, the workstation, etcd's members themselves (to
/// clients and to their peers), and the signer of helpers' renewals.
pub const IDENTITY_NAMES: [&str; 5] = ["root", "kctl", "etcd", "etcd-server", "kctl-signer"];

/// A minion's id: a DNS subdomain (a host name), and none of
/// [`IDENTITY_NAMES`]: a minion's certificate bears its id, and etcd would
/// take it for that identity.
pub fn minion_id_problem(id: &str) -> Option<String> {
    if IDENTITY_NAMES.contains(&id) {
        return Some(format!(
            "minion id {id:?} is the name of a cluster identity (one of {})",
            IDENTITY_NAMES.join(", ")
        ));
    }
    dns_subdomain_problem(id).map(|p| format!("minion id {id:?} {p}"))
}

/// An RFC 1035 label as GCE names its resources, projects and zones:
/// `[a-z]([-a-z0-9]*[a-z0-9])?`, 1–63 characters.
pub fn is_rfc1035(name: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Service ids become DNS names and environment variable prefixes
/// (`TOMCAT_SERVICE_HOST`): lower case, starting with a letter, short.
pub fn service_id_problem(id: &str) -> Option<String> {
    dns_label_problem(id, MAX_SERVICE_ID_LEN).or_else(|| {
        if id.chars().any(|c| c.is_ascii_uppercase()) {
            Some("must be lower case".to_string())
        } else if !id.starts_with(|c: char| c.is_ascii_lowercase()) {
            Some("must start with a letter".to_string())
        } else {
            None
        }
    })
}

/// An environment variable's name as a shell takes it.
pub fn is_c_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why `image` cannot be an image reference Docker is handed, if it cannot.
pub fn image_problem(image: &str) -> Option<&'static str> {
    if image.is_empty() {
        Some("is empty")
    } else if image.chars().any(char::is_control) {
        Some("contains a control character")
    } else if image.chars().any(char::is_whitespace) {
        Some("contains whitespace")
    } else {
        None
    }
}

/// A capability's name without `CAP_`, upper case; `ALL` only where it
/// may be (under `drop`).
pub fn is_capability_name(bare: &str, may_be_all: bool) -> bool {
    !bare.is_empty()
        && bare.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        && (may_be_all || bare != "ALL")
}

/// A unix user name kctl logs in as: it reaches ssh's argv, so it may not
/// look like an option.
pub fn user_name_problem(name: &str) -> Option<String> {
    let ok = (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    (!ok).then(|| format!("user name {name:?} is no unix user name"))
}

/// A host ssh goes to: a DNS name or an address (IPv6 too), never
/// something ssh would read as an option.
pub fn host_name_problem(host: &str) -> Option<String> {
    let ok = (1..=MAX_SUBDOMAIN_LEN).contains(&host.len())
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    (!ok).then(|| format!("host {host:?} is no host name or address"))
}

/// A path on a machine kctl writes into unit files and argv: absolute,
/// plain characters only, no `..`, and not `/` itself (kctl removes
/// what is below its directories).
pub fn machine_path_problem(path: &str) -> Option<String> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && path.len() <= 4096
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_' | '+'))
        && !path.split('/').any(|part| part == "..");
    (!ok).then(|| format!("path {path:?} is no plain absolute path"))
}
