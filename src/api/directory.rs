//! jisr.v1.DirectoryService: the agencies and services of the configuration, free-text
//! search over the services, and guided routing (`crate::directory` holds the logic).
//! Every registered agency may read the directory.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::paging;
use super::validate::Violations;
use crate::common::ApiError;
use crate::config::ConfigError;
use crate::directory::config::DirectoryConfig;
use crate::directory::search::{self, Query};
use crate::directory::Directory;
use crate::layers as auth;
use crate::pb::v1::directory_service_server::DirectoryService;
use crate::pb::v1::*;

const AGENCIES_DEFAULT_PAGE_SIZE: i32 = 50;
const AGENCIES_MAX_PAGE_SIZE: i32 = 500;
const SEARCH_DEFAULT_PAGE_SIZE: i32 = 20;
const SEARCH_MAX_PAGE_SIZE: i32 = 100;
const MAX_QUERY_CHARS: usize = 200;
const MAX_ANSWERS: usize = 100;

#[derive(Clone)]
pub struct DirectoryApi {
    directory: Arc<Directory>,
}

impl DirectoryApi {
    pub fn new(config: &DirectoryConfig) -> Result<DirectoryApi, ConfigError> {
        Ok(DirectoryApi {
            directory: Arc::new(Directory::from_config(config)?),
        })
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }
}

#[tonic::async_trait]
impl DirectoryService for DirectoryApi {
    async fn list_agencies(
        &self,
        request: Request<ListAgenciesRequest>,
    ) -> Result<Response<ListAgenciesResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.list(request.into_inner()))
    }

    async fn search_services(
        &self,
        request: Request<SearchServicesRequest>,
    ) -> Result<Response<SearchServicesResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.search(request.into_inner()))
    }

    async fn recommend_agency(
        &self,
        request: Request<RecommendAgencyRequest>,
    ) -> Result<Response<RecommendAgencyResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.recommend(request.into_inner()))
    }
}

/// page_size within 0..=max (0: the default); the limit to use.
fn page_size(v: &mut Violations, value: i32, default: i32, max: i32) -> usize {
    v.check(
        (0..=max).contains(&value),
        "page_size",
        format!("must be between 0 and {max} (0 means {default})"),
    );
    if value <= 0 || value > max {
        default as usize
    } else {
        value as usize
    }
}

impl DirectoryApi {
    fn list(&self, req: ListAgenciesRequest) -> Result<ListAgenciesResponse, ApiError> {
        let mut v = Violations::default();
        let limit = page_size(
            &mut v,
            req.page_size,
            AGENCIES_DEFAULT_PAGE_SIZE,
            AGENCIES_MAX_PAGE_SIZE,
        );
        const FINGERPRINT: &str = "agencies";
        let after = if req.page_token.is_empty() {
            None
        } else {
            let after = paging::decode(&req.page_token, FINGERPRINT);
            v.check(
                after.is_some(),
                "page_token",
                "is not a token ListAgencies returned; start again without page_token",
            );
            after
        };
        v.finish()?;
        let rest: Vec<&Agency> = self
            .directory
            .agencies()
            .iter()
            .filter(|a| after.as_deref().is_none_or(|after| a.id.as_str() > after))
            .collect();
        let more = rest.len() > limit;
        let agencies: Vec<Agency> = rest.into_iter().take(limit).cloned().collect();
        let next_page_token = match agencies.last() {
            Some(last) if more => paging::encode(&last.id, FINGERPRINT),
            _ => String::new(),
        };
        Ok(ListAgenciesResponse {
            agencies,
            next_page_token,
        })
    }

    fn search(&self, req: SearchServicesRequest) -> Result<SearchServicesResponse, ApiError> {
        let mut v = Violations::default();
        v.max_len("query", &req.query, MAX_QUERY_CHARS);
        let language = v
            .enum_value::<Language>("language", req.language, false, "a Language")
            .and_then(|l| match l {
                Language::English => Some(search::Language::English),
                Language::Arabic => Some(search::Language::Arabic),
                Language::Unspecified => None,
            });
        let agency = (!req.agency_id.is_empty()).then_some(req.agency_id.as_str());
        if let Some(id) = agency {
            v.check(
                self.directory.agency(id).is_some(),
                "agency_id",
                "is not a registered agency; ListAgencies lists them",
            );
        }
        // An empty query lists every service; text with nothing to search for is refused.
        let query = if req.query.trim().is_empty() {
            None
        } else {
            let query = Query::parse(&req.query, language);
            v.check(
                query.is_some(),
                "query",
                "has no letters or digits to search for; send words in English or Arabic, or an empty query to list every service",
            );
            query
        };
        let limit = page_size(
            &mut v,
            req.page_size,
            SEARCH_DEFAULT_PAGE_SIZE,
            SEARCH_MAX_PAGE_SIZE,
        );
        let fingerprint = format!(
            "services|{:?}|{:?}|{}",
            query.as_ref().map(|q| &q.terms),
            query.as_ref().map(|q| &q.languages),
            req.agency_id
        );
        let offset = if req.page_token.is_empty() {
            0
        } else {
            let offset =
                paging::decode(&req.page_token, &fingerprint).and_then(|k| k.parse::<usize>().ok());
            v.check(
                offset.is_some(),
                "page_token",
                "is not a token this search returned for this query and filters; start again without page_token",
            );
            offset.unwrap_or(0)
        };
        v.finish()?;
        let hits = self.directory.search(query.as_ref(), agency);
        let services = self.directory.services();
        let results: Vec<ServiceSearchResult> = hits
            .iter()
            .skip(offset)
            .take(limit)
            .map(|h| ServiceSearchResult {
                service: Some(services[h.index].clone()),
                score: h.score,
            })
            .collect();
        let end = offset + results.len();
        let next_page_token = if end < hits.len() {
            paging::encode(&end.to_string(), &fingerprint)
        } else {
            String::new()
        };
        Ok(SearchServicesResponse {
            results,
            next_page_token,
        })
    }

    fn recommend(&self, req: RecommendAgencyRequest) -> Result<RecommendAgencyResponse, ApiError> {
        let questionnaire = self.directory.questionnaire();
        let mut v = Violations::default();
        if req.answers.len() > MAX_ANSWERS {
            v.add(
                "answers",
                format!(
                    "has {} entries; at most {MAX_ANSWERS} are allowed",
                    req.answers.len()
                ),
            );
            return Err(v.into_error());
        }
        let mut answers: HashMap<String, String> = HashMap::new();
        for (i, a) in req.answers.iter().enumerate() {
            let q_field = format!("answers[{i}].question_id");
            let o_field = format!("answers[{i}].option_id");
            let Some(question) = questionnaire.question(&a.question_id) else {
                let known: Vec<&str> = questionnaire
                    .questions()
                    .iter()
                    .map(|q| q.id.as_str())
                    .collect();
                if a.question_id.is_empty() {
                    v.add(q_field, format!("is required: one of {}", known.join(", ")));
                } else {
                    v.add(
                        q_field,
                        format!(
                            "{:?} is not a routing question; the questions are {}",
                            a.question_id,
                            known.join(", ")
                        ),
                    );
                }
                continue;
            };
            if answers.contains_key(&a.question_id) {
                v.add(
                    q_field,
                    format!(
                        "answers question {} a second time; answer each question once",
                        a.question_id
                    ),
                );
                continue;
            }
            if !question.options.iter().any(|o| o.id == a.option_id) {
                let known: Vec<&str> = question.options.iter().map(|o| o.id.as_str()).collect();
                let what = if a.option_id.is_empty() {
                    "is required".to_string()
                } else {
                    format!(
                        "{:?} is not an option of question {}",
                        a.option_id, question.id
                    )
                };
                v.add(
                    o_field,
                    format!("{what}; its options are {}", known.join(", ")),
                );
                continue;
            }
            answers.insert(a.question_id.clone(), a.option_id.clone());
        }
        v.finish()?;
        let advice = questionnaire.advise(&answers);
        Ok(RecommendAgencyResponse {
            recommendations: advice.recommendations,
            next_questions: advice.next_questions,
            complete: advice.complete,
        })
    }
}
