//! The gRPC side of Contract 3 (docs/design.md, "Contract 3: node to collector"): one HTTP/2
//! channel to the collector (plaintext or TLS, optionally mutual), and per input one bidirectional
//! `Ingest/Stream` carrying its batches, with the bearer token in `authorization`. Reconnection
//! waits follow [`Backoff`].
//!
//! Batches go out through [`BatchCodec`] rather than the generated client's codec: a batch is
//! shared with the shipping loop (`Arc`), so sending it — and sending it again after a broken
//! stream — copies nothing, and it is encoded into a buffer reserved at its exact size.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use verdict_schema::proto::v1;

use crate::config::{BackoffConfig, Config};
use crate::error::{Error, Result};

/// A lazily connecting channel to the collector, shared by every input's stream.
pub fn channel(config: &Config) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(config.collector.clone())
        .map_err(|e| Error::config("collector", format!("{:?}: {e}", config.collector)))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(tls) = &config.tls {
        let read = |setting: &str, p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| Error::config(setting, format!("cannot read {}: {e}", p.display())))
        };
        let mut c = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("tls-ca", &tls.ca_file)?));
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            c = c.identity(Identity::from_pem(
                read("tls-cert", cert)?,
                read("tls-key", key)?,
            ));
        }
        if let Some(domain) = &tls.domain {
            c = c.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(c).map_err(|e| Error::Connect {
            endpoint: config.collector.clone(),
            source: e,
        })?;
    }
    Ok(endpoint.connect_lazy())
}

/// One send of a batch: the batch (its own `batch_id` left 0) and the id of this send.
#[derive(Debug, Clone)]
pub struct OutgoingBatch {
    pub batch: Arc<v1::Batch>,
    pub batch_id: u64,
}

/// `Ingest/Stream`'s codec on the shipper's side: [`OutgoingBatch`] out, `BatchResult` in.
#[derive(Debug, Default)]
pub struct BatchCodec;

/// Encodes an [`OutgoingBatch`] as the `Batch` message it stands for.
#[derive(Debug, Default)]
pub struct BatchEncoder;

impl Encoder for BatchEncoder {
    type Item = OutgoingBatch;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: OutgoingBatch,
        buf: &mut EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        // The batch_id field (2) is appended after the shared message's fields (in which it is
        // 0, so absent): protobuf fields may come in any order.
        let id_len = if item.batch_id == 0 {
            0
        } else {
            prost::encoding::uint64::encoded_len(2, &item.batch_id)
        };
        buf.reserve(item.batch.encoded_len() + id_len);
        item.batch.encode_raw(buf);
        if item.batch_id != 0 {
            prost::encoding::uint64::encode(2, &item.batch_id, buf);
        }
        Ok(())
    }
}

impl Codec for BatchCodec {
    type Encode = OutgoingBatch;
    type Decode = v1::BatchResult;
    type Encoder = BatchEncoder;
    type Decoder = BatchResultDecoder;

    fn encoder(&mut self) -> BatchEncoder {
        BatchEncoder
    }

    fn decoder(&mut self) -> BatchResultDecoder {
        BatchResultDecoder
    }
}

/// Decodes the collector's `BatchResult`s.
#[derive(Debug, Default)]
pub struct BatchResultDecoder;

impl Decoder for BatchResultDecoder {
    type Item = v1::BatchResult;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut DecodeBuf<'_>,
    ) -> Result<Option<v1::BatchResult>, tonic::Status> {
        v1::BatchResult::decode(buf)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable BatchResult: {e}")))
    }
}

/// One open ingest stream.
#[derive(Debug)]
pub struct IngestStream {
    tx: mpsc::Sender<OutgoingBatch>,
    rx: tonic::Streaming<v1::BatchResult>,
    next_batch_id: u64,
}

impl IngestStream {
    /// Opens a stream (the collector checks the token here).
    pub async fn open(
        channel: Channel,
        token: Option<&str>,
    ) -> std::result::Result<Self, tonic::Status> {
        // One batch in flight per input plus one queued: the channel never holds more.
        let (tx, mut rx) = mpsc::channel::<OutgoingBatch>(2);
        let outbound = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut request = tonic::Request::new(outbound);
        if let Some(t) = token {
            let value = format!("Bearer {t}").parse().map_err(|_| {
                tonic::Status::invalid_argument("the token is not a valid header value")
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("the channel is not ready: {e}")))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/verdict.ingest.v1.Ingest/Stream",
        );
        let response = grpc.streaming(request, path, BatchCodec).await?;
        Ok(IngestStream {
            tx,
            rx: response.into_inner(),
            next_batch_id: 1,
        })
    }

    /// Sends `batch` (whose own `batch_id` is 0) with the stream's next batch id (returned).
    pub async fn send(&mut self, batch: Arc<v1::Batch>) -> std::result::Result<u64, tonic::Status> {
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        self.tx
            .send(OutgoingBatch {
                batch,
                batch_id: id,
            })
            .await
            .map_err(|_| tonic::Status::unavailable("the stream closed"))?;
        Ok(id)
    }

    /// The next result; an error when the stream broke or ended.
    pub async fn next(&mut self) -> std::result::Result<v1::BatchResult, tonic::Status> {
        match self.rx.message().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(tonic::Status::unavailable("the collector ended the stream")),
            Err(s) => Err(s),
        }
    }
}

/// Exponential backoff with full jitter: the n-th wait is uniform in [0, min(max, initial·2ⁿ)].
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            config,
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The wait before the next attempt, after one more failure.
    pub fn fail(&mut self) -> Duration {
        let cap = self
            .config
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.config.max);
        self.failures = self.failures.saturating_add(1);
        // xorshift64*: jitter needs no cryptographic randomness.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let frac = (r >> 11) as f64 / (1u64 << 53) as f64;
        cap.mul_f64(frac).max(Duration::from_millis(1))
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        });
        let waits: Vec<Duration> = (0..12).map(|_| b.fail()).collect();
        for (n, w) in waits.iter().enumerate() {
            let cap = Duration::from_millis(100 * (1 << n.min(20))).min(Duration::from_secs(2));
            assert!(*w <= cap, "wait {n} {w:?} above {cap:?}");
        }
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 6, "jittered: {waits:?}");
        b.reset();
        assert!(b.fail() <= Duration::from_millis(100));
    }
}
