//! Code generated from proto/ (see build.rs): `jisr.v1` (agency-facing) and
//! `jisr.adapter.v1` (what the gateway calls), and the contract's descriptor set.
#![allow(clippy::all, clippy::pedantic)]

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
