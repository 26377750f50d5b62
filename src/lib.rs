//! Jisr (جسر, "bridge"): a gRPC interoperability gateway between government agency systems.
//!
//! The request path, top to bottom (see docs/ and ../shared/DESIGN.md):
//! `tls` (mTLS acceptor, agency identity) → `auth` (the caller) → `api` (validate, map
//! errors) → `domain` (lifecycle rules) → `store` (one transaction) → reply.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod directory;
pub mod domain;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;

/// Code generated from proto/ (see build.rs).
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    pub mod jisr {
        pub mod v1 {
            tonic::include_proto!("jisr.v1");
        }
        pub mod adapter {
            pub mod v1 {
                tonic::include_proto!("jisr.adapter.v1");
            }
        }
    }
    pub use jisr::adapter::v1 as adapter_v1;
    pub use jisr::v1;

    /// The encoded descriptor set of the whole contract, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/jisr_descriptor.bin"));
}
