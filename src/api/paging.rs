//! Page tokens: opaque to clients, bound to the filters they were issued for.

use base64::Engine;
use sha2::{Digest, Sha256};

/// A token that resumes after `key` for a query whose filters are `fingerprint`.
pub fn encode(key: &str, fingerprint: &str) -> String {
    let fp = hex::encode(&Sha256::digest(fingerprint.as_bytes())[..8]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{key}.{fp}"))
}

/// The key of a token issued for these filters; None for anything else.
pub fn decode(token: &str, fingerprint: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let (key, _) = std::str::from_utf8(&raw).ok()?.rsplit_once('.')?;
    (encode(key, fingerprint) == token).then(|| key.to_string())
}

/// One page of a list keyed by gateway ids (ULIDs), newest first.
pub struct IdPage {
    /// Only ids below this one (from the page token).
    pub before_id: Option<String>,
    /// Rows on this page.
    pub size: usize,
    fingerprint: String,
}

impl IdPage {
    /// Checks `page_size` (0: `default`; at most `max`) and `page_token` (issued for the
    /// same `fingerprint`, i.e. the same caller and filters), noting violations in `v`.
    pub fn new(
        v: &mut super::validate::Violations,
        page_size: i32,
        page_token: &str,
        fingerprint: String,
        (default, max): (i32, i32),
    ) -> IdPage {
        v.check(
            (0..=max).contains(&page_size),
            "page_size",
            format!("must be between 0 and {max} (0 means {default})"),
        );
        let before_id = if page_token.is_empty() {
            None
        } else {
            let id =
                decode(page_token, &fingerprint).filter(|id| ulid::Ulid::from_string(id).is_ok());
            v.check(
                id.is_some(),
                "page_token",
                "is not a token this list returned for these filters; start again without page_token",
            );
            id
        };
        let size = if page_size <= 0 {
            default
        } else {
            page_size.min(max)
        };
        IdPage {
            before_id,
            size: size as usize,
            fingerprint,
        }
    }

    /// How many rows to fetch: one more than the page, to know whether another follows.
    pub fn fetch_limit(&self) -> i64 {
        self.size as i64 + 1
    }

    /// Cuts `rows` to the page and returns the token of the next page (empty on the last).
    pub fn finish<T>(&self, rows: &mut Vec<T>, id: impl Fn(&T) -> &str) -> String {
        if rows.len() <= self.size {
            return String::new();
        }
        rows.truncate(self.size);
        rows.last()
            .map(|r| encode(id(r), &self.fingerprint))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_bound_to_their_filters() {
        let token = super::encode("01ABC", "a|1");
        assert_eq!(super::decode(&token, "a|1").as_deref(), Some("01ABC"));
        assert_eq!(super::decode(&token, "a|2"), None);
        assert_eq!(super::decode("garbage", "a|1"), None);
    }
}
