//! `verdict-shipper`, the node shipper (in progress): it tails node-local logs, checkpoints only
//! positions the collector acknowledged, and streams batches over gRPC (DESIGN.md Contract 3).
//!
//! - [`tailer`]: one log file followed across rename and copy-truncate rotations, lines with
//!   their source (file generation) and sequence (byte offset), checkpoints.

pub mod tailer;
