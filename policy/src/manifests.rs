//! Loading cluster state from a folder of YAML manifests (what `verdict policy check` and the
//! node agent read when there is no API server).
//!
//! Every `.yaml`, `.yml` and `.json` file in the folder that does not start with `.` is read, in
//! name order (other files, such as a `notes.txt`, are not: as kubectl); each may
//! hold several `---`-separated documents and `kind: List` objects. Errors name the file, the line
//! and column inside it, and the object. Objects of kinds the engine does not use are ignored
//! with a warning.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::Value;
use verdict_schema::NetworkLogging;

use crate::cluster::{BUILTIN_NAMESPACES, ClusterState, Origin, object_key};
use crate::error::{Error, ManifestError, Result};
use crate::model::{EndpointSlice, Namespace, NetworkPolicy, Node, Service};

/// Something worth telling the user that does not stop loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub object: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(l) = self.line {
                write!(f, ":{l}")?;
            }
            write!(f, ": ")?;
        }
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A loaded cluster and the warnings met on the way.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub state: ClusterState,
    pub warnings: Vec<Warning>,
    /// An invalid NetworkLogging, not applied (`state.network_logging` is then None), with GKE's
    /// error text. Only the lenient loaders return one; the strict ones fail instead.
    pub rejected_network_logging: Option<ManifestError>,
}

/// Loads every manifest file in `dir`; an invalid NetworkLogging is an error.
pub fn load_dir(dir: &Path) -> Result<Loaded> {
    strict(load_dir_lenient(dir)?)
}

/// Loads manifests from one string, reported as coming from `file`; an invalid NetworkLogging is
/// an error.
pub fn load_str(text: &str, file: &Path) -> Result<Loaded> {
    strict(load_str_lenient(text, file)?)
}

fn strict(loaded: Loaded) -> Result<Loaded> {
    match loaded.rejected_network_logging {
        Some(e) => Err(e.into()),
        None => Ok(loaded),
    }
}

/// Like [`load_dir`], but an invalid NetworkLogging is reported in
/// [`Loaded::rejected_network_logging`] instead of failing the load: the node agent keeps the
/// previous valid configuration in force, as GKE does.
pub fn load_dir_lenient(dir: &Path) -> Result<Loaded> {
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    let files = manifest_files(dir).map_err(io)?;
    let mut loader = Loader::default();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
            path: file.clone(),
            source,
        })?;
        loader.add_text(&text, file)?;
    }
    loader.finish()
}

/// The manifest files of `dir`, in name order: regular files ending in `.yaml`, `.yml` or
/// `.json` (as `kubectl apply -f DIR` reads), not hidden. A `notes.txt` or an editor's backup
/// beside the manifests is not read.
pub fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let manifest = [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if manifest && !name.starts_with('.') && entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Like [`load_str`], but an invalid NetworkLogging is reported, not an error.
pub fn load_str_lenient(text: &str, file: &Path) -> Result<Loaded> {
    let mut loader = Loader::default();
    loader.add_text(text, file)?;
    loader.finish()
}

#[derive(Default)]
struct Loader {
    loaded: Loaded,
    network_logging_origin: Option<Origin>,
}

/// Splits YAML text into documents at `---` lines, with each document's first line (1-based).
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_separator =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_separator || line == "..." {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            // Content after `--- ` on the same line belongs to the next document.
            let rest = line.get(4..).unwrap_or("").trim();
            if is_separator && !rest.is_empty() && !rest.starts_with('#') {
                start = i + 1;
                current.push_str(rest);
                current.push('\n');
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs
}

fn yaml_error(
    e: &serde_yaml::Error,
    file: &Path,
    first_line: usize,
    object: Option<String>,
) -> ManifestError {
    let text = e.to_string();
    // serde_yaml appends " at line L column C" relative to the document; we report it relative
    // to the file instead.
    let message = match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    let (line, column) = match e.location() {
        Some(l) => (Some(first_line + l.line() - 1), Some(l.column())),
        None => (Some(first_line), None),
    };
    ManifestError {
        file: file.to_owned(),
        line,
        column,
        object,
        message,
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

impl Loader {
    fn add_text(&mut self, text: &str, file: &Path) -> Result<()> {
        for (first_line, doc) in split_documents(text) {
            let value: Value = match serde_yaml::from_str(&doc) {
                Ok(v) => v,
                Err(e) => return Err(yaml_error(&e, file, first_line, None).into()),
            };
            if value.is_null() {
                continue; // empty document or only comments
            }
            self.add_document(&value, Some(&doc), file, first_line)?;
        }
        Ok(())
    }

    fn add_document(
        &mut self,
        value: &Value,
        text: Option<&str>,
        file: &Path,
        line: usize,
    ) -> Result<()> {
        let err = |object: Option<String>, message: String| ManifestError {
            file: file.to_owned(),
            line: Some(line),
            column: None,
            object,
            message,
        };
        if !value.is_mapping() {
            return Err(err(
                None,
                "expected a Kubernetes object (a mapping with `kind`)".into(),
            )
            .into());
        }
        let kind = str_at(value, &["kind"])
            .ok_or_else(|| err(None, "missing `kind`".into()))?
            .to_owned();
        let api_version = str_at(value, &["apiVersion"]).unwrap_or("").to_owned();
        if kind == "List" || kind.ends_with("List") && value.get("items").is_some() {
            let items = value
                .get("items")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for item in &items {
                self.add_document(item, None, file, line)?;
            }
            return Ok(());
        }
        let name = str_at(value, &["metadata", "name"])
            .unwrap_or("")
            .to_owned();
        let namespaced = matches!(
            kind.as_str(),
            "Pod" | "NetworkPolicy" | "Service" | "EndpointSlice"
        );
        let namespace = namespaced.then(|| {
            str_at(value, &["metadata", "namespace"])
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_owned()
        });
        let object = object_key(
            &kind,
            namespace.as_deref(),
            if name.is_empty() { "<unnamed>" } else { &name },
        );
        if name.is_empty() && kind != "NetworkLogging" {
            return Err(err(Some(object), "missing `metadata.name`".into()).into());
        }
        let expected_api = match kind.as_str() {
            "Pod" | "Namespace" | "Node" | "Service" => Some("v1"),
            "NetworkPolicy" => Some("networking.k8s.io/v1"),
            "EndpointSlice" => Some("discovery.k8s.io/v1"),
            "NetworkLogging" => Some(verdict_schema::network_logging::API_VERSION),
            _ => None,
        };
        let Some(expected_api) = expected_api else {
            self.loaded.warnings.push(Warning {
                file: Some(file.to_owned()),
                line: Some(line),
                object: Some(object),
                message: format!("kind {kind} is not used by the policy engine; ignored"),
            });
            return Ok(());
        };
        if api_version != expected_api {
            return Err(err(
                Some(object),
                format!("apiVersion must be {expected_api:?} for kind {kind}, got {api_version:?}"),
            )
            .into());
        }
        let origin = Origin {
            file: file.to_owned(),
            line,
        };
        if self.loaded.state.origins.contains_key(&object) {
            let first = &self.loaded.state.origins[&object];
            return Err(err(
                Some(object.clone()),
                format!(
                    "defined twice (first at {}:{})",
                    first.file.display(),
                    first.line
                ),
            )
            .into());
        }
        let state = &mut self.loaded.state;
        match kind.as_str() {
            "Pod" => state.pods.push(parse::<crate::model::Pod>(
                value, text, file, line, &object,
            )?),
            "Namespace" => state
                .namespaces
                .push(parse::<Namespace>(value, text, file, line, &object)?),
            "Node" => state
                .nodes
                .push(parse::<Node>(value, text, file, line, &object)?),
            "Service" => state
                .services
                .push(parse::<Service>(value, text, file, line, &object)?),
            "EndpointSlice" => {
                let mut slice: EndpointSlice = parse(value, text, file, line, &object)?;
                slice.metadata.namespace = namespace.clone();
                state.endpoint_slices.push(slice);
            }
            "NetworkPolicy" => {
                let mut p: NetworkPolicy = parse(value, text, file, line, &object)?;
                p.metadata.namespace = namespace.clone();
                state.policies.push(p);
            }
            "NetworkLogging" => {
                let nl: NetworkLogging = parse(value, text, file, line, &object)?;
                if let Some(prev) = &self.network_logging_origin {
                    return Err(err(
                        Some(object),
                        format!(
                            "a cluster has at most one NetworkLogging (another one is at {}:{})",
                            prev.file.display(),
                            prev.line
                        ),
                    )
                    .into());
                }
                self.network_logging_origin = Some(origin.clone());
                match nl.validate() {
                    Ok(()) => state.network_logging = Some(nl),
                    Err(e) => {
                        self.loaded.rejected_network_logging =
                            Some(err(Some(object.clone()), e.to_string()))
                    }
                }
            }
            _ => unreachable!("kinds filtered above"),
        }
        if let Some(p) = state.pods.last_mut().filter(|_| kind == "Pod") {
            p.metadata.namespace = namespace;
        }
        state.origins.insert(object, origin);
        Ok(())
    }

    fn finish(self) -> Result<Loaded> {
        Ok(complete(self.loaded))
    }
}

/// What every loaded state gets, wherever its objects came from (a folder, the API server):
/// warnings for unknown enforcement annotations, and the Namespaces that objects refer to but
/// that were not declared.
pub fn complete(mut loaded: Loaded) -> Loaded {
    for ns in &loaded.state.namespaces {
        let value = ns
            .metadata
            .annotations
            .get(crate::engine::ENFORCEMENT_ANNOTATION);
        if let Some(v) = value.filter(|v| crate::engine::EnforcementMode::parse(v).is_none()) {
            let key = object_key("Namespace", None, &ns.metadata.name);
            let origin = loaded.state.origins.get(&key);
            loaded.warnings.push(Warning {
                file: origin.map(|o| o.file.clone()),
                line: origin.map(|o| o.line),
                object: Some(key),
                message: format!(
                    "annotation {}: {v:?} is neither \"audit\" nor \"enforce\"; ignored",
                    crate::engine::ENFORCEMENT_ANNOTATION
                ),
            });
        }
    }
    let added = loaded.state.add_implicit_namespaces();
    for ns in added {
        if !BUILTIN_NAMESPACES.contains(&ns.as_str()) {
            loaded.warnings.push(Warning {
                file: None,
                line: None,
                object: Some(object_key("Namespace", None, &ns)),
                message: "referred to but not defined; assuming it exists with no labels but \
                              kubernetes.io/metadata.name"
                    .into(),
            });
        }
    }
    loaded
}

/// Deserializes one object, from its text when we have it (for exact line numbers).
fn parse<T: DeserializeOwned>(
    value: &Value,
    text: Option<&str>,
    file: &Path,
    line: usize,
    object: &str,
) -> Result<T> {
    let result = match text {
        Some(t) => serde_yaml::from_str::<T>(t),
        None => serde_yaml::from_value::<T>(value.clone()),
    };
    result.map_err(|e| yaml_error(&e, file, line, Some(object.to_owned())).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_line_numbers() {
        let docs = split_documents("a: 1\n---\nb: 2\n--- # c\nc: 3\n");
        assert_eq!(docs.iter().map(|d| d.0).collect::<Vec<_>>(), vec![1, 3, 5]);
        assert_eq!(docs[1].1, "b: 2\n");
    }

    #[test]
    fn errors_point_at_file_line_and_field() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - port: 0\n";
        let e = load_str(text, Path::new("dir/x.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("dir/x.yaml:13:"), "{e}");
        assert!(e.contains("NetworkPolicy default/p"), "{e}");
        assert!(e.contains("spec.ingress[0].ports"), "{e}");
        assert!(e.contains("between 1 and 65535"), "{e}");
    }

    #[test]
    fn unknown_kinds_warn_and_lists_load() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: shop}\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n";
        let l = load_str(text, Path::new("l.yaml")).unwrap();
        assert!(l.state.namespaces.iter().any(|n| n.metadata.name == "shop"));
        assert!(l.warnings.iter().any(|w| w.message.contains("Deployment")));
    }

    #[test]
    fn duplicates_and_invalid_network_logging_are_errors() {
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
        let e = load_str(&format!("{ns}---\n{ns}"), Path::new("d.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("defined twice (first at d.yaml:1)"), "{e}");
        let nl = "apiVersion: networking.gke.io/v1alpha1\nkind: NetworkLogging\nmetadata: {name: default}\nspec:\n  cluster:\n    allow: {log: false, delegate: true}\n";
        let e = load_str(nl, Path::new("nl.yaml")).unwrap_err().to_string();
        assert!(
            e.contains(
                "cluster allow log action is invalid: delegate cannot be true when log is false"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_folder_loads_only_yaml_yml_and_json_files() {
        let dir = tempfile::tempdir().unwrap();
        let ns = |n: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n");
        std::fs::write(dir.path().join("a.yaml"), ns("a")).unwrap();
        std::fs::write(dir.path().join("b.yml"), ns("b")).unwrap();
        std::fs::write(
            dir.path().join("c.json"),
            r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("notes.txt"),
            "remember: the db policy is new\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("a.yaml~"), "not: [valid").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "not: [valid").unwrap();
        let l = load_dir(dir.path()).unwrap();
        for n in ["a", "b", "c"] {
            assert!(
                l.state.namespaces.iter().any(|x| x.metadata.name == n),
                "{n}"
            );
        }
    }

    #[test]
    fn endpoint_slices_are_the_service_backends() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: data}\nspec: {clusterIP: 10.96.0.20}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: db-1\n  namespace: data\n  labels: {kubernetes.io/service-name: db}\naddressType: IPv4\nendpoints:\n- addresses: [10.0.3.10]\n- addresses: [10.0.3.11]\n  conditions: {ready: false}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: other\n  namespace: web\n  labels: {kubernetes.io/service-name: db}\nendpoints:\n- addresses: [10.0.9.9]\n";
        let l = load_str(text, Path::new("s.yaml")).unwrap();
        let svc = &l.state.services[0];
        // Ready endpoints of slices in the Service's own namespace only.
        assert_eq!(
            l.state.service_backends(svc),
            vec!["10.0.3.10".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn namespaces_get_the_automatic_name_label() {
        let l = load_str(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\n",
            Path::new("p.yaml"),
        )
        .unwrap();
        let shop = l
            .state
            .namespaces
            .iter()
            .find(|n| n.metadata.name == "shop")
            .unwrap();
        assert_eq!(shop.metadata.labels["kubernetes.io/metadata.name"], "shop");
        assert!(
            l.warnings
                .iter()
                .any(|w| w.to_string().contains("Namespace shop"))
        );
    }
}
