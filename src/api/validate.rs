//! Field-by-field validation. Every bad field is reported at once, as a BadRequest
//! field violation named by its path in the request (e.g. `referral.subject.identifier.value`).

use prost_types::Timestamp;
use tonic_types::FieldViolation;

use crate::common::ApiError;
use crate::pb::v1::{
    Consent, ContactDetails, DocumentReference, IdentifierType, PersonIdentifier, Subject,
};
use crate::tls::Registry;

/// Collects violations; `finish` turns them into INVALID_ARGUMENT.
#[derive(Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Adds a violation unless `ok`.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, description: impl Into<String>) {
        if !ok {
            self.add(field, description);
        }
    }

    /// The violations so far as an error (for a request too broken to check further).
    pub fn into_error(self) -> ApiError {
        ApiError::Invalid(self.0)
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.0))
        }
    }

    /// A required text of at most `max` characters.
    pub fn required_text(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.add(field, "is required");
        } else {
            self.max_len(field, value, max);
        }
    }

    pub fn max_len(&mut self, field: &str, value: &str, max: usize) {
        let n = value.chars().count();
        if n > max {
            self.add(
                field,
                format!("is {n} characters long; at most {max} are allowed"),
            );
        }
    }

    /// A client idempotency key.
    pub fn request_id(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(
                field,
                "is required: a unique key per request, such as a UUID",
            );
        } else if value.len() > 128
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
        {
            self.add(field, "must be 1-128 characters of A-Z a-z 0-9 . _ : -");
        }
    }

    /// The agency an exchange goes to: registered, and not the caller.
    pub fn recipient(&mut self, field: &str, to: &str, caller: &str, registry: &Registry) {
        if to.is_empty() {
            self.add(field, "is required: the receiving agency's id");
        } else if !registry.contains(to) {
            self.add(field, format!("{to:?} is not a registered agency"));
        } else if to == caller {
            self.add(
                field,
                "is your own agency; an exchange goes to another agency",
            );
        }
    }

    /// A timestamp that must be in the future, at most `max_ahead_ms` after `now_ms`.
    pub fn future_time(&mut self, field: &str, t: &Timestamp, now_ms: i64, max_ahead_ms: i64) {
        match timestamp_ms(t) {
            None => self.add(field, "is not a valid timestamp"),
            Some(ms) if ms <= now_ms => self.add(field, "is in the past; it must be in the future"),
            Some(ms) if ms > now_ms + max_ahead_ms => self.add(
                field,
                format!(
                    "is too far ahead; at most {} days from now",
                    max_ahead_ms / 86_400_000
                ),
            ),
            Some(_) => {}
        }
    }

    /// An enum field: a known value, and not UNSPECIFIED when `required`.
    pub fn enum_value<E: TryFrom<i32>>(
        &mut self,
        field: &str,
        value: i32,
        required: bool,
        hint: &str,
    ) -> Option<E> {
        match E::try_from(value) {
            Err(_) => {
                self.add(
                    field,
                    format!("{value} is not a known value; expected {hint}"),
                );
                None
            }
            Ok(_) if value == 0 && required => {
                self.add(field, format!("is required; expected {hint}"));
                None
            }
            Ok(v) => Some(v),
        }
    }

    /// A repeated enum filter (`statuses`): each a known value other than UNSPECIFIED; the
    /// values' names (`name`), sorted and without repeats, so equal filters look equal.
    pub fn enum_names<E: TryFrom<i32>>(
        &mut self,
        field: &str,
        values: &[i32],
        hint: &str,
        name: fn(&E) -> &'static str,
    ) -> Vec<String> {
        let mut names: Vec<String> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| self.enum_value::<E>(&format!("{field}[{i}]"), *v, true, hint))
            .map(|e| name(&e).to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// A gateway-assigned id (ULID).
    pub fn ulid(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(field, "is required");
        } else if ulid::Ulid::from_string(value).is_err() {
            self.add(field, "is not a valid id (26-character ULID)");
        }
    }

    pub fn subject(&mut self, field: &str, subject: Option<&Subject>) {
        let Some(s) = subject else {
            self.add(field, "is required: the person the case is about");
            return;
        };
        self.identifier(&format!("{field}.identifier"), s.identifier.as_ref());
        if s.full_name.trim().is_empty() && s.full_name_ar.trim().is_empty() {
            self.add(
                format!("{field}.full_name"),
                "full_name or full_name_ar is required",
            );
        }
        self.max_len(&format!("{field}.full_name"), &s.full_name, 200);
        self.max_len(&format!("{field}.full_name_ar"), &s.full_name_ar, 200);
        if !s.date_of_birth.is_empty() {
            self.check(
                is_past_date(&s.date_of_birth),
                format!("{field}.date_of_birth"),
                "must be a real date as YYYY-MM-DD, after 1900-01-01 and not in the future",
            );
        }
        if let Some(c) = &s.contact {
            self.contact(&format!("{field}.contact"), c);
        }
    }

    fn identifier(&mut self, field: &str, id: Option<&PersonIdentifier>) {
        let Some(id) = id else {
            self.add(field, "is required (type and value)");
            return;
        };
        let value_field = format!("{field}.value");
        let country_field = format!("{field}.issuing_country");
        let country_ok = id.issuing_country.len() == 2
            && id.issuing_country.chars().all(|c| c.is_ascii_uppercase());
        match self.enum_value::<IdentifierType>(&format!("{field}.type"), id.r#type, true, "an IdentifierType") {
            Some(IdentifierType::EmiratesId) => self.check(
                is_emirates_id(&id.value),
                value_field,
                "is not a valid Emirates ID number: 15 digits starting with 784 (dashes allowed) with a valid check digit",
            ),
            Some(IdentifierType::Passport) => {
                self.check(
                    is_alnum_between(&id.value, 5, 20),
                    value_field,
                    "must be 5-20 uppercase letters and digits",
                );
                self.check(country_ok, country_field, "is required for passports: an ISO 3166-1 alpha-2 code such as IN");
            }
            Some(IdentifierType::UnifiedNumber) => self.check(
                (1..=15).contains(&id.value.len()) && id.value.chars().all(|c| c.is_ascii_digit()),
                value_field,
                "must be 1-15 digits",
            ),
            Some(IdentifierType::GccNationalId) => {
                self.check(
                    is_alnum_between(&id.value, 5, 20),
                    value_field,
                    "must be 5-20 uppercase letters and digits",
                );
                self.check(
                    ["BH", "KW", "OM", "QA", "SA"].contains(&id.issuing_country.as_str()),
                    country_field,
                    "must be the issuing GCC state: BH, KW, OM, QA or SA",
                );
            }
            _ => {}
        }
    }

    fn contact(&mut self, field: &str, c: &ContactDetails) {
        if !c.phone.is_empty() {
            let digits = c.phone.strip_prefix('+').unwrap_or("");
            self.check(
                (7..=15).contains(&digits.len())
                    && digits.chars().all(|d| d.is_ascii_digit())
                    && !digits.starts_with('0'),
                format!("{field}.phone"),
                "must be an E.164 number such as +971501234567",
            );
        }
        if !c.email.is_empty() {
            let ok = c.email.len() <= 254
                && c.email.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                })
                && !c.email.chars().any(char::is_whitespace);
            self.check(
                ok,
                format!("{field}.email"),
                "must be an email address such as name@example.ae",
            );
        }
        self.max_len(&format!("{field}.address"), &c.address, 500);
    }

    pub fn attachments(&mut self, field: &str, docs: &[DocumentReference]) {
        if docs.len() > 20 {
            self.add(
                field,
                format!("has {} entries; at most 20 are allowed", docs.len()),
            );
        }
        for (i, d) in docs.iter().enumerate() {
            let ok = d.document_id.strip_prefix("sha256:").is_some_and(|h| {
                h.len() == 64
                    && h.chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            });
            self.check(
                ok,
                format!("{field}[{i}].document_id"),
                "must be a document id from UploadDocument: sha256: followed by 64 lowercase hex digits",
            );
            if docs[..i].iter().any(|p| p.document_id == d.document_id) {
                self.add(format!("{field}[{i}].document_id"), "is attached twice");
            }
            self.max_len(&format!("{field}[{i}].title"), &d.title, 200);
        }
    }

    pub fn consent(&mut self, field: &str, consent: Option<&Consent>, now_ms: i64) {
        let Some(c) = consent else { return };
        self.required_text(&format!("{field}.reference"), &c.reference, 128);
        self.required_text(&format!("{field}.scope"), &c.scope, 128);
        match &c.expires_at {
            None => self.add(format!("{field}.expires_at"), "is required"),
            Some(t) => match timestamp_ms(t) {
                None => self.add(format!("{field}.expires_at"), "is not a valid timestamp"),
                Some(ms) => self.check(
                    ms > now_ms,
                    format!("{field}.expires_at"),
                    "is in the past: the consent has lapsed",
                ),
            },
        }
    }
}

/// What a reference to a document the caller may not read is told (whether the document
/// exists is not disclosed).
pub const UNREADABLE_DOCUMENT: &str =
    "is not a document your agency uploaded or received in an exchange; \
     upload it with DocumentService.UploadDocument first";

/// A code naming something in the contract (a service, a question): 1-64 characters of
/// A-Z a-z 0-9 . _ -, starting with a letter or digit.
pub fn is_code(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub use crate::common::time::timestamp_ms;

fn is_alnum_between(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// 784-YYYY-NNNNNNN-C: 15 digits, the last a Luhn check digit.
pub fn is_emirates_id(value: &str) -> bool {
    let digits: String = value.chars().filter(|c| *c != '-').collect();
    if digits.len() != 15
        || !digits.starts_with("784")
        || !digits.chars().all(|c| c.is_ascii_digit())
    {
        return false;
    }
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn is_past_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return false;
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i32>(), m.parse::<u8>(), d.parse::<u8>()) else {
        return false;
    };
    let Ok(month) = time::Month::try_from(m) else {
        return false;
    };
    let Ok(date) = time::Date::from_calendar_date(y, month, d) else {
        return false;
    };
    y >= 1900 && date <= time::OffsetDateTime::now_utc().date()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emirates_id_check_digit() {
        // 784-1990-1234567-? : the check digit makes the Luhn sum a multiple of ten.
        let base = "78419901234567";
        let valid: Vec<_> = (0..10)
            .filter(|d| is_emirates_id(&format!("{base}{d}")))
            .collect();
        assert_eq!(valid.len(), 1, "exactly one check digit is valid");
        let good = format!("784-1990-1234567-{}", valid[0]);
        assert!(is_emirates_id(&good));
        assert!(!is_emirates_id("785-1990-1234567-1"));
        assert!(!is_emirates_id("784-1990-123456"));
    }

    #[test]
    fn dates_must_be_real_and_past() {
        assert!(is_past_date("1990-02-28"));
        assert!(!is_past_date("1990-02-30"));
        assert!(!is_past_date("3000-01-01"));
        assert!(!is_past_date("1990-2-28"));
    }
}
