//! The information request lifecycle:
//!
//! ```text
//! OPEN ─▶ ANSWERED   (the asked agency answered)
//!      ─▶ DECLINED   (the asked agency declined, with a reason)
//!      ─▶ EXPIRED    (the gateway closed it unanswered, after due_at and the grace period)
//! ```
//!
//! Only the asked agency responds, only once, and only while the request is OPEN.

use crate::pb::v1::InformationRequestStatus as S;

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
