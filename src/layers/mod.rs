//! The request path between the TLS listener and the handlers: tower layers, stacked in one
//! place ([`stack`]), outermost first:
//!
//! ```text
//! audit → deadline → limits → officer token → authorize → handler
//! ```
//!
//! - `audit`: the one place every call ends; it creates the call's audit context and
//!   writes its entry for every call a handler did not seal itself;
//! - `deadline`: the gateway's deadline for every call (`limits.call_timeout_ms`);
//! - `limits`: per-agency rate and calls in progress, message size;
//! - `officer`: the acting officer's `authorization: Bearer` token, verified;
//! - `authorize`: default deny by the agency's policy (and officer_required).
//!
//! Each gate ([`gate::Gate`]) refuses with an [`crate::common::ApiError`] and notes the
//! deciding rule in the call's audit entry. `caller` is how a handler learns who is calling.

pub mod audit;
pub mod authorize;
pub mod caller;
pub mod deadline;
pub mod gate;
pub mod limits;
pub mod officer;

use std::sync::Arc;
use std::time::Duration;

use tower::layer::util::{Identity, Stack};
use tower::ServiceBuilder;

pub use caller::{caller, identify, Caller};

use crate::domain::policy::Policy;
use crate::store::Store;
use gate::GateLayer;
use limits::{Limits, LimitsConfig};
use officer::OfficerVerifier;

/// The layers of [`stack`], outermost first.
pub type RequestPath = ServiceBuilder<
    Stack<
        GateLayer<authorize::Authorize>,
        Stack<
            GateLayer<officer::gate::Officers>,
            Stack<
                GateLayer<Limits>,
                Stack<deadline::DeadlineLayer, Stack<audit::AuditLayer, Identity>>,
            >,
        >,
    >,
>;

/// The request path of every service, in the order of docs/architecture.md: every call,
/// on every service, ends in the audit layer, whatever the layers under it decide.
pub fn stack<'a>(
    store: Store,
    limits: &LimitsConfig,
    agencies: impl IntoIterator<Item = &'a str>,
    officers: Arc<OfficerVerifier>,
    policy: Policy,
) -> RequestPath {
    ServiceBuilder::new()
        .layer(audit::AuditLayer::new(store))
        .layer(deadline::DeadlineLayer(Duration::from_millis(
            limits.call_timeout_ms,
        )))
        .layer(GateLayer(Limits::new(limits, agencies)))
        .layer(GateLayer(officer::gate::Officers(officers)))
        .layer(GateLayer(authorize::Authorize(policy)))
}
