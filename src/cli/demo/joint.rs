//! `jisr demo joint`: one application for the building completion certificate (the sample
//! config's joint service) reaches APPROVED through its nine clearances, on loopback: the
//! expected completion date at the start, the clearances without prerequisites requested at
//! once, an information request from a clearing agency to the lead and its answer, civil
//! defence asked only once planning has approved, the digital office last.
//!
//! The City Municipality leads (its system is called over gRPC, so it hears every change
//! through its adapter); every clearing agency pulls its clearance request from its inbox.

use anyhow::{bail, Context};
use tonic::transport::Channel;

use super::{conclude, demo_subject, pull_until, Timeline, STEP_TIMEOUT};
use crate::cli::client::applications::print_application;
use crate::cli::sandbox::Sandbox;
use crate::pb::adapter_v1::delivery;
use crate::pb::adapter_v1::inbox_service_client::InboxServiceClient;
use crate::pb::v1::application_service_client::ApplicationServiceClient;
use crate::pb::v1::information_request_service_client::InformationRequestServiceClient;
use crate::pb::v1::respond_to_information_request_request::Response as Reply;
use crate::pb::v1::*;
use crate::simulation::MockEndpoint;

const SERVICE: &str = "building-completion-certificate";
const LEAD: &str = "city-municipality";
const UTILITIES: &str = "electricity-water-gas";
const PLANNING: &str = "planning-survey";
const CIVIL_DEFENCE: &str = "civil-defence";
const DIGITAL: &str = "digital";

pub async fn run() -> anyhow::Result<()> {
    println!(
        "Jisr demo: an application for the building completion certificate, nine clearances, one status.\n"
    );
    let (sandbox, lead_system) = Sandbox::start(&[LEAD], &[], Default::default())
        .await
        .context("starting the sandbox")?;
    println!("  gateway on {} (mTLS, TLS 1.3)", sandbox.addr());
    println!("  City Municipality (lead): its system is called over gRPC   (adapter grpc)");
    println!("  the other clearing agencies: pull from their inboxes       (adapter inbox)\n");
    let mut t = Timeline::new();
    let result = walk(&sandbox, &lead_system, &mut t).await;
    conclude(
        sandbox,
        t,
        result,
        "One application, nine clearances, one status everyone could follow. Done.",
    )
    .await
}

async fn walk(
    sandbox: &Sandbox,
    lead_system: &MockEndpoint,
    t: &mut Timeline,
) -> anyhow::Result<()> {
    let (mut lead, _) = clients(sandbox, LEAD).await?;
    let submitted = lead
        .submit_application(SubmitApplicationRequest {
            request_id: format!("demo-{}", ulid::Ulid::new()),
            application: Some(Application {
                service_code: SERVICE.into(),
                subject: demo_subject("Demo Owner", "مالك تجريبي"),
                summary: "Villa on plot 118-204: construction finished, ready for occupancy."
                    .into(),
                references: vec![
                    ReferenceField {
                        name: "plot-number".into(),
                        value: "118-204".into(),
                    },
                    ReferenceField {
                        name: "building-permit".into(),
                        value: "BP-2025-04417".into(),
                    },
                ],
                ..Application::default()
            }),
        })
        .await
        .map_err(|s| t.fail("submit the application", anyhow::anyhow!("{s}")))?
        .into_inner();
    let app = submitted
        .application
        .context("no application in the answer")?;
    let id = app.id.clone();
    let requested: Vec<String> = agencies_in(&app, ClearanceStatus::Requested);
    let waiting: Vec<String> = agencies_in(&app, ClearanceStatus::Waiting);
    t.ok(format!(
        "the City Municipality submitted application {id}: expected completion {} (the plan over the dependencies and the working-day calendar)",
        super::super::client::when(app.expected_completion_at.as_ref())
    ));
    t.ok(format!(
        "{} clearances requested at once; waiting for their prerequisites: {}",
        requested.len(),
        waiting.join(", ")
    ));

    // Each agency asked finds its clearance request through its adapter.
    for agency in requested.iter().filter(|a| *a != LEAD) {
        let (_, mut inbox) = clients(sandbox, agency).await?;
        pull_until(&mut inbox, |d| is_request_for(d, &id))
            .await
            .map_err(|e| t.fail(&format!("deliver the clearance request to {agency}"), e))?;
    }
    let want = format!("clearance_request {id}");
    lead_system
        .wait_for(
            "the lead's own clearance request",
            |a| a.what == want,
            STEP_TIMEOUT,
        )
        .await
        .map_err(|e| t.fail("deliver the lead's own clearance request", e))?;
    t.ok(format!(
        "each of the {} agencies received its clearance request through its adapter, seeing only its own clearance",
        requested.len()
    ));

    // The utilities authority needs something from the lead first.
    let (mut utilities, mut utilities_inbox) = clients(sandbox, UTILITIES).await?;
    let mut utilities_ir = InformationRequestServiceClient::new(sandbox.channel(UTILITIES).await?);
    let ir = utilities_ir
        .request_information(RequestInformationRequest {
            request_id: format!("demo-{}", ulid::Ulid::new()),
            information_request: Some(InformationRequest {
                to_agency: LEAD.into(),
                subject: app.subject.clone(),
                questions: vec![Question {
                    code: "gas-test-certificate".into(),
                    text: "Please send the gas installation pressure test certificate.".into(),
                    document_requested: false,
                }],
                ..InformationRequest::default()
            }),
        })
        .await
        .map_err(|s| t.fail("ask the lead for information", anyhow::anyhow!("{s}")))?
        .into_inner()
        .information_request
        .context("no information request in the answer")?;
    clear(
        &mut utilities,
        &id,
        ClearanceStatus::InformationRequested,
        Some(&ir.id),
        t,
    )
    .await?;
    t.ok(format!(
        "the Electricity, Water and Gas Authority asked the lead for information ({}): its clearance is INFORMATION_REQUESTED",
        ir.id
    ));
    let want = format!("information_request {}", ir.id);
    lead_system
        .wait_for(
            "the information request at the lead",
            |a| a.what == want,
            STEP_TIMEOUT,
        )
        .await
        .map_err(|e| t.fail("deliver the information request to the lead", e))?;
    InformationRequestServiceClient::new(sandbox.channel(LEAD).await?)
        .respond_to_information_request(RespondToInformationRequestRequest {
            information_request_id: ir.id.clone(),
            request_id: format!("demo-{}", ulid::Ulid::new()),
            response: Some(Reply::Answers(InformationRequestAnswers {
                answers: vec![Answer {
                    question_code: "gas-test-certificate".into(),
                    value: "Certificate GT-88412, tested 2026-11-20 at 1.5 bar.".into(),
                    documents: vec![],
                }],
            })),
        })
        .await
        .map_err(|s| t.fail("answer the information request", anyhow::anyhow!("{s}")))?;
    pull_until(
        &mut utilities_inbox,
        |d| matches!(&d.payload, Some(delivery::Payload::InformationResponse(r)) if r.id == ir.id),
    )
    .await
    .map_err(|e| t.fail("deliver the answer to the utilities authority", e))?;
    clear(&mut utilities, &id, ClearanceStatus::InReview, None, t).await?;
    clear(&mut utilities, &id, ClearanceStatus::Approved, None, t).await?;
    t.ok("the lead answered; the utilities authority reviewed and APPROVED".into());

    // The others approve; civil defence is asked only once planning has approved.
    for agency in requested.iter().filter(|a| *a != UTILITIES) {
        let (mut client, _) = clients(sandbox, agency).await?;
        clear(&mut client, &id, ClearanceStatus::Approved, None, t).await?;
        if agency == PLANNING {
            let (_, mut civil_inbox) = clients(sandbox, CIVIL_DEFENCE).await?;
            pull_until(&mut civil_inbox, |d| is_request_for(d, &id))
                .await
                .map_err(|e| t.fail("request civil defence after planning", e))?;
            t.ok("Planning and Survey APPROVED: now civil defence is asked (it inspects what planning approved)".into());
            let (mut civil, _) = clients(sandbox, CIVIL_DEFENCE).await?;
            clear(&mut civil, &id, ClearanceStatus::Approved, None, t).await?;
        }
    }
    t.ok("the remaining clearances were APPROVED, civil defence's included".into());

    // The digital office issues the certificate last.
    let (mut digital, mut digital_inbox) = clients(sandbox, DIGITAL).await?;
    pull_until(&mut digital_inbox, |d| is_request_for(d, &id))
        .await
        .map_err(|e| t.fail("request the digital office last", e))?;
    let last = clear(&mut digital, &id, ClearanceStatus::Approved, None, t).await?;
    if last.status() != ApplicationStatus::Approved {
        bail!(t.fail(
            "decide the application",
            anyhow::anyhow!(
                "expected APPROVED after the last clearance, got {:?}",
                last.status()
            )
        ));
    }
    t.ok("the Digital Department, asked once all eight had approved, APPROVED: the application is APPROVED".into());
    let want = format!("status {id} APPROVED");
    lead_system
        .wait_for("the decision at the lead", |a| a.what == want, STEP_TIMEOUT)
        .await
        .map_err(|e| t.fail("tell the lead the decision", e))?;
    t.ok(
        "the lead's own system heard the decision through its adapter, as it heard every change"
            .into(),
    );
    let seen = lead
        .get_application(GetApplicationRequest {
            application_id: id.clone(),
        })
        .await
        .map_err(|s| t.fail("read the application", anyhow::anyhow!("{s}")))?
        .into_inner()
        .application;
    println!();
    print_application(seen.as_ref());
    println!();
    Ok(())
}

fn agencies_in(app: &Application, status: ClearanceStatus) -> Vec<String> {
    app.clearances
        .iter()
        .filter(|c| c.status() == status)
        .map(|c| c.agency.clone())
        .collect()
}

/// `agency`'s application client and inbox.
async fn clients(
    sandbox: &Sandbox,
    agency: &str,
) -> anyhow::Result<(
    ApplicationServiceClient<Channel>,
    InboxServiceClient<Channel>,
)> {
    let channel = sandbox.channel(agency).await?;
    Ok((
        ApplicationServiceClient::new(channel.clone()),
        InboxServiceClient::new(channel),
    ))
}

fn is_request_for(d: &crate::pb::adapter_v1::Delivery, id: &str) -> bool {
    matches!(&d.payload, Some(delivery::Payload::ClearanceRequest(a)) if a.id == id)
}

async fn clear(
    client: &mut ApplicationServiceClient<Channel>,
    id: &str,
    status: ClearanceStatus,
    information_request: Option<&str>,
    t: &Timeline,
) -> anyhow::Result<Application> {
    client
        .update_clearance(UpdateClearanceRequest {
            application_id: id.into(),
            request_id: format!("demo-{}", ulid::Ulid::new()),
            status: status as i32,
            information_request_id: information_request.unwrap_or_default().into(),
            ..UpdateClearanceRequest::default()
        })
        .await
        .map(|r| r.into_inner().application.unwrap_or_default())
        .map_err(|s| t.fail(&format!("set {status:?}"), anyhow::anyhow!("{s}")))
}
