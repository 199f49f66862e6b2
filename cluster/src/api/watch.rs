//! [`ApiSource`]: watchers over the API server feeding compact stores, and the consistent states
//! built from them (see the module documentation of [`crate::api`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use verdict_policy::ClusterState;
use verdict_policy::manifests::{Loaded, Warning, complete};

use super::kinds::{Key, Kind, LoggingObject, Stored, convert, describe};
use super::{api_error, explain_error};
use crate::source::{ClusterSource, SourceError, StateUpdate};

/// How the API source behaves.
#[derive(Debug, Clone)]
pub struct ApiSourceOptions {
    /// The node this agent runs on: set, the source reports an invalid NetworkLogging (a Warning
    /// Event from this node, once per change, and the object's `Valid` condition); unset, it
    /// only reads.
    pub report_as: Option<String>,
    /// After a change, wait this long for more before building a state (a rollout changes many
    /// pods at once; each state is compiled whole).
    pub settle: Duration,
    /// While some watch is failing, how often the API server is probed to notice it is back.
    pub probe_interval: Duration,
}

impl Default for ApiSourceOptions {
    fn default() -> Self {
        ApiSourceOptions {
            report_as: None,
            settle: Duration::from_millis(100),
            probe_interval: Duration::from_secs(1),
        }
    }
}

/// What the watchers share with the source.
#[derive(Debug, Default)]
struct Stores {
    objects: [BTreeMap<Key, Stored>; 7],
    listed: [bool; 7],
    /// The last failure of each kind's watch, cleared by its next event.
    failing: [Option<Failure>; 7],
    /// Bumped at every change of `objects` (so a state is rebuilt only when something changed).
    version: u64,
}

#[derive(Debug, Clone)]
struct Failure {
    message: String,
    /// The API server answered and refused (403, 401, 404): retrying will not help until an
    /// operator acts.
    refused: bool,
}

#[derive(Debug, Default)]
struct Shared {
    stores: Mutex<Stores>,
    changed: Notify,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Stores)) {
        f(&mut self.stores.lock().expect("stores lock"));
        self.changed.notify_one();
    }
}

/// Cluster state from the API server (see [`crate::api`]).
pub struct ApiSource {
    client: kube::Client,
    options: ApiSourceOptions,
    shared: Arc<Shared>,
    watchers: Vec<JoinHandle<()>>,
    /// The store version the last state was built from.
    built: Option<u64>,
    /// Set while the API server is unreachable (reported once, then the last state stays).
    outage: Option<String>,
    /// The NetworkLogging generation last reported on, and whether it was valid.
    reported: Option<(Option<String>, Option<i64>, bool)>,
}

impl std::fmt::Debug for ApiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSource")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for ApiSource {
    fn drop(&mut self) {
        for w in &self.watchers {
            w.abort();
        }
    }
}

impl ApiSource {
    /// Starts one watcher per kind. The first [`ClusterSource::next_state`] returns once every
    /// kind has listed (or fails at once if the API server refuses a list: RBAC, missing
    /// resource).
    pub fn start(client: kube::Client, options: ApiSourceOptions) -> Self {
        let shared = Arc::new(Shared::default());
        let watchers = Kind::ALL
            .iter()
            .map(|&kind| {
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource());
                tokio::spawn(watch_kind(api, kind, shared.clone()))
            })
            .collect();
        ApiSource {
            client,
            options,
            shared,
            watchers,
            built: None,
            outage: None,
            reported: None,
        }
    }

    /// Waits until every kind has listed; refusals fail at once.
    async fn initial(&mut self) -> Result<StateUpdate, SourceError> {
        loop {
            let notified = self.shared.changed.notified();
            {
                let stores = self.shared.stores.lock().expect("stores lock");
                let mut waiting = Vec::new();
                for kind in Kind::ALL {
                    let i = kind.index();
                    match &stores.failing[i] {
                        Some(f) if f.refused && !kind.optional() => {
                            return Err(api_error(f.message.clone()));
                        }
                        Some(f) if f.refused => {}
                        Some(f) if !stores.listed[i] => waiting.push(f.message.clone()),
                        _ if !stores.listed[i] => {
                            waiting.push(format!("{}: listing", kind.plural()))
                        }
                        _ => {}
                    }
                }
                if waiting.is_empty() {
                    drop(stores);
                    break;
                }
                tracing::debug!(waiting = ?waiting, "waiting for the initial list");
            }
            notified.await;
        }
        self.build().await
    }

    /// Builds a state from the stores (and reports on the NetworkLogging object).
    async fn build(&mut self) -> Result<StateUpdate, SourceError> {
        let (update, logging) = {
            let stores = self.shared.stores.lock().expect("stores lock");
            self.built = Some(stores.version);
            state_of(&stores)
        };
        if let (Some(node), Some(logging)) = (&self.options.report_as, logging) {
            self.report_logging(node.clone(), logging);
        }
        update
    }

    /// Posts the Warning Event for an invalid NetworkLogging (once per change of the object, from
    /// this node) and sets its `Valid` condition.
    fn report_logging(&mut self, node: String, object: LoggingObject) {
        let valid = object.parsed.is_ok();
        let id = (object.uid.clone(), object.generation, valid);
        if self.reported.as_ref() == Some(&id) {
            return;
        }
        self.reported = Some(id);
        let client = self.client.clone();
        tokio::spawn(async move {
            super::events::report_network_logging(&client, &node, &object).await;
        });
    }
}

impl ClusterSource for ApiSource {
    async fn next_state(&mut self) -> Result<StateUpdate, SourceError> {
        if self.built.is_none() {
            return self.initial().await;
        }
        let shared = self.shared.clone();
        loop {
            let notified = shared.changed.notified();
            let (version, failing) = {
                let stores = self.shared.stores.lock().expect("stores lock");
                let failing: Vec<String> = Kind::ALL
                    .iter()
                    .filter(|k| !k.optional())
                    .filter_map(|k| stores.failing[k.index()].as_ref())
                    .map(|f| f.message.clone())
                    .collect();
                (stores.version, failing)
            };
            match (failing.is_empty(), self.outage.is_some()) {
                (false, false) => {
                    let message = format!(
                        "{}; enforcing the last state received until it is back",
                        failing.join("; ")
                    );
                    self.outage = Some(message.clone());
                    return Err(api_error(message));
                }
                (true, true) => {
                    let was = self.outage.take().unwrap_or_default();
                    tracing::info!(after = %was, "the Kubernetes API is reachable again");
                    return self.build().await;
                }
                _ => {}
            }
            if self.built != Some(version) {
                tokio::time::sleep(self.options.settle).await;
                return self.build().await;
            }
            if self.outage.is_none() {
                notified.await;
                continue;
            }
            // Watches reconnect with backoff and say nothing until something changes: a
            // reachable server ends the outage even when nothing changed meanwhile.
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(self.options.probe_interval) => {
                    if self.client.apiserver_version().await.is_ok() {
                        self.shared.update(|s| {
                            for f in &mut s.failing {
                                if f.as_ref().is_some_and(|f| !f.refused) {
                                    *f = None;
                                }
                            }
                        });
                    }
                }
            }
        }
    }
}

/// Follows one kind: a list, then a watch from the list's `resourceVersion`; after `410 Gone`
/// the watcher lists again and the store is replaced whole at the end of that list.
async fn watch_kind(api: Api<DynamicObject>, kind: Kind, shared: Arc<Shared>) {
    let i = kind.index();
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut relisting: Option<BTreeMap<Key, Stored>> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Init) => relisting = Some(BTreeMap::new()),
            Ok(Event::InitApply(object)) => {
                let (key, stored) = convert(kind, object);
                relisting.get_or_insert_default().insert(key, stored);
            }
            Ok(Event::InitDone) => {
                let listed = relisting.take().unwrap_or_default();
                tracing::debug!(kind = kind.plural(), objects = listed.len(), "listed");
                shared.update(|s| {
                    s.objects[i] = listed;
                    s.listed[i] = true;
                    s.failing[i] = None;
                    s.version += 1;
                });
            }
            Ok(Event::Apply(object)) => {
                let (key, stored) = convert(kind, object);
                shared.update(|s| {
                    s.objects[i].insert(key, stored);
                    s.failing[i] = None;
                    s.version += 1;
                });
            }
            Ok(Event::Delete(object)) => {
                let key = super::kinds::key_of(&object);
                shared.update(|s| {
                    s.objects[i].remove(&key);
                    s.failing[i] = None;
                    s.version += 1;
                });
            }
            Err(e) => {
                let failure = failure_of(kind, &e);
                if matches!(e, watcher::Error::WatchError(ref s) if s.code == 410) {
                    tracing::info!(
                        kind = kind.plural(),
                        "watch expired (410 Gone); listing again"
                    );
                    continue;
                }
                tracing::warn!(kind = kind.plural(), error = %failure.message, "watch failed; retrying with backoff");
                shared.update(|s| s.failing[i] = Some(failure));
            }
        }
    }
}

fn failure_of(kind: Kind, error: &watcher::Error) -> Failure {
    let client_error = match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => Some(e),
        _ => None,
    };
    match client_error {
        Some(e) => Failure {
            message: explain_error(kind, e),
            refused: matches!(e, kube::Error::Api(s) if matches!(s.code, 401 | 403 | 404)),
        },
        None => Failure {
            message: format!("{}: {error}", kind.plural()),
            refused: matches!(error, watcher::Error::WatchError(s) if s.code == 403),
        },
    }
}

/// The cluster state the stores hold, and the NetworkLogging object if there is one.
fn state_of(stores: &Stores) -> (Result<StateUpdate, SourceError>, Option<LoggingObject>) {
    let mut state = ClusterState::default();
    let mut warnings = Vec::new();
    let mut unreadable_policies = Vec::new();
    let mut logging = None;
    for kind in Kind::ALL {
        for (key, stored) in &stores.objects[kind.index()] {
            match stored {
                Stored::Namespace(o) => state.namespaces.push(o.clone()),
                Stored::Pod(o) => state.pods.push(o.clone()),
                Stored::Node(o) => state.nodes.push(o.clone()),
                Stored::Service(o) => state.services.push(o.clone()),
                Stored::EndpointSlice(o) => state.endpoint_slices.push(o.clone()),
                Stored::NetworkPolicy(o) => state.policies.push(o.clone()),
                Stored::NetworkLogging(o) if key.1 == verdict_schema::network_logging::NAME => {
                    logging = Some((**o).clone());
                }
                Stored::NetworkLogging(_) => warnings.push(Warning {
                    file: None,
                    line: None,
                    object: Some(describe(kind, key)),
                    message: "only the NetworkLogging named \"default\" is used; ignored".into(),
                }),
                Stored::Unreadable(why) if kind == Kind::NetworkPolicy => {
                    unreadable_policies.push(format!("{}: {why}", describe(kind, key)));
                }
                Stored::Unreadable(why) => warnings.push(Warning {
                    file: None,
                    line: None,
                    object: Some(describe(kind, key)),
                    message: format!("cannot be read ({why}); ignored"),
                }),
            }
        }
    }
    if !unreadable_policies.is_empty() {
        // Skipping a policy would leave its pods unisolated: keep the last state instead.
        return (
            Err(api_error(format!(
                "NetworkPolicies the engine cannot read: {}; the previous state stays in force",
                unreadable_policies.join("; ")
            ))),
            logging,
        );
    }
    let rejected = match logging.as_ref().map(|l| &l.parsed) {
        Some(Ok(nl)) => {
            state.network_logging = Some(nl.clone());
            None
        }
        Some(Err(e)) => Some(e.clone()),
        None => None,
    };
    let loaded = complete(Loaded {
        state,
        warnings,
        rejected_network_logging: None,
    });
    (
        Ok(StateUpdate {
            state: loaded.state,
            rejected_network_logging: rejected,
            warnings: loaded.warnings.iter().map(ToString::to_string).collect(),
        }),
        logging,
    )
}

/// One consistent read of every kind, without watching (`verdict policy check --kubeconfig`).
/// A missing NetworkLogging resource (CRD not installed) reads as no NetworkLogging.
pub async fn list_state(client: &kube::Client) -> Result<StateUpdate, SourceError> {
    let mut stores = Stores::default();
    for kind in Kind::ALL {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource());
        let mut params = ListParams::default().limit(500);
        loop {
            let page = match api.list(&params).await {
                Ok(page) => page,
                Err(kube::Error::Api(s)) if s.code == 404 && kind.optional() => break,
                Err(e) => return Err(api_error(explain_error(kind, &e))),
            };
            for object in page.items {
                let (key, stored) = convert(kind, object);
                stores.objects[kind.index()].insert(key, stored);
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    state_of(&stores).0
}
