//! DirectoryService over the wire, against the sample catalogue of config/jisr.toml.

use jisr::pb::v1::directory_service_client::DirectoryServiceClient;
use jisr::pb::v1::*;
use jisr::server::Gateway;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::common::*;

async fn directory(env: &TestEnv, gw: &Gateway, agency: &str) -> DirectoryServiceClient<Channel> {
    let channel = env
        .channel(gw, &env.agency_cert(agency))
        .await
        .expect("agency connects");
    DirectoryServiceClient::new(channel)
}

/// The fields named by the BadRequest details of an INVALID_ARGUMENT status.
fn violations(err: &Status) -> Vec<(String, String)> {
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    err.get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}

fn fields(err: &Status) -> Vec<String> {
    violations(err).into_iter().map(|(f, _)| f).collect()
}

async fn search(
    client: &mut DirectoryServiceClient<Channel>,
    query: &str,
) -> Vec<ServiceSearchResult> {
    client
        .search_services(SearchServicesRequest {
            query: query.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("search {query:?}: {e:?}"))
        .into_inner()
        .results
}

fn codes(results: &[ServiceSearchResult]) -> Vec<String> {
    results
        .iter()
        .map(|r| r.service.as_ref().unwrap().code.clone())
        .collect()
}

fn answers(pairs: &[(&str, &str)]) -> RecommendAgencyRequest {
    RecommendAgencyRequest {
        answers: pairs
            .iter()
            .map(|(q, o)| QuestionAnswer {
                question_id: q.to_string(),
                option_id: o.to_string(),
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_agencies_returns_every_agency_with_arabic_names_services_and_pages() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut client = directory(&env, &gw, "charity").await;

    let all = client
        .list_agencies(ListAgenciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.next_page_token.is_empty(), "one page of the default 50");
    let ids: Vec<&str> = all.agencies.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), env.config.agencies.len());
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ordered by id");
    for id in [
        // The social-case agencies...
        "social-services",
        "family-court",
        "police",
        "suburbs-affairs",
        "housing",
        "human-resources",
        "digital",
        "family-development",
        "charity",
        // ...and those behind a building completion certificate.
        "city-municipality",
        "electricity-water-gas",
        "planning-survey",
        "municipal-affairs",
        "civil-defence",
        "roads-transport",
        "telecom",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    for a in &all.agencies {
        assert!(
            a.name_ar
                .chars()
                .any(|c| ('\u{0600}'..='\u{06FF}').contains(&c)),
            "{} has an Arabic name: {:?}",
            a.id,
            a.name_ar
        );
        assert!(
            !a.description.is_empty() && !a.description_ar.is_empty(),
            "{}",
            a.id
        );
        assert!(!a.contacts.is_empty(), "{} has contacts", a.id);
        assert!(!a.services.is_empty(), "{} offers services", a.id);
        assert!(a.services.iter().all(|s| s.agency_id == a.id));
    }
    let housing = all.agencies.iter().find(|a| a.id == "housing").unwrap();
    assert_eq!(housing.name_ar, "دائرة الإسكان");
    assert!(housing
        .contacts
        .iter()
        .any(|c| c.kind() == ContactChannelKind::Phone && c.value.starts_with("+971")));
    let support = housing
        .services
        .iter()
        .find(|s| s.code == "housing-support")
        .expect("the housing support service");
    assert_eq!(support.name_ar, "دعم الإسكان");
    assert_eq!(support.categories, [ReferralCategory::Housing as i32]);
    assert_eq!(support.time_frame_working_days, 30);
    assert!(support.required_fields.contains(&"consent".to_string()));
    assert!(!support.required_documents.is_empty());
    // Building-certificate agencies carry their clearance service and its time frame.
    let civil_defence = all
        .agencies
        .iter()
        .find(|a| a.id == "civil-defence")
        .unwrap();
    assert_eq!(civil_defence.services[0].code, "fire-safety-clearance");
    assert!(civil_defence.services[0].time_frame_working_days > 0);

    // Paging: pages of 5 add up to the whole list, in order.
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_agencies(ListAgenciesRequest {
                page_size: 5,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.agencies.len() <= 5);
        paged.extend(page.agencies);
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, all.agencies);
    assert_eq!(pages, all.agencies.len().div_ceil(5));

    let err = client
        .list_agencies(ListAgenciesRequest {
            page_size: 501,
            page_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["page_size", "page_token"]);

    // The service reports healthy.
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let status = HealthClient::new(env.channel(&gw, &env.agency_cert("police")).await.unwrap())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "jisr.v1.DirectoryService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_services_by_english_and_arabic_queries() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut client = directory(&env, &gw, "social-services").await;

    // English, any case.
    let results = search(&mut client, "Housing SUPPORT").await;
    let best = results[0].service.as_ref().unwrap();
    assert_eq!(best.code, "housing-support");
    assert_eq!(best.agency_id, "housing");
    assert!(results[0].score > 0.0);
    assert!(
        results.windows(2).all(|w| w[0].score >= w[1].score),
        "best match first"
    );

    // Arabic: with and without the hamza on the alef, with diacritics, with tatweel, with the
    // article: all find the same housing services, in the same order and with the same scores.
    let plain = search(&mut client, "اسكان").await;
    assert_eq!(codes(&plain)[0], "housing-support");
    for variant in ["إسكان", "الإسكان", "الإِسْكَانُ", "إســكان", "آسكان"]
    {
        let results = search(&mut client, variant).await;
        assert_eq!(codes(&results), codes(&plain), "{variant}");
        let scores: Vec<f64> = results.iter().map(|r| r.score).collect();
        let plain_scores: Vec<f64> = plain.iter().map(|r| r.score).collect();
        assert_eq!(scores, plain_scores, "{variant}");
    }
    // Taa marbuta and alef maqsura are folded too.
    let results = search(&mut client, "حمايه الطفل").await;
    assert_eq!(codes(&results)[0], "child-protection-case");
    let results = search(&mut client, "شهادة إنجاز المبنى").await;
    assert_eq!(codes(&results)[0], "digital-completion-certificate");

    // Accents do not matter in English either.
    assert_eq!(
        codes(&search(&mut client, "Fîre safety").await)[0],
        "fire-safety-clearance"
    );

    // The language hint restricts which fields are compared.
    let none = client
        .search_services(SearchServicesRequest {
            query: "اسكان".into(),
            language: Language::English as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.results.is_empty());
    let arabic = client
        .search_services(SearchServicesRequest {
            query: "اسكان".into(),
            language: Language::Arabic as i32,
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(codes(&arabic.results), codes(&plain));

    // Only one agency's services.
    let police = client
        .search_services(SearchServicesRequest {
            query: "protection".into(),
            agency_id: "police".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!police.results.is_empty());
    assert!(police
        .results
        .iter()
        .all(|r| r.service.as_ref().unwrap().agency_id == "police"));
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_ranks_a_name_match_above_a_description_match() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut client = directory(&env, &gw, "housing").await;
    // "counselling" is in the name of the Family Development Office's service and only in the
    // description of the Family Court's reconciliation service.
    let results = search(&mut client, "counselling").await;
    let codes = codes(&results);
    assert_eq!(codes[0], "family-counselling");
    let reconciliation = codes
        .iter()
        .position(|c| c == "family-reconciliation")
        .expect("the description match is found too");
    assert!(results[0].score > results[reconciliation].score);
    // The same in Arabic: "الإرشاد" names one service and describes the other.
    let results = search(&mut client, "الارشاد").await;
    assert_eq!(
        results[0].service.as_ref().unwrap().code,
        "family-counselling"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_checks_the_query_and_pages_through_every_service() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut client = directory(&env, &gw, "police").await;

    // Text with nothing to search for, a query over 200 characters, an unknown agency, an
    // unknown language, a page size over 100: each named.
    for (request, field) in [
        (
            SearchServicesRequest {
                query: "؟ ! ...".into(),
                ..Default::default()
            },
            "query",
        ),
        (
            SearchServicesRequest {
                query: "\u{064E}\u{0651}\u{0640}".into(), // diacritics and tatweel only
                ..Default::default()
            },
            "query",
        ),
        (
            SearchServicesRequest {
                query: "housing ".repeat(26),
                ..Default::default()
            },
            "query",
        ),
        (
            SearchServicesRequest {
                query: "housing".into(),
                agency_id: "nowhere".into(),
                ..Default::default()
            },
            "agency_id",
        ),
        (
            SearchServicesRequest {
                query: "housing".into(),
                language: 7,
                ..Default::default()
            },
            "language",
        ),
        (
            SearchServicesRequest {
                query: "housing".into(),
                page_size: 101,
                ..Default::default()
            },
            "page_size",
        ),
    ] {
        let err = client.search_services(request).await.unwrap_err();
        assert_eq!(fields(&err), [field], "{err:?}");
    }

    // The contract: an empty query lists every service; pages of 7 add up to all of them.
    let total: usize = env.config.agencies.iter().map(|a| a.services.len()).sum();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .search_services(SearchServicesRequest {
                query: String::new(),
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.results.len() <= 7);
        seen.extend(codes(&page.results));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), total);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), total, "no service twice");

    // A page token belongs to its query.
    let first = client
        .search_services(SearchServicesRequest {
            query: "clearance".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.results.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let err = client
        .search_services(SearchServicesRequest {
            query: "housing".into(),
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["page_token"]);
    let second = client
        .search_services(SearchServicesRequest {
            query: "clearance".into(),
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!second.results.is_empty());
    assert!(codes(&second.results)
        .iter()
        .all(|c| !codes(&first.results).contains(c)));
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_agency_sends_domestic_violence_with_danger_to_the_police_first() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut client = directory(&env, &gw, "social-services").await;

    // No answers: the first question, nothing recommended yet.
    let start = client
        .recommend_agency(RecommendAgencyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(start.recommendations.is_empty());
    assert!(!start.complete);
    let first = &start.next_questions[0];
    assert_eq!(first.id, "main-need");
    assert_eq!(first.text_ar, "ما هي الحاجة الرئيسية؟");
    let options: Vec<&str> = first.options.iter().map(|o| o.id.as_str()).collect();
    for o in [
        "family-dispute",
        "housing-need",
        "financial-hardship",
        "domestic-violence",
        "child-at-risk",
        "employment",
    ] {
        assert!(options.contains(&o), "{o} in {options:?}");
    }

    // Domestic violence: Social Services' protection first; the danger question is asked.
    let partial = client
        .recommend_agency(answers(&[("main-need", "domestic-violence")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        partial.recommendations[0].service_code,
        "domestic-violence-protection"
    );
    let next: Vec<&str> = partial
        .next_questions
        .iter()
        .map(|q| q.id.as_str())
        .collect();
    assert_eq!(next, ["immediate-danger"]);
    assert!(!partial.complete);

    // ...and someone is in immediate danger: the police first, with the reason.
    let done = client
        .recommend_agency(answers(&[
            ("main-need", "domestic-violence"),
            ("immediate-danger", "yes"),
        ]))
        .await
        .unwrap()
        .into_inner();
    let top = &done.recommendations[0];
    assert_eq!(top.agency_id, "police");
    assert_eq!(top.service_code, "urgent-protection");
    assert_eq!(top.score, 1.0);
    assert!(
        top.reason_en.contains("immediate danger"),
        "{}",
        top.reason_en
    );
    assert!(top.reason_ar.contains("خطر"), "{}", top.reason_ar);
    assert!(
        done.recommendations
            .windows(2)
            .all(|w| w[0].score >= w[1].score),
        "best first"
    );
    assert!(done.recommendations[1..]
        .iter()
        .any(|r| r.agency_id == "social-services"));
    assert!(done.complete);
    assert!(done.next_questions.is_empty());
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_agency_sends_a_housing_need_to_the_housing_department() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut client = directory(&env, &gw, "family-court").await;
    let r = client
        .recommend_agency(answers(&[("main-need", "housing-need")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.recommendations[0].agency_id, "housing");
    assert_eq!(r.recommendations[0].service_code, "housing-support");
    assert!(!r.recommendations[0].reason_en.is_empty());
    assert!(!r.recommendations[0].reason_ar.is_empty());
    // Immediate danger does not change a housing case; income may.
    let next: Vec<&str> = r.next_questions.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(next, ["regular-income"]);
    let r = client
        .recommend_agency(answers(&[
            ("regular-income", "no"),
            ("main-need", "housing-need"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.recommendations[0].agency_id, "housing");
    assert!(r
        .recommendations
        .iter()
        .any(|x| x.service_code == "social-financial-assistance"));
    assert!(r.complete);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_agency_refuses_unknown_questions_and_options_naming_the_field() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut client = directory(&env, &gw, "police").await;

    let err = client
        .recommend_agency(answers(&[
            ("main-need", "domestic-violence"),
            ("immediate-danger", "maybe"),
        ]))
        .await
        .unwrap_err();
    let v = violations(&err);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].0, "answers[1].option_id");
    assert!(
        v[0].1.contains("maybe") && v[0].1.contains("yes, no"),
        "{}",
        v[0].1
    );

    let err = client
        .recommend_agency(answers(&[
            ("what-colour", "blue"),
            ("main-need", "housing-need"),
            ("main-need", "employment"),
            ("immediate-danger", ""),
        ]))
        .await
        .unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "answers[0].question_id",
            "answers[2].question_id",
            "answers[3].option_id"
        ]
    );
    assert!(err.message().contains("what-colour"), "{}", err.message());
    gw.shutdown().await.unwrap();
}
