//! An audit entry and its canonical encoding (docs/audit.md, byte by byte).
//!
//! The leaf hash of an entry is `SHA-256(0x00 || encode(entry))`. The encoding is
//! deliberately simple so a third party can re-implement it: a version byte, then every
//! field in a fixed order; integers are big-endian, strings and byte strings are a
//! big-endian u32 length followed by the bytes (strings are UTF-8).

/// Encoding version written first in every entry...
pub const ENCODING_V1: u8 = 1;
/// ...or this one, the same fields and then `reason`, for an entry that has a reason (an
/// operator's action). Entries without one keep version 1, byte for byte.
pub const ENCODING_V2: u8 = 2;

/// Whether the call was allowed through to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow = 1,
    Deny = 2,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "ALLOW",
            Decision::Deny => "DENY",
        }
    }
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "ALLOW" => Some(Decision::Allow),
            "DENY" => Some(Decision::Deny),
            _ => None,
        }
    }
}

/// Who did what, when, and was it allowed. Never payloads, tokens or personal data:
/// only identifiers of agencies, certificates and gateway-assigned records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The log (= gateway node) and the entry's position in it.
    pub log_id: String,
    pub leaf_index: u64,
    /// Milliseconds since the Unix epoch when the call ended.
    pub time_ms: i64,
    /// W3C trace id of the call.
    pub trace_id: String,
    /// The calling agency as its certificate names it ("" if the call carried none).
    pub caller_agency: String,
    /// SHA-256 of the client certificate (hex) and its serial number (hex).
    pub cert_fingerprint: String,
    pub cert_serial: String,
    /// The officer acting, from a verified token ("" when none).
    pub officer_subject: String,
    /// The full gRPC method, e.g. "/jisr.v1.ReferralService/SubmitReferral".
    pub method: String,
    /// Gateway-assigned ids the call was about (referral ids, ...).
    pub target_ids: Vec<String>,
    /// The other agency of the exchange, when there is one.
    pub recipient_agency: String,
    pub decision: Decision,
    /// The rule that decided, e.g. "referral.party" or "audit.auditor-role".
    pub rule: String,
    /// gRPC status code of the answer (0 = OK).
    pub grpc_code: i32,
    pub duration_us: u64,
    /// SHA-256 of the request message (its protobuf encoding); empty for streamed requests
    /// and calls that never decoded one.
    pub request_sha256: Vec<u8>,
    /// Why an operator acted (`--reason`); empty for calls.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("entry ends early (at byte {0})")]
    Truncated(usize),
    #[error("unknown entry encoding version {0}")]
    Version(u8),
    #[error("field {0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("unknown decision value {0}")]
    Decision(u8),
    #[error("{0} trailing bytes after the entry")]
    Trailing(usize),
}

/// The `targets` query column of an entry: its target ids, each with a space either side
/// (so `LIKE '% id %'` finds one), or empty.
pub fn targets_column(ids: &[String]) -> String {
    if ids.is_empty() {
        String::new()
    } else {
        format!(" {} ", ids.join(" "))
    }
}

impl AuditEntry {
    /// Its target ids, each once, in order: the rows of the `audit_targets` index.
    pub fn distinct_targets(&self) -> Vec<&String> {
        let mut ids: Vec<&String> = self.target_ids.iter().collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The canonical bytes that are hashed into the log.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(if self.reason.is_empty() {
            ENCODING_V1
        } else {
            ENCODING_V2
        });
        out.extend_from_slice(&self.leaf_index.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        for s in [
            &self.log_id,
            &self.trace_id,
            &self.caller_agency,
            &self.cert_fingerprint,
            &self.cert_serial,
            &self.officer_subject,
            &self.method,
        ] {
            put_bytes(&mut out, s.as_bytes());
        }
        out.extend_from_slice(&(self.target_ids.len() as u32).to_be_bytes());
        for id in &self.target_ids {
            put_bytes(&mut out, id.as_bytes());
        }
        put_bytes(&mut out, self.recipient_agency.as_bytes());
        out.push(self.decision as u8);
        put_bytes(&mut out, self.rule.as_bytes());
        out.extend_from_slice(&self.grpc_code.to_be_bytes());
        out.extend_from_slice(&self.duration_us.to_be_bytes());
        put_bytes(&mut out, &self.request_sha256);
        if !self.reason.is_empty() {
            put_bytes(&mut out, self.reason.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<AuditEntry, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != ENCODING_V1 && version != ENCODING_V2 {
            return Err(DecodeError::Version(version));
        }
        let leaf_index = u64::from_be_bytes(r.array()?);
        let time_ms = i64::from_be_bytes(r.array()?);
        let log_id = r.string("log_id")?;
        let trace_id = r.string("trace_id")?;
        let caller_agency = r.string("caller_agency")?;
        let cert_fingerprint = r.string("cert_fingerprint")?;
        let cert_serial = r.string("cert_serial")?;
        let officer_subject = r.string("officer_subject")?;
        let method = r.string("method")?;
        let count = u32::from_be_bytes(r.array()?);
        let mut target_ids = Vec::new();
        for _ in 0..count {
            target_ids.push(r.string("target_ids")?);
        }
        let recipient_agency = r.string("recipient_agency")?;
        let decision = match r.u8()? {
            1 => Decision::Allow,
            2 => Decision::Deny,
            other => return Err(DecodeError::Decision(other)),
        };
        let rule = r.string("rule")?;
        let grpc_code = i32::from_be_bytes(r.array()?);
        let duration_us = u64::from_be_bytes(r.array()?);
        let request_sha256 = r.bytes()?.to_vec();
        let reason = if version == ENCODING_V2 {
            r.string("reason")?
        } else {
            String::new()
        };
        if r.at != bytes.len() {
            return Err(DecodeError::Trailing(bytes.len() - r.at));
        }
        Ok(AuditEntry {
            log_id,
            leaf_index,
            time_ms,
            trace_id,
            caller_agency,
            cert_fingerprint,
            cert_serial,
            officer_subject,
            method,
            target_ids,
            recipient_agency,
            decision,
            rule,
            grpc_code,
            duration_us,
            request_sha256,
            reason,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or(DecodeError::Truncated(self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        self.take(n)
    }
    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> AuditEntry {
        AuditEntry {
            log_id: "jisr-1".into(),
            leaf_index: 7,
            time_ms: 1_763_900_000_123,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            caller_agency: "housing".into(),
            cert_fingerprint: "ab".repeat(32),
            cert_serial: "01ff".into(),
            officer_subject: String::new(),
            method: "/jisr.v1.ReferralService/GetReferral".into(),
            target_ids: vec!["01M83ZZXTMKVJA6ES3HV462JP1".into()],
            recipient_agency: "social-services".into(),
            decision: Decision::Deny,
            rule: "referral.party".into(),
            grpc_code: 7,
            duration_us: 1234,
            request_sha256: vec![0x11; 32],
            reason: String::new(),
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let e = sample();
        let bytes = e.encode();
        assert_eq!(AuditEntry::decode(&bytes), Ok(e));
        assert_eq!(bytes[0], ENCODING_V1);
        assert_eq!(&bytes[1..9], &7u64.to_be_bytes());
        assert!(matches!(
            AuditEntry::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated(_))
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(AuditEntry::decode(&longer), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn an_entry_with_a_reason_is_version_2_and_the_reason_is_its_last_field() {
        let plain = sample();
        let mut e = sample();
        e.reason = "agency fixed its endpoint, ticket 4411".into();
        let bytes = e.encode();
        assert_eq!(bytes[0], ENCODING_V2);
        assert_eq!(AuditEntry::decode(&bytes), Ok(e.clone()));
        // Version 1's fields, then the reason: nothing before it moves.
        let v1 = plain.encode();
        assert_eq!(&bytes[1..v1.len()], &v1[1..]);
        let mut tail = (e.reason.len() as u32).to_be_bytes().to_vec();
        tail.extend_from_slice(e.reason.as_bytes());
        assert_eq!(&bytes[v1.len()..], tail.as_slice());
    }

    #[test]
    fn encoding_is_fixed_byte_for_byte() {
        // Pins the documented layout (docs/audit.md): changing it breaks every stored log.
        let e = AuditEntry {
            log_id: "n".into(),
            leaf_index: 1,
            time_ms: 2,
            trace_id: String::new(),
            caller_agency: "a".into(),
            cert_fingerprint: String::new(),
            cert_serial: String::new(),
            officer_subject: String::new(),
            method: "/m".into(),
            target_ids: vec!["t".into()],
            recipient_agency: String::new(),
            decision: Decision::Allow,
            rule: "r".into(),
            grpc_code: 0,
            duration_us: 3,
            request_sha256: Vec::new(),
            reason: String::new(),
        };
        let hex = hex::encode(e.encode());
        assert_eq!(
            hex,
            concat!(
                "01",
                "0000000000000001",
                "0000000000000002",
                "000000016e",
                "00000000",
                "0000000161",
                "00000000",
                "00000000",
                "00000000",
                "000000022f6d",
                "00000001",
                "0000000174",
                "00000000",
                "01",
                "0000000172",
                "00000000",
                "0000000000000003",
                "00000000",
            )
        );
    }
}
