//! The directory of agencies and services, built once from the configuration: what
//! DirectoryService answers (ListAgencies, SearchServices, RecommendAgency), and the
//! working-day calendar that services' time frames are counted in.
//!
//! - `config`: the `[[agencies.services]]`, `[calendar]` and `[routing]` settings;
//! - `search`: normalization and ranking of free-text queries;
//! - `routing`: the guided questionnaire;
//! - `calendar`: working days.

pub mod calendar;
pub mod config;
pub mod routing;
pub mod search;

use std::collections::HashMap;

use crate::config::{ConfigError, Origin};
use crate::pb::v1::{Agency, AgencyService, ContactChannel, ContactChannelKind, ReferralCategory};
use calendar::Calendar;
use config::{category_from_short_name, ContactKind};
use routing::Questionnaire;
use search::{Document, FieldKind, Language, Query};

/// Everything the directory serves, ready to answer.
#[derive(Debug, Clone)]
pub struct Directory {
    /// Ordered by id.
    agencies: Vec<Agency>,
    /// Every service, ordered by agency id, then as configured.
    services: Vec<AgencyService>,
    /// Parallel to `services`.
    documents: Vec<Document>,
    by_code: HashMap<String, usize>,
    questionnaire: Questionnaire,
    calendar: Calendar,
}

/// One search result: an index into [`Directory::services`] and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub index: usize,
    pub score: f64,
}

impl Directory {
    /// The directory of a configuration (checked again here, since a parsed
    /// configuration may have been changed in code since).
    pub fn from_config(config: &config::DirectoryConfig) -> Result<Directory, ConfigError> {
        config::validate(config)?;
        let calendar =
            Calendar::from_config(&config.calendar).map_err(|e| ConfigError::Invalid {
                key: "calendar.weekend".into(),
                origin: Origin::default(),
                value: format!("{:?}", config.calendar.weekend),
                expected: e.to_string(),
            })?;
        let mut agencies: Vec<Agency> = config
            .agencies
            .iter()
            .map(|a| Agency {
                id: a.id.clone(),
                name_en: a.name_en.clone(),
                name_ar: a.name_ar.clone(),
                description: a.description_en.trim().to_string(),
                description_ar: a.description_ar.trim().to_string(),
                contacts: a
                    .contacts
                    .iter()
                    .map(|c| ContactChannel {
                        kind: match c.kind {
                            ContactKind::Phone => ContactChannelKind::Phone,
                            ContactKind::Email => ContactChannelKind::Email,
                            ContactKind::Website => ContactChannelKind::Website,
                            ContactKind::Address => ContactChannelKind::Address,
                        } as i32,
                        value: c.value.trim().to_string(),
                    })
                    .collect(),
                services: a
                    .services
                    .iter()
                    .map(|s| AgencyService {
                        code: s.code.clone(),
                        agency_id: a.id.clone(),
                        name_en: s.name_en.trim().to_string(),
                        name_ar: s.name_ar.trim().to_string(),
                        description_en: s.description_en.trim().to_string(),
                        description_ar: s.description_ar.trim().to_string(),
                        categories: s
                            .categories
                            .iter()
                            .filter_map(|c| category_from_short_name(c))
                            .map(|c| c as i32)
                            .collect(),
                        time_frame_working_days: s.time_frame_working_days.unwrap_or(0),
                        required_fields: s.required_fields.clone(),
                        required_documents: s
                            .required_documents
                            .iter()
                            .map(|d| d.trim().to_string())
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        agencies.sort_by(|a, b| a.id.cmp(&b.id));

        let mut services = Vec::new();
        let mut documents = Vec::new();
        for agency in &agencies {
            for service in &agency.services {
                documents.push(document(agency, service));
                services.push(service.clone());
            }
        }
        let by_code: HashMap<String, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.code.clone(), i))
            .collect();
        if services.is_empty() && !config.routing.rules.is_empty() {
            tracing::warn!(
                rules = config.routing.rules.len(),
                "no agency lists [[agencies.services]]: the routing questionnaire recommends nothing"
            );
        }
        let questionnaire = Questionnaire::from_config(&config.routing, |code| {
            by_code.get(code).map(|i| services[*i].agency_id.clone())
        });
        Ok(Directory {
            agencies,
            services,
            documents,
            by_code,
            questionnaire,
            calendar,
        })
    }

    /// Every agency, ordered by id, with its services.
    pub fn agencies(&self) -> &[Agency] {
        &self.agencies
    }

    /// Every service, ordered by agency id and then as configured.
    pub fn services(&self) -> &[AgencyService] {
        &self.services
    }

    /// The service with this code (codes are unique across agencies).
    pub fn service(&self, code: &str) -> Option<&AgencyService> {
        self.by_code.get(code).map(|i| &self.services[*i])
    }

    pub fn agency(&self, id: &str) -> Option<&Agency> {
        self.agencies
            .binary_search_by(|a| a.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.agencies[i])
    }

    pub fn questionnaire(&self) -> &Questionnaire {
        &self.questionnaire
    }

    /// The working-day calendar of `[calendar]`, for time frames.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// Services matching `query`, best first; equal scores in the order of
    /// [`Directory::services`]. Without a query, every service (score 0) in that order.
    /// `agency` keeps only that agency's services.
    pub fn search(&self, query: Option<&Query>, agency: Option<&str>) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| agency.is_none_or(|a| s.agency_id == a))
            .filter_map(|(index, _)| match query {
                None => Some(Hit { index, score: 0.0 }),
                Some(q) => {
                    let score = self.documents[index].score(q);
                    (score > 0.0).then_some(Hit { index, score })
                }
            })
            .collect();
        // Stable: ties stay ordered by agency id, then as configured.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits
    }
}

/// English and Arabic labels of a category, for search.
pub fn category_labels(category: ReferralCategory) -> (&'static str, &'static str) {
    use ReferralCategory as C;
    match category {
        C::ChildProtection => ("child protection", "حماية الطفل"),
        C::DomesticViolence => ("domestic violence", "العنف الأسري"),
        C::FamilyDispute => ("family dispute", "النزاع الأسري"),
        C::Housing => ("housing", "الإسكان"),
        C::FinancialHardship => ("financial hardship", "الضائقة المالية"),
        C::Employment => ("employment", "التوظيف"),
        C::Health => ("health", "الصحة"),
        C::Disability => ("disability", "الإعاقة"),
        C::ElderlyCare => ("elderly care", "رعاية كبار السن"),
        C::Juvenile => ("juvenile", "الأحداث"),
        C::Other => ("other", "أخرى"),
        C::Unspecified => ("", ""),
    }
}

fn document(agency: &Agency, service: &AgencyService) -> Document {
    let mut doc = Document::default()
        .field(FieldKind::Name, Language::English, &service.name_en)
        .field(FieldKind::Name, Language::Arabic, &service.name_ar);
    for c in &service.categories {
        let (en, ar) = category_labels(ReferralCategory::try_from(*c).unwrap_or_default());
        doc = doc.field(FieldKind::Category, Language::English, en).field(
            FieldKind::Category,
            Language::Arabic,
            ar,
        );
    }
    doc.field(
        FieldKind::Description,
        Language::English,
        &service.description_en,
    )
    .field(
        FieldKind::Description,
        Language::Arabic,
        &service.description_ar,
    )
    .field(FieldKind::Agency, Language::English, &agency.name_en)
    .field(FieldKind::Agency, Language::Arabic, &agency.name_ar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sample() -> config::DirectoryConfig {
        crate::server::config::Config::parse(
            Path::new("config/jisr.toml"),
            include_str!("../../config/jisr.toml"),
            Vec::new(),
        )
        .expect("sample config")
        .directory()
    }

    fn codes(dir: &Directory, q: &str) -> Vec<String> {
        let query = Query::parse(q, None).unwrap();
        dir.search(Some(&query), None)
            .iter()
            .map(|h| dir.services()[h.index].code.clone())
            .collect()
    }

    #[test]
    fn the_sample_directory_is_ordered_and_complete() {
        let dir = Directory::from_config(&sample()).unwrap();
        let ids: Vec<&str> = dir.agencies().iter().map(|a| a.id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(
            dir.agencies().iter().all(|a| !a.services.is_empty()),
            "every agency offers a service"
        );
        assert!(dir
            .services()
            .iter()
            .all(|s| s.time_frame_working_days > 0 && !s.categories.is_empty()));
        assert_eq!(dir.service("housing-support").unwrap().agency_id, "housing");
        assert_eq!(
            dir.agency("police").unwrap().name_en,
            "Police General Command"
        );
        assert!(dir.agency("nowhere").is_none());
        assert!(!dir.calendar().is_working_day(
            time::Date::from_calendar_date(2026, time::Month::December, 2).unwrap()
        ));
    }

    #[test]
    fn search_ranks_the_sample_catalogue() {
        let dir = Directory::from_config(&sample()).unwrap();
        assert_eq!(codes(&dir, "housing support")[0], "housing-support");
        assert_eq!(codes(&dir, "إسكان")[0], codes(&dir, "اسكان")[0]);
        assert_eq!(codes(&dir, "الإِسْكَان"), codes(&dir, "اسكان"));
        let counselling = codes(&dir, "counselling");
        assert_eq!(counselling[0], "family-counselling");
        assert!(counselling.contains(&"family-reconciliation".to_string()));
        // Without a query: every service, in directory order.
        let all = dir.search(None, None);
        assert_eq!(all.len(), dir.services().len());
        assert!(all.windows(2).all(|w| w[0].index < w[1].index));
        let police = dir.search(None, Some("police"));
        assert!(police
            .iter()
            .all(|h| dir.services()[h.index].agency_id == "police"));
    }
}
