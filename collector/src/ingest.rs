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
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, Streaming};
use tonic::{Request, Response, Status};
use verdict_schema::Timestamp;
use verdict_schema::proto::v1::{self, RejectionCode};

use crate::buffer::Shared;
use crate::config::Config;
use crate::decode::{BatchHeader, Limits, Rejection, TimeWindow, peek_header, prepare};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::node_auth::{PendingReview, Principal};
use crate::writer::{WriteRequest, WriterSender, Written};

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

/// A batch's place in its stream's order: dropping it lets the next batch go on, telling it the
/// stream's last accepted batch id.
struct Turn {
    tx: Option<oneshot::Sender<Option<u64>>>,
    last: Option<u64>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(self.last);
        }
    }
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
                window: TimeWindow {
                    max_age: config.grpc.max_record_age,
                    max_ahead: config.grpc.max_record_ahead,
                },
                max_sequence_gap: config.grpc.max_sequence_gap.0,
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

    /// Starts handling one message; the returned future answers it.
    ///
    /// Nothing is decoded on the async runtime and nothing beyond the received bytes is
    /// allocated before the size limit is checked: a message over `grpc.max_batch_bytes` is
    /// refused as it is; a smaller one is decoded and prepared on a blocking thread (at most one
    /// per core at a time).
    ///
    /// Batches of a stream are prepared concurrently but judged and handed to the writer
    /// strictly in arrival order: each waits for its predecessor's [`Turn`], which carries the
    /// stream's last accepted batch id (ids must increase within a stream), and passes its own
    /// on once it is with the writer (or refused). The writer deduplicates against the source's
    /// watermark, so a later batch overtaking an earlier one would make the earlier one look
    /// like a duplicate.
    fn process(
        self: &Arc<Self>,
        message: Bytes,
        principal: &Principal,
        previous: &mut Option<oneshot::Receiver<Option<u64>>>,
    ) -> BoxFuture<'static, Result<v1::BatchResult, Status>> {
        let principal = principal.clone();
        let arrived = Instant::now();
        let encoded_len = message.len();
        self.metrics.ingest.batches_received.inc();
        let this = Arc::clone(self);
        let (tx, next) = oneshot::channel::<Option<u64>>();
        let before = previous.replace(next);
        Box::pin(async move {
            // Passes the stream's last accepted id on, whatever way this future ends.
            let mut turn = Turn {
                tx: Some(tx),
                last: None,
            };
            let last_accepted = match before {
                Some(rx) => rx.await.unwrap_or(None),
                None => None,
            };
            turn.last = last_accepted;
            let permit = this
                .prepare_permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::ShuttingDown.to_status())?;
            let limits = this.limits;
            let receive = Timestamp::now();
            let decoded = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                if encoded_len > limits.max_batch_bytes {
                    // Too large to decode: answered by what its bytes say without decoding.
                    let header = peek_header(&message).ok_or_else(|| {
                        "the bytes are not a protobuf message".to_owned()
                    })?;
                    let refusal = Rejection::new(
                        RejectionCode::TooLarge,
                        format!(
                            "the batch is {encoded_len} bytes; the limit is {} (grpc.max_batch_bytes): send smaller batches",
                            limits.max_batch_bytes
                        ),
                    );
                    return Ok((header, Err(refusal)));
                }
                let batch = v1::Batch::decode(message).map_err(|e| e.to_string())?;
                let header = BatchHeader {
                    batch_id: batch.batch_id,
                    key: (
                        batch.node.as_ref().map(|n| n.node_name.clone()).unwrap_or_default(),
                        batch.source.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
                    ),
                    records: batch.records.len(),
                };
                Ok::<_, String>((header, prepare(batch, encoded_len, &limits, receive)))
            })
            .await
            .map_err(|e| Status::internal(format!("preparing the batch failed: {e}")))?;
            let (header, prepared) = match decoded {
                Ok(d) => d,
                Err(e) => {
                    return Ok(this.result(
                        0,
                        (String::new(), String::new()),
                        Rejection::new(
                            RejectionCode::Malformed,
                            format!("the message is not a verdict.ingest.v1.Batch: {e}"),
                        ),
                        0,
                    ));
                }
            };
            let BatchHeader {
                batch_id,
                key,
                records,
            } = header;
            this.metrics.ingest.records_received.inc_by(records as u64);
            if let Some(previous) = last_accepted
                && batch_id <= previous
            {
                return Ok(this.result(
                    batch_id,
                    key,
                    Rejection::new(
                        RejectionCode::OutOfOrder,
                        format!("batch_id {batch_id} after {previous}: batch ids must increase within a stream"),
                    ),
                    records,
                ));
            }
            turn.last = Some(batch_id);
            if let Some(why) = principal.refuse(&key.0) {
                let refusal = Rejection::new(RejectionCode::PermissionDenied, why);
                return Ok(this.result(batch_id, key, refusal, records));
            }
            let prepared = match prepared {
                Ok(p) => p,
                Err(rejection) => return Ok(this.result(batch_id, key, rejection, records)),
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
            drop(turn);
            let outcome = match outcome
                .await
                .map_err(|_| Error::ShuttingDown.to_status())?
                .map_err(|e| e.to_status())?
            {
                Written::Stored(o) => o,
                Written::Refused(rejection) => {
                    return Ok(this.result(batch_id, key, rejection, records));
                }
            };
            this.metrics
                .ingest
                .ack_seconds
                .observe(arrived.elapsed().as_secs_f64());
            Ok(v1::BatchResult {
                batch_id,
                source_id: key.1,
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
        principal: Principal,
        mut incoming: Streaming<Bytes>,
        out: mpsc::Sender<Result<v1::BatchResult, Status>>,
    ) {
        let shutdown = self.shutdown.clone();
        let mut pending: FuturesOrdered<BoxFuture<'static, Result<v1::BatchResult, Status>>> =
            FuturesOrdered::new();
        let mut previous = None;
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
                            pending.push_back(self.process(m, &principal, &mut previous));
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
        // Set by the authentication interceptor; a stream it did not see is bound to nothing.
        let principal = request
            .extensions()
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(|| Principal::Nodes(Vec::new()));
        let pending = request.extensions().get::<PendingReview>().cloned();
        Box::pin(async move {
            let principal = match pending {
                Some(review) => review.principal().await?,
                None => principal,
            };
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
                state.run_stream(principal, request.into_inner(), tx).await;
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
