//! Switchyard control plane: gRPC API (tonic), embedded store (redb) or a
//! fleet's etcd (`fleet`), and the producer side of the shared-memory rings
//! that feed every data-plane core (DESIGN §4).
//!
//! ```text
//!  gRPC client ──► api ──► hub (writer: validate → store commit → state) ──► pusher[core] ──► ring ──► dataplane core
//!                    ▲                                                            ▲                 │
//!                    └──────────── stats blocks (shm) ◄───────────────────────────┴─ need_snapshot ◄─┘
//! ```
//!
//! `server` wires it together; `fleet` keeps a node on etcd (writes as
//! transactions, a watch that feeds the hub, node registration);
//! `supervisor` is `controlplane up` (also runs and restarts the data
//! plane); `cli` is the client side of the binary.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod fleet;
pub mod hub;
pub mod model;
pub mod pusher;
pub mod server;
pub mod store;
pub mod supervisor;

/// Generated messages and services of `switchyard.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("switchyard.v1");
}
