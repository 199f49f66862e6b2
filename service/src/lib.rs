//! `verdict-service`: what every Verdict service process (`verdict-probe`, `verdict-shipper`,
//! `verdict-collector`, and `verdict demo`, which runs them in one process) does the same way.
//!
//! - [`shutdown`]: one stop request for a whole service — a [`CancellationToken`] cancelled by
//!   SIGINT or SIGTERM (or by the caller), and a [`TaskTracker`] to wait for the service's tasks.
//! - [`metrics`]: Prometheus metrics as typed `prometheus-client` families in one [`Registry`],
//!   served at `/metrics` (with `/healthz`); label values are escaped by the encoder, so no
//!   value a peer controls can break the exposition.
//! - [`http`]: serving a router with a connection cap and a header-read timeout.
//! - [`logging`]: structured logs on stderr, filtered by `RUST_LOG` (default `info`).
//! - [`secret`]: [`Secret`](secret::Secret), a configuration value never printed.
//!
//! See docs/design.md, "Services: start, serve, stop".
//!
//! [`CancellationToken`]: shutdown::CancellationToken
//! [`TaskTracker`]: shutdown::TaskTracker
//! [`Registry`]: metrics::Registry

pub mod http;
pub mod logging;
pub mod metrics;
pub mod secret;
pub mod shutdown;
