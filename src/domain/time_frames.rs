//! Time frames: a referral is due at the end of the receiving service's time frame in
//! working days (the configured weekend and public holidays do not count). What passing
//! the due date does (OVERDUE, EXPIRED) is the exchange's (`exchange::gateway`).

use crate::directory::calendar::add_working_days;
use crate::directory::Directory;

/// When a referral submitted at `submitted_ms` for `service_code` is due: None when the
/// directory does not know the service or gives it no time frame.
pub fn due_at(directory: &Directory, service_code: &str, submitted_ms: i64) -> Option<i64> {
    let days = directory.service(service_code)?.time_frame_working_days;
    (days > 0).then(|| add_working_days(submitted_ms, days, directory.calendar()))
}
