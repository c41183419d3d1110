//! The real `gcloud` against a mock of Google's Compute Engine API
//! (tests/mock-compute/compute_api.py) on 127.0.0.1. One server per test,
//! with its own throwaway gcloud configuration holding an activated service
//! account whose token endpoint is the mock. Nothing reaches Google: every
//! API gcloud uses is pointed at the mock, and any other HTTP(S) request
//! goes to a proxy address where nothing listens.
//!
//! Each gcloud call goes through a recorder (`bin/gcloud` in the mock's
//! directory) that saves its argv and tags its User-Agent with a call id,
//! so every REST request in the mock's log belongs to one argv.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub const PROJECT: &str = "my-proj-123";
pub const ZONE: &str = "us-central1-b";
pub const REGION: &str = "us-central1";
pub const ACCOUNT: &str = "kctl-test@my-proj-123.iam.gserviceaccount.com";
const SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/mock-compute/compute_api.py"
);
const CALL_TAG: &str = "kctl-call-";

pub struct MockCompute {
    root: PathBuf,
    port: u16,
    child: Option<Child>,
    /// How far `requests.jsonl` has been taken by `take_calls`.
    taken: Mutex<u64>,
}

/// One gcloud call: its argv (starting with "gcloud") and the REST requests
/// it made, in order (batch parts follow their `POST /batch/...`).
#[derive(Debug, Clone)]
pub struct Call {
    pub argv: Vec<String>,
    pub requests: Vec<Value>,
}

impl Call {
    /// The words of the argv joined by spaces (for `contains` checks).
    pub fn line(&self) -> String {
        self.argv.join(" ")
    }
    /// Whether any request this call made is an insert or a delete.
    pub fn changed_anything(&self) -> bool {
        self.requests.iter().any(|r| {
            let path = r["path"].as_str().unwrap_or_default();
            // Operation waits are POSTs that change nothing.
            match r["method"].as_str() {
                Some("DELETE") => true,
                Some("POST") => path.starts_with("/compute/") && !path.ends_with("/wait"),
                _ => false,
            }
        })
    }
}

/// The real gcloud: the first `gcloud` on PATH that is not a recorder.
fn real_gcloud() -> &'static Path {
    static GCLOUD: OnceLock<PathBuf> = OnceLock::new();
    GCLOUD.get_or_init(|| {
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin")])
            .map(|d| d.join("gcloud"))
            .find(|p| p.is_file() && !p.starts_with(std::env::temp_dir()))
            .expect("the GCE tests need the Google Cloud CLI (`gcloud`; scripts/setup installs it)")
    })
}

/// One RSA key for every service account of this test process (making one
/// takes a while; the mock trusts any key).
fn service_account_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let out = Command::new("openssl")
            .args(["genrsa", "2048"])
            .stderr(Stdio::null())
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl genrsa failed");
        String::from_utf8(out.stdout).unwrap()
    })
}

fn python() -> &'static str {
    // The system python starts faster than a version manager's shim.
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

impl MockCompute {
    /// A mock whose gcloud configuration has an activated service account.
    pub fn start(tag: &str) -> MockCompute {
        let mock = MockCompute::start_server(tag);
        mock.activate();
        mock
    }

    fn start_server(tag: &str) -> MockCompute {
        let root = std::env::temp_dir().join(format!("kctl-mock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for sub in ["state", "config", "config-logged-out", "calls", "bin"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let mut mock = MockCompute {
            root,
            port: 0,
            child: None,
            taken: Mutex::new(0),
        };
        let stderr = std::fs::File::create(mock.root.join("server.err")).unwrap();
        let mut child = Command::new(python())
            .arg(SERVER)
            .arg("--state-dir")
            .arg(mock.root.join("state"))
            // Its stdin is ours: if this process dies without dropping the
            // mock (SIGKILL), the server sees EOF and stops.
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the mock Compute API (python3)");
        let stdout = child.stdout.take().unwrap();
        mock.child = Some(child);
        // The server prints its port once it listens; EOF means it died.
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        mock.port = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "the mock Compute API did not start: {}",
                std::fs::read_to_string(mock.root.join("server.err")).unwrap_or_default()
            )
        });
        mock.write_recorder();
        mock
    }

    /// `gcloud auth activate-service-account` with a key whose token_uri
    /// is the mock: what `gcloud auth login` leaves, without a browser.
    fn activate(&self) {
        let key = json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": service_account_key(),
            "client_email": ACCOUNT,
            "client_id": "100000000000000000001",
            "token_uri": format!("http://127.0.0.1:{}/token", self.port),
        });
        let file = self.root.join("sa.json");
        std::fs::write(&file, key.to_string()).unwrap();
        let out = Command::new(real_gcloud())
            .args(["auth", "activate-service-account"])
            .arg(format!("--key-file={}", file.display()))
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gcloud auth activate-service-account: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(&file).unwrap();
        // Activation's own token requests are not part of any test.
        *self.taken.lock().unwrap() = self.log_len();
    }

    fn write_recorder(&self) {
        let script = format!(
            "#!/bin/sh\n\
             # Saves this call's argv for the test, then runs the real gcloud with\n\
             # the call's id in its User-Agent (environment/ID).\n\
             id=\"$(date +%s%N)-$$\"\n\
             printf '%s\\0' \"$@\" > '{calls}/'\"$id\"\n\
             CLOUDSDK_METRICS_ENVIRONMENT=\"{CALL_TAG}$id\" exec '{real}' \"$@\"\n",
            calls = self.root.join("calls").display(),
            real = real_gcloud().display(),
        );
        let path = self.gcloud_program();
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The recorder to run instead of `gcloud` (it runs the real one).
    pub fn gcloud_program(&self) -> PathBuf {
        self.root.join("bin/gcloud")
    }

    /// A directory to put first on PATH so that `gcloud` is the recorder.
    pub fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }

    /// Environment for gcloud (and kctl) processes: the logged-in config.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_with_config(&self.root.join("config"))
    }

    /// The same with a configuration where nobody ever logged in.
    pub fn env_logged_out(&self) -> Vec<(String, String)> {
        self.env_with_config(&self.root.join("config-logged-out"))
    }

    fn env_with_config(&self, config: &Path) -> Vec<(String, String)> {
        let base = format!("http://127.0.0.1:{}", self.port);
        // Anything not pointed at the mock goes to a closed local port.
        let nowhere = "http://127.0.0.1:9";
        let pairs = [
            ("CLOUDSDK_CONFIG", config.display().to_string()),
            ("CLOUDSDK_CORE_DISABLE_PROMPTS", "1".into()),
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE",
                format!("{base}/compute/v1/"),
            ),
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER",
                format!("{base}/crm/"),
            ),
            ("CLOUDSDK_CORE_CHECK_GCE_METADATA", "false".into()),
            (
                "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK",
                "1".into(),
            ),
            ("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true".into()),
            ("CLOUDSDK_SURVEY_DISABLE_PROMPTS", "1".into()),
            ("HTTPS_PROXY", nowhere.into()),
            ("https_proxy", nowhere.into()),
            ("HTTP_PROXY", nowhere.into()),
            ("http_proxy", nowhere.into()),
            ("NO_PROXY", "127.0.0.1,localhost".into()),
            ("no_proxy", "127.0.0.1,localhost".into()),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// A gcloud for the engine: the recorder with this mock's environment.
    pub fn gcloud(&self) -> kctl::provider::gce::GcloudProcess {
        self.gcloud_with(self.env())
    }

    pub fn gcloud_logged_out(&self) -> kctl::provider::gce::GcloudProcess {
        self.gcloud_with(self.env_logged_out())
    }

    fn gcloud_with(&self, env: Vec<(String, String)>) -> kctl::provider::gce::GcloudProcess {
        let mut g = kctl::provider::gce::GcloudProcess::with_program(self.gcloud_program());
        for (k, v) in env {
            g = g.env(&k, &v);
        }
        g
    }

    // ---- what happened ----

    fn log_len(&self) -> u64 {
        std::fs::metadata(self.root.join("state/requests.jsonl")).map_or(0, |m| m.len())
    }

    /// Every REST request logged since the last `take_calls`, without
    /// taking them.
    pub fn requests(&self) -> Vec<Value> {
        let taken = *self.taken.lock().unwrap();
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.root.join("state/requests.jsonl")) {
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(taken)).unwrap();
            f.read_to_string(&mut text).unwrap();
        }
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The gcloud calls since the last take, in the order they started,
    /// each with its REST requests; then forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        let requests = self.requests();
        *self.taken.lock().unwrap() = self.log_len();
        let dir = self.root.join("calls");
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|id| {
                let path = dir.join(&id);
                let raw = std::fs::read(&path).unwrap();
                std::fs::remove_file(&path).unwrap();
                let mut argv = vec!["gcloud".to_string()];
                argv.extend(
                    raw.split(|&b| b == 0)
                        .filter(|w| !w.is_empty())
                        .map(|w| String::from_utf8_lossy(w).into_owned()),
                );
                let tag = format!("{CALL_TAG}{id}");
                let requests = requests
                    .iter()
                    .filter(|r| r["caller"] == tag.as_str())
                    .cloned()
                    .collect();
                Call { argv, requests }
            })
            .collect()
    }

    // ---- state ----

    /// Everything the mock holds (GET /mock/state).
    pub fn state(&self) -> Value {
        self.control("GET", "/mock/state", None)
    }

    /// `kind/name` of every network, subnetwork, firewall, route,
    /// instance, target pool and forwarding rule of the project, sorted.
    pub fn resources(&self) -> Vec<String> {
        let state = self.state();
        let mut out = vec![];
        if let Some(project) = state["projects"][PROJECT].as_object() {
            for kind in [
                "firewalls",
                "forwardingRules",
                "instances",
                "networks",
                "routes",
                "subnetworks",
                "targetPools",
            ] {
                if let Some(items) = project.get(kind).and_then(Value::as_object) {
                    out.extend(items.keys().map(|k| format!("{kind}/{k}")));
                }
            }
        }
        out.sort();
        out
    }

    pub fn instance(&self, name: &str) -> Value {
        self.state()["projects"][PROJECT]["instances"][name].clone()
    }

    /// One metadata value of an instance as GCE stores it (the startup
    /// script a VM would run, its ssh-keys).
    pub fn instance_metadata(&self, name: &str, key: &str) -> Option<String> {
        self.instance(name)["metadata"]["items"]
            .as_array()?
            .iter()
            .find(|i| i["key"] == key)
            .and_then(|i| i["value"].as_str().map(str::to_string))
    }

    // ---- controls ----

    /// Instance name -> `{"internalIp", "externalIp", "hostkeys": {type:
    /// base64}, "hostkeyDelayReads", "serialOutput"}` (any field optional):
    /// what the instance gets when it is created.
    pub fn set_hosts(&self, hosts: Value) {
        self.control("POST", "/mock/hosts", Some(hosts));
    }

    /// Appends to an instance's serial console (what `gcloud compute
    /// instances get-serial-port-output` reads: boot messages, the startup
    /// script's output).
    pub fn append_serial(&self, instance: &str, text: &str) {
        self.control(
            "POST",
            "/mock/serial",
            Some(json!({"instance": instance, "text": text})),
        );
    }

    /// `{"kind", "name"?, "method"?: insert|delete, "nth"?: 1, "times"?: 1
    /// or "always", "error": quota|unavailable|notReady|invalid|operation}`.
    pub fn fail(&self, failure: Value) {
        self.control("POST", "/mock/failures", Some(failure));
    }

    pub fn set_region_quota(&self, region: &str, metric: &str, limit: f64) {
        self.control(
            "POST",
            "/mock/project",
            Some(json!({"project": PROJECT, "regionQuotas": {region: {metric: limit}}})),
        );
    }

    pub fn set_project_metadata(&self, key: &str, value: &str) {
        self.control(
            "POST",
            "/mock/project",
            Some(json!({"project": PROJECT, "metadata": {key: value}})),
        );
    }

    /// `compute.requireOsLogin` or `compute.disableGuestAttributesAccess`.
    pub fn set_org_policy(&self, constraint: &str, enforced: bool) {
        self.control(
            "POST",
            "/mock/org-policies",
            Some(json!({ constraint: enforced })),
        );
    }

    /// Host keys appear only on the (n+1)th read of an instance's guest
    /// attributes (the guest agent publishes them some time into boot).
    pub fn set_hostkey_delay_reads(&self, reads: u32) {
        self.control(
            "POST",
            "/mock/config",
            Some(json!({"hostkeyDelayReads": reads})),
        );
    }

    pub fn deprecate_machine_type(&self, name: &str, replacement: &str) {
        self.control(
            "POST",
            "/mock/config",
            Some(json!({"deprecatedMachineTypes": {name: {
                "state": "DEPRECATED", "replacement": replacement}}})),
        );
    }

    /// Stored credentials stop working: issued tokens are revoked and the
    /// token endpoint answers `invalid_grant` (a deleted service account,
    /// an expired refresh token).
    pub fn break_credentials(&self) {
        self.control(
            "POST",
            "/mock/config",
            Some(json!({"tokenError": "invalid_grant", "revokeTokens": true})),
        );
    }

    /// Makes a resource directly, as someone else would have.
    pub fn create(&self, kind: &str, body: Value) {
        self.control(
            "POST",
            "/mock/resource",
            Some(json!({"project": PROJECT, "kind": kind, "zone": ZONE, "region": REGION, "body": body})),
        );
    }

    fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("mock Compute API");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let (head, text) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "{method} {path}: {head}\n{text}"
        );
        serde_json::from_str(text).unwrap()
    }
}

impl Drop for MockCompute {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // The dir goes; say what gcloud asked, for the failure's reader.
            let log =
                std::fs::read_to_string(self.root.join("state/requests.jsonl")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "mock Compute API: last requests (newest first):\n{}\nserver stderr:\n{}",
                tail.join("\n"),
                std::fs::read_to_string(self.root.join("server.err")).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

// ---- goldens ----

/// The words before the verb: "compute networks" vs "compute networks
/// subnets". Calls of one parallel stage share it.
fn group(argv: &[String]) -> String {
    let verbs = [
        "create",
        "describe",
        "delete",
        "list",
        "get-guest-attributes",
        "get-serial-port-output",
        "describe-from-family",
    ];
    argv.iter()
        .skip(1)
        .take_while(|a| !verbs.contains(&a.as_str()))
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first word after the verb: the resource a call is about.
fn target(argv: &[String]) -> String {
    let g = group(argv);
    let skip = 1 + g.split(' ').count() + 1;
    argv.get(skip)
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_default()
}

/// `/compute/v1/.../operations/operation-1795873-ab12/wait` ->
/// `.../operations/{op}/wait`: operation names are random.
fn stable_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with("operation-") {
                "{op}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// One REST request as a golden line: method, path, query (without
/// `alt=json`), key body fields, and the status when it is not 200.
pub fn rest_line(r: &Value) -> String {
    let mut line = format!(
        "{} {}",
        r["method"].as_str().unwrap_or("?"),
        stable_path(r["path"].as_str().unwrap_or("?"))
    );
    if let Some(query) = r["query"].as_object().filter(|q| !q.is_empty()) {
        let pairs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        line.push('?');
        line.push_str(&pairs.join("&"));
    }
    if let Some(body) = r.get("body").filter(|b| !b.is_null()) {
        line.push(' ');
        line.push_str(&body.to_string());
    }
    match r["status"].as_u64() {
        Some(200) | None => {}
        Some(code) => line.push_str(&format!(" -> {code}")),
    }
    line
}

/// Calls as golden text: each argv as a shell line (the work directory as
/// `$WORK`), then its REST requests indented (batch parts further), token
/// refreshes left out. Calls of a parallel stage (consecutive calls of one
/// group) are sorted by target, each target's calls kept in order.
pub fn golden_text(calls: &[Call], work_dir: &Path) -> String {
    let work = work_dir.display().to_string();
    let blocks: Vec<(String, String, String)> = calls
        .iter()
        .map(|c| {
            let mut text = kctl::provider::gce::shell_line(&c.argv).replace(&work, "$WORK");
            text.push('\n');
            for r in c.requests.iter().filter(|r| r["path"] != "/token") {
                let indent = if r["batch"] == true { "      " } else { "    " };
                text.push_str(indent);
                text.push_str(&rest_line(r));
                text.push('\n');
            }
            (group(&c.argv), target(&c.argv), text)
        })
        .collect();
    let mut out = String::new();
    let mut i = 0;
    while i < blocks.len() {
        let mut j = i;
        while j < blocks.len() && blocks[j].0 == blocks[i].0 {
            j += 1;
        }
        let mut stage: Vec<&(String, String, String)> = blocks[i..j].iter().collect();
        stage.sort_by(|a, b| a.1.cmp(&b.1));
        for block in stage {
            out.push_str(&block.2);
        }
        i = j;
    }
    out
}

/// Only the argv lines of golden text.
pub fn argv_lines(golden: &str) -> Vec<String> {
    golden
        .lines()
        .filter(|l| l.starts_with("gcloud "))
        .map(str::to_string)
        .collect()
}

/// Compares `actual` with tests/golden/`name`; `KCTL_BLESS=1` rewrites it.
pub fn golden(name: &str, actual: &str) {
    let path = super::repo().join("tests/golden").join(name);
    if std::env::var_os("KCTL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (KCTL_BLESS=1 writes it)", path.display()));
    if actual != expected {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(5)
            .map(|(i, (e, a))| format!("line {}:\n  golden: {e}\n  actual: {a}", i + 1))
            .collect();
        panic!(
            "{} differs (KCTL_BLESS=1 rewrites it); {} vs {} lines\n{}\n--- actual\n{actual}",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// Golden text without its REST lines: the argv of every call.
pub fn read_golden_argv(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(super::repo().join("tests/golden").join(name)).unwrap();
    argv_lines(&text)
}
