//! Bytes off the wire -> RequestInformationRequest (validate_request) or
//! RespondToInformationRequestRequest (validate_response), chosen by the first byte.
//! Never panics; an error names only fields of the request; an accepted request carries
//! only its input fields.
#![no_main]

use jisr::api::information_request::{validate_request, validate_response};
use jisr::pb::v1::respond_to_information_request_request::Response;
use jisr::pb::v1::{
    InformationRequest, RequestInformationRequest, RespondToInformationRequestRequest,
};
use jisr_fuzz::{assert_violations, fixture, CALLER, NOW_MS};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        request(bytes);
    } else {
        response(bytes);
    }
});

fn request(bytes: &[u8]) {
    let Ok(req) = RequestInformationRequest::decode(bytes) else {
        return;
    };
    let f = fixture();
    let result = validate_request(&f.registry, CALLER, &req, NOW_MS);
    let questions = req
        .information_request
        .as_ref()
        .map_or(0, |r| r.questions.len());
    assert_violations(
        result.as_ref().map(|_| ()),
        ".jisr.v1.RequestInformationRequest",
        &|p| (p == "information_request.questions").then_some(questions),
    );
    if let Ok(out) = result {
        let r = req.information_request.expect("accepted without a request");
        let expected = InformationRequest {
            to_agency: r.to_agency,
            referral_id: r.referral_id,
            subject: r.subject,
            questions: r.questions,
            due_at: r.due_at,
            ..InformationRequest::default()
        };
        assert_eq!(
            out, expected,
            "the accepted request is not its input fields"
        );
        assert!(f.registry.contains(&out.to_agency) && out.to_agency != CALLER);
        assert!(!out.questions.is_empty());
    }
}

fn response(bytes: &[u8]) {
    let Ok(req) = RespondToInformationRequestRequest::decode(bytes) else {
        return;
    };
    let result = validate_response(&req);
    let answers = match &req.response {
        Some(Response::Answers(a)) => a.answers.as_slice(),
        _ => &[],
    };
    assert_violations(
        result.as_ref().copied(),
        ".jisr.v1.RespondToInformationRequestRequest",
        &|p| {
            if p == "answers.answers" {
                return Some(answers.len());
            }
            let i: usize = p
                .strip_prefix("answers.answers[")?
                .strip_suffix("].documents")?
                .parse()
                .ok()?;
            answers.get(i).map(|a| a.documents.len())
        },
    );
    if result.is_ok() {
        assert!(
            req.response.is_some(),
            "accepted without answers or decline"
        );
    }
}
