//! Time as the gateway keeps it (Unix milliseconds) and as the contract carries it
//! (`google.protobuf.Timestamp`, RFC 3339 in messages).

use prost_types::Timestamp;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Unix milliseconds as a protobuf timestamp.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Unix milliseconds of a well-formed timestamp (years 1-9999, nanos in range).
pub fn timestamp_ms(t: &Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&t.nanos)
        || !(-62_135_596_800..=253_402_300_799).contains(&t.seconds)
    {
        return None;
    }
    Some(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// Unix milliseconds as RFC 3339 (UTC), for messages.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_before_and_after_the_epoch() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1, -1001] {
            assert_eq!(timestamp_ms(&timestamp(ms)), Some(ms));
        }
    }
}
