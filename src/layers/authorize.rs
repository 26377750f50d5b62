//! The authorize gate: default deny. The call's RPC must be granted by the agency's policy
//! (or its role), and an officer token must be present where the policy requires one.

use tonic::body::Body;

use crate::common::error::{ApiError, Reason};
use crate::common::BoxFuture;
use crate::domain::policy::{Policy, AUDIT_SERVICE};
use crate::layers::gate::{call_of, Gate};
use crate::layers::officer::gate::OfficerSubject;

/// Default deny: the call's RPC must be granted by the agency's policy (or its role), and
/// an officer token must be present where the policy requires one.
#[derive(Clone)]
pub struct Authorize(pub Policy);

impl Gate for Authorize {
    type Hold = ();

    fn check<'a>(
        &'a self,
        request: &'a mut http::Request<Body>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some((agency, method, audit)) = call_of(request) else {
                // Only reachable if a listener without client authentication served the call.
                return Err(ApiError::refused(
                    Reason::NoClientCertificate,
                    "no verified agency certificate on this connection",
                ));
            };
            let decision = self.0.rpc(&agency, &method);
            if !decision.allowed {
                audit.deny(&decision.rule);
                let auditor_only = method.starts_with(AUDIT_SERVICE);
                let (reason, message) = if auditor_only {
                    (
                        Reason::AuditorRoleRequired,
                        format!(
                            "agency {agency} does not hold the auditor role; only auditors may read the audit trail"
                        ),
                    )
                } else {
                    (
                        Reason::PolicyDenied,
                        format!(
                            "agency {agency} may not call {method}: its policy does not grant it (default deny); \
                             ask the gateway operator to add it to the agency's policy.allow"
                        ),
                    )
                };
                return Err(ApiError::refused(reason, message)
                    .with("agency", agency.to_string())
                    .with("method", method.to_string())
                    .with("rule", decision.rule.clone()));
            }
            audit.allow(&decision.rule);
            if let Some(rule) = self.0.officer_required(&agency, &method) {
                if request.extensions().get::<OfficerSubject>().is_none() {
                    audit.deny(&rule);
                    return Err(ApiError::refused(
                        Reason::OfficerTokenRequired,
                        format!(
                            "{method} needs the acting officer's token for agency {agency}: \
                             send `authorization: Bearer <token>`"
                        ),
                    )
                    .with("agency", agency.to_string())
                    .with("method", method.to_string())
                    .with("rule", rule.to_string()));
                }
            }
            Ok(())
        })
    }
}
