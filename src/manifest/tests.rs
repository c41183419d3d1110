use super::*;
use crate::model::{
    Container, EnvVar, Labels, NodePort, Pod, PodSpec, PodTemplate, Port, PortRef, Probe,
    ProbeAction, Protocol, ReplicationController, RestartPolicy, Service,
};
use miette::Diagnostic;

const TOMCAT_CONTROLLER: &str = r#"{"id": "tomcatController", "kind": "ReplicationController", "apiVersion": "v1beta1",
 "desiredState": {"replicas": 2, "replicaSelector": {"name": "tomcatCluster"},
   "podTemplate": {"desiredState": {"manifest": {"version": "v1beta1", "id": "tomcat",
       "containers": [{"name": "tomcat", "image": "tutum/tomcat",
                       "ports": [{"containerPort": 8080, "hostPort": 80}]}]}},
     "labels": {"name": "tomcatCluster"}}},
 "labels": {"name": "tomcatCluster"}}
"#;

const TOMCAT_SERVICE: &str = r#"{"id": "tomcat", "kind": "Service", "apiVersion": "v1beta1", "port": 8080, "containerPort": 8080,
 "labels": {"name": "tomcatCluster"}, "selector": {"name": "tomcatCluster"}}
"#;

const TOMCAT_CONTROLLER_YAML: &str = "\
id: tomcatController
kind: ReplicationController
apiVersion: v1beta1
desiredState:
  replicas: 2
  replicaSelector:
    name: tomcatCluster
  podTemplate:
    desiredState:
      manifest:
        version: v1beta1
        id: tomcat
        containers:
          - name: tomcat
            image: tutum/tomcat
            ports:
              - containerPort: 8080
                hostPort: 80
    labels:
      name: tomcatCluster
labels:
  name: tomcatCluster
";

const TOMCAT_SERVICE_YAML: &str = "\
id: tomcat
kind: Service
apiVersion: v1beta1
port: 8080
containerPort: 8080
labels:
  name: tomcatCluster
selector:
  name: tomcatCluster
";

// ---- helpers ----

/// Manifests read as `apply` reads them by default.
fn parse_sources(sources: &[Source]) -> Result<Loaded, ManifestErrors> {
    super::parse_sources(sources, LoadOptions::default())
}

fn load_paths(paths: &[PathBuf]) -> Result<Loaded, ManifestErrors> {
    super::load_paths(paths, LoadOptions::default())
}

fn source(name: &str, text: &str) -> Source {
    Source {
        name: name.to_string(),
        text: text.to_string(),
    }
}

fn load(sources: &[Source]) -> Loaded {
    match parse_sources(sources) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("expected no errors, got: {:#?}", errors.errors),
    }
}

fn load_one(name: &str, text: &str) -> Loaded {
    load(&[source(name, text)])
}

fn errors_of(sources: &[Source]) -> Vec<ManifestError> {
    match parse_sources(sources) {
        Ok(loaded) => panic!("expected errors, got objects: {:#?}", loaded.objects),
        Err(errors) => errors.errors,
    }
}

/// The single error of one manifest, checked to mention `message`.
fn only_error(name: &str, text: &str, message: &str) -> ManifestError {
    let mut errors = errors_of(&[source(name, text)]);
    assert_eq!(errors.len(), 1, "expected exactly one error: {errors:#?}");
    let error = errors.remove(0);
    assert!(
        error.to_string().contains(message),
        "error `{error}` does not mention `{message}`"
    );
    error
}

fn strict() -> LoadOptions {
    LoadOptions {
        strict: true,
        kind: None,
        allow_host_dir: false,
        allow_privileged: false,
        disks_unavailable_on: None,
    }
}

/// The error that mentions `message` of one manifest read with `--strict`.
fn strict_error(name: &str, text: &str, message: &str) -> ManifestError {
    let errors = match super::parse_sources(&[source(name, text)], strict()) {
        Ok(loaded) => panic!("expected errors, got objects: {:#?}", loaded.objects),
        Err(errors) => errors.errors,
    };
    let mut mentioning = errors
        .into_iter()
        .filter(|error| error.to_string().contains(message));
    let error = mentioning
        .next()
        .unwrap_or_else(|| panic!("no error mentions `{message}`"));
    assert!(
        mentioning.next().is_none(),
        "two errors mention `{message}`"
    );
    error
}

/// The single warning of one manifest that loads, checked to mention
/// `message`.
fn only_warning(name: &str, text: &str, message: &str) -> ManifestWarning {
    let mut loaded = load_one(name, text);
    assert_eq!(
        loaded.warnings.len(),
        1,
        "expected exactly one warning: {:#?}",
        loaded.warnings
    );
    let warning = loaded.warnings.remove(0);
    assert!(
        warning.to_string().contains(message),
        "warning `{warning}` does not mention `{message}`"
    );
    warning
}

fn help_of(diagnostic: &dyn Diagnostic) -> String {
    diagnostic.help().map(|h| h.to_string()).unwrap_or_default()
}

/// Where a diagnostic's first label points.
fn span_of(diagnostic: &dyn Diagnostic) -> miette::SourceSpan {
    let label = diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .expect("the diagnostic has a span");
    *label.inner()
}

/// The text a diagnostic's span covers.
fn spanned<'t>(text: &'t str, diagnostic: &dyn Diagnostic) -> &'t str {
    let span = span_of(diagnostic);
    &text[span.offset()..span.offset() + span.len()]
}

/// 1-based line and character column of a byte offset, computed here
/// independently of the module's own helper.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (at, c) in text.char_indices() {
        if at >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

fn error_position(text: &str, diagnostic: &dyn Diagnostic) -> (usize, usize) {
    line_col(text, span_of(diagnostic).offset())
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tomcat_labels() -> Labels {
    labels(&[("name", "tomcatCluster")])
}

fn expected_controller() -> Object {
    Object::ReplicationController(ReplicationController {
        id: "tomcatController".into(),
        labels: tomcat_labels(),
        replicas: 2,
        selector: tomcat_labels(),
        template: PodTemplate {
            labels: tomcat_labels(),
            spec: PodSpec {
                containers: vec![Container {
                    name: "tomcat".into(),
                    image: "tutum/tomcat".into(),
                    ports: vec![Port {
                        name: None,
                        container_port: 8080,
                        host_port: Some(80),
                        protocol: Protocol::Tcp,
                    }],
                    ..Default::default()
                }],
                restart_policy: RestartPolicy::Always,
                volumes: vec![],
            },
        },
    })
}

fn expected_service() -> Object {
    Object::Service(Service {
        id: "tomcat".into(),
        labels: tomcat_labels(),
        selector: tomcat_labels(),
        port: 8080,
        container_port: Some(PortRef::Number(8080)),
        protocol: Protocol::Tcp,
        portal_ip: None,
        external: false,
        public_ips: vec![],
        node_port: None,
    })
}

/// A pod manifest around the given containers (JSON text).
fn pod_with(containers: &str) -> String {
    format!(
        r#"{{"kind": "Pod", "apiVersion": "v1beta1", "id": "web",
 "desiredState": {{"manifest": {{"version": "v1beta1", "containers": [{containers}]}}}}}}"#
    )
}

fn only_pod(loaded: &Loaded) -> &Pod {
    match loaded.objects.as_slice() {
        [Object::Pod(pod)] => pod,
        other => panic!("expected one pod, got {other:#?}"),
    }
}

/// A ReplicationController with the given `desiredState` members.
fn controller_with(state: &str) -> String {
    format!(
        r#"{{"kind": "ReplicationController", "apiVersion": "v1beta1", "id": "web", "desiredState": {{{state}}}}}"#
    )
}

const WEB_TEMPLATE: &str = r#""podTemplate": {"labels": {"name": "web"},
  "desiredState": {"manifest": {"containers": [{"name": "web", "image": "nginx"}]}}}"#;

/// A Service with the given members besides `kind` and `apiVersion`.
fn service_with(members: &str) -> String {
    format!(r#"{{"kind": "Service", "apiVersion": "v1beta1", {members}}}"#)
}

// ---- the tomcat example ----

#[test]
fn tomcat_json_parses_to_the_model() {
    let loaded = load(&[
        source("tomcat-controller.json", TOMCAT_CONTROLLER),
        source("tomcat-service.json", TOMCAT_SERVICE),
    ]);
    assert_eq!(
        loaded.objects,
        vec![expected_controller(), expected_service()]
    );
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
}

#[test]
fn tomcat_yaml_parses_to_the_same_model() {
    let loaded = load(&[
        source("tomcat-controller.yaml", TOMCAT_CONTROLLER_YAML),
        source("tomcat-service.yml", TOMCAT_SERVICE_YAML),
    ]);
    assert_eq!(
        loaded.objects,
        vec![expected_controller(), expected_service()]
    );
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
}

#[test]
fn multi_document_yaml_yields_every_object() {
    let text =
        format!("# tomcat\n---\n{TOMCAT_CONTROLLER_YAML}---\n---\n{TOMCAT_SERVICE_YAML}...\n");
    let loaded = load_one("tomcat.yaml", &text);
    assert_eq!(
        loaded.objects,
        vec![expected_controller(), expected_service()]
    );
}

#[test]
fn json_documents_in_a_yaml_stream() {
    let text = format!("---\n{TOMCAT_CONTROLLER}---\n{TOMCAT_SERVICE}");
    let loaded = load_one("tomcat.yaml", &text);
    assert_eq!(
        loaded.objects,
        vec![expected_controller(), expected_service()]
    );
}

#[test]
fn a_list_expands_to_its_items() {
    let text = format!(
        r#"{{"kind": "List", "apiVersion": "v1beta1", "items": [{TOMCAT_CONTROLLER}, {TOMCAT_SERVICE}]}}"#
    );
    let loaded = load_one("all.json", &text);
    assert_eq!(
        loaded.objects,
        vec![expected_controller(), expected_service()]
    );
}

#[test]
fn list_items_inherit_the_list_api_version() {
    let item = TOMCAT_SERVICE.replace(r#""apiVersion": "v1beta1", "#, "");
    let text = format!(r#"{{"kind": "List", "apiVersion": "v1beta1", "items": [{item}]}}"#);
    assert!(load_one("all.json", &text).warnings.is_empty());
}

#[test]
fn format_is_sniffed_for_stdin_and_unknown_extensions() {
    assert_eq!(
        load_one("<stdin>", TOMCAT_SERVICE).objects,
        vec![expected_service()]
    );
    assert_eq!(
        load_one("<stdin>", TOMCAT_SERVICE_YAML).objects,
        vec![expected_service()]
    );
    assert_eq!(
        load_one("service.txt", TOMCAT_SERVICE_YAML).objects,
        vec![expected_service()]
    );
    // A .json file is parsed as JSON; what only YAML takes is read as YAML,
    // as v0.5 read every file, with a warning at the first non-JSON byte.
    let warning = only_warning("service.json", TOMCAT_SERVICE_YAML, "not valid JSON");
    assert_eq!(error_position(TOMCAT_SERVICE_YAML, &warning), (1, 1));
    // When YAML cannot read it either, the JSON error is the one shown.
    let error = only_error("service.json", "{\"kind\": [}", "invalid JSON");
    assert_eq!(error_position("{\"kind\": [}", &error), (1, 11));
}

// ---- field names ----

#[test]
fn keys_match_case_insensitively_with_one_warning_per_spelling() {
    let text = r#"{"Id": "web", "kind": "Pod", "apiVersion": "v1beta1",
 "DesiredState": {"manifest": {"containers": [
   {"name": "a", "image": "nginx", "ports": [{"ContainerPort": 80}]},
   {"name": "b", "image": "nginx", "ports": [{"ContainerPort": 81}]}]}}}"#;
    let loaded = load_one("web.json", text);
    let pod = only_pod(&loaded);
    assert_eq!(pod.id, "web");
    assert_eq!(pod.spec.containers[1].ports[0].container_port, 81);
    let messages: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        messages,
        [
            "field `Id` should be spelled `id`",
            "field `DesiredState` should be spelled `desiredState`",
            "field `ContainerPort` should be spelled `containerPort`",
        ]
    );
    let warning = &loaded.warnings[2];
    assert_eq!(warning.severity(), Some(miette::Severity::Warning));
    assert_eq!(warning.file(), "web.json");
    assert_eq!(line_col(text, warning.span().offset()), (3, 47));
}

#[test]
fn misspelt_case_is_warned_once_per_file() {
    let text = TOMCAT_SERVICE.replace("\"port\"", "\"Port\"");
    let loaded = load(&[
        source("a.json", &text),
        source("b.json", &text.replace("tomcat\"", "other\"")),
    ]);
    assert_eq!(loaded.warnings.len(), 2);
    assert_eq!(loaded.warnings[0].file(), "a.json");
    assert_eq!(loaded.warnings[1].file(), "b.json");
}

#[test]
fn a_field_given_twice_in_different_case_is_an_error() {
    let text = TOMCAT_SERVICE.replace(r#""port": 8080"#, r#""port": 8080, "PORT": 81"#);
    let error = only_error("s.json", &text, "field `port` is given twice");
    assert_eq!(spanned(&text, &error), "\"PORT\"");
}

#[test]
fn an_unknown_field_is_a_warning_with_a_suggestion() {
    // v0.5 ignored unknown fields; kctl says so, and `--strict` refuses.
    let text = "{\"id\": \"web\", \"kind\": \"Pod\", \"apiVersion\": \"v1beta1\",\n \"desiredState\": {\"manifest\": {\"containers\": [\n   {\"name\": \"web\", \"image\": \"nginx\",\n    \"comand\": [\"nginx\"]}]}}}";
    let warning = only_warning("web.json", text, "unknown field `comand` in a container");
    assert_eq!(spanned(text, &warning), "\"comand\"");
    assert_eq!(error_position(text, &warning), (4, 5));
    assert_eq!(warning.file(), "web.json");
    assert_eq!(help_of(&warning), "did you mean `command`?");
    let error = strict_error("web.json", text, "unknown field `comand` in a container");
    assert_eq!(spanned(text, &error), "\"comand\"");
    assert_eq!(
        help_of(&error),
        "did you mean `command`? (an error under --strict)"
    );
}

#[test]
fn a_misspelt_required_field_is_an_error_at_the_typo() {
    let text = "{\"id\": \"web\", \"kind\": \"Pod\", \"apiVersion\": \"v1beta1\",\n \"desiredState\": {\"manifest\": {\"containers\": [\n   {\"name\": \"web\", \"image\": \"nginx\",\n    \"ports\": [{\"contianerPort\": 80}]}]}}}";
    let error = only_error("web.json", text, "a port is missing `containerPort`");
    assert!(error
        .to_string()
        .contains("`contianerPort` is no field of it"));
    assert_eq!(spanned(text, &error), "\"contianerPort\"");
    assert_eq!(error_position(text, &error), (4, 16));
    assert_eq!(error.file(), Some("web.json"));
    assert_eq!(help_of(&error), "did you mean `containerPort`?");
    // The typo's own warning would say the same again.
    let errors = match parse_sources(&[source("web.json", text)]) {
        Err(errors) => errors,
        Ok(_) => unreachable!(),
    };
    assert!(errors.warnings.is_empty(), "{:#?}", errors.warnings);
}

#[test]
fn a_misspelt_field_in_yaml_points_at_its_line() {
    let text = TOMCAT_SERVICE_YAML.replace("selector:", "selectr:");
    let error = only_error("s.yaml", &text, "a Service is missing `selector`");
    assert_eq!(error_position(&text, &error), (8, 1));
    assert_eq!(help_of(&error), "did you mean `selector`?");
}

#[test]
fn a_misplaced_field_says_where_it_belongs() {
    let text = TOMCAT_CONTROLLER.replace(r#""kind""#, r#""replicas": 2, "kind""#);
    let warning = only_warning("c.json", &text, "unknown field `replicas`");
    assert!(help_of(&warning).contains("belongs in a ReplicationController's `desiredState`"));
}

#[test]
fn ignored_fields_give_one_warning_for_the_whole_run() {
    let first = TOMCAT_SERVICE.replace(r#""port""#, r#""sessionAffinity": "None", "port""#);
    let second = TOMCAT_CONTROLLER
        .replace(
            r#""ports""#,
            r#""terminationMessagePath": "/dev/log", "ports""#,
        )
        .replace(r#""version""#, r#""dnsPolicy": "Default", "version""#);
    let loaded = load(&[source("s.json", &first), source("c.json", &second)]);
    assert_eq!(loaded.warnings.len(), 1, "{:#?}", loaded.warnings);
    let warning = &loaded.warnings[0];
    assert_eq!(
        warning.to_string(),
        "kctl ignores the v1beta1 fields `sessionAffinity`, `dnsPolicy`, `terminationMessagePath`"
    );
    assert_eq!(warning.file(), "s.json");
    let span = warning.span();
    assert_eq!(
        &first[span.offset()..span.offset() + span.len()],
        "\"sessionAffinity\""
    );
}

#[test]
fn ignored_subtrees_are_not_checked() {
    let text = TOMCAT_CONTROLLER.replace(
        r#""kind""#,
        r#""currentState": {"anything": [1, {"goes": true}]}, "kind""#,
    );
    let loaded = load_one("c.json", &text);
    assert_eq!(loaded.objects, vec![expected_controller()]);
    assert_eq!(loaded.warnings.len(), 1);
}

// ---- syntax errors and positions ----

#[test]
fn a_json_syntax_error_has_its_line_and_column() {
    let text = "{\"id\": \"web\",\n \"kind\": \"Pod\"\n \"apiVersion\": \"v1beta1\"}";
    let error = only_error("web.json", text, "invalid JSON");
    assert_eq!(error_position(text, &error), (3, 2));
    assert_eq!(error.file(), Some("web.json"));
}

#[test]
fn a_yaml_syntax_error_has_its_line_and_column() {
    let text = "id: web\nkind: Pod\ndesiredState:\n  manifest: [a, b\nlabels: {}\n";
    let error = only_error("web.yaml", text, "invalid YAML");
    assert_eq!(error_position(text, &error), (5, 7));
    let text = "id: web\nkind: 'Pod\n";
    let error = only_error("web.yaml", text, "invalid YAML");
    assert_eq!(error_position(text, &error), (2, 7));
}

#[test]
fn non_ascii_text_before_an_error_keeps_the_column_right() {
    let json = r#"{"id": "web", "kind": "Service", "apiVersion": "v1beta1", "port": 80, "selector": {"note": "café ☕ 日本"}, "bogus": 1}"#;
    let error = strict_error("web.json", json, "unknown field `bogus`");
    assert_eq!(spanned(json, &error), "\"bogus\"");
    assert_eq!(error_position(json, &error), (1, 106));

    let syntax = r#"{"labels": {"note": "日本語"} "x": 1}"#;
    let error = only_error("web.json", syntax, "invalid JSON");
    assert_eq!(spanned(syntax, &error), "\"");
    assert_eq!(error_position(syntax, &error), (1, 28));

    let yaml = "kind: Service\nselector: {note: \"日本語 ☕\"}\nid: web\nport: 80\nbogus: 1\n";
    let error = strict_error("web.yaml", yaml, "unknown field `bogus`");
    assert_eq!(spanned(yaml, &error), "bogus");
    assert_eq!(error_position(yaml, &error), (5, 1));
    let yaml = "kind: Service\nselector: {note: \"日本語 ☕\", bad: 'x}\n";
    let error = only_error("web.yaml", yaml, "invalid YAML");
    assert_eq!(spanned(yaml, &error), "'");
    assert_eq!(error_position(yaml, &error), (2, 32));
}

#[test]
fn byte_order_marks_and_crlf_line_ends_keep_spans_right() {
    let json = "\u{feff}{\"kind\": \"Service\",\r\n \"id\": \"s\", \"port\": 80,\r\n \"selector\": {\"a\": \"é\"}, \"bogus\": 1}\r\n";
    let error = strict_error("s.json", json, "unknown field `bogus`");
    assert_eq!(spanned(json, &error), "\"bogus\"");
    assert_eq!(error_position(json, &error), (3, 26));
    let yaml = "\u{feff}kind: Service\r\nid: s\r\nport: 80\r\nselector: {a: é}\r\nbogus: 1\r\n";
    let error = strict_error("s.yaml", yaml, "unknown field `bogus`");
    assert_eq!(spanned(yaml, &error), "bogus");
    assert_eq!(error_position(yaml, &error), (5, 1));
}

#[test]
fn a_duplicate_key_is_an_error() {
    let text = TOMCAT_SERVICE.replace(r#""port": 8080"#, r#""port": 8080, "port": 81"#);
    let error = only_error("s.json", &text, "duplicate key `port`");
    assert_eq!(error_position(&text, &error), (1, 76));
    let yaml = format!("{TOMCAT_SERVICE_YAML}port: 81\n");
    let error = only_error("s.yaml", &yaml, "duplicate key `port`");
    assert_eq!(error_position(&yaml, &error), (10, 1));
}

#[test]
fn every_bad_file_is_reported() {
    let errors = parse_sources(&[
        source("a.json", "{\"kind\": \"Pod\""),
        source("good.json", TOMCAT_SERVICE),
        source(
            "b.yaml",
            "kind: Service\nid: x_y\nport: 80\nselecter: {a: b}\n",
        ),
    ])
    .unwrap_err();
    assert_eq!(errors.errors.len(), 3, "{:#?}", errors.errors);
    assert_eq!(errors.errors[0].file(), Some("a.json"));
    assert_eq!(errors.errors[1].file(), Some("b.yaml"));
    assert_eq!(errors.errors[2].file(), Some("b.yaml"));
    assert_eq!(
        errors.to_string(),
        "3 errors in manifests; nothing was applied"
    );
    assert_eq!(errors.related().map(|r| r.count()), Some(3));
}

#[test]
fn two_bad_files_give_two_errors() {
    let errors =
        parse_sources(&[source("a.json", "{"), source("b.yaml", "kind: Nope\n")]).unwrap_err();
    assert_eq!(errors.errors.len(), 2);
    assert_eq!(
        errors.to_string(),
        "2 errors in manifests; nothing was applied"
    );
    let one = parse_sources(&[source("a.json", "{")]).unwrap_err();
    assert_eq!(one.to_string(), "1 error in manifests; nothing was applied");
}

#[test]
fn an_empty_file_is_an_error() {
    let errors = errors_of(&[source("empty.yaml", "# nothing yet\n")]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0]
        .to_string()
        .contains("`empty.yaml` holds no manifests"));
    assert!(errors[0].span().is_none());
}

#[test]
fn duplicate_ids_across_files_point_at_the_second() {
    let second = TOMCAT_SERVICE_YAML.replace("port: 8080", "port: 9090");
    let errors = errors_of(&[source("a.json", TOMCAT_SERVICE), source("b.yaml", &second)]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].to_string(), "service `tomcat` is defined twice");
    assert_eq!(errors[0].file(), Some("b.yaml"));
    assert_eq!(spanned(&second, &errors[0]), "tomcat");
    assert!(help_of(&errors[0]).contains("a.json at line 1, column 8"));
    // The same id for different kinds is fine.
    let pod = pod_with(r#"{"name": "tomcat", "image": "tomcat"}"#).replace("\"web\"", "\"tomcat\"");
    load(&[source("a.json", TOMCAT_SERVICE), source("p.json", &pod)]);
}

#[test]
fn rendering_shows_file_line_and_help() {
    let text = TOMCAT_SERVICE.replace("\"selector\"", "\"selectr\"");
    let errors = parse_sources(&[source("manifests/tomcat.json", &text)]).unwrap_err();
    let mut rendered = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut rendered, &errors)
        .unwrap();
    assert!(
        rendered.contains("1 error in manifests; nothing was applied"),
        "{rendered}"
    );
    assert!(
        rendered.contains("manifests/tomcat.json:2:39"),
        "{rendered}"
    );
    assert!(rendered.contains("did you mean `selector`?"), "{rendered}");
}

// ---- kind and apiVersion ----

#[test]
fn kind_is_required_and_known() {
    let error = only_error("x.json", r#"{"id": "web"}"#, "missing `kind`");
    assert_eq!(error_position(r#"{"id": "web"}"#, &error), (1, 1));
    let error = only_error(
        "x.yaml",
        "kind: Replicationcontroller\nid: web\n",
        "unknown kind `Replicationcontroller`",
    );
    assert_eq!(help_of(&error), "did you mean `ReplicationController`?");
    only_error("x.yaml", "- kind: Pod\n", "must be an object");
}

#[test]
fn api_version_must_be_v1beta1_and_missing_is_a_warning() {
    let text = TOMCAT_SERVICE.replace("v1beta1", "v1beta3");
    let error = only_error("s.json", &text, "unsupported apiVersion `v1beta3`");
    assert_eq!(spanned(&text, &error), "\"v1beta3\"");

    let text = TOMCAT_SERVICE.replace(r#""apiVersion": "v1beta1", "#, "");
    let twice = format!("---\n{text}---\n{}", text.replace("tomcat\"", "other\""));
    let loaded = load_one("s.yaml", &twice);
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].to_string().contains("no `apiVersion`"));
}

// ---- ids ----

#[test]
fn ids_are_dns_subdomains_in_either_case() {
    // As v0.5 checked pod and controller ids: labels joined by dots.
    let long_label = "a".repeat(64);
    let too_long = format!("{}.a", vec!["b".repeat(63); 4].join("."));
    for bad in [
        "tomcat_controller",
        "-web",
        "web-",
        "",
        &long_label,
        "wéb",
        "a..b",
        ".a",
        "a.-b",
        &too_long,
    ] {
        let text = TOMCAT_CONTROLLER.replace("tomcatController", bad);
        let error = only_error("c.json", &text, "invalid ReplicationController id");
        assert_eq!(spanned(&text, &error), format!("\"{bad}\""));
    }
    let longest = vec!["b".repeat(63); 4]
        .join(".")
        .chars()
        .take(253)
        .collect::<String>();
    assert_eq!(longest.len(), 253);
    for good in [
        "a".repeat(63).as_str(),
        "tomcat.ctl",
        "synthetic-logger-0.25lps-pod",
        longest.trim_end_matches('.'),
    ] {
        let text = TOMCAT_CONTROLLER.replace("tomcatController", good);
        assert_eq!(load_one("c.json", &text).objects[0].id(), good);
    }
    let error = only_error(
        "c.json",
        &TOMCAT_CONTROLLER.replace("tomcatController", "tomcat_ctl.v2"),
        "contains '_'",
    );
    assert!(
        help_of(&error).contains("e.g. `tomcat-ctl.v2`"),
        "{}",
        help_of(&error)
    );
    let pod = pod_with(r#"{"name": "a", "image": "i"}"#).replace("\"web\"", "\"logger-0.25lps\"");
    assert_eq!(load_one("p.json", &pod).objects[0].id(), "logger-0.25lps");
}

#[test]
fn service_ids_are_short_lower_case_and_start_with_a_letter() {
    let error = only_error(
        "s.json",
        &TOMCAT_SERVICE.replace("\"tomcat\"", "\"tomcatService\""),
        "must be lower case",
    );
    assert!(help_of(&error).contains("e.g. `tomcatservice`"));
    only_error(
        "s.json",
        &TOMCAT_SERVICE.replace("\"tomcat\"", &format!("\"{}\"", "a".repeat(25))),
        "the limit is 24",
    );
    only_error(
        "s.json",
        &TOMCAT_SERVICE.replace("\"tomcat\"", "\"9tomcat\""),
        "must start with a letter",
    );
    load_one(
        "s.json",
        &TOMCAT_SERVICE.replace("\"tomcat\"", &format!("\"{}\"", "a".repeat(24))),
    );
}

#[test]
fn a_pod_id_can_come_from_its_manifest() {
    let text = r#"{"kind": "Pod", "apiVersion": "v1beta1",
 "desiredState": {"manifest": {"id": "fromManifest", "containers": [{"name": "a", "image": "b"}]}}}"#;
    assert_eq!(only_pod(&load_one("p.json", text)).id, "fromManifest");
    let text = text.replace(r#""id": "fromManifest", "#, "");
    only_error("p.json", &text, "a Pod is missing `id`");
}

// ---- containers ----

#[test]
fn a_full_container_decodes() {
    let text = pod_with(
        r#"{"name": "web", "image": "nginx:1.7", "command": ["nginx", "-g", "daemon off;"],
   "workingDir": "/srv", "cpu": 500, "memory": 268435456,
   "ports": [{"name": "http", "containerPort": 80, "hostPort": 8080, "protocol": "tcp"},
             {"containerPort": 53, "protocol": "udp", "hostPort": 0}],
   "env": [{"name": "MODE", "value": "prod"}, {"name": "_EMPTY"}],
   "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 15}}"#,
    );
    let loaded = load_one("p.json", &text);
    let container = &only_pod(&loaded).spec.containers[0];
    assert_eq!(
        *container,
        Container {
            name: "web".into(),
            image: "nginx:1.7".into(),
            command: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
            working_dir: Some("/srv".into()),
            ports: vec![
                Port {
                    name: Some("http".into()),
                    container_port: 80,
                    host_port: Some(8080),
                    protocol: Protocol::Tcp,
                },
                Port {
                    name: None,
                    container_port: 53,
                    host_port: None,
                    protocol: Protocol::Udp,
                },
            ],
            env: vec![
                EnvVar {
                    name: "MODE".into(),
                    value: "prod".into(),
                },
                EnvVar {
                    name: "_EMPTY".into(),
                    value: String::new(),
                },
            ],
            cpu: Some(500),
            memory: Some(268_435_456),
            liveness_probe: Some(Probe {
                action: ProbeAction::HttpGet {
                    path: "/healthz".into(),
                    port: PortRef::Name("http".into()),
                    host: None,
                },
                initial_delay_seconds: 15,
                timeout_seconds: 1,
            }),
            ..Default::default()
        }
    );
}

#[test]
fn container_names_are_dns_labels() {
    let text = pod_with(r#"{"name": "my_web", "image": "nginx"}"#);
    let error = only_error("p.json", &text, "invalid container name `my_web`");
    assert_eq!(spanned(&text, &error), "\"my_web\"");
}

#[test]
fn container_names_are_unique_in_a_pod() {
    let text = pod_with(r#"{"name": "web", "image": "a"}, {"name": "web", "image": "b"}"#);
    let error = only_error("p.json", &text, "container name is used twice");
    assert_eq!(error_position(&text, &error), (2, 109));
}

#[test]
fn name_and_image_are_required() {
    only_error(
        "p.json",
        &pod_with(r#"{"image": "nginx"}"#),
        "a container is missing `name`",
    );
    only_error(
        "p.json",
        &pod_with(r#"{"name": "web"}"#),
        "a container is missing `image`",
    );
    only_error("p.json", &pod_with(""), "at least one container");
}

#[test]
fn images_have_no_whitespace_or_control_characters() {
    only_error(
        "p.json",
        &pod_with(r#"{"name": "w", "image": ""}"#),
        "`image` is empty",
    );
    only_error(
        "p.json",
        &pod_with(r#"{"name": "w", "image": "nginx latest"}"#),
        "whitespace",
    );
    only_error(
        "p.json",
        &pod_with(r#"{"name": "w", "image": "nginx\u0007"}"#),
        "control character",
    );
    // Passed later as one argv element, never to a shell: anything else goes.
    let loaded = load_one(
        "p.json",
        &pod_with(r#"{"name": "w", "image": "x;touch$IFS/tmp/owned"}"#),
    );
    assert_eq!(
        only_pod(&loaded).spec.containers[0].image,
        "x;touch$IFS/tmp/owned"
    );
}

#[test]
fn ports_are_in_range() {
    let bad = [
        (r#"{"containerPort": 0}"#, "`containerPort` is out of range"),
        (
            r#"{"containerPort": 65536}"#,
            "`containerPort` is out of range",
        ),
        (
            r#"{"containerPort": -80}"#,
            "`containerPort` is out of range",
        ),
        (r#"{"containerPort": 80.5}"#, "must be a whole number"),
        (r#"{"containerPort": "80"}"#, "must be a number"),
        (
            r#"{"containerPort": 80, "hostPort": 70000}"#,
            "`hostPort` is out of range",
        ),
        (r#"{"hostPort": 80}"#, "a port is missing `containerPort`"),
    ];
    for (port, message) in bad {
        let text = pod_with(&format!(
            r#"{{"name": "w", "image": "i", "ports": [{port}]}}"#
        ));
        only_error("p.json", &text, message);
    }
    let text = pod_with(
        r#"{"name": "w", "image": "i", "ports": [{"containerPort": 65535, "hostPort": 0}]}"#,
    );
    let loaded = load_one("p.json", &text);
    let port = &only_pod(&loaded).spec.containers[0].ports[0];
    assert_eq!((port.container_port, port.host_port), (65535, None));
}

#[test]
fn protocols_are_tcp_or_udp() {
    let text = pod_with(
        r#"{"name": "w", "image": "i", "ports": [{"containerPort": 80, "protocol": "SCTP"}]}"#,
    );
    let error = only_error("p.json", &text, "unknown protocol `SCTP`");
    assert_eq!(spanned(&text, &error), "\"SCTP\"");
    let error = only_error(
        "s.json",
        &service_with(r#""id": "s", "port": 1, "selector": {"a": "b"}, "protocol": "icmp""#),
        "unknown protocol",
    );
    assert_eq!(help_of(&error), "use `TCP` or `UDP`");
}

#[test]
fn a_host_port_is_claimed_once_per_protocol() {
    let text = pod_with(
        r#"{"name": "a", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}]},
 {"name": "b", "image": "i", "ports": [{"containerPort": 81, "hostPort": 80}]}"#,
    );
    let error = only_error("p.json", &text, "host port 80/TCP is used twice");
    assert_eq!(error_position(&text, &error), (3, 74));
    let text = pod_with(
        r#"{"name": "a", "image": "i", "ports": [{"containerPort": 53, "hostPort": 53},
 {"containerPort": 53, "hostPort": 53, "protocol": "UDP"}]}"#,
    );
    load_one("p.json", &text);
}

#[test]
fn port_names_are_unique_and_short() {
    let text = pod_with(
        r#"{"name": "a", "image": "i", "ports": [{"name": "http", "containerPort": 80}]},
 {"name": "b", "image": "i", "ports": [{"name": "http", "containerPort": 81}]}"#,
    );
    only_error("p.json", &text, "port name is used twice");
    // v0.5 took port names of up to 63 characters; v1 takes 15.
    let text = pod_with(
        r#"{"name": "a", "image": "i", "ports": [{"name": "seventeen-letters", "containerPort": 80}]}"#,
    );
    load_one("p.json", &text);
    let text = pod_with(&format!(
        r#"{{"name": "a", "image": "i", "ports": [{{"name": "{}", "containerPort": 80}}]}}"#,
        "p".repeat(64)
    ));
    only_error("p.json", &text, "the limit is 63");
    let text = pod_with(
        r#"{"name": "a", "image": "i", "ports": [{"name": "http_alt", "containerPort": 80}]}"#,
    );
    only_error("p.json", &text, "invalid port name `http_alt`");
}

#[test]
fn env_names_are_c_identifiers() {
    for bad in ["1ST", "MY-VAR", ""] {
        let text = pod_with(&format!(
            r#"{{"name": "a", "image": "i", "env": [{{"name": "{bad}", "value": "x"}}]}}"#
        ));
        only_error("p.json", &text, "invalid environment variable name");
    }
    let yaml = "kind: Pod\napiVersion: v1beta1\nid: p\ndesiredState:\n  manifest:\n    containers:\n    - name: a\n      image: i\n      env:\n      - name: PORT\n        value: 8080\n";
    let error = only_error("p.yaml", yaml, "must be a string, found a number");
    assert_eq!(
        help_of(&error),
        "put the value in quotes to make it a string"
    );
}

#[test]
fn cpu_and_memory_are_whole_non_negative_numbers() {
    let bad = [
        (r#""cpu": -1"#, "is out of range"),
        (r#""cpu": 0.5"#, "must be a whole number"),
        (r#""cpu": 4294967296"#, "is out of range"),
        (r#""memory": -1"#, "is out of range"),
        (r#""memory": "512Mi""#, "must be a number"),
        (r#""memory": 1e9"#, "must be a whole number"),
    ];
    for (member, message) in bad {
        let text = pod_with(&format!(r#"{{"name": "a", "image": "i", {member}}}"#));
        only_error("p.json", &text, message);
    }
    let text = pod_with(r#"{"name": "a", "image": "i", "cpu": 0, "memory": 18446744073709551615}"#);
    let loaded = load_one("p.json", &text);
    let container = &only_pod(&loaded).spec.containers[0];
    assert_eq!((container.cpu, container.memory), (Some(0), Some(u64::MAX)));
}

#[test]
fn command_is_a_list_of_strings() {
    let text = pod_with(r#"{"name": "a", "image": "i", "command": "sleep 10"}"#);
    let error = only_error("p.json", &text, "must be a list of strings");
    assert_eq!(
        help_of(&error),
        r#"write it as a list, one argument each: ["sleep", "10"]"#
    );
}

#[test]
fn restart_policy_is_one_of_three() {
    for (policy, expected) in [
        (r#"{"always": {}}"#, RestartPolicy::Always),
        (r#"{"onFailure": {}}"#, RestartPolicy::OnFailure),
        (r#"{"never": {}}"#, RestartPolicy::Never),
        ("{}", RestartPolicy::Always),
    ] {
        let text = TOMCAT_CONTROLLER.replace(
            r#""version": "v1beta1","#,
            &format!(r#""restartPolicy": {policy},"#),
        );
        let Object::ReplicationController(rc) = &load_one("c.json", &text).objects[0] else {
            panic!()
        };
        assert_eq!(rc.template.spec.restart_policy, expected);
    }
    let text = TOMCAT_CONTROLLER.replace(
        r#""version": "v1beta1","#,
        r#""restartPolicy": {"always": {}, "never": {}},"#,
    );
    only_error("c.json", &text, "more than one policy");
    let text =
        TOMCAT_CONTROLLER.replace(r#""version": "v1beta1","#, r#""restartPolicy": "Never","#);
    let error = only_error("c.json", &text, "must be an object in v1beta1");
    assert_eq!(help_of(&error), r#"write it as `{"never": {}}`"#);
}

#[test]
fn manifest_version_must_be_v1beta1() {
    let text = TOMCAT_CONTROLLER.replace(r#""version": "v1beta1""#, r#""version": "v1beta2""#);
    only_error("c.json", &text, "unsupported manifest version `v1beta2`");
}

// ---- probes ----

fn probe_pod(probe: &str) -> String {
    pod_with(&format!(
        r#"{{"name": "a", "image": "i", "ports": [{{"name": "http", "containerPort": 80}}], "livenessProbe": {probe}}}"#
    ))
}

fn probe_of(loaded: &Loaded) -> Probe {
    only_pod(loaded).spec.containers[0]
        .liveness_probe
        .clone()
        .expect("a probe")
}

#[test]
fn probes_decode_each_action() {
    let probe = probe_of(&load_one(
        "p.json",
        &probe_pod(r#"{"tcpSocket": {"port": 80}, "timeoutSeconds": 5}"#),
    ));
    assert_eq!(
        probe.action,
        ProbeAction::TcpSocket {
            port: PortRef::Number(80)
        }
    );
    assert_eq!(probe.timeout_seconds, 5);
    let probe = probe_of(&load_one(
        "p.json",
        &probe_pod(r#"{"exec": {"command": ["cat", "/ok"]}}"#),
    ));
    assert_eq!(
        probe.action,
        ProbeAction::Exec {
            command: vec!["cat".into(), "/ok".into()]
        }
    );
    let probe = probe_of(&load_one(
        "p.json",
        &probe_pod(r#"{"httpGet": {"port": "8080", "host": "127.0.0.1"}}"#),
    ));
    assert_eq!(
        probe.action,
        ProbeAction::HttpGet {
            path: "/".into(),
            port: PortRef::Number(8080),
            host: Some("127.0.0.1".into()),
        }
    );
}

#[test]
fn probe_paths_and_hosts_cannot_inject() {
    // JSON escapes are decoded first: these are real CR, LF, tab, NUL.
    for (path, problem) in [
        (r#""/ok\r\nX-Evil: 1""#, "control character"),
        (r#""/ok\nGET /other""#, "control character"),
        (r#""/a\tb""#, "control character"),
        (r#""/a\u0000""#, "control character"),
        (r#""/a b""#, "contains a space"),
        (r#""healthz""#, "does not start with `/`"),
    ] {
        let text = probe_pod(&format!(r#"{{"httpGet": {{"path": {path}, "port": 80}}}}"#));
        let error = only_error("p.json", &text, problem);
        assert_eq!(spanned(&text, &error), path, "{path}");
        assert!(help_of(&error).contains("/healthz"), "{path}");
    }
    let long = format!("/{}", "a".repeat(2048));
    only_error(
        "p.json",
        &probe_pod(&format!(
            r#"{{"httpGet": {{"path": "{long}", "port": 80}}}}"#
        )),
        "longer than 2048",
    );
    for host in ["example.com", r"10.0.0.1\r\nX: y", "10.0.0.256"] {
        let text = probe_pod(&format!(
            r#"{{"httpGet": {{"path": "/", "port": 80, "host": "{host}"}}}}"#
        ));
        let error = only_error("p.json", &text, "probe `host` is not an IP address");
        assert!(help_of(&error).contains("leave `host` out"));
    }
    // Percent-encoded, query strings and IPv6 hosts are fine.
    let probe = probe_of(&load_one(
        "p.json",
        &probe_pod(r#"{"httpGet": {"path": "/a%20b?x=1", "port": 80, "host": "::1"}}"#),
    ));
    assert_eq!(
        probe.action,
        ProbeAction::HttpGet {
            path: "/a%20b?x=1".into(),
            port: PortRef::Number(80),
            host: Some("::1".into()),
        }
    );
}

#[test]
fn a_probe_has_exactly_one_action() {
    only_error(
        "p.json",
        &probe_pod(r#"{"initialDelaySeconds": 5}"#),
        "needs an action",
    );
    let text = probe_pod(r#"{"httpGet": {"port": 80}, "exec": {"command": ["true"]}}"#);
    let error = only_error("p.json", &text, "takes only one action");
    assert_eq!(spanned(&text, &error), "\"exec\"");
}

#[test]
fn a_probe_port_name_must_name_a_port_of_the_pod() {
    let text = probe_pod(r#"{"httpGet": {"port": "htp"}}"#);
    let error = only_error("p.json", &text, "no port named `htp`");
    assert_eq!(spanned(&text, &error), "\"htp\"");
    assert_eq!(help_of(&error), "did you mean `http`?");
    // Containers in a pod share its network: another container's port counts.
    let text = pod_with(
        r#"{"name": "a", "image": "i", "livenessProbe": {"tcpSocket": {"port": "db"}}},
 {"name": "b", "image": "i", "ports": [{"name": "db", "containerPort": 5432}]}"#,
    );
    load_one("p.json", &text);
}

#[test]
fn probe_ports_and_delays_are_in_range() {
    only_error(
        "p.json",
        &probe_pod(r#"{"tcpSocket": {"port": 0}}"#),
        "out of range",
    );
    only_error(
        "p.json",
        &probe_pod(r#"{"tcpSocket": {"port": "99999"}}"#),
        "out of range",
    );
    only_error(
        "p.json",
        &probe_pod(r#"{"tcpSocket": {}}"#),
        "missing `port`",
    );
    only_error(
        "p.json",
        &probe_pod(r#"{"exec": {"command": []}}"#),
        "`command` is empty",
    );
    only_error(
        "p.json",
        &probe_pod(r#"{"exec": {"command": ["true"]}, "initialDelaySeconds": -1}"#),
        "out of range",
    );
}

// ---- controllers ----

#[test]
fn replicas_default_to_zero_and_are_not_negative() {
    // v0.5 read a missing count as 0 (update-demo leaves it to a rolling
    // update); kctl says so.
    let text = controller_with(&format!(
        r#""replicaSelector": {{"name": "web"}}, {WEB_TEMPLATE}"#
    ));
    only_warning("c.json", &text, "without `replicas` runs no pods");
    let Object::ReplicationController(rc) = &load_one("c.json", &text).objects[0] else {
        unreachable!()
    };
    assert_eq!(rc.replicas, 0);
    // A misspelt count is no silent 0.
    let text = controller_with(&format!(
        r#""replcas": 3, "replicaSelector": {{"name": "web"}}, {WEB_TEMPLATE}"#
    ));
    let error = only_error("c.json", &text, "missing `replicas`");
    assert_eq!(help_of(&error), "did you mean `replicas`?");
    let text = controller_with(&format!(
        r#""replicas": -1, "replicaSelector": {{"name": "web"}}, {WEB_TEMPLATE}"#
    ));
    only_error("c.json", &text, "`replicas` is out of range");
    let text = controller_with(&format!(
        r#""replicas": 0, "replicaSelector": {{"name": "web"}}, {WEB_TEMPLATE}"#
    ));
    load_one("c.json", &text);
}

#[test]
fn the_selector_must_be_non_empty_and_match_the_template() {
    let text = controller_with(&format!(
        r#""replicas": 1, "replicaSelector": {{}}, {WEB_TEMPLATE}"#
    ));
    only_error("c.json", &text, "`replicaSelector` is empty");
    let text = controller_with(&format!(r#""replicas": 1, {WEB_TEMPLATE}"#));
    only_error("c.json", &text, "missing `replicaSelector`");
    let text = controller_with(&format!(
        r#""replicas": 1, "replicaSelector": {{"name": "api"}}, {WEB_TEMPLATE}"#
    ));
    let error = only_error("c.json", &text, "does not match the pod template's labels");
    assert_eq!(spanned(&text, &error), r#"{"name": "api"}"#);
    assert!(help_of(&error).contains("`name=web`"));
    // Reported even when the template has other problems.
    let broken = text.replace(r#""image": "nginx""#, r#""image": """#);
    let errors = errors_of(&[source("c.json", &broken)]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

// ---- services ----

#[test]
fn service_fields_are_checked() {
    only_error(
        "s.json",
        &service_with(r#""id": "s", "selector": {"a": "b"}"#),
        "missing `port`",
    );
    only_error(
        "s.json",
        &service_with(r#""id": "s", "port": 80"#),
        "missing `selector`",
    );
    only_error(
        "s.json",
        &service_with(r#""id": "s", "port": 80, "selector": {}"#),
        "`selector` is empty",
    );
    only_error(
        "s.json",
        &service_with(r#""id": "s", "port": 0, "selector": {"a": "b"}"#),
        "out of range",
    );
    only_error(
        "s.json",
        &service_with(r#""id": "s", "port": 80, "selector": {"a": "b"}, "containerPort": 70000"#),
        "out of range",
    );
    let loaded = load_one(
        "s.json",
        &service_with(
            r#""id": "s", "port": 80, "selector": {"a": "b"}, "containerPort": "http", "protocol": "UDP""#,
        ),
    );
    let Object::Service(service) = &loaded.objects[0] else {
        panic!()
    };
    assert_eq!(service.container_port, Some(PortRef::Name("http".into())));
    assert_eq!(service.protocol, Protocol::Udp);
}

#[test]
fn label_values_are_strings() {
    let yaml = TOMCAT_SERVICE_YAML.replace("name: tomcatCluster\nselector", "version: 2\nselector");
    let error = only_error("s.yaml", &yaml, "label `version` must be a string");
    assert_eq!(spanned(&yaml, &error), "2");
}

// ---- files ----

/// A fresh directory under the system's temporary directory.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kctl-manifest-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn directories_are_read_in_name_order() {
    let dir = temp_dir("order");
    std::fs::write(dir.join("b-service.yaml"), TOMCAT_SERVICE_YAML).unwrap();
    std::fs::write(dir.join("a-controller.json"), TOMCAT_CONTROLLER).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
    std::fs::create_dir(dir.join("nested.json")).unwrap();
    let loaded = load_paths(std::slice::from_ref(&dir)).unwrap();
    assert_eq!(
        loaded.objects,
        vec![expected_controller(), expected_service()]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_errors_are_reported_with_the_path_as_given() {
    let dir = temp_dir("io");
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"kind\": \"Pod\" \"id\": \"x\"}").unwrap();
    let binary = dir.join("binary.yaml");
    std::fs::write(&binary, b"kind: \xff\n").unwrap();
    let missing = dir.join("missing.json");
    let errors =
        load_paths(&[missing.clone(), empty.clone(), bad.clone(), binary.clone()]).unwrap_err();
    let messages: Vec<String> = errors.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(
        messages[0].starts_with(&format!("cannot read `{}`", missing.display())),
        "{messages:#?}"
    );
    assert_eq!(
        messages[1],
        format!("directory `{}` holds no manifests", empty.display())
    );
    assert!(messages[2].starts_with(&format!("`{}` is not UTF-8 text", binary.display())));
    assert_eq!(
        errors.errors[3].file(),
        Some(bad.display().to_string().as_str())
    );
    assert!(errors.errors[..3].iter().all(|e| e.span().is_none()));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- robustness ----

/// A small deterministic generator, so that failures can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Checks that every span lies on character boundaries within the text and
/// that the diagnostics render.
fn check_diagnostics(text: &str, result: &Result<Loaded, ManifestErrors>) {
    let mut spans: Vec<miette::SourceSpan> = Vec::new();
    match result {
        Ok(loaded) => spans.extend(loaded.warnings.iter().map(ManifestWarning::span)),
        Err(errors) => {
            spans.extend(errors.errors.iter().filter_map(ManifestError::span));
            spans.extend(errors.warnings.iter().map(ManifestWarning::span));
            let mut rendered = String::new();
            miette::GraphicalReportHandler::new()
                .render_report(&mut rendered, errors)
                .unwrap();
        }
    }
    for span in spans {
        let end = span.offset() + span.len();
        assert!(end <= text.len(), "span {span:?} past the end of {text:?}");
        assert!(
            text.is_char_boundary(span.offset()) && text.is_char_boundary(end),
            "span {span:?} in {text:?}"
        );
    }
}

fn parse_as_each_format(text: &str) {
    for name in ["f.json", "f.yaml", "<stdin>"] {
        let result = parse_sources(&[source(name, text)]);
        check_diagnostics(text, &result);
    }
}

#[test]
fn garbage_and_truncated_input_gives_errors_not_panics() {
    let valid = [
        TOMCAT_CONTROLLER.to_string(),
        TOMCAT_SERVICE.to_string(),
        TOMCAT_CONTROLLER_YAML.to_string(),
        format!("{TOMCAT_SERVICE_YAML}---\n{TOMCAT_CONTROLLER_YAML}"),
        probe_pod(r#"{"httpGet": {"path": "/é", "port": "http"}}"#),
    ];
    for text in &valid {
        for end in (0..text.len()).filter(|end| text.is_char_boundary(*end)) {
            let prefix = &text[..end];
            parse_as_each_format(prefix);
            if text.starts_with('{') && end < text.trim_end().len() {
                assert!(
                    parse_sources(&[source("f.json", prefix)]).is_err(),
                    "{prefix:?}"
                );
            }
        }
    }
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let alphabet: Vec<char> = "{}[]\":,-? \n\t#&*!|>'%@`0123456789.eE+abcé☕\u{0}\\u"
        .chars()
        .collect();
    for _ in 0..3000 {
        let len = rng.below(80);
        let text: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        parse_as_each_format(&text);
    }
    for round in 0..3000 {
        let mut bytes = valid[round % valid.len()].clone().into_bytes();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] = (rng.next() & 0xff) as u8;
        }
        let text = String::from_utf8_lossy(&bytes);
        parse_as_each_format(&text);
    }
}

#[test]
fn deep_nesting_is_an_error() {
    for text in [
        "[".repeat(50_000),
        "- ".repeat(50_000),
        "{\"a\":".repeat(50_000),
    ] {
        let errors = parse_sources(&[source("deep.yaml", &text)]).unwrap_err();
        let message = errors.errors[0].to_string();
        assert!(
            message.contains("nesting") || message.contains("recursion limit"),
            "{message}"
        );
    }
    let list = format!(
        "{}{}",
        r#"{"kind": "List", "items": ["#.repeat(200),
        "]}".repeat(200)
    );
    assert!(parse_sources(&[source("deep.json", &list)]).is_err());
}

/// The classic tomcat controller and service as today's v1 writes them.
const TOMCAT_V1: &str = r#"
apiVersion: v1
kind: ReplicationController
metadata:
  name: tomcatController
  labels: {name: tomcatCluster}
spec:
  replicas: 2
  selector: {name: tomcatCluster}
  template:
    metadata:
      labels: {name: tomcatCluster}
    spec:
      restartPolicy: Always
      containers:
      - name: tomcat
        image: tutum/tomcat
        ports:
        - containerPort: 8080
          hostPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: tomcat
  labels: {name: tomcatCluster}
spec:
  type: ClusterIP
  selector: {name: tomcatCluster}
  ports:
  - port: 8080
    targetPort: 8080
"#;

#[test]
fn v1_and_v1beta1_of_the_same_objects_are_the_same_objects() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let v1beta1 = load(&[
        source(
            "tomcat-controller.json",
            &std::fs::read_to_string(repo.join("manifests/tomcat-controller.json")).unwrap(),
        ),
        source(
            "tomcat-service.json",
            &std::fs::read_to_string(repo.join("manifests/tomcat-service.json")).unwrap(),
        ),
    ]);
    let v1 = load_one("tomcat.yaml", TOMCAT_V1);
    assert_eq!(v1.objects, v1beta1.objects);
    assert!(v1.warnings.is_empty(), "{:?}", v1.warnings);
}

#[test]
fn v1_fields_map_onto_the_model() {
    let pod = r#"{"apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "web", "labels": {"app": "web"}, "namespace": "default"},
      "spec": {"restartPolicy": "OnFailure", "containers": [{
        "name": "web", "image": "nginx", "command": ["nginx"], "args": ["-g", "daemon off;"],
        "ports": [{"name": "http", "containerPort": 80}],
        "env": [{"name": "MODE", "value": "prod"}],
        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "100m"}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                          "initialDelaySeconds": 5, "periodSeconds": 10}}]}}"#;
    let loaded = load_one("pod.json", pod);
    let Object::Pod(p) = &loaded.objects[0] else {
        panic!("{:?}", loaded.objects)
    };
    assert_eq!(p.id, "web");
    assert_eq!(p.spec.restart_policy, RestartPolicy::OnFailure);
    let c = &p.spec.containers[0];
    // v1's `command` replaces the entrypoint; `args` follow it.
    assert_eq!(c.entrypoint, ["nginx"]);
    assert_eq!(c.command, ["-g", "daemon off;"]);
    assert_eq!((c.cpu, c.memory), (Some(500), Some(64 << 20)));
    assert_eq!(c.liveness_probe.as_ref().unwrap().initial_delay_seconds, 5);
}

#[test]
fn the_items_of_a_v1_list_are_v1_unless_they_say_otherwise() {
    let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
      {"kind": "Service", "metadata": {"name": "web"},
       "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
      {"apiVersion": "v1beta1", "kind": "Service", "id": "old", "port": 81,
       "selector": {"app": "old"}}]}"#;
    let loaded = load_one("list.json", list);
    let ids: Vec<&str> = loaded
        .objects
        .iter()
        .map(|o| match o {
            Object::Service(s) => s.id.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, ["web", "old"]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    // An item's own apiVersion that kctl does not know is an error, not
    // read as its List's.
    let unknown = r#"{"apiVersion": "v1", "kind": "List", "items": [
      {"apiVersion": "v1beta3", "kind": "Service", "metadata": {"name": "web"},
       "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}]}"#;
    let errors = errors_of(&[source("list.json", unknown)]);
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("unsupported apiVersion `v1beta3`")),
        "{errors:#?}"
    );
}

#[test]
fn what_v1_says_and_kctl_cannot_run_is_refused_with_a_reason() {
    let two_ports = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
      "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 443}]}}"#;
    only_error("svc.json", two_ports, "a service with 2 ports");
    let external_name = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
      "spec": {"type": "ExternalName", "selector": {"app": "web"}, "ports": [{"port": 80}]}}"#;
    only_error("svc.json", external_name, "service type `ExternalName`");
    // `args` alone follow the image's own entrypoint.
    let args_only = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
      "spec": {"containers": [{"name": "web", "image": "nginx", "args": ["-v"]}]}}"#;
    let loaded = load_one("pod.json", args_only);
    let c = &only_pod(&loaded).spec.containers[0];
    assert_eq!(
        (c.entrypoint.len(), c.command.as_slice()),
        (0, &["-v".to_string()][..])
    );
    let policy = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
      "spec": {"restartPolicy": "always", "containers": [{"name": "web", "image": "nginx"}]}}"#;
    only_error("pod.json", policy, "unknown restartPolicy `always`");
    let version = r#"{"apiVersion": "v2", "kind": "Pod", "metadata": {"name": "web"}}"#;
    let errors = errors_of(&[source("pod.json", version)]);
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("unsupported apiVersion `v2`")),
        "{errors:?}"
    );
}

// ---- what v0.5 read and kctl reads the same way ----

#[test]
fn json_that_only_yaml_takes_is_read_as_yaml_with_a_warning() {
    let text = TOMCAT_SERVICE.replace(r#""port": 8080,"#, r#""port": 8080,,"#);
    // Two commas in a row are no YAML either: the JSON error stands.
    only_error("s.json", &text, "invalid JSON");
    let text = TOMCAT_SERVICE.replace(
        r#""selector": {"name": "tomcatCluster"}"#,
        r#""selector": {"name": "tomcatCluster",}"#,
    );
    let warning = only_warning("s.json", &text, "not valid JSON: ");
    assert_eq!(spanned(&text, &warning), ",");
    assert!(help_of(&warning).contains("YAML parser"));
    assert_eq!(load_one("s.json", &text).objects, vec![expected_service()]);
    strict_error("s.json", &text, "not valid JSON");
}

#[test]
fn a_manifest_without_kind_takes_it_from_its_shape_or_the_command_line() {
    let pod = "apiVersion: v1beta1\nid: www\ndesiredState:\n  manifest:\n    containers:\n      - name: nginx\n        image: nginx\n";
    let warning = only_warning(
        "pod1.yaml",
        pod,
        "read as a Pod because it has `desiredState.manifest`",
    );
    assert_eq!(error_position(pod, &warning), (1, 1));
    assert!(matches!(
        load_one("pod1.yaml", pod).objects[0],
        Object::Pod(_)
    ));
    let controller = TOMCAT_CONTROLLER.replace(r#""kind": "ReplicationController", "#, "");
    only_warning(
        "c.json",
        &controller,
        "read as a ReplicationController because it has `desiredState.podTemplate`",
    );
    let service = TOMCAT_SERVICE.replace(r#""kind": "Service", "#, "");
    let loaded = load_one("s.json", &service);
    assert_eq!(loaded.objects, vec![expected_service()]);
    assert!(loaded.warnings[0]
        .to_string()
        .contains("as a Service because it has `port` and `selector`"));
    // `--kind` says it, with nothing to warn of.
    let with_kind = LoadOptions {
        strict: true,
        kind: Some(Kind::Pod),
        allow_host_dir: false,
        allow_privileged: false,
        disks_unavailable_on: None,
    };
    let loaded = super::parse_sources(&[source("pod1.yaml", pod)], with_kind).unwrap();
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    assert_eq!(loaded.objects[0].id(), "www");
    // Nothing to go by: the error says how to give it.
    let error = only_error("x.yaml", "apiVersion: v1beta1\nid: x\n", "missing `kind`");
    assert!(help_of(&error).contains("--kind pod"));
    strict_error(
        "pod1.yaml",
        &pod.replace("apiVersion: v1beta1\n", "apiVersion: v1beta1\nkind: Pod\n")
            .replace("kind: Pod\n", ""),
        "no `kind`",
    );
}

#[test]
fn env_key_is_the_old_spelling_of_name() {
    let text = pod_with(r#"{"name": "a", "image": "i", "env": [{"key": "SEEDS", "value": "x"}]}"#);
    let warning = only_warning("p.json", &text, "`key` is the old spelling");
    assert_eq!(spanned(&text, &warning), "\"key\"");
    let loaded = load_one("p.json", &text);
    let env = &only_pod(&loaded).spec.containers[0].env;
    assert_eq!(
        (env[0].name.as_str(), env[0].value.as_str()),
        ("SEEDS", "x")
    );
    let text = pod_with(
        r#"{"name": "a", "image": "i", "env": [{"name": "A", "key": "B", "value": "x"}]}"#,
    );
    only_warning("p.json", &text, "`key` is ignored");
    assert_eq!(
        only_pod(&load_one("p.json", &text)).spec.containers[0].env[0].name,
        "A"
    );
    // Neither: still an error.
    let text = pod_with(r#"{"name": "a", "image": "i", "env": [{"value": "x"}]}"#);
    only_error("p.json", &text, "missing `name`");
    let text = pod_with(r#"{"name": "a", "image": "i", "env": [{"key": "1BAD", "value": "x"}]}"#);
    only_error("p.json", &text, "invalid environment variable name `1BAD`");
}

#[test]
fn the_legacy_probe_form_loads_and_the_action_decides() {
    // api/examples/pod.json of v0.5: `enabled` and `type` beside `httpGet`.
    let probe = r#"{"enabled": true, "type": "http", "initialDelaySeconds": 30, "httpGet": {"path": "/index.html", "port": "8080"}}"#;
    let text = probe_pod(probe);
    let loaded = load_one("p.json", &text);
    let messages: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("`enabled` is the legacy form"));
    assert!(messages[1].contains("`type` is the legacy form"));
    assert_eq!(
        probe_of(&loaded).action,
        ProbeAction::HttpGet {
            path: "/index.html".into(),
            port: PortRef::Number(8080),
            host: None
        }
    );
    let text = probe_pod(r#"{"enabled": false, "tcpSocket": {"port": 8080}}"#);
    only_warning(
        "p.json",
        &text,
        "`enabled: false` does not turn this probe off",
    );
    assert!(
        probe_of(&load_one("p.json", &text)).action
            == ProbeAction::TcpSocket {
                port: PortRef::Number(8080)
            }
    );
    let text = probe_pod(r#"{"type": "http", "tcpSocket": {"port": 8080}}"#);
    only_warning(
        "p.json",
        &text,
        "`type` says `http` but the probe's action is `tcp`",
    );
    strict_error("p.json", &text, "`type` says");
}

#[test]
fn top_level_fields_v05_ignored_are_warnings() {
    let text = TOMCAT_SERVICE.replace(
        r#""port""#,
        r#""provider": "kubernetes", "component": "x", "port""#,
    );
    let loaded = load_one("s.json", &text);
    assert_eq!(loaded.objects, vec![expected_service()]);
    let messages: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "unknown field `provider` in a Service; it is ignored",
            "unknown field `component` in a Service; it is ignored"
        ]
    );
    // --strict: every warning is an error, and nothing loads.
    let errors = match super::parse_sources(&[source("s.json", &text)], strict()) {
        Err(errors) => errors,
        Ok(loaded) => panic!("{:?}", loaded.objects),
    };
    assert_eq!(errors.errors.len(), 2);
    assert!(errors.warnings.is_empty());
}

#[test]
fn v1_port_names_keep_the_v1_limit() {
    let pod = |name: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "web"}},
      "spec": {{"containers": [{{"name": "web", "image": "nginx",
        "ports": [{{"name": "{name}", "containerPort": 80}}]}}]}}}}"#
        )
    };
    load_one("p.json", &pod("fifteen-letters"));
    only_error("p.json", &pod("sixteen-letters1"), "the limit is 15");
}

/// Kubernetes' own example manifests of v0.5 to v0.8, byte for byte
/// (tests/fixtures/k8s-examples/SOURCES.tsv names each file's commit).
fn example_manifests() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s-examples");
    let sources = std::fs::read_to_string(root.join("SOURCES.tsv")).unwrap();
    sources
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| root.join(line.split('\t').next().unwrap()))
        .collect()
}

/// The examples that were broken as shipped, and where kctl says so.
const BROKEN_AS_SHIPPED: &[(&str, &str)] = &[
    // The manifest's fields are of mid-2014 (`image`, `networkPorts` where
    // v1beta1 has `containers`); v0.5 read a pod with nothing to run.
    (
        "api/examples/controller-list.json",
        "a pod `manifest` is missing `containers`",
    ),
    // `selector` is a YAML list, not a map (and the id is not lower case).
    (
        "examples/walkthrough/service.yaml",
        "`selector` must be an object",
    ),
];

#[test]
fn kubernetes_own_example_manifests_load() {
    let files = example_manifests();
    assert!(files.len() >= 45, "{}", files.len());
    let mut refused = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s-examples"))
            .unwrap()
            .display()
            .to_string();
        let result = load_paths(std::slice::from_ref(file));
        match (
            BROKEN_AS_SHIPPED.iter().find(|(path, _)| *path == relative),
            result,
        ) {
            (None, Ok(loaded)) => assert!(!loaded.objects.is_empty(), "{relative}"),
            (None, Err(errors)) => refused.push(format!("{relative}: {:?}", errors.errors)),
            (Some((_, why)), Err(errors)) => assert!(
                errors.errors.iter().any(|e| e.to_string().contains(why)),
                "{relative}: {:#?}",
                errors.errors
            ),
            (Some(_), Ok(_)) => panic!("{relative} was broken as shipped, yet loads"),
        }
    }
    assert!(refused.is_empty(), "refused: {refused:#?}");
}

#[test]
fn the_example_manifests_load_together_as_one_set() {
    // `kctl apply -f` of several example directories at once: the ids of
    // different examples must not collide with the same kind.
    let files: Vec<PathBuf> = example_manifests()
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("examples/guestbook-go/"))
        .collect();
    assert_eq!(files.len(), 6);
    let loaded = load_paths(&files).unwrap();
    assert_eq!(loaded.objects.len(), 6);
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.to_string().contains("not valid JSON: trailing comma")));
}

// ---- volumes ----

const REDIS_POD2: &str = "\
kind: Pod
apiVersion: v1beta1
id: redis
desiredState:
  manifest:
    version: v1beta1
    containers:
      - name: redis
        image: redis
        volumeMounts:
          - name: redis-persistent-storage
            mountPath: /data/redis
    volumes:
      - name: redis-persistent-storage
        source:
          emptyDir: {}
";

#[test]
fn volumes_and_mounts_decode_in_both_versions() {
    use crate::model::{Volume, VolumeMount, VolumeSource};
    let loaded = load_one("pod2.yaml", REDIS_POD2);
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let pod = only_pod(&loaded);
    assert_eq!(
        pod.spec.volumes,
        [Volume {
            name: "redis-persistent-storage".into(),
            source: VolumeSource::EmptyDir
        }]
    );
    assert_eq!(
        pod.spec.containers[0].volume_mounts,
        [VolumeMount {
            name: "redis-persistent-storage".into(),
            mount_path: "/data/redis".into(),
            read_only: false
        }]
    );
    let v1 = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
      "spec": {"containers": [{"name": "web", "image": "nginx",
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"},
                         {"name": "site", "mountPath": "/usr/share/nginx/html", "readOnly": true}]}],
       "volumes": [{"name": "cache", "emptyDir": {}},
                   {"name": "site", "hostPath": {"path": "/srv/site", "type": "DirectoryOrCreate"}}]}}"#;
    let loaded = load_one("web.json", v1);
    let pod = only_pod(&loaded);
    assert_eq!(
        pod.spec.volumes[1].source,
        VolumeSource::HostDir {
            path: "/srv/site".into()
        }
    );
    assert!(pod.spec.containers[0].volume_mounts[1].read_only);
}

#[test]
fn a_mount_must_name_a_volume_of_the_pod() {
    let text = REDIS_POD2.replace(
        "- name: redis-persistent-storage\n            mountPath",
        "- name: redis-persistent-storag\n            mountPath",
    );
    let error = only_error(
        "pod2.yaml",
        &text,
        "no volume named `redis-persistent-storag`",
    );
    assert_eq!(error_position(&text, &error), (11, 19));
    assert_eq!(help_of(&error), "did you mean `redis-persistent-storage`?");
    let text = pod_with(
        r#"{"name": "a", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}"#,
    );
    let error = only_error("p.json", &text, "no volume named `data`");
    assert!(help_of(&error).contains("declares no volumes"));
}

#[test]
fn host_directories_that_hand_over_the_machine_are_refused_unless_allowed() {
    let text = REDIS_POD2.replace("emptyDir: {}", "hostDir: {path: /}");
    let error = only_error("pod2.yaml", &text, "host directory refused");
    assert_eq!(spanned(&text, &error), "/");
    assert_eq!(error_position(&text, &error), (16, 27));
    assert!(help_of(&error).contains("kctl up --allow-host-dir"));
    for path in [
        "/var/run",
        "/var/lib/docker",
        "/etc/ssl",
        "/var/lib/kctl/c1",
    ] {
        let text = REDIS_POD2.replace("emptyDir: {}", &format!("hostDir: {{path: {path}}}"));
        only_error("pod2.yaml", &text, "host directory refused");
    }
    let allowed = LoadOptions {
        allow_host_dir: true,
        ..LoadOptions::default()
    };
    let text = REDIS_POD2.replace("emptyDir: {}", "hostDir: {path: /var/run}");
    let loaded = super::parse_sources(&[source("pod2.yaml", &text)], allowed).unwrap();
    assert_eq!(
        only_pod(&loaded).spec.volumes[0].source,
        crate::model::VolumeSource::HostDir {
            path: "/var/run".into()
        }
    );
    // A path Docker's binds would split, or not absolute: never.
    for (path, says) in [("/a:/b", "contains `:`"), ("data", "not an absolute path")] {
        let text = REDIS_POD2.replace("emptyDir: {}", &format!("hostDir: {{path: \"{path}\"}}"));
        let errors = match super::parse_sources(&[source("pod2.yaml", &text)], allowed) {
            Err(errors) => errors.errors,
            Ok(_) => panic!("{path} loaded"),
        };
        assert!(errors[0].to_string().contains(says), "{path}: {errors:?}");
    }
}

#[test]
fn git_repo_volumes_load_in_both_versions() {
    let text = REDIS_POD2.replace(
        "emptyDir: {}",
        "gitRepo: {repository: \"https://github.com/kubernetes/kubernetes.git\", revision: v0.5}",
    );
    let loaded = load_one("pod2.yaml", &text);
    assert_eq!(
        only_pod(&loaded).spec.volumes[0].source,
        crate::model::VolumeSource::GitRepo {
            repository: "https://github.com/kubernetes/kubernetes.git".into(),
            revision: Some("v0.5".into()),
            directory: None,
        }
    );
    let v1 = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
      "spec": {"containers": [{"name": "web", "image": "nginx",
        "volumeMounts": [{"name": "site", "mountPath": "/srv"}]}],
       "volumes": [{"name": "site", "gitRepo": {"repository": "git@example.com:site.git", "directory": "."}}]}}"#;
    let loaded = load_one("web.json", v1);
    assert_eq!(
        only_pod(&loaded).spec.volumes[0].source,
        crate::model::VolumeSource::GitRepo {
            repository: "git@example.com:site.git".into(),
            revision: None,
            directory: Some(".".into()),
        }
    );
}

#[test]
fn what_kctl_cannot_provide_is_refused_with_the_reason() {
    for (source_text, says) in [
        ("persistentDisk: {pdName: Db_1}", "disk name `Db_1`"),
        ("persistentDisk: {pdName: db, fsType: ntfs}", "`ntfs`"),
        ("persistentDisk: {pdName: db, partition: 129}", "partition"),
        ("persistentDisk: {fsType: ext4}", "`pdName`"),
        (
            "gitRepo: {repository: \"--upload-pack=touch /tmp/x\"}",
            "gitRepo `repository` starts with `-`",
        ),
        (
            "gitRepo: {repository: \"ext::touch%/tmp/x\"}",
            "names a git remote helper",
        ),
        (
            "gitRepo: {repository: \"git://e.x/r\", revision: \"--orphan\"}",
            "gitRepo `revision` starts with `-`",
        ),
        (
            "gitRepo: {repository: \"git://e.x/r\", directory: ../../etc}",
            "leads out of the volume",
        ),
        ("gitRepo: {revision: main}", "`repository`"),
        (
            "gitRepo: {repository: ../../kctl_c1_other_data/_data}",
            "is no remote address",
        ),
        (
            "gitRepo: {repository: \"file:///etc\"}",
            "is no remote address",
        ),
        (
            "emptyDir: {}\n          hostDir: {path: /srv/x}",
            "only one source",
        ),
        ("{}", "needs a source"),
    ] {
        let text = REDIS_POD2.replace("emptyDir: {}", source_text);
        let text = if source_text == "{}" {
            REDIS_POD2.replace("source:\n          emptyDir: {}", "source: {}")
        } else {
            text
        };
        only_error("pod2.yaml", &text, says);
    }
    let text = REDIS_POD2.replace("mountPath: /data/redis", "mountPath: data/redis");
    only_error("pod2.yaml", &text, "`mountPath` is not an absolute path");
    let text = REDIS_POD2.replace(
        "            mountPath: /data/redis\n",
        "            mountPath: /data/redis\n          - name: redis-persistent-storage\n            mountPath: /data/redis/\n",
    );
    only_error("pod2.yaml", &text, "mount path is used twice");
    let text = REDIS_POD2.replace("    volumes:\n      - name: redis-persistent-storage\n", "    volumes:\n      - name: redis-persistent-storage\n        source: {emptyDir: {}}\n      - name: redis-persistent-storage\n");
    only_error("pod2.yaml", &text, "volume name is used twice");
    let v1 = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
      "spec": {"containers": [{"name": "web", "image": "nginx",
        "volumeMounts": [{"name": "cache", "mountPath": "/cache", "subPath": "a"}]}],
       "volumes": [{"name": "cache", "emptyDir": {"medium": "Memory"}}]}}"#;
    let errors = errors_of(&[source("web.json", v1)]);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`subPath` is not available")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("medium `Memory` is not available")),
        "{messages:?}"
    );
}

#[test]
fn v1beta1_volume_spellings_v05_read() {
    // A volume without `source` was an empty directory to v0.5's kubelet;
    // `path` was a mount's older `mountPath`.
    let text = REDIS_POD2
        .replace("        source:\n          emptyDir: {}\n", "")
        .replace("mountPath: /data/redis", "path: /data/redis");
    let loaded = load_one("pod2.yaml", &text);
    let messages: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages
        .iter()
        .any(|m| m.contains("without `source` is an empty directory")));
    assert!(messages
        .iter()
        .any(|m| m.contains("old spelling of a mount's `mountPath`")));
    let pod = only_pod(&loaded);
    assert_eq!(
        pod.spec.volumes[0].source,
        crate::model::VolumeSource::EmptyDir
    );
    assert_eq!(
        pod.spec.containers[0].volume_mounts[0].mount_path,
        "/data/redis"
    );
}

// ---- privileges ----

fn allowing_privileged() -> LoadOptions {
    LoadOptions {
        allow_privileged: true,
        ..LoadOptions::default()
    }
}

#[test]
fn privileged_is_refused_unless_the_cluster_allows_it() {
    let text = pod_with(r#"{"name": "a", "image": "i", "privileged": true}"#);
    let error = only_error("p.json", &text, "a privileged container is refused");
    assert_eq!(spanned(&text, &error), "true");
    assert!(help_of(&error).contains("kctl up --allow-privileged"));
    let loaded = super::parse_sources(&[source("p.json", &text)], allowing_privileged()).unwrap();
    assert!(only_pod(&loaded).spec.containers[0].security.privileged);
    // `privileged: false` asks for nothing.
    let text = pod_with(r#"{"name": "a", "image": "i", "privileged": false}"#);
    assert!(only_pod(&load_one("p.json", &text)).spec.containers[0]
        .security
        .is_default());
}

#[test]
fn v1_security_context_maps_onto_the_model() {
    let pod = |container_context: &str, pod_context: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "web"}},
      "spec": {{{pod_context}"containers": [{{"name": "web", "image": "nginx"{container_context}}}]}}}}"#
        )
    };
    let text = pod(
        r#", "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["CAP_NET_ADMIN"]}}"#,
        "",
    );
    only_error(
        "p.json",
        &text,
        "a container with added capabilities is refused",
    );
    let loaded = super::parse_sources(&[source("p.json", &text)], allowing_privileged()).unwrap();
    let security = &only_pod(&loaded).spec.containers[0].security;
    assert_eq!(security.run_as_user, Some(1000));
    assert!(security.read_only_root_filesystem);
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.capabilities_drop, ["ALL"]);
    assert_eq!(security.capabilities_add, ["NET_ADMIN"]);
    // The pod's user and non-root rule hold for containers that say none.
    let text = pod(
        "",
        r#""securityContext": {"runAsUser": 70, "runAsNonRoot": true}, "#,
    );
    let loaded = load_one("p.json", &text);
    let security = &only_pod(&loaded).spec.containers[0].security;
    assert_eq!(
        (security.run_as_user, security.run_as_non_root),
        (Some(70), true)
    );
    // Non-root with no user kctl can see, or user 0: refused at the rule.
    let text = pod(r#", "securityContext": {"runAsNonRoot": true}"#, "");
    only_error("p.json", &text, "`runAsNonRoot` without `runAsUser`");
    let text = pod(
        "",
        r#""securityContext": {"runAsUser": 0, "runAsNonRoot": true}, "#,
    );
    let error = only_error("p.json", &text, "`runAsNonRoot` with `runAsUser: 0`");
    assert!(spanned(&text, &error).starts_with("{\"runAsUser\": 0"));
    let text = pod(
        r#", "securityContext": {"capabilities": {"add": ["ALL"]}}"#,
        "",
    );
    only_error("p.json", &text, "`ALL` is no capability name");
}

#[test]
fn lifecycle_hooks_decode_as_commands_or_requests() {
    use crate::model::{Hook, HttpGetHook};
    let exec = |argv: &[&str]| Some(Hook::Exec(argv.iter().map(|a| a.to_string()).collect()));
    let hooks = r#"{"name": "a", "image": "i", "lifecycle": {
        "postStart": {"exec": {"command": ["touch", "/tmp/up"]}},
        "preStop": {"exec": {"command": ["sh", "-c", "nginx -s quit"]}}}}"#;
    let loaded = load_one("p.json", &pod_with(hooks));
    let c = &only_pod(&loaded).spec.containers[0];
    assert_eq!(c.post_start, exec(&["touch", "/tmp/up"]));
    assert_eq!(c.pre_stop, exec(&["sh", "-c", "nginx -s quit"]));
    let v1 = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
      "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 80}],
        "lifecycle": {"preStop": {"exec": {"command": ["nginx", "-s", "quit"]}},
                      "postStart": {"httpGet": {"path": "/warm", "port": "http"}}}}]}}"#;
    let loaded = load_one("p.json", v1);
    let c = &only_pod(&loaded).spec.containers[0];
    assert_eq!(c.pre_stop, exec(&["nginx", "-s", "quit"]));
    assert_eq!(
        c.post_start,
        Some(Hook::HttpGet(HttpGetHook {
            path: "/warm".into(),
            port: PortRef::Name("http".into()),
            host: None,
        }))
    );
    // v1beta1 too, the path defaulting to `/` as a probe's.
    let http = r#"{"name": "a", "image": "i", "lifecycle": {"preStop": {"httpGet": {"port": 80, "host": "10.0.0.9"}}}}"#;
    let loaded = load_one("p.json", &pod_with(http));
    assert_eq!(
        only_pod(&loaded).spec.containers[0].pre_stop,
        Some(Hook::HttpGet(HttpGetHook {
            path: "/".into(),
            port: PortRef::Number(80),
            host: Some("10.0.0.9".into()),
        }))
    );
    // What cannot go on a request line, a port the pod lacks, two
    // actions, and hooks kctl does not run: refused at their place.
    let bad_path = r#"{"name": "a", "image": "i", "lifecycle": {"preStop": {"httpGet": {"path": "quit", "port": 80}}}}"#;
    let text = pod_with(bad_path);
    let error = only_error("p.json", &text, "hook `path` does not start with `/`");
    assert_eq!(spanned(&text, &error), "\"quit\"");
    let no_port = r#"{"name": "a", "image": "i", "lifecycle": {"preStop": {"httpGet": {"path": "/", "port": "admin"}}}}"#;
    only_error("p.json", &pod_with(no_port), "admin");
    let both = r#"{"name": "a", "image": "i", "lifecycle": {"preStop": {"exec": {"command": ["true"]}, "httpGet": {"port": 80}}}}"#;
    only_error(
        "p.json",
        &pod_with(both),
        "a lifecycle hook takes only one action",
    );
    let tcp =
        r#"{"name": "a", "image": "i", "lifecycle": {"preStop": {"tcpSocket": {"port": 80}}}}"#;
    let text = pod_with(tcp);
    let error = only_error("p.json", &text, "`tcpSocket` hooks are not available");
    assert_eq!(spanned(&text, &error), "\"tcpSocket\"");
    let empty =
        r#"{"name": "a", "image": "i", "lifecycle": {"postStart": {"exec": {"command": []}}}}"#;
    only_error("p.json", &pod_with(empty), "a hook's `command` is empty");
}

#[test]
fn image_pull_policies_in_both_spellings() {
    use crate::model::PullPolicy;
    for (written, policy) in [
        ("PullAlways", PullPolicy::Always),
        ("PullIfNotPresent", PullPolicy::IfNotPresent),
        ("PullNever", PullPolicy::Never),
        ("Never", PullPolicy::Never),
    ] {
        let text = pod_with(&format!(
            r#"{{"name": "a", "image": "i", "imagePullPolicy": "{written}"}}"#
        ));
        let loaded = load_one("p.json", &text);
        assert_eq!(
            only_pod(&loaded).spec.containers[0].image_pull_policy,
            Some(policy)
        );
    }
    let text = pod_with(r#"{"name": "a", "image": "i", "imagePullPolicy": "PullAlway"}"#);
    let error = only_error("p.json", &text, "unknown imagePullPolicy `PullAlway`");
    assert_eq!(help_of(&error), "did you mean `PullAlways`?");
}

#[test]
fn services_published_on_the_minions_in_both_versions() {
    let text = TOMCAT_SERVICE.replace(
        r#""port": 8080"#,
        r#""port": 8080, "createExternalLoadBalancer": true, "publicIPs": ["192.0.2.10"]"#,
    );
    let Object::Service(s) = &load_one("s.json", &text).objects[0] else {
        unreachable!()
    };
    assert!(s.external);
    assert_eq!(
        s.public_ips,
        ["192.0.2.10".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    let v1 = |extra: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web"}},
      "spec": {{"selector": {{"app": "web"}}, "ports": [{{"port": 80}}]{extra}}}}}"#
        )
    };
    let Object::Service(s) = &load_one(
        "s.json",
        &v1(r#", "type": "LoadBalancer", "externalIPs": ["192.0.2.11"]"#),
    )
    .objects[0] else {
        unreachable!()
    };
    assert!(s.external && s.public_ips.len() == 1);
    assert_eq!(s.node_port, None);
    // NodePort: any free port, or the one named, also on a LoadBalancer.
    let node_port_of = |text: &str| match &load_one("s.json", text).objects[0] {
        Object::Service(s) => (s.external, s.node_port),
        _ => unreachable!(),
    };
    assert_eq!(
        node_port_of(&v1(r#", "type": "NodePort""#)),
        (false, Some(NodePort::Any))
    );
    let named = v1(r#", "type": "NodePort""#)
        .replace(r#"{"port": 80}"#, r#"{"port": 80, "nodePort": 30080}"#);
    assert_eq!(node_port_of(&named), (false, Some(NodePort::Port(30080))));
    assert_eq!(
        node_port_of(&named.replace("NodePort", "LoadBalancer")),
        (true, Some(NodePort::Port(30080)))
    );
    // Outside the range, or on a ClusterIP service: refused at the port.
    let low = named.replace("30080", "8080");
    let error = only_error("s.json", &low, "`nodePort` is out of range");
    assert_eq!(spanned(&low, &error), "8080");
    assert!(help_of(&error).contains("30000 and 32767"), "{error:?}");
    let cluster_ip = named.replace(r#""type": "NodePort""#, r#""type": "ClusterIP""#);
    let error = only_error(
        "s.json",
        &cluster_ip,
        "a ClusterIP service has no node port",
    );
    assert_eq!(spanned(&cluster_ip, &error), "30080");
    // v1beta1 output of such a service names it, and reads back.
    let text = TOMCAT_SERVICE.replace(r#""port": 8080"#, r#""port": 8080, "nodePort": 31000"#);
    assert_eq!(node_port_of(&text), (false, Some(NodePort::Port(31000))));
    // Published on the machines, a service may not take their own ports.
    let text = TOMCAT_SERVICE.replace(
        r#""port": 8080"#,
        r#""port": 22, "createExternalLoadBalancer": true"#,
    );
    let error = only_error("s.json", &text, "cannot take port 22");
    assert_eq!(spanned(&text, &error), "true");
    let text = TOMCAT_SERVICE.replace(r#""port": 8080"#, r#""port": 22"#);
    load_one("s.json", &text);
    let text = TOMCAT_SERVICE.replace(r#""port": 8080"#, r#""port": 80, "publicIPs": ["10.0.0"]"#);
    only_error("s.json", &text, "`10.0.0` is no IPv4 address");
}

#[test]
fn a_typo_beside_replicas_is_only_a_warning_and_long_hooks_are_refused() {
    // `replicas` is there: the misspelt key beside it is a warning, and the
    // controller stays.
    let text = controller_with(&format!(
        r#""replicas": 2, "replica": 3, "replicaSelector": {{"name": "web"}}, {WEB_TEMPLATE}"#
    ));
    let loaded = load_one("c.json", &text);
    assert_eq!(loaded.objects.len(), 1);
    let many: Vec<String> = (0..65).map(|i| format!("\"a{i}\"")).collect();
    let text = pod_with(&format!(
        r#"{{"name": "a", "image": "i", "lifecycle": {{"preStop": {{"exec": {{"command": [{}]}}}}}}}}"#,
        many.join(", ")
    ));
    only_error("p.json", &text, "a hook's `command` is too long");
}

#[test]
fn persistent_disks_decode_in_both_spellings() {
    use crate::model::VolumeSource;
    let text = REDIS_POD2.replace(
        "emptyDir: {}",
        "persistentDisk: {pdName: redis-data, partition: 1, readOnly: true}",
    );
    let loaded = load_one("pod2.yaml", &text);
    assert_eq!(
        only_pod(&loaded).spec.volumes[0].source,
        VolumeSource::GcePersistentDisk {
            pd_name: "redis-data".into(),
            fs_type: "ext4".into(),
            partition: Some(1),
            read_only: true,
        }
    );
    let v1 = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db"},
      "spec": {"containers": [{"name": "db", "image": "redis",
        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
       "volumes": [{"name": "data", "gcePersistentDisk": {"pdName": "db-disk", "fsType": "xfs", "partition": 0}}]}}"#;
    let loaded = load_one("db.json", v1);
    let pod = only_pod(&loaded);
    assert_eq!(
        pod.spec.volumes[0].source,
        VolumeSource::GcePersistentDisk {
            pd_name: "db-disk".into(),
            fs_type: "xfs".into(),
            partition: None,
            read_only: false,
        }
    );
    assert_eq!(
        pod.spec.disks(),
        [crate::model::DiskUse {
            disk: "db-disk".into(),
            read_only: false
        }]
    );
}

#[test]
fn a_cluster_without_gce_refuses_a_persistent_disk_where_it_is_written() {
    let text = REDIS_POD2.replace("emptyDir: {}", "persistentDisk: {pdName: redis-data}");
    let options = LoadOptions {
        disks_unavailable_on: Some("local"),
        ..LoadOptions::default()
    };
    let errors = super::parse_sources(&[source("pod2.yaml", &text)], options)
        .expect_err("a local cluster has no persistent disks");
    assert_eq!(errors.errors.len(), 1, "{:#?}", errors.errors);
    let error = &errors.errors[0];
    assert!(
        error
            .to_string()
            .contains("a local cluster cannot attach GCE persistent disks"),
        "{error}"
    );
    assert_eq!(spanned(&text, error), "persistentDisk");
    assert_eq!(error_position(&text, error), (16, 11));
    // A GCE cluster's record allows them: the same file loads.
    let loaded = super::parse_sources(&[source("pod2.yaml", &text)], LoadOptions::default())
        .expect("a cluster that attaches disks takes the pod");
    assert_eq!(loaded.objects.len(), 1);
}
