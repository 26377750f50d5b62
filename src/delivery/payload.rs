//! The messages the outbox holds: a jisr.adapter.v1.Delivery with only its payload set
//! (metadata is filled in per attempt).

use prost::Message;

use crate::pb::adapter_v1::{
    delivery, status_update, Delivery, ReferralStatusUpdate, StatusUpdate,
};
use crate::pb::v1::{Referral, StatusChange};

pub const KIND_REFERRAL: &str = "referral";
pub const KIND_STATUS_UPDATE: &str = "status_update";

pub fn referral(r: &Referral) -> Vec<u8> {
    Delivery {
        payload: Some(delivery::Payload::Referral(r.clone())),
        ..Delivery::default()
    }
    .encode_to_vec()
}

pub fn referral_status(referral_id: &str, change: StatusChange, overdue: bool) -> Vec<u8> {
    Delivery {
        payload: Some(delivery::Payload::StatusUpdate(StatusUpdate {
            target: Some(status_update::Target::Referral(ReferralStatusUpdate {
                referral_id: referral_id.to_string(),
                change: Some(change),
                overdue,
            })),
        })),
        ..Delivery::default()
    }
    .encode_to_vec()
}
