//! Reading gcloud's JSON. Only stdout is data; `create` and `list` print a
//! list, `describe` one object.

use serde_json::Value;
use std::net::Ipv4Addr;

/// One VM as kctl needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub internal_ip: Ipv4Addr,
    pub external_ip: Ipv4Addr,
    /// Pinned host keys, known_hosts style without the host: `"<type> <base64>"`.
    pub host_keys: Vec<String>,
}

/// The JSON object of a create (a one-element list) or a describe (the
/// object itself).
pub fn single_object(stdout: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(stdout).map_err(|e| format!("not JSON: {e}"))?;
    match value {
        Value::Array(mut items) if items.len() == 1 => Ok(items.remove(0)),
        Value::Array(items) => Err(format!("expected one resource, got {}", items.len())),
        Value::Object(_) => Ok(value),
        _ => Err("expected a JSON object or list".into()),
    }
}

pub fn list(stdout: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str(stdout).map_err(|e| format!("not JSON: {e}"))? {
        Value::Array(items) => Ok(items),
        _ => Err("expected a JSON list".into()),
    }
}

pub fn names(items: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = items
        .iter()
        .filter_map(|i| i.get("name")?.as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Name and addresses of an Instance resource: `networkInterfaces[0].networkIP`
/// and `networkInterfaces[0].accessConfigs[0].natIP`.
pub fn instance(value: &Value) -> Result<Instance, String> {
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .ok_or("instance without a name")?;
    let nic = value
        .pointer("/networkInterfaces/0")
        .ok_or_else(|| format!("{name}: no network interface"))?;
    let ip = |pointer: &str, what: &str| -> Result<Ipv4Addr, String> {
        nic.pointer(pointer)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{name}: no {what}"))?
            .parse()
            .map_err(|e| format!("{name}: bad {what}: {e}"))
    };
    Ok(Instance {
        name: name.to_string(),
        internal_ip: ip("/networkIP", "internal IP (networkIP)")?,
        external_ip: ip("/accessConfigs/0/natIP", "external IP (natIP)")?,
        host_keys: vec![],
    })
}

/// A `deprecated` block's state, if the resource has one (how a retirement
/// of f1-micro, or of the image, would show up).
pub fn deprecation(value: &Value) -> Option<String> {
    let block = value.get("deprecated")?;
    let state = block
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("DEPRECATED");
    let replacement = block
        .get("replacement")
        .and_then(Value::as_str)
        .map(|r| format!(", replacement {}", r.rsplit('/').next().unwrap_or(r)))
        .unwrap_or_default();
    Some(format!("{state}{replacement}"))
}

/// Host-key types in order of preference; gcloud accepts only these three.
const KEY_TYPES: [&str; 3] = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"];

/// The preferred host key from a `get-guest-attributes --query-path=hostkeys/`
/// answer, as `"<type> <base64>"`: ed25519, else ecdsa, else rsa. Values are
/// checked like gcloud does (cut at whitespace, base64 must round-trip);
/// invalid ones are skipped. Empty if none is usable.
pub fn host_keys(stdout: &str) -> Result<Vec<String>, String> {
    let items = list(stdout)?;
    let mut found: Vec<(usize, String)> = items
        .iter()
        .filter(|i| i.get("namespace").and_then(Value::as_str) == Some("hostkeys"))
        .filter_map(|i| {
            let key = i.get("key")?.as_str()?;
            let rank = KEY_TYPES.iter().position(|t| *t == key)?;
            let value = i.get("value")?.as_str()?.split_whitespace().next()?;
            base64_round_trips(value).then(|| (rank, format!("{key} {value}")))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().take(1).map(|(_, k)| k).collect())
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding; None if `text` is not exactly that.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i == bytes.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut acc: u32 = 0;
        for &c in &chunk[..4 - pad] {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            acc = acc << 6 | v;
        }
        acc <<= 6 * pad as u32;
        let three = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let mut acc: u32 = 0;
        for (i, &b) in chunk.iter().enumerate() {
            acc |= (b as u32) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(acc >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// gcloud's host-key check: decoding and re-encoding gives the same text.
pub fn base64_round_trips(text: &str) -> bool {
    base64_decode(text).is_some_and(|d| base64_encode(&d) == text)
}

/// A field an existing resource must have for `up` to adopt it.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The field at this JSON pointer equals the value.
    Is(&'static str, Value),
    /// The URL at this JSON pointer ends with the path (`/networks/kctl-demo`).
    EndsWith(&'static str, String),
}

/// What differs between `value` and `expect`, one line each.
pub fn mismatches(value: &Value, expect: &[Expect]) -> Vec<String> {
    expect
        .iter()
        .filter_map(|e| {
            let (pointer, ok, wanted) = match e {
                Expect::Is(p, want) => (*p, value.pointer(p) == Some(want), want.to_string()),
                Expect::EndsWith(p, suffix) => (
                    *p,
                    value
                        .pointer(p)
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.ends_with(suffix.as_str())),
                    format!("…{suffix}"),
                ),
            };
            let found = value
                .pointer(pointer)
                .map_or("nothing".into(), Value::to_string);
            (!ok).then(|| format!("{pointer} is {found}, expected {wanted}"))
        })
        .collect()
}
