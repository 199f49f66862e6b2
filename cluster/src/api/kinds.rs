//! The kinds the API source watches, where each is served, and how one object from the API
//! becomes the compact model object the store keeps (the fields the engine uses, nothing else:
//! a node agent for 10,000 pods holds kilobytes per pod, not the pod's whole spec).

use kube::api::{ApiResource, DynamicObject};
use verdict_policy::model::{EndpointSlice, Namespace, NetworkPolicy, Node, Pod, Service};
use verdict_schema::NetworkLogging;

/// A watched kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Pod,
    Node,
    Service,
    EndpointSlice,
    NetworkPolicy,
    NetworkLogging,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Node,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::NetworkPolicy,
        Kind::NetworkLogging,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// (group, version, kind, plural)
    fn gvkp(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Kind::Namespace => ("", "v1", "Namespace", "namespaces"),
            Kind::Pod => ("", "v1", "Pod", "pods"),
            Kind::Node => ("", "v1", "Node", "nodes"),
            Kind::Service => ("", "v1", "Service", "services"),
            Kind::EndpointSlice => ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
            Kind::NetworkPolicy => (
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
            ),
            Kind::NetworkLogging => (
                "networking.gke.io",
                "v1alpha1",
                "NetworkLogging",
                "networkloggings",
            ),
        }
    }

    /// The resource's plural name (`pods`, `networkpolicies`, ...).
    pub fn plural(self) -> &'static str {
        self.gvkp().3
    }

    /// ` in API group G` for grouped resources, empty for the core group.
    pub(crate) fn api_group_suffix(self) -> String {
        match self.gvkp().0 {
            "" => " (core API group)".to_owned(),
            g => format!(" (API group {g})"),
        }
    }

    pub(crate) fn resource(self) -> ApiResource {
        let (group, version, kind, plural) = self.gvkp();
        ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.to_owned(),
            plural: plural.to_owned(),
        }
    }

    /// Whether the cluster works without this kind being served (the NetworkLogging CRD may not
    /// be installed: then nothing is logged, as in a GKE cluster without the object).
    pub(crate) fn optional(self) -> bool {
        self == Kind::NetworkLogging
    }
}

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub(crate) type Key = (String, String);

/// The NetworkLogging object as read: its identity (for reporting on it) and GKE's verdict.
#[derive(Debug, Clone)]
pub(crate) struct LoggingObject {
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
    pub parsed: Result<NetworkLogging, String>,
}

/// One object of the store.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    Namespace(Namespace),
    Pod(Pod),
    Node(Node),
    Service(Service),
    EndpointSlice(EndpointSlice),
    NetworkPolicy(NetworkPolicy),
    NetworkLogging(Box<LoggingObject>),
    /// An object that could not be read, with why.
    Unreadable(String),
}

pub(crate) fn key_of(object: &DynamicObject) -> Key {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

/// `Kind namespace/name`.
pub(crate) fn describe(kind: Kind, key: &Key) -> String {
    verdict_policy::cluster::object_key(
        kind.gvkp().2,
        (!key.0.is_empty()).then_some(key.0.as_str()),
        &key.1,
    )
}

/// The model object for one API object.
pub(crate) fn convert(kind: Kind, object: DynamicObject) -> (Key, Stored) {
    let key = key_of(&object);
    let uid = object.metadata.uid.clone();
    let generation = object.metadata.generation;
    let resource_version = object.metadata.resource_version.clone();
    let mut value = match serde_json::to_value(&object) {
        Ok(v) => v,
        Err(e) => return (key, Stored::Unreadable(e.to_string())),
    };
    drop(object);
    fn parse<T: serde::de::DeserializeOwned>(
        value: serde_json::Value,
        wrap: impl FnOnce(T) -> Stored,
    ) -> Stored {
        match serde_json::from_value::<T>(value) {
            Ok(t) => wrap(t),
            Err(e) => Stored::Unreadable(e.to_string()),
        }
    }
    let stored = match kind {
        Kind::Namespace => parse(value, Stored::Namespace),
        Kind::Pod => parse(value, Stored::Pod),
        Kind::Node => parse(value, Stored::Node),
        Kind::Service => parse(value, Stored::Service),
        Kind::EndpointSlice => parse(value, Stored::EndpointSlice),
        Kind::NetworkPolicy => parse(value, Stored::NetworkPolicy),
        Kind::NetworkLogging => {
            // List items carry no apiVersion/kind; the object is what the resource serves.
            if let Some(map) = value.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert(verdict_schema::network_logging::API_VERSION.into());
                map.entry("kind")
                    .or_insert(verdict_schema::network_logging::KIND.into());
            }
            let parsed = serde_json::from_value::<NetworkLogging>(value)
                .map_err(|e| format!("cannot be read: {e}"))
                .and_then(|nl| nl.validate().map(|()| nl).map_err(|e| e.to_string()));
            Stored::NetworkLogging(Box::new(LoggingObject {
                uid,
                generation,
                resource_version,
                parsed,
            }))
        }
    };
    (key, stored)
}
