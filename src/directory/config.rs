//! The directory's part of `config/jisr.toml`: what each agency offers (descriptions,
//! contact channels, `[[agencies.services]]`), the working-day calendar (`[calendar]`) and
//! the routing questionnaire (`[routing]`). `crate::config` holds these types; the rules
//! serde cannot express are checked by [`validate`], with errors naming key, value and
//! what was expected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

use prost::Message;
use serde::de::{self, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};
use time::{Date, Weekday};

use crate::config::{ConfigError, Origin};
use crate::pb::v1::ReferralCategory;

/// How an agency can be contacted (`kind` of an `[[agencies.contacts]]` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactKind {
    /// An E.164 number, e.g. "+97180012345".
    Phone,
    /// An email address.
    Email,
    /// An https:// URL.
    Website,
    /// A postal or street address.
    Address,
}

/// One contact channel of an agency: `{ kind = "phone", value = "+97180012345" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactConfig {
    pub kind: ContactKind,
    pub value: String,
}

/// A service an agency accepts referrals and information requests for
/// (`[[agencies.services]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unique across all agencies: 2-63 characters of a-z, 0-9 and '-'. Referral.service_code.
    pub code: String,
    pub name_en: String,
    pub name_ar: String,
    #[serde(default)]
    pub description_en: String,
    #[serde(default)]
    pub description_ar: String,
    /// ReferralCategory short names: "housing", "domestic-violence", ...
    #[serde(default)]
    pub categories: Vec<String>,
    /// Working days the agency has to complete the service (1-365); none when absent.
    #[serde(default)]
    pub time_frame_working_days: Option<u32>,
    /// Referral fields the service needs beyond the always-required ones, as field paths
    /// of jisr.v1.Referral such as "subject.date_of_birth" or "consent".
    #[serde(default)]
    pub required_fields: Vec<String>,
    /// Documents the service needs, as short descriptions.
    #[serde(default)]
    pub required_documents: Vec<String>,
}

/// `[calendar]`: which days count as working days for time frames (UTC dates).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// Weekday names, e.g. ["saturday", "sunday"] (the default, as in the UAE).
    #[serde(default = "default_weekend", deserialize_with = "weekday_names")]
    pub weekend: Vec<Weekday>,
    /// Public holidays as "YYYY-MM-DD".
    #[serde(default, deserialize_with = "iso_dates")]
    pub holidays: Vec<Date>,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            weekend: default_weekend(),
            holidays: Vec::new(),
        }
    }
}

fn default_weekend() -> Vec<Weekday> {
    vec![Weekday::Saturday, Weekday::Sunday]
}

/// `[routing]`: the guided questionnaire behind DirectoryService.RecommendAgency.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// In the order they are best asked.
    #[serde(default)]
    pub questions: Vec<QuestionConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// `[[routing.questions]]`: a question with a fixed set of options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionConfig {
    pub id: String,
    pub text_en: String,
    pub text_ar: String,
    pub options: Vec<OptionConfig>,
}

/// `[[routing.questions.options]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionConfig {
    pub id: String,
    pub label_en: String,
    pub label_ar: String,
}

/// `[[routing.rules]]`: when every condition of `when` holds, `service` gains `weight`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Question id → the option id that must have been chosen, or a list of option ids
    /// of which one must have been chosen.
    pub when: BTreeMap<String, OptionIds>,
    /// The code of the service recommended.
    pub service: String,
    /// How strongly the answers point to the service: more than 0, at most 1 (default 1).
    #[serde(default = "default_weight")]
    pub weight: f64,
    pub reason_en: String,
    pub reason_ar: String,
}

fn default_weight() -> f64 {
    1.0
}

/// The option ids one condition of a rule accepts: `"yes"` or `["yes", "not-sure"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionIds(pub Vec<String>);

impl<'de> Deserialize<'de> for OptionIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OptionIds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an option id or a list of option ids")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OptionIds, E> {
                Ok(OptionIds(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OptionIds, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<String>()? {
                    ids.push(id);
                }
                Ok(OptionIds(ids))
            }
        }
        d.deserialize_any(V)
    }
}

struct WeekdayName(Weekday);

impl<'de> Deserialize<'de> for WeekdayName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let day = match s.to_ascii_lowercase().as_str() {
            "monday" => Weekday::Monday,
            "tuesday" => Weekday::Tuesday,
            "wednesday" => Weekday::Wednesday,
            "thursday" => Weekday::Thursday,
            "friday" => Weekday::Friday,
            "saturday" => Weekday::Saturday,
            "sunday" => Weekday::Sunday,
            _ => return Err(de::Error::invalid_value(
                Unexpected::Str(&s),
                &"a weekday name: monday, tuesday, wednesday, thursday, friday, saturday or sunday",
            )),
        };
        Ok(WeekdayName(day))
    }
}

fn weekday_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Weekday>, D::Error> {
    Ok(Vec::<WeekdayName>::deserialize(d)?
        .into_iter()
        .map(|w| w.0)
        .collect())
}

struct IsoDate(Date);

impl<'de> Deserialize<'de> for IsoDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_date(&s).map(IsoDate).ok_or_else(|| {
            de::Error::invalid_value(
                Unexpected::Str(&s),
                &"a real date as \"YYYY-MM-DD\", e.g. \"2026-12-02\"",
            )
        })
    }
}

fn iso_dates<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Date>, D::Error> {
    Ok(Vec::<IsoDate>::deserialize(d)?
        .into_iter()
        .map(|x| x.0)
        .collect())
}

/// A "YYYY-MM-DD" date.
pub fn parse_date(s: &str) -> Option<Date> {
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return None;
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    if ![y, m, d]
        .iter()
        .all(|p| p.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
}

/// The short name of a category as the config writes it: `domestic-violence`.
pub fn category_short_name(category: ReferralCategory) -> String {
    category
        .as_str_name()
        .trim_start_matches("REFERRAL_CATEGORY_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// The category a config short name stands for (never UNSPECIFIED).
pub fn category_from_short_name(name: &str) -> Option<ReferralCategory> {
    if name.is_empty() || name != name.to_ascii_lowercase() || name.contains('_') {
        return None;
    }
    let full = format!(
        "REFERRAL_CATEGORY_{}",
        name.to_ascii_uppercase().replace('-', "_")
    );
    ReferralCategory::from_str_name(&full).filter(|c| *c != ReferralCategory::Unspecified)
}

fn category_names() -> String {
    let names: Vec<String> = (1..)
        .map_while(|i| ReferralCategory::try_from(i).ok())
        .map(|c| format!("\"{}\"", category_short_name(c)))
        .collect();
    names.join(", ")
}

pub(crate) const CODE_RULE: &str =
    "2-63 characters: lowercase letters, digits and '-', starting and ending with a letter or digit";

/// Service codes, question and option ids: `[a-z0-9][a-z0-9-]*[a-z0-9]`, at most 63.
pub fn is_code(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (2..=63).contains(&s.len())
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || c == '-')
}

/// Every field path of jisr.v1.Referral ("subject", "subject.date_of_birth", ...), from the
/// contract's descriptor set, so that a new Referral field is known without code changes.
fn referral_field_paths() -> &'static HashSet<String> {
    static PATHS: OnceLock<HashSet<String>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let mut paths = HashSet::new();
        let Ok(set) = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET) else {
            return paths;
        };
        let mut messages = HashMap::new();
        for file in &set.file {
            let package = file.package();
            for m in &file.message_type {
                messages.insert(format!(".{package}.{}", m.name()), m);
            }
        }
        fn walk(
            messages: &HashMap<String, &prost_types::DescriptorProto>,
            name: &str,
            prefix: &str,
            depth: usize,
            paths: &mut HashSet<String>,
        ) {
            let Some(m) = messages.get(name) else { return };
            for f in &m.field {
                let path = if prefix.is_empty() {
                    f.name().to_string()
                } else {
                    format!("{prefix}.{}", f.name())
                };
                paths.insert(path.clone());
                if depth < 4 && f.type_name().starts_with(".jisr.") {
                    walk(messages, f.type_name(), &path, depth + 1, paths);
                }
            }
        }
        walk(&messages, ".jisr.v1.Referral", "", 0, &mut paths);
        paths
    })
}

fn is_phone(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (7..=15).contains(&d.len()) && !d.starts_with('0') && d.chars().all(|c| c.is_ascii_digit())
    })
}

fn is_email(s: &str) -> bool {
    s.len() <= 254
        && !s.chars().any(char::is_whitespace)
        && s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
}

fn is_https_url(s: &str) -> bool {
    s.starts_with("https://")
        && s.parse::<http::Uri>()
            .ok()
            .is_some_and(|u| u.host().is_some_and(|h| !h.is_empty()))
}

/// One agency as the directory lists it (from its `[[agencies]]` entry).
#[derive(Debug, Clone)]
pub struct AgencyEntry {
    pub id: String,
    pub name_en: String,
    pub name_ar: String,
    pub description_en: String,
    pub description_ar: String,
    pub contacts: Vec<ContactConfig>,
    pub services: Vec<ServiceConfig>,
}

/// What the directory is built from: the agencies' listings, `[calendar]`, `[routing]`.
#[derive(Debug, Clone, Default)]
pub struct DirectoryConfig {
    pub agencies: Vec<AgencyEntry>,
    pub calendar: CalendarConfig,
    pub routing: RoutingConfig,
}

/// The directory's rules serde cannot express; the first broken one is the error.
pub fn validate(config: &DirectoryConfig) -> Result<(), ConfigError> {
    let invalid = |key: String, value: &str, expected: &str| ConfigError::Invalid {
        key,
        origin: Origin::default(),
        value: value.to_string(),
        expected: expected.to_string(),
    };
    let not_blank = |key: String, value: &str, what: &str| {
        if value.trim().is_empty() {
            Err(invalid(key, value, what))
        } else {
            Ok(())
        }
    };

    // Agencies: descriptions, contacts, services.
    let mut service_owner: HashMap<&str, &str> = HashMap::new();
    for (i, agency) in config.agencies.iter().enumerate() {
        let key = |field: &str| format!("agencies[{i}].{field}");
        for (j, c) in agency.contacts.iter().enumerate() {
            let k = key(&format!("contacts[{j}].value"));
            let (ok, expected) = match c.kind {
                ContactKind::Phone => (
                    is_phone(&c.value),
                    "an E.164 phone number such as +97180012345",
                ),
                ContactKind::Email => (
                    is_email(&c.value),
                    "an email address such as info@example.gov.ae",
                ),
                ContactKind::Website => (
                    is_https_url(&c.value),
                    "an https:// URL such as https://www.example.gov.ae",
                ),
                ContactKind::Address => (
                    !c.value.trim().is_empty() && c.value.chars().count() <= 500,
                    "a postal or street address of 1-500 characters",
                ),
            };
            if !ok {
                return Err(invalid(k, &c.value, expected));
            }
        }
        for (s, service) in agency.services.iter().enumerate() {
            let key = |field: &str| key(&format!("services[{s}].{field}"));
            if !is_code(&service.code) {
                return Err(invalid(key("code"), &service.code, CODE_RULE));
            }
            if let Some(owner) = service_owner.insert(&service.code, &agency.id) {
                return Err(invalid(
                    key("code"),
                    &service.code,
                    &format!(
                        "a code no other service has (agency {owner} already offers {})",
                        service.code
                    ),
                ));
            }
            not_blank(key("name_en"), &service.name_en, "a non-empty name")?;
            not_blank(key("name_ar"), &service.name_ar, "a non-empty name")?;
            let mut seen = HashSet::new();
            for (c, name) in service.categories.iter().enumerate() {
                if category_from_short_name(name).is_none() {
                    return Err(invalid(
                        key(&format!("categories[{c}]")),
                        name,
                        &format!("a referral category: {}", category_names()),
                    ));
                }
                if !seen.insert(name) {
                    return Err(invalid(
                        key(&format!("categories[{c}]")),
                        name,
                        "each category listed once",
                    ));
                }
            }
            if let Some(days) = service.time_frame_working_days {
                if !(1..=365).contains(&days) {
                    return Err(invalid(
                        key("time_frame_working_days"),
                        &days.to_string(),
                        "a number of working days from 1 to 365 (leave the key out for a service without a time frame)",
                    ));
                }
            }
            for (f, path) in service.required_fields.iter().enumerate() {
                if !referral_field_paths().contains(path) {
                    return Err(invalid(
                        key(&format!("required_fields[{f}]")),
                        path,
                        "a field path of jisr.v1.Referral such as \"subject.date_of_birth\", \"subject.contact.phone\" or \"consent\"",
                    ));
                }
            }
            for (d, doc) in service.required_documents.iter().enumerate() {
                not_blank(
                    key(&format!("required_documents[{d}]")),
                    doc,
                    "a short description of the document",
                )?;
            }
        }
    }

    // The calendar.
    let cal = &config.calendar;
    for (i, day) in cal.weekend.iter().enumerate() {
        if cal.weekend[..i].contains(day) {
            return Err(invalid(
                format!("calendar.weekend[{i}]"),
                &day.to_string().to_ascii_lowercase(),
                "each weekday listed once",
            ));
        }
    }
    if cal.weekend.len() >= 7 {
        return Err(invalid(
            "calendar.weekend".into(),
            "all seven days",
            "at most six weekend days, so that some days are working days",
        ));
    }
    for (i, day) in cal.holidays.iter().enumerate() {
        if cal.holidays[..i].contains(day) {
            return Err(invalid(
                format!("calendar.holidays[{i}]"),
                &day.to_string(),
                "each holiday listed once",
            ));
        }
    }

    // The routing questionnaire.
    let routing = &config.routing;
    let mut questions: HashMap<&str, &QuestionConfig> = HashMap::new();
    for (q, question) in routing.questions.iter().enumerate() {
        let key = |field: &str| format!("routing.questions[{q}].{field}");
        if !is_code(&question.id) {
            return Err(invalid(key("id"), &question.id, CODE_RULE));
        }
        if questions.insert(&question.id, question).is_some() {
            return Err(invalid(
                key("id"),
                &question.id,
                "an id no other question has",
            ));
        }
        not_blank(key("text_en"), &question.text_en, "a non-empty question")?;
        not_blank(key("text_ar"), &question.text_ar, "a non-empty question")?;
        if question.options.len() < 2 {
            return Err(invalid(
                key("options"),
                &format!("{} option(s)", question.options.len()),
                "at least two [[routing.questions.options]] to choose from",
            ));
        }
        for (o, option) in question.options.iter().enumerate() {
            let key = |field: &str| key(&format!("options[{o}].{field}"));
            if !is_code(&option.id) {
                return Err(invalid(key("id"), &option.id, CODE_RULE));
            }
            if question.options[..o].iter().any(|p| p.id == option.id) {
                return Err(invalid(
                    key("id"),
                    &option.id,
                    "an id no other option of this question has",
                ));
            }
            not_blank(key("label_en"), &option.label_en, "a non-empty label")?;
            not_blank(key("label_ar"), &option.label_ar, "a non-empty label")?;
        }
    }
    // A registry without any service (agencies given without their catalogue, e.g. by a
    // JISR_AGENCIES override) has nothing to recommend: the rules then stay inactive
    // rather than fail the start, and Directory::from_config says so in the log.
    let has_catalogue = !service_owner.is_empty();
    for (r, rule) in routing.rules.iter().enumerate() {
        let key = |field: &str| format!("routing.rules[{r}].{field}");
        if has_catalogue && !service_owner.contains_key(rule.service.as_str()) {
            return Err(invalid(
                key("service"),
                &rule.service,
                "the code of a service in some agency's [[agencies.services]]",
            ));
        }
        if rule.when.is_empty() {
            return Err(invalid(
                key("when"),
                "{}",
                "at least one condition such as { main-need = \"housing-need\" }; a rule without conditions would recommend its service to every caller",
            ));
        }
        for (question_id, options) in &rule.when {
            let k = key(&format!("when.{question_id}"));
            let Some(question) = questions.get(question_id.as_str()) else {
                let known: Vec<&str> = routing.questions.iter().map(|q| q.id.as_str()).collect();
                return Err(invalid(
                    k,
                    question_id,
                    &format!(
                        "the id of a [[routing.questions]] entry: {}",
                        known.join(", ")
                    ),
                ));
            };
            if options.0.is_empty() {
                return Err(invalid(
                    k,
                    "[]",
                    "at least one option id: with none the rule can never match",
                ));
            }
            for (o, option) in options.0.iter().enumerate() {
                if !question.options.iter().any(|x| &x.id == option) {
                    let known: Vec<&str> = question.options.iter().map(|x| x.id.as_str()).collect();
                    return Err(invalid(
                        k,
                        option,
                        &format!(
                            "an option of question {question_id}: {}; with another the rule can never match",
                            known.join(", ")
                        ),
                    ));
                }
                if options.0[..o].contains(option) {
                    return Err(invalid(k, option, "each option listed once"));
                }
            }
        }
        if !(rule.weight > 0.0 && rule.weight <= 1.0) {
            return Err(invalid(
                key("weight"),
                &rule.weight.to_string(),
                "a number greater than 0 and at most 1",
            ));
        }
        not_blank(key("reason_en"), &rule.reason_en, "a non-empty reason")?;
        not_blank(key("reason_ar"), &rule.reason_ar, "a non-empty reason")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_short_names_round_trip() {
        assert_eq!(
            category_short_name(ReferralCategory::DomesticViolence),
            "domestic-violence"
        );
        assert_eq!(
            category_from_short_name("domestic-violence"),
            Some(ReferralCategory::DomesticViolence)
        );
        assert_eq!(
            category_from_short_name("housing"),
            Some(ReferralCategory::Housing)
        );
        for bad in ["", "unspecified", "HOUSING", "domestic_violence", "shelter"] {
            assert_eq!(category_from_short_name(bad), None, "{bad}");
        }
        assert!(category_names().contains("\"elderly-care\""));
    }

    #[test]
    fn codes_dates_and_contacts() {
        assert!(is_code("housing-support"));
        assert!(is_code("yes"));
        assert!(!is_code("-x"));
        assert!(!is_code("Housing"));
        assert!(!is_code("a"));
        assert!(!is_code("a_b"));
        assert_eq!(
            parse_date("2026-12-02"),
            Some(Date::from_calendar_date(2026, time::Month::December, 2).unwrap())
        );
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("2026-2-03"), None);
        assert_eq!(parse_date("+026-12-02"), None);
        assert!(is_phone("+97180012345"));
        assert!(!is_phone("080012345"));
        assert!(is_email("info@housing.gov.ae"));
        assert!(!is_email("info@housing"));
        assert!(is_https_url("https://www.example.gov.ae/services"));
        assert!(!is_https_url("http://www.example.gov.ae"));
    }

    const SAMPLE: &str = include_str!("../../config/jisr.toml");

    /// The error of the sample config with the first `from` replaced by `to`.
    fn err(from: &str, to: &str) -> String {
        assert!(SAMPLE.contains(from), "the sample has {from:?}");
        let text = SAMPLE.replacen(from, to, 1);
        crate::server::config::Config::parse(std::path::Path::new("x"), &text, Vec::new())
            .expect_err("refused")
            .to_string()
    }

    fn assert_names(e: &str, key: &str, value: &str) {
        assert!(
            e.contains(&format!("`{key}`")) && e.contains(value),
            "expected key {key} and value {value} in: {e}"
        );
    }

    #[test]
    fn routing_rules_must_name_known_services_questions_and_options() {
        let e = err("service = \"urgent-protection\"", "service = \"rescue\"");
        assert_names(&e, "routing.rules[0].service", "rescue");
        assert!(e.contains("[[agencies.services]]"), "{e}");
        let e = err(
            "when = { main-need = \"housing-need\" }",
            "when = { main-nede = \"housing-need\" }",
        );
        assert_names(&e, "routing.rules[7].when.main-nede", "main-nede");
        assert!(
            e.contains("main-need, immediate-danger, regular-income"),
            "{e}"
        );
        let e = err(
            "immediate-danger = \"yes\" }",
            "immediate-danger = \"maybe\" }",
        );
        assert_names(&e, "routing.rules[0].when.immediate-danger", "maybe");
        assert!(e.contains("yes, no") && e.contains("never match"), "{e}");
        let e = err(
            "when = { main-need = \"employment\" }",
            "when = { main-need = [] }",
        );
        assert_names(&e, "routing.rules[17].when.main-need", "[]");
        assert!(e.contains("never match"), "{e}");
        let e = err("when = { main-need = \"employment\" }", "when = {}");
        assert_names(&e, "routing.rules[17].when", "{}");
        let e = err("weight = 0.9", "weight = 0");
        assert_names(&e, "routing.rules[4].weight", "0");
        let e = err("weight = 0.9", "weight = 1.5");
        assert_names(&e, "routing.rules[4].weight", "1.5");
        let e = err(
            "reason_en = \"The police receive reports of domestic violence.\"",
            "reason_en = \" \"",
        );
        assert_names(&e, "routing.rules[1].reason_en", " ");
    }

    #[test]
    fn without_any_service_the_rules_are_not_checked_against_the_catalogue() {
        // The registry replaced by the environment, as an operator may do: the sample's
        // questionnaire stays valid but inactive.
        let agencies = "[{id=\"social-services\",name_en=\"Social Services\",name_ar=\"الخدمات\"}]";
        let config = crate::server::config::Config::parse(
            std::path::Path::new("x"),
            SAMPLE,
            [
                ("JISR_AGENCIES".to_string(), agencies.to_string()),
                // The sample's joint services name agencies this registry does not have.
                ("JISR_JOINT_SERVICES".to_string(), "[]".to_string()),
            ],
        )
        .expect("starts");
        assert_eq!(config.agencies.len(), 1);
        let dir = crate::directory::Directory::from_config(&config.directory()).unwrap();
        let advice = dir.questionnaire().advise(
            &[("main-need".to_string(), "housing-need".to_string())]
                .into_iter()
                .collect(),
        );
        assert!(advice.recommendations.is_empty() && advice.complete);
        // Any service at all, and every rule must name a known one.
        let agencies = "[{id=\"housing\",name_en=\"Housing\",name_ar=\"الإسكان\",\
                        services=[{code=\"housing-support\",name_en=\"Housing support\",name_ar=\"دعم الإسكان\"}]}]";
        let e = crate::server::config::Config::parse(
            std::path::Path::new("x"),
            SAMPLE,
            [
                ("JISR_AGENCIES".to_string(), agencies.to_string()),
                // The sample's joint services name agencies this registry does not have.
                ("JISR_JOINT_SERVICES".to_string(), "[]".to_string()),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("routing.rules[0].service") && e.contains("urgent-protection"),
            "{e}"
        );
    }

    #[test]
    fn routing_ids_must_be_unique_and_well_formed() {
        let e = err("id = \"regular-income\"", "id = \"immediate-danger\"");
        assert_names(&e, "routing.questions[2].id", "immediate-danger");
        let e = err(
            "{ id = \"no\", label_en = \"No\"",
            "{ id = \"yes\", label_en = \"No\"",
        );
        assert_names(&e, "routing.questions[1].options[1].id", "yes");
        let e = err("id = \"main-need\"", "id = \"Main Need\"");
        assert_names(&e, "routing.questions[0].id", "Main Need");
    }

    #[test]
    fn services_are_checked() {
        let e = err("code = \"financial-aid\"", "code = \"housing-support\"");
        assert_names(&e, "agencies[8].services[0].code", "housing-support");
        assert!(e.contains("housing already offers"), "{e}");
        let e = err("code = \"housing-support\"", "code = \"Housing Support\"");
        assert_names(&e, "agencies[4].services[0].code", "Housing Support");
        let e = err("categories = [\"housing\"]", "categories = [\"shelter\"]");
        assert_names(&e, "agencies[4].services[0].categories[0]", "shelter");
        assert!(e.contains("\"domestic-violence\""), "{e}");
        let e = err(
            "time_frame_working_days = 30",
            "time_frame_working_days = 0",
        );
        assert_names(&e, "agencies[4].services[0].time_frame_working_days", "0");
        let e = err(
            "time_frame_working_days = 30",
            "time_frame_working_days = 366",
        );
        assert!(e.contains("1 to 365"), "{e}");
        let e = err(
            "required_fields = [\"subject.date_of_birth\", \"subject.contact.phone\", \"consent\"]",
            "required_fields = [\"subject.dob\"]",
        );
        assert_names(
            &e,
            "agencies[0].services[0].required_fields[0]",
            "subject.dob",
        );
        let e = err("name_ar = \"دعم الإسكان\"", "name_ar = \"\"");
        assert_names(&e, "agencies[4].services[0].name_ar", "\"\"");
        let e = err("code = \"housing-support\"", "kode = \"housing-support\"");
        assert!(e.contains("kode"), "unknown keys are refused: {e}");
    }

    #[test]
    fn contacts_are_checked() {
        let e = err(
            "{ kind = \"phone\", value = \"+97165011111\" }",
            "{ kind = \"phone\", value = \"06 501 1111\" }",
        );
        assert_names(&e, "agencies[0].contacts[0].value", "06 501 1111");
        assert!(e.contains("E.164"), "{e}");
        let e = err(
            "value = \"https://social-services.example.gov.ae\"",
            "value = \"social-services.example.gov.ae\"",
        );
        assert_names(
            &e,
            "agencies[0].contacts[2].value",
            "social-services.example.gov.ae",
        );
        let e = err(
            "{ kind = \"phone\", value = \"+97165011111\" }",
            "{ kind = \"fax\", value = \"+97165011111\" }",
        );
        assert!(
            e.contains("agencies[0].contacts[0].kind") && e.contains("fax"),
            "{e}"
        );
    }

    #[test]
    fn the_calendar_is_checked() {
        let e = err(
            "weekend = [\"saturday\", \"sunday\"]",
            "weekend = [\"saturday\", \"sundae\"]",
        );
        assert!(
            e.contains("calendar.weekend[1]") && e.contains("sundae") && e.contains("weekday name"),
            "{e}"
        );
        let e = err(
            "weekend = [\"saturday\", \"sunday\"]",
            "weekend = [\"saturday\", \"Saturday\"]",
        );
        assert_names(&e, "calendar.weekend[1]", "saturday");
        let e = err("\"2026-05-26\", # Arafat", "\"2026-02-30\", # Arafat");
        assert!(
            e.contains("calendar.holidays[4]")
                && e.contains("2026-02-30")
                && e.contains("YYYY-MM-DD"),
            "{e}"
        );
        let e = err("\"2026-05-26\", # Arafat", "\"2026-01-01\", # Arafat");
        assert_names(&e, "calendar.holidays[4]", "2026-01-01");
        let e = err(
            "weekend = [\"saturday\", \"sunday\"]",
            "weekend = [\"monday\", \"tuesday\", \"wednesday\", \"thursday\", \"friday\", \"saturday\", \"sunday\"]",
        );
        assert!(
            e.contains("calendar.weekend") && e.contains("at most six"),
            "{e}"
        );
    }

    #[test]
    fn referral_field_paths_come_from_the_contract() {
        let paths = referral_field_paths();
        for p in [
            "consent",
            "subject.date_of_birth",
            "subject.contact.phone",
            "attachments",
        ] {
            assert!(paths.contains(p), "{p}");
        }
        assert!(!paths.contains("subject.dob"));
    }
}
