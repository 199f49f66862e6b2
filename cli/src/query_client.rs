//! A small HTTP/1.1 client for the collector's query API (`verdict logs`, `verdict sql`):
//! JSON requests, Google-API-shaped errors turned into messages, and line streams for tail.

use anyhow::{Context, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The collector's query API at `base` (`http://HOST:PORT`).
#[derive(Debug)]
pub struct QueryClient {
    base: url::Url,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Why a request failed: the server's answer (with its status) or the transport.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request; `message` is its error text.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl QueryClient {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<QueryClient> {
        let base = url::Url::parse(base).with_context(|| format!("--collector {base:?}"))?;
        if base.scheme() != "http" {
            bail!(
                "--collector {base}: only http:// URLs are supported (put TLS in front with a proxy)"
            );
        }
        let loopback = match base.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if token.is_some() && !loopback {
            bail!(
                "--collector {base}: a token is sent only to a collector on loopback, never in \
                 clear text across the network (reach a remote collector through `kubectl \
                 port-forward` or an SSH tunnel)"
            );
        }
        Ok(QueryClient {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    fn request(
        &self,
        method: Method,
        url: &url::Url,
        body: Vec<u8>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut r = Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            r = r.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        Ok(r.body(Full::new(Bytes::from(body)))?)
    }

    fn url(&self, path: &str) -> anyhow::Result<url::Url> {
        Ok(self.base.join(path)?)
    }

    /// `POST path` with a JSON body; the response body on success.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Bytes, ClientError> {
        let url = self.url(path)?;
        let request = self.request(
            Method::POST,
            &url,
            serde_json::to_vec(body).map_err(anyhow::Error::from)?,
        )?;
        self.answer(request, &url).await
    }

    /// Sends `request` (to `url`); the whole response body on success.
    async fn answer(
        &self,
        request: Request<Full<Bytes>>,
        url: &url::Url,
    ) -> Result<Bytes, ClientError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| anyhow!("cannot reach the collector at {}: {e}", self.base))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer of {url}: {e}"))?
            .to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(refused(status, &bytes))
        }
    }

    /// `GET path` (with `query` pairs); the response body on success.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Bytes, ClientError> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let request = self.request(Method::GET, &url, Vec::new())?;
        self.answer(request, &url).await
    }

    /// `GET path` (with `query` pairs); calls `line` with each line of the streamed body until
    /// the server ends it or `line` returns false.
    pub async fn get_lines(
        &self,
        path: &str,
        query: &[(&str, &str)],
        mut line: impl FnMut(&[u8]) -> anyhow::Result<bool>,
    ) -> Result<(), ClientError> {
        let mut url = self.url(path)?;
        url.query_pairs_mut().extend_pairs(query);
        let request = self.request(Method::GET, &url, Vec::new())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| anyhow!("cannot reach the collector at {}: {e}", self.base))?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| anyhow!("reading the answer of {url}: {e}"))?
                .to_bytes();
            return Err(refused(status, &bytes));
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| anyhow!("the tail stream broke: {e}"))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let rest = pending.split_off(end + 1);
                let keep_going = line(&pending[..end])?;
                pending = rest;
                if !keep_going {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn refused(status: StatusCode, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<verdict_query::api::ErrorBody>(body)
        .map(|e| e.error.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_owned());
    ClientError::Refused {
        status,
        message: format!("the collector answered {status}: {message}"),
    }
}
