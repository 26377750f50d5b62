//! Jisr (جسر, "bridge"): a gRPC interoperability gateway between government agency systems.
//!
//! The modules follow the data flow, and imports only point down this list (checked in CI
//! by tests/it/layout.rs; docs/architecture.md is the map):
//!
//! ```text
//! cli, server        the command line; assembling the gateway (the only place that knows everything)
//! api                thin gRPC handlers: validate → domain::exchange → map the result
//! layers             the request path: audit → deadline → limits → officer → authorize
//! delivery, adapters the dispatcher and sweeps; the adapters that reach agency systems
//! simulation         simulated agency systems for `jisr demo`, `jisr bench --sandbox`, tests
//! store              sqlx storage: domain's storage trait, the group-commit writer
//! domain             the exchange service, lifecycle rules, policy, payloads: pure + a trait
//! audit              entries, Merkle tree, checkpoints, verify, the call's audit context
//! directory, tls     the service catalogue and calendar; mTLS, identity, CRLs, reload
//! config, telemetry loading and JISR_ overrides (each subsystem owns its section); logs
//! common             the error type and its one mapping to gRPC, time, trace ids, pb
//! ```
#![forbid(unsafe_code)]

pub mod adapters;
pub mod api;
pub mod audit;
pub mod cli;
pub mod common;
pub mod config;
pub mod delivery;
pub mod directory;
pub mod domain;
pub mod layers;
pub mod server;
pub mod simulation;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use common::pb;
