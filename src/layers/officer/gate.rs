//! The officer-token gate: `authorization: Bearer <token>`, verified by
//! [`OfficerVerifier`]; the subject goes into the audit entry, the token nowhere.

use std::sync::Arc;
use std::time::Duration;

use tonic::body::Body;

use super::{OfficerError, OfficerReason, OfficerVerifier};
use crate::common::{ApiError, BoxFuture};
use crate::layers::gate::{call_of, Gate};

/// `authorization: Bearer <token>`, when present, must name a verified officer; the
/// subject goes into the audit entry and the request, the token goes nowhere (the header
/// is removed before the handler).
#[derive(Clone)]
pub struct Officers(pub Arc<OfficerVerifier>);

impl Gate for Officers {
    type Hold = ();

    fn check<'a>(
        &'a self,
        request: &'a mut http::Request<Body>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(header) = request.headers_mut().remove(http::header::AUTHORIZATION) else {
                return Ok(());
            };
            let Some((agency, _, audit)) = call_of(request) else {
                return Ok(());
            };
            let token = header
                .to_str()
                .ok()
                .and_then(|h| h.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            let result = match token {
                Some(token) => self.0.verify(token).await,
                None => Err(OfficerError::new(
                    OfficerReason::TokenMalformed,
                    "the authorization header is not `Bearer <token>`",
                )),
            };
            let outcome = match &result {
                Ok(_) => "valid",
                Err(e) => e.reason.reason().as_str(),
            };
            crate::telemetry::metrics::metrics()
                .officer_tokens
                .get_or_create(&crate::telemetry::metrics::OutcomeLabels {
                    outcome: outcome.into(),
                })
                .inc();
            match result {
                Ok(officer) => {
                    audit.set_officer(&officer.subject);
                    request
                        .extensions_mut()
                        .insert(OfficerSubject(officer.subject));
                    Ok(())
                }
                Err(e) => {
                    audit.deny("officer.token");
                    // The provider's trouble, not the token's: UNAVAILABLE, worth a retry.
                    let refusal = ApiError::refused(e.reason.reason(), e.message.clone())
                        .with("agency", agency.to_string());
                    Err(if e.reason.is_unavailable() {
                        refusal.retry_after(Duration::from_secs(1))
                    } else {
                        refusal
                    })
                }
            }
        })
    }
}

/// Set on requests that carried a valid officer token (by the officer gate).
#[derive(Debug, Clone)]
pub struct OfficerSubject(pub String);
