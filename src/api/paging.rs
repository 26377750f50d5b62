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
