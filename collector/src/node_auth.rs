//! Who an ingest stream is: every stream is bound to the node its credential names, and a batch
//! for any other node is refused (`REJECTION_CODE_PERMISSION_DENIED`). See docs/design.md,
//! "Contract 3: node to collector".
//!
//! Credentials:
//! - **a node token** from `grpc.node_tokens_file`: one line per token, `NODE_NAME TOKEN` or
//!   `NODE_NAME sha256:HEX` (the token's SHA-256, so the file need not hold the token itself),
//!   presented as `authorization: Bearer TOKEN`;
//! - **a client certificate** (mutual TLS, `grpc.tls.client_ca_file`): the node names are the
//!   certificate's DNS subject alternative names, else its common name;
//! - **a Kubernetes ServiceAccount token** (`grpc.kubernetes`): a bearer token that is not a
//!   node token is reviewed by the API server ([`verdict_cluster::api::review`]) when the stream
//!   starts; the node of the agent pod it is bound to is the stream's node.
//!
//! Without either configured, streams are unbound ([`Principal::Unbound`]) — which the
//! configuration allows only on a loopback address or with `grpc.insecure = true`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tonic::{Request, Status};

use verdict_cluster::api::review::{ReviewError, TokenReviewer};

use crate::error::{Error, Result};

/// What a stream may send for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Only these nodes' batches (a token's node, or a certificate's names).
    Nodes(Vec<String>),
    /// Any node: no credential is configured (loopback or `grpc.insecure`).
    Unbound,
}

impl Principal {
    /// Why `node` may not be sent for on this stream, if it may not.
    pub fn refuse(&self, node: &str) -> Option<String> {
        match self {
            Principal::Unbound => None,
            Principal::Nodes(names) if names.iter().any(|n| n == node) => None,
            Principal::Nodes(names) => Some(format!(
                "node.node_name {node:?} is not the node this stream authenticated as ({}): a node sends only its own records",
                names.join(", ")
            )),
        }
    }
}

/// The node tokens of `grpc.node_tokens_file`, by the SHA-256 of the token.
#[derive(Clone, Default)]
pub struct NodeTokens {
    by_digest: Arc<HashMap<[u8; 32], String>>,
}

impl std::fmt::Debug for NodeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTokens")
            .field("tokens", &self.by_digest.len())
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A node name as Kubernetes spells them (a DNS subdomain, at most 253 characters).
pub(crate) fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

impl NodeTokens {
    /// Parses the file's text; every problem names its line (never the token).
    pub fn parse(text: &str) -> std::result::Result<NodeTokens, Vec<String>> {
        let mut by_digest = HashMap::new();
        let mut problems = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(node), Some(secret), None) = (fields.next(), fields.next(), fields.next())
            else {
                problems.push(format!("line {}: write NODE_NAME TOKEN", n + 1));
                continue;
            };
            if !valid_node_name(node) {
                problems.push(format!(
                    "line {}: {node:?} is not a node name (lower-case letters, digits, '-', '.')",
                    n + 1
                ));
                continue;
            }
            let d = match secret.strip_prefix("sha256:") {
                Some(h) => match hex32(h) {
                    Some(d) => d,
                    None => {
                        problems.push(format!(
                            "line {}: sha256: needs 64 hexadecimal digits",
                            n + 1
                        ));
                        continue;
                    }
                },
                None if secret.len() < 16 => {
                    problems.push(format!(
                        "line {}: the token of {node} is shorter than 16 characters",
                        n + 1
                    ));
                    continue;
                }
                None => digest(secret.as_bytes()),
            };
            if let Some(other) = by_digest.insert(d, node.to_owned())
                && other != node
            {
                problems.push(format!(
                    "line {}: the same token is given to {other} and {node}",
                    n + 1
                ));
            }
        }
        if problems.is_empty() {
            Ok(NodeTokens {
                by_digest: Arc::new(by_digest),
            })
        } else {
            Err(problems)
        }
    }

    /// Reads `grpc.node_tokens_file`.
    pub fn load(path: &Path) -> Result<NodeTokens> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::setting_caused(
                "grpc.node_tokens_file",
                format!("cannot read {}", path.display()),
                e,
            )
        })?;
        NodeTokens::parse(&text).map_err(|problems| {
            Error::setting(
                "grpc.node_tokens_file",
                format!("{}: {}", path.display(), problems.join("; ")),
            )
        })
    }

    /// The node of `token`.
    pub fn node_of(&self, token: &str) -> Option<&str> {
        self.by_digest
            .get(&digest(token.as_bytes()))
            .map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The node names a client certificate (DER) speaks for: its DNS subject alternative names,
/// else its common name.
pub fn certificate_nodes(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned)),
        );
    }
    names.retain(|n| valid_node_name(n));
    names
}

/// The ingest service's authentication: binds each stream to a [`Principal`] (put in the
/// request's extensions for the stream handler) or refuses it with `UNAUTHENTICATED`.
#[derive(Clone, Debug)]
pub struct NodeAuth {
    tokens: NodeTokens,
    /// Client certificates are required (mutual TLS): they name the node.
    certificates: bool,
    reviewer: Option<TokenReviewer>,
    failures: Counter,
}

/// A bearer token the interceptor could not place: reviewed by the API server when the stream
/// starts ([`PendingReview::principal`]).
#[derive(Clone)]
pub struct PendingReview {
    token: String,
    reviewer: TokenReviewer,
    /// The nodes a client certificate named, if any: the token's node must be one of them.
    certificate_nodes: Vec<String>,
    failures: Counter,
}

impl std::fmt::Debug for PendingReview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingReview")
            .field("certificate_nodes", &self.certificate_nodes)
            .finish_non_exhaustive()
    }
}

impl PendingReview {
    /// The stream's principal, or why it is refused: UNAUTHENTICATED for a token that is not an
    /// agent's, UNAVAILABLE while the API server cannot be asked (fail closed; the shipper
    /// retries with backoff).
    pub async fn principal(self) -> std::result::Result<Principal, Status> {
        match self.reviewer.node_of(&self.token).await {
            Ok(node) => {
                if !self.certificate_nodes.is_empty() && !self.certificate_nodes.contains(&node) {
                    self.failures.inc();
                    return Err(Status::unauthenticated(
                        "the ServiceAccount token and the client certificate name different nodes",
                    ));
                }
                Ok(Principal::Nodes(vec![node]))
            }
            Err(ReviewError::Refused(why)) => {
                self.failures.inc();
                tracing::warn!(reason = %why, "ingest stream refused: its ServiceAccount token was not accepted");
                Err(Status::unauthenticated(format!(
                    "the bearer token is not accepted: {why}"
                )))
            }
            Err(ReviewError::Unavailable(why)) => {
                tracing::warn!(reason = %why, "ingest stream refused: its token could not be reviewed");
                Err(Status::unavailable(why))
            }
        }
    }
}

impl NodeAuth {
    /// With no tokens and no client certificates, streams are unbound (the configuration
    /// allows that only on loopback or when `grpc.insecure` is set); refusals count in
    /// `failures`.
    pub fn new(tokens: NodeTokens, certificates: bool, failures: Counter) -> Self {
        NodeAuth {
            tokens,
            certificates,
            reviewer: None,
            failures,
        }
    }

    /// Also accepts Kubernetes ServiceAccount tokens, reviewed by `reviewer`.
    pub fn with_reviewer(mut self, reviewer: TokenReviewer) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    fn refuse(&self, message: &'static str) -> Status {
        self.failures.inc();
        Status::unauthenticated(message)
    }
}

impl tonic::service::Interceptor for NodeAuth {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let mut names = Vec::new();
        if self.certificates
            && let Some(certs) = request.peer_certs()
            && let Some(leaf) = certs.first()
        {
            names = certificate_nodes(leaf.as_ref());
            if names.is_empty() {
                return Err(self.refuse(
                    "the client certificate names no node (a DNS subject alternative name or common name)",
                ));
            }
        }
        if !self.tokens.is_empty() || self.reviewer.is_some() {
            let presented = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::to_owned);
            match presented.map(|t| (self.tokens.node_of(&t), t)) {
                Some((Some(node), _)) => {
                    // With both credentials, they must agree.
                    if !names.is_empty() && !names.iter().any(|n| n == node) {
                        return Err(self.refuse(
                            "the bearer token and the client certificate name different nodes",
                        ));
                    }
                    names = vec![node.to_owned()];
                }
                // Not a node token: a ServiceAccount token, reviewed when the stream starts.
                Some((None, token)) if self.reviewer.is_some() => {
                    let pending = PendingReview {
                        token,
                        reviewer: self.reviewer.clone().expect("checked"),
                        certificate_nodes: names,
                        failures: self.failures.clone(),
                    };
                    request.extensions_mut().insert(pending);
                    return Ok(request);
                }
                Some((None, _)) => return Err(self.refuse("the bearer token is not accepted")),
                None if names.is_empty() => {
                    return Err(self.refuse("missing `authorization: Bearer TOKEN` metadata"));
                }
                None => {}
            }
        }
        let principal = if names.is_empty() {
            Principal::Unbound
        } else {
            Principal::Nodes(names)
        };
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor as _;

    use super::*;

    const TOKENS: &str = "# nodes\nnode-1 0123456789abcdef-one\nnode-2 sha256:\
        5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n\n";

    #[test]
    fn the_tokens_file_names_nodes_and_says_what_is_wrong_by_line() {
        let t = NodeTokens::parse(TOKENS).unwrap();
        assert_eq!(t.node_of("0123456789abcdef-one"), Some("node-1"));
        // sha256("password"): the file holds the digest only.
        assert_eq!(t.node_of("password"), Some("node-2"));
        assert_eq!(t.node_of("guess"), None);
        let e = NodeTokens::parse(
            "Node_1 0123456789abcdef\nnode-2\nnode-3 short\nnode-4 sha256:abc\na 0123456789abcdefX\nb 0123456789abcdefX\n",
        )
        .unwrap_err();
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(
            e[0].starts_with("line 1: \"Node_1\" is not a node name"),
            "{e:?}"
        );
        assert_eq!(e[1], "line 2: write NODE_NAME TOKEN");
        assert!(e[2].contains("shorter than 16"), "{e:?}");
        assert!(e[3].contains("64 hexadecimal digits"), "{e:?}");
        assert!(e[4].contains("same token is given to a and b"), "{e:?}");
        assert!(
            !e.join(" ").contains("0123456789abcdef"),
            "tokens never appear in problems"
        );
    }

    #[test]
    fn a_stream_is_bound_to_its_tokens_node() {
        let failures = Counter::default();
        let mut auth = NodeAuth::new(NodeTokens::parse(TOKENS).unwrap(), false, failures.clone());
        let with = |v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert("authorization", v.parse().unwrap());
            r
        };
        let ok = auth.call(with("Bearer 0123456789abcdef-one")).unwrap();
        let p = ok.extensions().get::<Principal>().unwrap();
        assert_eq!(p, &Principal::Nodes(vec!["node-1".into()]));
        assert_eq!(p.refuse("node-1"), None);
        assert!(
            p.refuse("node-2")
                .unwrap()
                .contains("authenticated as (node-1)")
        );
        let e = auth.call(with("Bearer nope")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("not accepted"));
        let e = auth.call(Request::new(())).unwrap_err();
        assert!(e.message().contains("missing"));
        assert_eq!(failures.get(), 2);
        let mut open = NodeAuth::new(NodeTokens::default(), false, Counter::default());
        let r = open.call(Request::new(())).unwrap();
        assert_eq!(r.extensions().get::<Principal>(), Some(&Principal::Unbound));
        assert_eq!(Principal::Unbound.refuse("anyone"), None);
    }

    #[test]
    fn certificates_name_nodes_by_dns_names_else_common_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["node-7".to_owned(), "Bad_Name".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(certificate_nodes(cert.der()), ["node-7"]);
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "node-8");
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(certificate_nodes(cert.der()), ["node-8"]);
        assert!(certificate_nodes(b"not DER").is_empty());
    }
}
