//! Who a node's token belongs to, asked of the API server (TokenReview): the collector's
//! per-node identity in a cluster.
//!
//! Each agent pod presents a projected ServiceAccount token with the collector's audience (the
//! kubelet rotates it). The API server reviews it; the token is accepted when it is
//! authenticated for that audience, belongs to one of the allowed ServiceAccounts, and is bound
//! to a pod — whose node (`extra["authentication.kubernetes.io/node-name"]`, set by
//! Kubernetes ≥ 1.30 for pod-bound tokens) is then the only node the stream may send for.
//!
//! Reviews are cached in memory, by the token's SHA-256, for `cache_ttl`, refusals for a short
//! while so a flood of bad tokens costs the API server little; at most
//! [`MAX_CONCURRENT_REVIEWS`] run at once, and a token over [`MAX_TOKEN_BYTES`] is refused
//! unasked. An API server that cannot be
//! asked fails closed: the stream is refused as unavailable (the shipper retries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::Semaphore;

/// The extra field a pod-bound ServiceAccount token carries its node in.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// Reviews in flight at once; beyond it streams are refused as unavailable.
pub const MAX_CONCURRENT_REVIEWS: usize = 16;
/// How long a refused token is answered from memory.
pub const REFUSAL_TTL: Duration = Duration::from_secs(10);
/// Cached answers at most (agents × a few rotations); past it the cache starts over.
pub const MAX_CACHED: usize = 100_000;
/// A longer bearer token is refused without asking the API server (ServiceAccount tokens are
/// about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The token is not a valid credential for this collector (UNAUTHENTICATED).
    #[error("{0}")]
    Refused(String),
    /// The API server could not be asked (UNAVAILABLE; the client retries).
    #[error("{0}")]
    Unavailable(String),
}

/// A review's answer and until when it is reused.
type CachedReview = (Result<String, ReviewError>, Instant);

/// Reviews node tokens through the API server.
#[derive(Clone)]
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
    /// `system:serviceaccount:NAMESPACE:NAME` of each allowed ServiceAccount.
    allowed: Arc<Vec<String>>,
    cache_ttl: Duration,
    cache: Arc<Mutex<HashMap<[u8; 32], CachedReview>>>,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// `service_accounts` are `NAMESPACE:NAME`.
    pub fn new(
        client: kube::Client,
        audience: &str,
        service_accounts: &[String],
        cache_ttl: Duration,
    ) -> Self {
        TokenReviewer {
            api: Api::all(client),
            audience: audience.to_owned(),
            allowed: Arc::new(
                service_accounts
                    .iter()
                    .map(|sa| format!("system:serviceaccount:{sa}"))
                    .collect(),
            ),
            cache_ttl,
            cache: Arc::default(),
            in_flight: Arc::new(Semaphore::new(MAX_CONCURRENT_REVIEWS)),
        }
    }

    /// The node `token` may send for.
    pub async fn node_of(&self, token: &str) -> Result<String, ReviewError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ReviewError::Refused(format!(
                "the bearer token is {} bytes, over the {MAX_TOKEN_BYTES} a ServiceAccount token may have",
                token.len()
            )));
        }
        let key = digest(token);
        if let Some(answer) = self.cached(&key) {
            return answer;
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(ReviewError::Unavailable(
                "too many token reviews in flight; retry".into(),
            ));
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let answer = match self.api.create(&PostParams::default(), &review).await {
            Ok(r) => self.judge(&r),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err(ReviewError::Unavailable(format!(
                    "the Kubernetes API server refused the token review ({}): grant create on \
                     tokenreviews.authentication.k8s.io to the collector's ServiceAccount (the \
                     chart's ClusterRole does)",
                    status.message
                )));
            }
            Err(e) => {
                return Err(ReviewError::Unavailable(format!(
                    "the Kubernetes API server could not review the token: {e}"
                )));
            }
        };
        let ttl = if answer.is_ok() {
            self.cache_ttl
        } else {
            REFUSAL_TTL
        };
        let mut cache = self.cache.lock().expect("review cache lock");
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (answer.clone(), Instant::now() + ttl));
        answer
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Result<String, ReviewError>> {
        let cache = self.cache.lock().expect("review cache lock");
        let (answer, until) = cache.get(key)?;
        (*until > Instant::now()).then(|| answer.clone())
    }

    fn judge(&self, review: &TokenReview) -> Result<String, ReviewError> {
        let refused = |why: String| Err(ReviewError::Refused(why));
        let Some(status) = &review.status else {
            return refused("the token review has no status".into());
        };
        if status.authenticated != Some(true) {
            return refused(format!(
                "the token is not authenticated: {}",
                status.error.as_deref().unwrap_or("no reason given")
            ));
        }
        if !status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience))
        {
            return refused(format!(
                "the token is not for the audience {:?}",
                self.audience
            ));
        }
        let Some(user) = &status.user else {
            return refused("the token review names no user".into());
        };
        let username = user.username.as_deref().unwrap_or("");
        if !self.allowed.iter().any(|a| a == username) {
            return refused(format!(
                "{username:?} is not an agent ServiceAccount ({})",
                self.allowed.join(", ")
            ));
        }
        match user
            .extra
            .as_ref()
            .and_then(|e| e.get(NODE_NAME_EXTRA))
            .map(|v| v.as_slice())
        {
            Some([node]) if !node.is_empty() => Ok(node.clone()),
            _ => refused(format!(
                "the token of {username} is not bound to a pod on a node (no {NODE_NAME_EXTRA}): use a projected token of the agent pod"
            )),
        }
    }
}

/// The cache key: the token's SHA-256 (the cache never holds a token).
fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
