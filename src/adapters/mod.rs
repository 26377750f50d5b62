//! Built-in adapters, one module each, and the registry that builds them from the config.
//!
//! Each adapter owns its config type (`[agencies.adapter]` with its `kind`), which checks
//! itself and builds the running adapter ([`AdapterSpec`]). The registry below is the only
//! place that lists them: adding an adapter is a module, one line in `registry!`, and its
//! tests (docs/adapters.md walks through it).

pub mod grpc;
pub mod inbox;
pub mod rest;
#[cfg(any(test, feature = "test-util"))]
pub mod testkit;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::delivery::dispatcher::Adapters;
use crate::delivery::Adapter;

/// What the gateway gives every adapter it builds.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The agency the adapter delivers to.
    pub agency: String,
    /// The trust bundle for agency servers when the adapter names none (`tls.ca_cert`).
    pub ca_cert: PathBuf,
    /// The gateway's own client certificate and key (`delivery.client_cert`/`client_key`).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// One attempt's deadline when the adapter sets none (`delivery.timeout_ms`).
    pub timeout: Duration,
}

/// An adapter's config type: it checks itself and builds the running adapter.
pub trait AdapterSpec {
    /// Rules serde cannot express; `key(field)` names a field under the agency's `adapter`.
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError>;
    /// The running adapter; `None` when the agency pulls instead (inbox).
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Option<Arc<dyn Adapter>>>;
}

macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident ($kind:literal) => $config:ty, )+) => {
        /// An agency's delivery adapter, chosen by `kind`.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        pub enum AdapterConfig {
            $( $(#[$doc])* $variant($config), )+
        }

        impl AdapterConfig {
            /// The `kind` that selects it.
            pub fn kind(&self) -> &'static str {
                match self { $(AdapterConfig::$variant(_) => $kind,)+ }
            }

            fn spec(&self) -> &dyn AdapterSpec {
                match self { $(AdapterConfig::$variant(c) => c,)+ }
            }
        }
    };
}

registry! {
    /// The agency calls jisr.adapter.v1.InboxService to pull and acknowledge deliveries.
    Inbox("inbox") => inbox::InboxConfig,
    /// The gateway calls the agency's jisr.adapter.v1.AgencyEndpointService over mTLS.
    Grpc("grpc") => grpc::GrpcConfig,
    /// The gateway POSTs JSON to the agency's HTTPS API with a declarative mapping.
    Rest("rest") => Box<rest::RestConfig>,
    /// The gateway POSTs the canonical JSON to a URL, signed with an HMAC header.
    Webhook("webhook") => webhook::WebhookConfig,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig::Inbox(inbox::InboxConfig {})
    }
}

impl AdapterConfig {
    pub fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        self.spec().validate(key)
    }

    pub fn build(&self, ctx: &BuildContext) -> anyhow::Result<Option<Arc<dyn Adapter>>> {
        self.spec().build(ctx)
    }

    /// Whether the agency pulls its deliveries from the inbox.
    pub fn is_inbox(&self) -> bool {
        matches!(self, AdapterConfig::Inbox(_))
    }
}

impl<T: AdapterSpec> AdapterSpec for Box<T> {
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        (**self).validate(key)
    }
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Option<Arc<dyn Adapter>>> {
        (**self).build(ctx)
    }
}

/// The push adapters of every agency that has one; inbox agencies pull instead.
pub fn build<'a>(
    agencies: impl IntoIterator<Item = (&'a AdapterConfig, BuildContext)>,
) -> anyhow::Result<Adapters> {
    let mut adapters = Adapters::new();
    for (config, ctx) in agencies {
        if let Some(adapter) = config.build(&ctx)? {
            adapters.insert(ctx.agency.clone(), adapter);
        }
    }
    Ok(adapters)
}
