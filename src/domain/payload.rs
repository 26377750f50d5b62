//! The messages the outbox holds: a jisr.adapter.v1.Delivery with only its payload set
//! (metadata is filled in per attempt).

use prost::Message;
use prost_types::Timestamp;

use crate::pb::adapter_v1::{
    delivery, status_update, ApplicationStatusUpdate, Delivery, InformationRequestStatusUpdate,
    ReferralStatusUpdate, StatusUpdate,
};
use crate::pb::v1::{
    Application, InformationRequest, InformationRequestStatus, Referral, StatusChange,
};

pub const KIND_REFERRAL: &str = "referral";
pub const KIND_STATUS_UPDATE: &str = "status_update";
pub const KIND_INFORMATION_REQUEST: &str = "information_request";
pub const KIND_INFORMATION_RESPONSE: &str = "information_response";
pub const KIND_CLEARANCE_REQUEST: &str = "clearance_request";

fn encode(payload: delivery::Payload) -> Vec<u8> {
    Delivery {
        payload: Some(payload),
        ..Delivery::default()
    }
    .encode_to_vec()
}

pub fn referral(r: &Referral) -> Vec<u8> {
    encode(delivery::Payload::Referral(r.clone()))
}

pub fn referral_status(referral_id: &str, change: StatusChange, overdue: bool) -> Vec<u8> {
    encode(delivery::Payload::StatusUpdate(StatusUpdate {
        target: Some(status_update::Target::Referral(ReferralStatusUpdate {
            referral_id: referral_id.to_string(),
            change: Some(change),
            overdue,
        })),
    }))
}

/// An information request, to the asked agency.
pub fn information_request(r: &InformationRequest) -> Vec<u8> {
    encode(delivery::Payload::InformationRequest(r.clone()))
}

/// An answered or declined information request, to the requester.
pub fn information_response(r: &InformationRequest) -> Vec<u8> {
    encode(delivery::Payload::InformationResponse(r.clone()))
}

pub fn information_request_status(
    information_request_id: &str,
    status: InformationRequestStatus,
    changed_at: Timestamp,
    overdue: bool,
) -> Vec<u8> {
    encode(delivery::Payload::StatusUpdate(StatusUpdate {
        target: Some(status_update::Target::InformationRequest(
            InformationRequestStatusUpdate {
                information_request_id: information_request_id.to_string(),
                status: status as i32,
                changed_at: Some(changed_at),
                overdue,
            },
        )),
    }))
}

/// A clearance request, to the clearing agency: the application as it sees it.
pub fn clearance_request(a: &Application) -> Vec<u8> {
    encode(delivery::Payload::ClearanceRequest(a.clone()))
}

/// A change of an application, to the lead or a clearing agency.
pub fn application_status(update: ApplicationStatusUpdate) -> Vec<u8> {
    encode(delivery::Payload::StatusUpdate(StatusUpdate {
        target: Some(status_update::Target::Application(update)),
    }))
}
