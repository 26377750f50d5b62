//! Bytes off the wire -> SubmitReferralRequest -> validate_submit. Never panics; an error
//! names only fields of the request; an accepted referral carries only its input fields.
#![no_main]

use jisr::api::referral::validate_submit;
use jisr::pb::v1::{Referral, SubmitReferralRequest};
use jisr_fuzz::{assert_violations, fixture, CALLER, NOW_MS};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = SubmitReferralRequest::decode(data) else {
        return;
    };
    let f = fixture();
    let result = validate_submit(&f.registry, &f.directory, CALLER, &req, NOW_MS);
    let attachments = req.referral.as_ref().map_or(0, |r| r.attachments.len());
    assert_violations(
        result.as_ref().map(|_| ()),
        ".jisr.v1.SubmitReferralRequest",
        &|p| (p == "referral.attachments").then_some(attachments),
    );
    if let Ok(out) = result {
        let r = req.referral.expect("accepted without a referral");
        let expected = Referral {
            to_agency: r.to_agency,
            service_code: r.service_code,
            category: r.category,
            priority: r.priority,
            subject: r.subject,
            summary: r.summary,
            reason: r.reason,
            attachments: r.attachments,
            consent: r.consent,
            ..Referral::default()
        };
        assert_eq!(
            out, expected,
            "the accepted referral is not its input fields"
        );
        assert!(f.registry.contains(&out.to_agency) && out.to_agency != CALLER);
    }
});
