//! The adapter test kit: checks any adapter against a mock of the agency system it talks
//! to. Every built-in adapter's tests call `check_adapter`; a new adapter should too
//! (docs/adapters.md). Compiled for tests and with the `test-util` feature only; the
//! simulated agency systems it drives live in `crate::simulation`.
//!
//! The kit checks what the dispatcher relies on: a delivery reaches the agency carrying its
//! delivery id (so the agency de-duplicates retries and acts once), an agency that is down
//! or answers garbage gives `Retryable`, and one that refuses the message gives `Permanent`.

use crate::delivery::{Adapter, DeliveryError, OutboundDelivery};
use crate::pb::adapter_v1::{delivery, Delivery, DeliveryMetadata};
use crate::pb::v1::Referral;
pub use crate::simulation::{Behaviour, MockAgency, MockEndpoint};

/// A referral delivery as the dispatcher would hand it over.
pub fn sample_delivery(delivery_id: &str, agency: &str, referral_id: &str) -> OutboundDelivery {
    OutboundDelivery {
        delivery_id: delivery_id.to_string(),
        agency: agency.to_string(),
        attempt: 1,
        message: Delivery {
            metadata: Some(DeliveryMetadata {
                delivery_id: delivery_id.to_string(),
                attempt: 1,
                created_at: None,
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            }),
            payload: Some(delivery::Payload::Referral(Referral {
                id: referral_id.to_string(),
                from_agency: "social-services".into(),
                to_agency: agency.to_string(),
                service_code: "kit-check".into(),
                summary: "adapter test kit".into(),
                ..Referral::default()
            })),
            visibility_deadline: None,
        },
    }
}

/// Runs the kit; panics naming the first expectation the adapter does not meet.
pub async fn check_adapter(adapter: &dyn Adapter, mock: &dyn MockAgency, agency: &str) {
    let kind = adapter.kind();
    let first = sample_delivery(
        "01KITDELIVERY0000000000001",
        agency,
        "01KITREFERRAL000000000001",
    );
    let second = sample_delivery(
        "01KITDELIVERY0000000000002",
        agency,
        "01KITREFERRAL000000000002",
    );

    mock.set_behaviour(Behaviour::Accept);
    adapter
        .deliver(&first)
        .await
        .unwrap_or_else(|e| panic!("{kind}: a delivery to a healthy agency failed: {e}"));
    adapter
        .health()
        .await
        .unwrap_or_else(|e| panic!("{kind}: health of a healthy agency failed: {e}"));

    // A retry of the same delivery (its answer was lost, say) carries the same id: the
    // agency acts once.
    let mut retry = first.clone();
    retry.attempt = 2;
    if let Some(m) = retry.message.metadata.as_mut() {
        m.attempt = 2;
    }
    adapter
        .deliver(&retry)
        .await
        .unwrap_or_else(|e| panic!("{kind}: a repeated delivery failed: {e}"));
    assert_eq!(
        mock.acted(),
        vec![first.delivery_id.clone()],
        "{kind}: the agency must act once per delivery id"
    );

    for (behaviour, want_retryable) in [
        (Behaviour::Unavailable, true),
        (Behaviour::Malformed, true),
        (Behaviour::Refuse, false),
    ] {
        mock.set_behaviour(behaviour);
        match adapter.deliver(&second).await {
            Ok(receipt) => {
                panic!("{kind}: {behaviour:?} was taken as delivered (receipt {receipt:?})")
            }
            Err(DeliveryError::Retryable(e)) => assert!(
                want_retryable,
                "{kind}: {behaviour:?} must be Permanent, was Retryable: {e}"
            ),
            Err(DeliveryError::Permanent(e)) => assert!(
                !want_retryable,
                "{kind}: {behaviour:?} must be Retryable, was Permanent: {e}"
            ),
        }
    }
    mock.set_behaviour(Behaviour::Unavailable);
    assert!(
        matches!(adapter.health().await, Err(DeliveryError::Retryable(_))),
        "{kind}: health of an agency that is down must fail as Retryable"
    );

    mock.set_behaviour(Behaviour::Accept);
    adapter
        .deliver(&second)
        .await
        .unwrap_or_else(|e| panic!("{kind}: delivery after recovery failed: {e}"));
    assert_eq!(
        mock.acted(),
        vec![first.delivery_id, second.delivery_id],
        "{kind}: nothing lost, nothing twice"
    );
}
