//! Manifest files (JSON or YAML, Kubernetes v1beta1 as v0.5 wrote them)
//! into validated [`Object`]s.
//!
//! Everything is read and checked before anything is returned: one bad file
//! means no objects at all, and every problem found is reported, each
//! pointing at the file, line and column it is about.
//!
//! Layers: `json` and `yaml` parse text into a span-carrying `tree`;
//! `reader` reads typed values out of it with Go-like field matching;
//! `decode` knows the v1beta1 shapes and kctl's validation rules.

mod decode;
mod error;
mod json;
mod reader;
mod tree;
mod yaml;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use error::{ManifestError, ManifestErrors, ManifestWarning};

use crate::model::{Kind, Object};
use decode::Decoded;
use error::SourceFile;
use reader::{FileContext, Report};
use tree::{Node, Span, SyntaxError};

/// One manifest text and the name to show for it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as the user gave it, or `<stdin>`.
    pub name: String,
    pub text: String,
}

/// How strictly to read manifests.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Every warning is an error, as kubectl's `--validate=strict`: for
    /// what v0.5 accepted and kctl would rather not (unknown fields, JSON
    /// that only a YAML parser takes, a missing `kind`).
    pub strict: bool,
    /// The kind of objects that say none, as `kubecfg -c pod.yaml create
    /// pods` took it from its command line.
    pub kind: Option<Kind>,
    /// The cluster takes host directories that would hand a pod the
    /// machine (`kctl up --allow-host-dir`).
    pub allow_host_dir: bool,
    /// The cluster runs privileged containers (`kctl up
    /// --allow-privileged`).
    pub allow_privileged: bool,
    /// The cluster's provider, when it cannot attach GCE persistent disks
    /// (`local`, `ssh`): such volumes are refused where they are written.
    pub disks_unavailable_on: Option<&'static str>,
}

impl LoadOptions {
    /// Everything a cluster could allow, allowed: for reading only the
    /// ids of what a file names (`kctl delete -f`).
    pub fn permissive() -> LoadOptions {
        LoadOptions {
            allow_host_dir: true,
            allow_privileged: true,
            ..LoadOptions::default()
        }
    }
}

/// What a set of manifests holds, once every one of them has checked out.
#[derive(Debug)]
pub struct Loaded {
    pub objects: Vec<Object>,
    pub warnings: Vec<ManifestWarning>,
    /// Where each service's `portalIP` and `nodePort` were written: only
    /// the cluster can refuse one, and its error points there.
    cluster_checked_sites: HashMap<(String, ClusterChecked), (SourceFile, Span)>,
}

/// A value of a service that only the cluster can give or refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterChecked {
    PortalIp,
    NodePort,
}

impl Loaded {
    /// A refusal of the portal IP or node port `service` asks for (which
    /// only the cluster can give) as an error where the manifest wrote it.
    pub fn cluster_refusal(
        &self,
        service: &str,
        what: ClusterChecked,
        message: String,
        help: Option<String>,
    ) -> Option<ManifestError> {
        let (file, span) = self
            .cluster_checked_sites
            .get(&(service.to_string(), what))?;
        let mut refused = ManifestError::at(file, *span, message, "not available");
        if let Some(help) = help {
            refused = refused.with_help(help);
        }
        Some(refused)
    }
}

const STDIN_NAME: &str = "<stdin>";
const EXTENSIONS: [&str; 3] = ["json", "yaml", "yml"];

/// Reads files, directories (every `*.json`, `*.yaml` and `*.yml` directly
/// inside, by name) or `-` (standard input), then parses and validates all
/// of them, returning every error found.
pub fn load_paths(paths: &[PathBuf], options: LoadOptions) -> Result<Loaded, ManifestErrors> {
    let mut sources = Vec::new();
    let mut io_errors = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => sources.push(Source {
                    name: STDIN_NAME.to_string(),
                    text,
                }),
                Err(error) => io_errors.push(ManifestError::without_span(format!(
                    "cannot read standard input: {error}"
                ))),
            }
        } else if path.is_dir() {
            match manifest_files_in(path) {
                Ok(files) if files.is_empty() => io_errors.push(
                    ManifestError::without_span(format!(
                        "directory `{}` holds no manifests",
                        path.display()
                    ))
                    .with_help("kctl reads the *.json, *.yaml and *.yml files directly inside it"),
                ),
                Ok(files) => {
                    for file in files {
                        read_file(&file, &mut sources, &mut io_errors);
                    }
                }
                Err(error) => io_errors.push(ManifestError::without_span(format!(
                    "cannot read directory `{}`: {error}",
                    path.display()
                ))),
            }
        } else {
            read_file(path, &mut sources, &mut io_errors);
        }
    }
    let mut report = Report::default();
    report.errors.extend(io_errors);
    check_sources(&sources, report, options)
}

/// Parses and validates manifest texts (no I/O).
pub fn parse_sources(sources: &[Source], options: LoadOptions) -> Result<Loaded, ManifestErrors> {
    check_sources(sources, Report::default(), options)
}

fn check_sources(
    sources: &[Source],
    mut report: Report,
    options: LoadOptions,
) -> Result<Loaded, ManifestErrors> {
    let mut decoded: Vec<(Decoded, SourceFile)> = Vec::new();
    for source in sources {
        let file = SourceFile::new(&source.name, &source.text);
        let documents = match parse_text(source) {
            Ok(Parsed {
                documents,
                json_error: None,
            }) => documents,
            Ok(Parsed {
                documents,
                json_error: Some(error),
            }) => {
                report.warnings.push(
                    ManifestWarning::at(
                        &file,
                        error.span,
                        format!("not valid JSON: {}; read as YAML", error.message),
                        "not JSON",
                    )
                    .with_help(
                        "Kubernetes v0.5 read every file through a YAML parser, which takes this; \
                         fix it for JSON tools",
                    ),
                );
                documents
            }
            Err(error) => {
                let format = format_of(source).name();
                let mut manifest_error = ManifestError::at(
                    &file,
                    error.span,
                    format!("invalid {format}: {}", error.message),
                    "here",
                );
                if let Some(help) = error.help {
                    manifest_error = manifest_error.with_help(help);
                }
                report.errors.push(manifest_error);
                continue;
            }
        };
        if documents.is_empty() {
            report.errors.push(
                ManifestError::without_span(format!("`{}` holds no manifests", source.name))
                    .with_help("the file is empty or holds only empty YAML documents"),
            );
            continue;
        }
        let mut objects = Vec::new();
        let mut cx = FileContext::new(file.clone(), &mut report, decode::ALL_SHAPES);
        cx.options = options;
        for document in &documents {
            decode::document(&mut cx, document, None, &mut objects);
        }
        cx.finish();
        decoded.extend(objects.into_iter().map(|object| (object, file.clone())));
    }
    report_duplicate_ids(&decoded, &mut report);
    let mut warnings = std::mem::take(&mut report.warnings);
    warnings.extend(report.ignored_fields_warning());
    if options.strict {
        report
            .errors
            .extend(warnings.drain(..).map(ManifestError::from));
    }
    if report.errors.is_empty() {
        let cluster_checked_sites = decoded
            .iter()
            .flat_map(|(d, file)| {
                [
                    (ClusterChecked::PortalIp, d.portal_ip_span),
                    (ClusterChecked::NodePort, d.node_port_span),
                ]
                .into_iter()
                .filter_map(move |(what, span)| {
                    Some(((d.object.id().to_string(), what), (file.clone(), span?)))
                })
            })
            .collect();
        Ok(Loaded {
            objects: decoded.into_iter().map(|(d, _)| d.object).collect(),
            warnings,
            cluster_checked_sites,
        })
    } else {
        Err(ManifestErrors {
            errors: report.errors,
            warnings,
        })
    }
}

/// Two objects of one kind with one id would overwrite each other; the
/// second is the error.
fn report_duplicate_ids(decoded: &[(Decoded, SourceFile)], report: &mut Report) {
    let mut first_seen: HashMap<(Kind, &str), (&SourceFile, Span)> = HashMap::new();
    for (object, file) in decoded {
        let key = (object.object.kind(), object.object.id());
        match first_seen.get(&key) {
            Some((first_file, first_span)) => {
                let (line, column) = first_file.line_col(first_span.start);
                report.errors.push(
                    ManifestError::at(
                        file,
                        object.id_span,
                        format!("{} `{}` is defined twice", key.0, key.1),
                        "second definition",
                    )
                    .with_help(format!(
                        "it is first defined in {} at line {line}, column {column}; give each its own id",
                        first_file.name
                    )),
                );
            }
            None => {
                first_seen.insert(key, (file, object.id_span));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Yaml => "YAML",
        }
    }
}

/// By extension; otherwise JSON when the text starts like JSON.
fn format_of(source: &Source) -> Format {
    let extension = Path::new(&source.name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("json") => Format::Json,
        Some("yaml" | "yml") => Format::Yaml,
        _ => {
            let first = source
                .text
                .trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
                .chars()
                .next();
            if matches!(first, Some('{' | '[')) {
                Format::Json
            } else {
                Format::Yaml
            }
        }
    }
}

/// A file's documents; for JSON that only YAML could read, the JSON error.
struct Parsed {
    documents: Vec<Node>,
    json_error: Option<SyntaxError>,
}

/// JSON that is not JSON is read as YAML, as v0.5 read every file (YAML
/// takes trailing commas, for one); when YAML fails too, the JSON error is
/// the one to show.
fn parse_text(source: &Source) -> Result<Parsed, SyntaxError> {
    match format_of(source) {
        Format::Json => match json::parse(&source.text) {
            Ok(root) => Ok(Parsed {
                documents: vec![root],
                json_error: None,
            }),
            Err(json_error) => match yaml::parse(&source.text) {
                Ok(documents) if !documents.is_empty() => Ok(Parsed {
                    documents,
                    json_error: Some(json_error),
                }),
                _ => Err(json_error),
            },
        },
        Format::Yaml => yaml::parse(&source.text).map(|documents| Parsed {
            documents,
            json_error: None,
        }),
    }
}

fn manifest_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_file(path: &Path, sources: &mut Vec<Source>, errors: &mut Vec<ManifestError>) {
    let name = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            errors.push(ManifestError::without_span(format!(
                "cannot read `{name}`: {error}"
            )));
            return;
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => sources.push(Source { name, text }),
        Err(error) => errors.push(
            ManifestError::without_span(format!(
                "`{name}` is not UTF-8 text (invalid byte at offset {})",
                error.utf8_error().valid_up_to()
            ))
            .with_help("save the manifest as UTF-8"),
        ),
    }
}

#[cfg(test)]
mod tests;
