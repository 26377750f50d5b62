//! The information request lifecycle:
//!
//! ```text
//! OPEN ─▶ ANSWERED   (the asked agency answered)
//!      ─▶ DECLINED   (the asked agency declined, with a reason)
//!      ─▶ EXPIRED    (the gateway closed it unanswered, after due_at and the grace period)
//! ```
//!
//! Only the asked agency responds, only once, and only while the request is OPEN.

use serde::Deserialize;

use crate::config::{at_least_one, ConfigError};
use crate::pb::v1::InformationRequestStatus as S;

/// InformationRequestService: time frames and expiry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InformationRequestsConfig {
    /// A request sent without due_at is due at the end of this many working days.
    pub default_time_frame_working_days: u32,
    /// An OPEN request becomes EXPIRED this many seconds after due_at (0: at due_at).
    pub expire_after_secs: u64,
}

impl Default for InformationRequestsConfig {
    fn default() -> Self {
        InformationRequestsConfig {
            default_time_frame_working_days: 5,
            expire_after_secs: 0,
        }
    }
}

impl InformationRequestsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_one(&[(
            "information_requests.default_time_frame_working_days",
            u64::from(self.default_time_frame_working_days),
        )])
    }
}

/// The status name without its enum prefix, as people say it: ANSWERED.
pub fn short(status: S) -> &'static str {
    status
        .as_str_name()
        .strip_prefix("INFORMATION_REQUEST_STATUS_")
        .unwrap_or("UNSPECIFIED")
}

/// Whether a request in `status` that was due at `due_at` is overdue at `now`.
pub fn is_overdue(status: S, due_at: i64, now: i64) -> bool {
    status == S::Open && due_at < now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_open_requests_are_overdue() {
        assert!(is_overdue(S::Open, 10, 11));
        assert!(!is_overdue(S::Open, 10, 10));
        for s in [S::Answered, S::Declined, S::Expired] {
            assert!(!is_overdue(s, 10, 11), "{}", short(s));
        }
    }
}
