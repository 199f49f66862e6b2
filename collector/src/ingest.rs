//! The gRPC ingest service, `verdict.ingest.v1.Ingest/Stream` (docs/design.md, "Contract 3:
//! node to collector").
//!
//! Every batch is answered with exactly one `BatchResult`, in the order the batches arrived.
//! A bad batch gets a `Rejection` and the stream goes on: the service reads each message as raw
//! bytes and decodes it itself, so even a message that is not a `Batch` at all is answered
//! (`REJECTION_CODE_MALFORMED`) instead of ending the stream. Only a message above
//! `grpc.max_message_bytes`, which cannot be read without unbounded memory, ends its stream.
//!
//! Per stream, at most `grpc.max_in_flight_batches` batches are being made durable at once;
//! beyond that the stream is not read, so a fast sender is slowed by HTTP/2 flow control. The
//! CPU work of a batch (JSON parsing, Arrow) runs on blocking threads, at most one per core at
//! a time. A durability failure (WAL error, shutdown) ends the stream with `UNAVAILABLE` after
//! the batches before it are answered; the unanswered ones were not acknowledged and will be
//! resent by the shipper (and deduplicated if they did become durable).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, Streaming};
use tonic::{Request, Response, Status};
use verdict_schema::Timestamp;
use verdict_schema::proto::v1::{self, RejectionCode};

use crate::buffer::Shared;
use crate::config::{Config, Secret};
use crate::decode::{Limits, Rejection, prepare};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::writer::{WriteRequest, WriterSender};

/// The gRPC method path.
pub const STREAM_PATH: &str = "/verdict.ingest.v1.Ingest/Stream";

/// Decodes request messages as raw bytes (decoding happens in the service, see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBatchCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawBatchCodec {
    type Encode = v1::BatchResult;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<v1::BatchResult>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// What every stream handler shares.
#[derive(Debug)]
pub struct IngestState {
    pub limits: Limits,
    pub max_in_flight: usize,
    pub writer: WriterSender,
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    /// Bounds concurrent CPU work on batches.
    pub prepare_permits: Arc<Semaphore>,
    /// Bounds concurrent streams.
    pub stream_permits: Arc<Semaphore>,
    /// Cancelled at shutdown: handlers stop reading, answer what they hold, and end.
    pub shutdown: CancellationToken,
}

impl IngestState {
    pub fn new(
        config: &Config,
        writer: WriterSender,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        IngestState {
            limits: Limits {
                max_batch_bytes: usize::try_from(config.grpc.max_batch_bytes.0)
                    .unwrap_or(usize::MAX),
                max_records: config.grpc.max_records_per_batch,
                max_record_bytes: usize::try_from(config.grpc.max_record_bytes.0)
                    .unwrap_or(usize::MAX),
            },
            max_in_flight: config.grpc.max_in_flight_batches,
            writer,
            shared,
            metrics,
            prepare_permits: Arc::new(Semaphore::new(cores)),
            stream_permits: Arc::new(Semaphore::new(config.grpc.max_streams)),
            shutdown,
        }
    }

    fn result(
        &self,
        batch_id: u64,
        key: (String, String),
        rejection: Rejection,
        records: usize,
    ) -> v1::BatchResult {
        self.metrics.ingest.rejected(rejection.code, records as u64);
        let durable_sequence = self
            .shared
            .lock()
            .watermarks
            .get(&key)
            .map_or(0, |w| w.sequence);
        let source_id = key.1;
        tracing::debug!(batch_id, source_id, code = ?rejection.code, message = %rejection.message, "batch rejected");
        v1::BatchResult {
            batch_id,
            source_id,
            durable_sequence,
            stored: 0,
            duplicates: 0,
            rejection: Some(rejection.to_proto()),
        }
    }

    /// Starts handling one message. Checks that depend on arrival order run now; the rest runs
    /// in the returned future.
    ///
    /// Batches of a stream are prepared concurrently but handed to the writer strictly in
    /// arrival order (`submitted` chains each batch to the one before): the writer deduplicates
    /// against the source's watermark, so a later batch overtaking an earlier one would make
    /// the earlier one look like a duplicate.
    fn process(
        self: &Arc<Self>,
        message: Bytes,
        last_batch_id: &mut Option<u64>,
        submitted: &mut Option<oneshot::Receiver<()>>,
    ) -> BoxFuture<'static, Result<v1::BatchResult, Status>> {
        let arrived = Instant::now();
        let encoded_len = message.len();
        self.metrics.ingest.batches_received.inc();
        let batch = match v1::Batch::decode(message) {
            Ok(b) => b,
            Err(e) => {
                let r = self.result(
                    0,
                    (String::new(), String::new()),
                    Rejection::new(
                        RejectionCode::Malformed,
                        format!("the message is not a verdict.ingest.v1.Batch: {e}"),
                    ),
                    0,
                );
                return Box::pin(async move { Ok(r) });
            }
        };
        let records = batch.records.len();
        self.metrics.ingest.records_received.inc_by(records as u64);
        let batch_id = batch.batch_id;
        let source_id = batch
            .source
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let node_name = batch
            .node
            .as_ref()
            .map(|n| n.node_name.clone())
            .unwrap_or_default();
        if let Some(previous) = *last_batch_id
            && batch_id <= previous
        {
            let r = self.result(
                batch_id,
                (node_name, source_id),
                Rejection::new(
                    RejectionCode::OutOfOrder,
                    format!("batch_id {batch_id} after {previous}: batch ids must increase within a stream"),
                ),
                records,
            );
            return Box::pin(async move { Ok(r) });
        }
        *last_batch_id = Some(batch_id);
        let this = Arc::clone(self);
        let (my_turn_done, next_waits) = oneshot::channel::<()>();
        let previous_submitted = submitted.replace(next_waits);
        Box::pin(async move {
            // Dropped (on any return) or sent once this batch is with the writer.
            let my_turn_done = my_turn_done;
            let permit = this
                .prepare_permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::ShuttingDown.to_status())?;
            let limits = this.limits;
            let receive = Timestamp::now();
            let prepared = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                prepare(batch, encoded_len, &limits, receive)
            })
            .await
            .map_err(|e| Status::internal(format!("preparing the batch failed: {e}")))?;
            if let Some(previous) = previous_submitted {
                // Err only means the previous batch ended without reaching the writer.
                let _ = previous.await;
            }
            let prepared = match prepared {
                Ok(p) => p,
                Err(rejection) => {
                    return Ok(this.result(batch_id, (node_name, source_id), rejection, records));
                }
            };
            if let Some(newest) = prepared.newest_event {
                let lag = (receive.unix_nanos() - newest) as f64 / 1e9;
                this.metrics
                    .ingest
                    .source_lag(&prepared.key.0, lag.max(0.0));
            }
            let (reply, outcome) = oneshot::channel();
            let writer = this
                .writer
                .lock()
                .expect("writer sender lock")
                .clone()
                .ok_or_else(|| Error::ShuttingDown.to_status())?;
            writer
                .send(WriteRequest {
                    batch: prepared,
                    reply,
                })
                .await
                .map_err(|_| Error::ShuttingDown.to_status())?;
            let _ = my_turn_done.send(());
            let outcome = outcome
                .await
                .map_err(|_| Error::ShuttingDown.to_status())?
                .map_err(|e| e.to_status())?;
            this.metrics
                .ingest
                .ack_seconds
                .observe(arrived.elapsed().as_secs_f64());
            Ok(v1::BatchResult {
                batch_id,
                source_id,
                durable_sequence: outcome.durable_sequence,
                stored: outcome.stored,
                duplicates: outcome.duplicates,
                rejection: None,
            })
        })
    }

    /// Reads `incoming` until it ends, answering every batch in order on `out`.
    async fn run_stream(
        self: Arc<Self>,
        mut incoming: Streaming<Bytes>,
        out: mpsc::Sender<Result<v1::BatchResult, Status>>,
    ) {
        let shutdown = self.shutdown.clone();
        let mut pending: FuturesOrdered<BoxFuture<'static, Result<v1::BatchResult, Status>>> =
            FuturesOrdered::new();
        let mut last_batch_id = None;
        let mut submitted = None;
        let mut reading = true;
        let mut end: Option<Status> = None;
        loop {
            tokio::select! {
                biased;
                Some(result) = pending.next(), if !pending.is_empty() => {
                    match result {
                        Ok(r) => {
                            if out.send(Ok(r)).await.is_err() {
                                return; // the client went away
                            }
                        }
                        Err(status) => {
                            end = Some(status);
                            break;
                        }
                    }
                }
                _ = shutdown.cancelled(), if reading => {
                    reading = false;
                    end = Some(Error::ShuttingDown.to_status());
                }
                message = incoming.message(), if reading && pending.len() < self.max_in_flight => {
                    match message {
                        Ok(Some(m)) => {
                            pending.push_back(self.process(m, &mut last_batch_id, &mut submitted));
                        }
                        Ok(None) => reading = false,
                        Err(status) => {
                            reading = false;
                            end = Some(status);
                        }
                    }
                }
                else => break,
            }
        }
        if let Some(status) = end {
            // Batches answered before the failure stay answered; the rest were never
            // acknowledged, which is what the shipper's retry relies on.
            let _ = out.send(Err(status)).await;
        }
    }
}

/// The tower service tonic routes `verdict.ingest.v1.Ingest` to.
#[derive(Debug, Clone)]
pub struct IngestServer {
    state: Arc<IngestState>,
    max_message_bytes: usize,
}

impl IngestServer {
    pub fn new(state: Arc<IngestState>, max_message_bytes: usize) -> Self {
        IngestServer {
            state,
            max_message_bytes,
        }
    }
}

impl tonic::server::NamedService for IngestServer {
    const NAME: &'static str = "verdict.ingest.v1.Ingest";
}

type ResponseStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::BatchResult, Status>> + Send>>;

#[derive(Debug, Clone)]
struct StreamMethod(Arc<IngestState>);

impl tonic::server::StreamingService<Bytes> for StreamMethod {
    type Response = v1::BatchResult;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<'static, Result<Response<ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move {
            let permit = Arc::clone(&state.stream_permits)
                .try_acquire_owned()
                .map_err(|_| {
                    Status::resource_exhausted("too many ingest streams (grpc.max_streams)")
                })?;
            let (tx, mut rx) = mpsc::channel(state.max_in_flight.max(1));
            let metrics = Arc::clone(&state.metrics);
            metrics.ingest.streams_active.inc();
            metrics.ingest.streams.inc();
            tokio::spawn(async move {
                state.run_stream(request.into_inner(), tx).await;
                metrics.ingest.streams_active.dec();
                drop(permit);
            });
            let stream: ResponseStream =
                Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
            Ok(Response::new(stream))
        })
    }
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for IngestServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        if req.uri().path() != STREAM_PATH {
            return Box::pin(async move {
                Ok(Status::unimplemented(format!("no method {}", req.uri().path())).into_http())
            });
        }
        let method = StreamMethod(Arc::clone(&self.state));
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawBatchCodec)
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

/// Checks the `authorization: Bearer TOKEN` metadata against the configured tokens.
#[derive(Clone)]
pub struct TokenAuth {
    tokens: Arc<Vec<Secret>>,
    failures: Counter,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl TokenAuth {
    /// Checks against `tokens` (none: every stream is let in); refusals count in `failures`.
    pub fn new(tokens: Vec<Secret>, failures: Counter) -> Self {
        TokenAuth {
            tokens: Arc::new(tokens),
            failures,
        }
    }
}

/// Compares without an early exit, so the time taken says nothing about where tokens differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl tonic::service::Interceptor for TokenAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.tokens.is_empty() {
            return Ok(request);
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        let ok = presented.is_some_and(|p| {
            self.tokens.iter().fold(false, |found, t| {
                found | constant_time_eq(p.as_bytes(), t.expose().as_bytes())
            })
        });
        if ok {
            Ok(request)
        } else {
            self.failures.inc();
            Err(Status::unauthenticated(if presented.is_none() {
                "missing `authorization: Bearer TOKEN` metadata"
            } else {
                "the bearer token is not accepted"
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor as _;

    #[test]
    fn tokens_are_checked() {
        let failures = Counter::default();
        let mut auth = TokenAuth::new(vec![Secret::new("t0k")], failures.clone());
        let with = |v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert("authorization", v.parse().unwrap());
            r
        };
        assert!(auth.call(with("Bearer t0k")).is_ok());
        let e = auth.call(with("Bearer nope")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("not accepted"));
        let e = auth.call(Request::new(())).unwrap_err();
        assert!(e.message().contains("missing"));
        assert_eq!(failures.get(), 2);
        let mut open = TokenAuth::new(vec![], Counter::default());
        assert!(open.call(Request::new(())).is_ok());
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
