//! The contract between the Switchyard control plane and data plane: the
//! shared-memory region, its single-producer/single-consumer rings, and the
//! record codec (DESIGN §4).
//!
//! ```text
//! /dev/shm/<name>  (mode 0600, layout::VERSION)
//! ┌──────────── header (4 KiB) ─────────────┐
//! │ magic, version, cores, ring_bytes,      │
//! │ generation, store_version, pids, ...    │
//! ├──────── core 0 ─────────────────────────┤
//! │ ring control: head │ overflow │ tail     │  control ─► core   (records)
//! │ stats block: need_snapshot, applied_seq, │  core ─► control   (counters, requests)
//! │              counters ...                │
//! │ ring data (ring_bytes)                   │
//! ├──────── core 1 ... ─────────────────────┤
//! ```
//!
//! - [`codec`] is sans-IO: [`codec::Record::encode`] / [`codec::Record::decode`].
//! - [`layout`] fixes every offset; [`shm`] is the only `unsafe` code (mmap and
//!   atomics over the mapping).
//! - Resync protocol: a core that sees a sequence gap, a corrupt frame or the
//!   ring's overflow flag stores 1 into its `need_snapshot` stats word and drops
//!   records until a `SnapshotBegin`; the producer swaps the word back to 0 and
//!   streams a snapshot (waiting for ring space instead of dropping).
#![warn(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod codec;
pub mod layout;
pub mod order;
#[allow(unsafe_code)] // the only unsafe of the ring: mmap and atomics on it
pub mod shm;

pub use codec::{Body, DecodeError, Record, TokenRec, TunnelRec};
pub use shm::{AttachError, Drained, Pop, Region, Ring};

#[cfg(test)]
mod tests;
