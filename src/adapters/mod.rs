//! Built-in adapters, one file each, and the registry that builds them from the config.
//! Adding an adapter: a module here, a variant of `config::AdapterConfig`, one arm in
//! `build` (docs/adapters.md walks through it).

pub mod grpc;
pub mod rest;
pub mod testkit;

use std::sync::Arc;

use crate::config::{AdapterConfig, Config};
use crate::delivery::dispatcher::Adapters;
use crate::delivery::Adapter;

/// The push adapters of every agency that has one; inbox agencies pull instead.
pub fn build(config: &Config) -> anyhow::Result<Adapters> {
    let mut adapters = Adapters::new();
    for agency in &config.agencies {
        let adapter: Arc<dyn Adapter> = match &agency.adapter {
            AdapterConfig::Inbox => continue,
            AdapterConfig::Grpc {
                endpoint,
                server_name,
                ca_cert,
            } => Arc::new(grpc::GrpcAdapter::new(
                config,
                endpoint,
                server_name.as_deref(),
                ca_cert.as_deref(),
            )?),
            AdapterConfig::Rest(rest) => {
                Arc::new(rest::RestAdapter::new(config, &agency.id, rest)?)
            }
        };
        adapters.insert(agency.id.clone(), adapter);
    }
    Ok(adapters)
}
