//! `inbox`: nothing is pushed; the agency pulls its deliveries with
//! jisr.adapter.v1.InboxService (PullDeliveries, AckDelivery; see api/inbox.rs).

use std::sync::Arc;

use serde::Deserialize;

use super::{AdapterSpec, BuildContext};
use crate::config::ConfigError;
use crate::delivery::Adapter;

/// `kind = "inbox"` has no settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxConfig {}

impl AdapterSpec for InboxConfig {
    fn validate(&self, _key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        Ok(())
    }
    fn build(&self, _ctx: &BuildContext) -> anyhow::Result<Option<Arc<dyn Adapter>>> {
        Ok(None)
    }
}
