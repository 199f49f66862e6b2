//! A fake Kubernetes API server on loopback, for tests and load tests only: no real API server
//! (kube-apiserver, kind, k3s, envtest) can run on the machines Verdict is built on, so the API
//! source is tested against this instead. It implements, from the Kubernetes API reference
//! ("API Concepts": efficient detection of changes, retrieving large results in chunks), what
//! the watchers and the Event/status writers use:
//!
//! - `GET /version`;
//! - list of any resource across namespaces (`/api/v1/pods`, `/apis/G/V/plural`) with the
//!   collection's `metadata.resourceVersion`, `limit` and `continue` (chunks);
//! - `?watch=true&resourceVersion=N`: a chunked stream of newline-delimited `ADDED`, `MODIFIED`,
//!   `DELETED` events after N, `BOOKMARK` events when `allowWatchBookmarks=true`, ended after
//!   `timeoutSeconds`; an `ERROR` event with a `410 Expired` Status when N is older than the
//!   oldest retained version ([`FakeApiServer::compact`]);
//! - `403 Forbidden` Status for resources made forbidden, `401` without the bearer token;
//! - `POST /api/v1/namespaces/NS/events` (`409` on a name already used) and a merge `PATCH` of
//!   `/apis/networking.gke.io/v1alpha1/networkloggings/NAME/status`;
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` for the ServiceAccount tokens registered
//!   with [`FakeApiServer::add_service_account_token`] (the answer a real API server gives for a
//!   projected token bound to a pod: the user, its audiences, and the pod's node in
//!   `extra["authentication.kubernetes.io/node-name"]`);
//! - a log of every request's method, path and query ([`FakeApiServer::calls`]).
//!
//! Objects are JSON values; every write gets the next resourceVersion, as etcd's revision.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// A change, as a watch sends it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    plural: String,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct Data {
    rv: u64,
    /// plural → (namespace, name) → object.
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    history: Vec<Change>,
    /// Watches from a version below this get 410 Gone.
    oldest: u64,
    forbidden: BTreeSet<String>,
    events: Vec<Value>,
    requests: HashMap<String, u64>,
    /// When the last list response was built.
    last_list: Option<std::time::Instant>,
    /// Every request: (method, path, query).
    calls: Vec<(String, String, String)>,
    /// ServiceAccount tokens the TokenReview endpoint knows.
    service_account_tokens: HashMap<String, ServiceAccountToken>,
}

/// A projected ServiceAccount token as the API server would review it.
#[derive(Debug, Clone)]
struct ServiceAccountToken {
    namespace: String,
    service_account: String,
    node: Option<String>,
    audiences: Vec<String>,
}

#[derive(Debug)]
struct Inner {
    data: Mutex<Data>,
    changes: broadcast::Sender<Change>,
    token: String,
    bookmark_every: Duration,
    /// Bumped to end every open watch (an API server restart, a load balancer's idle timeout).
    cut: watch::Sender<u64>,
}

/// The fake API server (see the module documentation).
#[derive(Debug, Clone)]
pub struct FakeApiServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    serving: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

const KINDS: [&str; 8] = [
    "Namespace",
    "Pod",
    "Node",
    "Service",
    "Event",
    "EndpointSlice",
    "NetworkPolicy",
    "NetworkLogging",
];

/// The plural resource name of a kind the fake serves, and its API path prefix.
fn route_of(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Namespace" => ("namespaces", "/api/v1"),
        "Pod" => ("pods", "/api/v1"),
        "Node" => ("nodes", "/api/v1"),
        "Service" => ("services", "/api/v1"),
        "Event" => ("events", "/api/v1"),
        "EndpointSlice" => ("endpointslices", "/apis/discovery.k8s.io/v1"),
        "NetworkPolicy" => ("networkpolicies", "/apis/networking.k8s.io/v1"),
        "NetworkLogging" => ("networkloggings", "/apis/networking.gke.io/v1alpha1"),
        other => panic!("the fake API server does not serve kind {other}"),
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn status_response(code: u16, reason: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        status(code, reason, message).to_string(),
    )
        .into_response()
}

impl FakeApiServer {
    /// Starts on `127.0.0.1:0`; requests must carry `Authorization: Bearer TOKEN`.
    pub async fn start(token: &str) -> Self {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake API server");
        Self::start_on(listener, token)
    }

    /// Starts on a listener the caller made (e.g. inside a network namespace: the socket stays
    /// there). Must be called within a tokio runtime.
    pub fn start_on(listener: std::net::TcpListener, token: &str) -> Self {
        let (changes, _) = broadcast::channel(65_536);
        let inner = Arc::new(Inner {
            data: Mutex::new(Data {
                rv: 1,
                ..Data::default()
            }),
            changes,
            token: token.to_owned(),
            bookmark_every: Duration::from_millis(200),
            cut: watch::channel(0).0,
        });
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        let addr = listener.local_addr().expect("local address");
        let server = FakeApiServer {
            inner,
            addr,
            serving: Arc::new(Mutex::new(None)),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/version", get(version))
            .route("/api/v1/{plural}", get(list_or_watch_core))
            .route("/apis/{group}/{version}/{plural}", get(list_or_watch))
            .route("/api/v1/namespaces/{ns}/events", post(create_event))
            .route(
                "/apis/networking.gke.io/v1alpha1/networkloggings/{name}/status",
                axum::routing::patch(patch_status),
            )
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(create_token_review),
            )
            .layer(axum::middleware::from_fn_with_state(
                self.inner.clone(),
                record_call,
            ))
            .with_state(self.inner.clone());
        // Connections are served by tasks this one owns: stopping it closes every connection
        // (a client's pooled keep-alive connections included), as an API server that goes away.
        let handle = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        *self.serving.lock().expect("lock") = Some(handle);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server (context `fake`, the bearer token), as `kubectl` writes one.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: agent\nusers:\n- name: agent\n  user:\n    token: {}\n",
            self.url(),
            self.inner.token
        )
    }

    /// Creates or replaces an object (a Kubernetes object as JSON, with `kind` and
    /// `metadata.name`); returns its new resourceVersion.
    pub fn apply(&self, mut object: Value) -> u64 {
        let kind = object["kind"].as_str().expect("kind").to_owned();
        let (plural, _) = route_of(&kind);
        let key = key_of(&object);
        let mut d = self.inner.data.lock().expect("lock");
        d.rv += 1;
        let rv = d.rv;
        let existed = d.objects.get(plural).and_then(|m| m.get(&key)).cloned();
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        let generation = existed
            .as_ref()
            .and_then(|e| e["metadata"]["generation"].as_i64())
            .map_or(1, |g| {
                let spec_changed = existed.as_ref().map(|e| &e["spec"]) != Some(&object["spec"]);
                g + i64::from(spec_changed)
            });
        object["metadata"]["generation"] = json!(generation);
        let uid = existed
            .as_ref()
            .and_then(|e| e["metadata"]["uid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("uid-{plural}-{}-{}-{rv}", key.0, key.1));
        object["metadata"]["uid"] = json!(uid);
        // A write of the main resource keeps the status (the status subresource owns it).
        let kept = existed.as_ref().map(|e| e["status"].clone());
        if let Some(status) = kept.filter(|s| !s.is_null() && kind == "NetworkLogging") {
            object["status"] = status;
        }
        d.objects
            .entry(plural.to_owned())
            .or_default()
            .insert(key, object.clone());
        let change = Change {
            rv,
            plural: plural.to_owned(),
            kind: if existed.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            },
            object,
        };
        d.history.push(change.clone());
        let _ = self.inner.changes.send(change);
        rv
    }

    /// Applies every object of the manifest files in `dir` (as `kubectl apply -f DIR` reads
    /// them: `.yaml`, `.yml`, `.json`, `---`-separated documents).
    pub fn apply_manifest_dir(&self, dir: &std::path::Path) -> std::io::Result<usize> {
        use serde::Deserialize as _;
        let mut applied = 0;
        for file in verdict_policy::manifests::manifest_files(dir)? {
            let text = std::fs::read_to_string(&file)?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v = Value::deserialize(doc).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", file.display()),
                    )
                })?;
                if !v.is_null() {
                    self.apply(v);
                    applied += 1;
                }
            }
        }
        Ok(applied)
    }

    /// Deletes an object (`kind`, namespace or "" for cluster-scoped, name).
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let (plural, _) = route_of(kind);
        let mut d = self.inner.data.lock().expect("lock");
        let Some(mut object) = d
            .objects
            .get_mut(plural)
            .and_then(|m| m.remove(&(namespace.to_owned(), name.to_owned())))
        else {
            return;
        };
        d.rv += 1;
        object["metadata"]["resourceVersion"] = json!(d.rv.to_string());
        let change = Change {
            rv: d.rv,
            plural: plural.to_owned(),
            kind: "DELETED",
            object,
        };
        d.history.push(change.clone());
        let _ = self.inner.changes.send(change);
    }

    /// Forgets the history: watches from any earlier version get `410 Gone` (etcd compaction).
    pub fn compact(&self) {
        let mut d = self.inner.data.lock().expect("lock");
        d.oldest = d.rv + 1;
        d.history.clear();
    }

    /// Ends every open watch stream (clients re-watch from their last version).
    pub fn cut_watches(&self) {
        self.inner.cut.send_modify(|n| *n += 1);
    }

    /// Makes list and watch of `plural` answer `403 Forbidden` (or serve it again).
    pub fn set_forbidden(&self, plural: &str, forbidden: bool) {
        let mut d = self.inner.data.lock().expect("lock");
        if forbidden {
            d.forbidden.insert(plural.to_owned());
        } else {
            d.forbidden.remove(plural);
        }
    }

    /// Stops answering: the listener closes and open watches end (an outage).
    pub fn stop(&self) {
        if let Some(h) = self.serving.lock().expect("lock").take() {
            h.abort();
        }
        self.cut_watches();
    }

    /// Serves again on the same address after [`FakeApiServer::stop`].
    pub async fn resume(&self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// When the last list response was served (a client's initial list ends there).
    pub fn last_list_at(&self) -> Option<std::time::Instant> {
        self.inner.data.lock().expect("lock").last_list
    }

    /// The Events posted so far.
    pub fn events(&self) -> Vec<Value> {
        self.inner.data.lock().expect("lock").events.clone()
    }

    /// An object as stored (with its status).
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let (plural, _) = route_of(kind);
        let d = self.inner.data.lock().expect("lock");
        d.objects
            .get(plural)
            .and_then(|m| m.get(&(namespace.to_owned(), name.to_owned())))
            .cloned()
    }

    /// Every request served so far: (method, path, query), in order.
    pub fn calls(&self) -> Vec<(String, String, String)> {
        self.inner.data.lock().expect("lock").calls.clone()
    }

    /// Makes `token` a ServiceAccount token of `namespace/service_account`, for `audiences`,
    /// bound to a pod on `node` (None: a token not bound to a pod), for TokenReview.
    pub fn add_service_account_token(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
        node: Option<&str>,
        audiences: &[&str],
    ) {
        self.inner
            .data
            .lock()
            .expect("lock")
            .service_account_tokens
            .insert(
                token.to_owned(),
                ServiceAccountToken {
                    namespace: namespace.to_owned(),
                    service_account: service_account.to_owned(),
                    node: node.map(str::to_owned),
                    audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
                },
            );
    }

    /// How many list (`list:PLURAL`) and watch (`watch:PLURAL`) requests were served, and how
    /// many watches were refused as expired (`gone:PLURAL`).
    pub fn requests(&self, what: &str) -> u64 {
        self.inner
            .data
            .lock()
            .expect("lock")
            .requests
            .get(what)
            .copied()
            .unwrap_or(0)
    }
}

fn key_of(object: &Value) -> (String, String) {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_owned(),
    )
}

fn authorized(inner: &Inner, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", inner.token))
}

async fn version(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if !authorized(&inner, &headers) {
        return status_response(401, "Unauthorized", "Unauthorized");
    }
    axum::Json(
        json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
                      "platform": "linux/amd64"}),
    )
    .into_response()
}

async fn list_or_watch_core(
    State(inner): State<Arc<Inner>>,
    Path(plural): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    serve_collection(inner, plural, q, headers)
}

async fn list_or_watch(
    State(inner): State<Arc<Inner>>,
    Path((_group, _version, plural)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    serve_collection(inner, plural, q, headers)
}

fn serve_collection(
    inner: Arc<Inner>,
    plural: String,
    q: HashMap<String, String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&inner, &headers) {
        return status_response(401, "Unauthorized", "Unauthorized");
    }
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    {
        let mut d = inner.data.lock().expect("lock");
        let what = format!("{}:{plural}", if watching { "watch" } else { "list" });
        *d.requests.entry(what).or_default() += 1;
        if d.forbidden.contains(&plural) {
            return status_response(
                403,
                "Forbidden",
                &format!(
                    "{plural} is forbidden: User \"system:serviceaccount:verdict:agent\" cannot {} resource \"{plural}\" at the cluster scope",
                    if watching { "watch" } else { "list" }
                ),
            );
        }
    }
    if watching {
        watch_collection(inner, plural, q)
    } else {
        list_collection(&inner, &plural, &q)
    }
}

fn list_collection(inner: &Inner, plural: &str, q: &HashMap<String, String>) -> Response {
    let mut d = inner.data.lock().expect("lock");
    d.last_list = Some(std::time::Instant::now());
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    // The continue token is the last key returned and the version the list is read at.
    let after: Option<(String, String)> = q
        .get("continue")
        .filter(|c| !c.is_empty())
        .and_then(|c| serde_json::from_str(c).ok());
    let empty = BTreeMap::new();
    let all = d.objects.get(plural).unwrap_or(&empty);
    let mut items: Vec<Value> = Vec::new();
    let mut last = None;
    let range = all
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a));
    let mut more = false;
    for (k, v) in range {
        if items.len() == limit {
            more = true;
            break;
        }
        let mut item = v.clone();
        if let Some(map) = item.as_object_mut() {
            // List items carry no apiVersion/kind: the list's type says what they are.
            map.remove("apiVersion");
            map.remove("kind");
        }
        items.push(item);
        last = Some(k.clone());
    }
    let mut metadata = json!({"resourceVersion": d.rv.to_string()});
    if more {
        metadata["continue"] = json!(serde_json::to_string(&last).unwrap_or_default());
    }
    axum::Json(json!({"kind": "List", "apiVersion": "v1", "metadata": metadata, "items": items}))
        .into_response()
}

fn watch_collection(inner: Arc<Inner>, plural: String, q: HashMap<String, String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1024);
    let mut changes = inner.changes.subscribe();
    let mut cut = inner.cut.subscribe();
    let (backlog, expired, kind) = {
        let mut d = inner.data.lock().expect("lock");
        let expired = from != 0 && from < d.oldest.saturating_sub(1);
        if expired {
            *d.requests.entry(format!("gone:{plural}")).or_default() += 1;
        }
        let backlog: Vec<Change> = d
            .history
            .iter()
            .filter(|c| c.plural == plural && c.rv > from)
            .cloned()
            .collect();
        let kind = KINDS.iter().find(|k| route_of(k).0 == plural).map_or(
            (String::new(), String::new()),
            |k| {
                let prefix = route_of(k).1;
                let api_version = prefix
                    .strip_prefix("/apis/")
                    .or_else(|| prefix.strip_prefix("/api/"))
                    .unwrap_or(prefix);
                ((*k).to_owned(), api_version.to_owned())
            },
        );
        (backlog, expired, kind)
    };
    let line = |v: Value| Ok::<_, std::io::Error>(Bytes::from(format!("{v}\n")));
    tokio::spawn(async move {
        if expired {
            let gone = status(
                410,
                "Expired",
                &format!("too old resource version: {from} (compacted)"),
            );
            let _ = tx
                .send(line(json!({"type": "ERROR", "object": gone})))
                .await;
            return;
        }
        let mut sent = from;
        for c in backlog {
            sent = c.rv;
            if tx
                .send(line(json!({"type": c.kind, "object": c.object})))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(inner.bookmark_every);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = cut.changed() => return,
                c = changes.recv() => match c {
                    Ok(c) if c.plural == plural && c.rv > sent => {
                        sent = c.rv;
                        if tx.send(line(json!({"type": c.kind, "object": c.object}))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let rv = inner.data.lock().expect("lock").rv;
                    // A bookmark carries only the type and the version (API Concepts, "Watch
                    // bookmarks").
                    let mark = json!({"type": "BOOKMARK", "object": {
                        "kind": kind.0, "apiVersion": kind.1,
                        "metadata": {"resourceVersion": rv.max(sent).to_string()}}});
                    if tx.send(line(mark)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("a response")
}

async fn create_event(
    State(inner): State<Arc<Inner>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&inner, &headers) {
        return status_response(401, "Unauthorized", "Unauthorized");
    }
    let Ok(mut event) = serde_json::from_slice::<Value>(&body) else {
        return status_response(400, "BadRequest", "the body is not JSON");
    };
    let mut d = inner.data.lock().expect("lock");
    if d.forbidden.contains("events") {
        return status_response(403, "Forbidden", "events is forbidden");
    }
    let name = event["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if d.events.iter().any(|e| {
        e["metadata"]["name"] == name.as_str() && e["metadata"]["namespace"] == ns.as_str()
    }) {
        return status_response(
            409,
            "AlreadyExists",
            &format!("events \"{name}\" already exists"),
        );
    }
    event["metadata"]["namespace"] = json!(ns);
    d.events.push(event.clone());
    (StatusCode::CREATED, axum::Json(event)).into_response()
}

async fn record_call(
    State(inner): State<Arc<Inner>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    let call = (
        request.method().to_string(),
        uri.path().to_owned(),
        uri.query().unwrap_or("").to_owned(),
    );
    inner.data.lock().expect("lock").calls.push(call);
    next.run(request).await
}

/// TokenReview (authentication.k8s.io/v1) as the API server answers it: an unknown token, or
/// one whose audiences do not meet the requested ones, is `authenticated: false` with an error.
async fn create_token_review(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&inner, &headers) {
        return status_response(401, "Unauthorized", "Unauthorized");
    }
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return status_response(400, "BadRequest", "the body is not JSON");
    };
    let d = inner.data.lock().expect("lock");
    if d.forbidden.contains("tokenreviews") {
        return status_response(403, "Forbidden", "tokenreviews is forbidden");
    }
    let token = review["spec"]["token"].as_str().unwrap_or("");
    let wanted: Vec<&str> = review["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let status = match d.service_account_tokens.get(token) {
        Some(t)
            if wanted.is_empty() || wanted.iter().any(|w| t.audiences.iter().any(|a| a == w)) =>
        {
            let mut extra = serde_json::Map::new();
            if let Some(node) = &t.node {
                extra.insert(
                    "authentication.kubernetes.io/node-name".into(),
                    json!([node]),
                );
                extra.insert(
                    "authentication.kubernetes.io/pod-name".into(),
                    json!(["agent-pod"]),
                );
            }
            let audiences: Vec<&str> = if wanted.is_empty() {
                t.audiences.iter().map(String::as_str).collect()
            } else {
                wanted.clone()
            };
            json!({"authenticated": true, "audiences": audiences, "user": {
                "username": format!("system:serviceaccount:{}:{}", t.namespace, t.service_account),
                "uid": "fake-uid",
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", t.namespace), "system:authenticated"],
                "extra": extra}})
        }
        Some(_) => {
            json!({"authenticated": false, "error": "token audiences is invalid for the target audiences"})
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    let mut answer = review.clone();
    answer["status"] = status;
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn patch_status(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&inner, &headers) {
        return status_response(401, "Unauthorized", "Unauthorized");
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/merge-patch+json" {
        return status_response(415, "UnsupportedMediaType", content_type);
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status_response(400, "BadRequest", "the body is not JSON");
    };
    let mut d = inner.data.lock().expect("lock");
    let Some(object) = d
        .objects
        .get_mut("networkloggings")
        .and_then(|m| m.get_mut(&(String::new(), name.clone())))
    else {
        return status_response(
            404,
            "NotFound",
            &format!("networkloggings \"{name}\" not found"),
        );
    };
    // The status subresource changes only `status` (and not the generation).
    object["status"] = patch["status"].clone();
    (StatusCode::OK, axum::Json(object.clone())).into_response()
}
