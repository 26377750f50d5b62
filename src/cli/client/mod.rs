//! `jisr client`: call the gateway as one agency, for the tour in the README and for
//! operators checking a deployment. Referrals here; information requests, applications and
//! documents in their own files.

pub(super) mod applications;
mod documents;
mod information;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::pb::v1::referral_service_client::ReferralServiceClient;
use crate::pb::v1::*;
use crate::server::config::Config;

#[derive(Args)]
pub struct ClientArgs {
    /// The agency to act as; its development certificate is used.
    #[arg(long = "as", value_name = "AGENCY")]
    agency: String,
    /// Gateway address (default: listen_addr from the config).
    #[arg(long)]
    addr: Option<String>,
    /// Name the gateway's certificate is checked against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Submit a referral.
    Submit {
        #[arg(long)]
        to: String,
        #[arg(long)]
        service: String,
        /// e.g. housing, family-dispute, financial-hardship, domestic-violence.
        #[arg(long, default_value = "other")]
        category: String,
        /// routine, urgent, asap or stat.
        #[arg(long, default_value = "routine")]
        priority: String,
        /// Emirates ID number of the person.
        #[arg(long)]
        emirates_id: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        name_ar: String,
        #[arg(long)]
        summary: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// A document to attach (its id from `upload`); repeat for more.
        #[arg(long = "attach", value_name = "DOCUMENT_ID")]
        attachments: Vec<String>,
        /// Idempotency key (default: a new one).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show one referral.
    Get { referral_id: String },
    /// List referrals you sent or received.
    List {
        /// sent or received (default: both).
        #[arg(long)]
        direction: Option<String>,
        /// Only these statuses, e.g. submitted, in-progress.
        #[arg(long)]
        status: Vec<String>,
        #[arg(long, default_value_t = 20)]
        page_size: i32,
    },
    /// Move a referral along its lifecycle.
    Update {
        referral_id: String,
        /// accepted, rejected, in-progress, on-hold, completed or withdrawn.
        #[arg(long)]
        status: String,
        /// Reason code, e.g. outside-mandate (required for rejected and withdrawn).
        #[arg(long)]
        reason: Option<String>,
        /// Outcome, e.g. resolved (required for completed).
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Stream referral events (Ctrl-C to stop).
    Watch {
        /// Resume after this cursor.
        #[arg(long, default_value = "")]
        cursor: String,
        /// Only events from now on.
        #[arg(long)]
        only_new: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    #[command(flatten)]
    Information(information::Command),
    #[command(flatten)]
    Documents(documents::Command),
    #[command(flatten)]
    Applications(applications::Command),
}

pub async fn run(config: &Config, args: ClientArgs) -> anyhow::Result<()> {
    let creds = super::dev_credentials(config, &args.agency)?;
    let addr = super::dial_addr(config, args.addr.as_deref());
    let channel: Channel = crate::tls::client::connect(&addr, &args.server_name, &creds)
        .await
        .with_context(|| format!("connecting to {addr} as {}", args.agency))?;
    let mut client = ReferralServiceClient::new(channel.clone());
    let result = match args.command {
        ClientCommand::Information(command) => return information::run(channel, command).await,
        ClientCommand::Documents(command) => return documents::run(channel, command).await,
        ClientCommand::Applications(command) => return applications::run(channel, command).await,
        ClientCommand::Submit {
            to,
            service,
            category,
            priority,
            emirates_id,
            name,
            name_ar,
            summary,
            reason,
            attachments,
            request_id,
        } => {
            let referral = Referral {
                to_agency: to,
                service_code: service,
                category: enum_arg(
                    "REFERRAL_CATEGORY_",
                    &category,
                    ReferralCategory::from_str_name,
                )? as i32,
                priority: enum_arg(
                    "REFERRAL_PRIORITY_",
                    &priority,
                    ReferralPriority::from_str_name,
                )? as i32,
                subject: subject(emirates_id, name, name_ar),
                summary,
                reason,
                attachments: documents(attachments),
                ..Referral::default()
            };
            client
                .submit_referral(SubmitReferralRequest {
                    request_id: request_id.unwrap_or_else(new_request_id),
                    referral: Some(referral),
                })
                .await
                .map(|r| print_referral(r.into_inner().referral.as_ref()))
        }
        ClientCommand::Get { referral_id } => client
            .get_referral(GetReferralRequest { referral_id })
            .await
            .map(|r| print_referral(r.into_inner().referral.as_ref())),
        ClientCommand::List {
            direction,
            status,
            page_size,
        } => {
            let direction = match direction {
                Some(d) => {
                    enum_arg("REFERRAL_DIRECTION_", &d, ReferralDirection::from_str_name)? as i32
                }
                None => 0,
            };
            let statuses = status
                .iter()
                .map(|s| {
                    enum_arg("REFERRAL_STATUS_", s, ReferralStatus::from_str_name).map(|s| s as i32)
                })
                .collect::<anyhow::Result<_>>()?;
            client
                .list_referrals(ListReferralsRequest {
                    direction,
                    statuses,
                    page_size,
                    ..ListReferralsRequest::default()
                })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    for referral in &r.referrals {
                        println!(
                            "{}  {:<12} {} -> {}  {}",
                            referral.id,
                            short(referral.status().as_str_name()),
                            referral.from_agency,
                            referral.to_agency,
                            referral.service_code
                        );
                    }
                    println!(
                        "({} shown{})",
                        r.referrals.len(),
                        if r.next_page_token.is_empty() {
                            ""
                        } else {
                            "; more available"
                        }
                    );
                })
        }
        ClientCommand::Update {
            referral_id,
            status,
            reason,
            outcome,
            note,
            request_id,
        } => {
            let reason_code = match reason {
                Some(r) => enum_arg("STATUS_REASON_", &r, StatusReason::from_str_name)? as i32,
                None => 0,
            };
            let outcome = match outcome {
                Some(o) => {
                    enum_arg("REFERRAL_OUTCOME_", &o, ReferralOutcome::from_str_name)? as i32
                }
                None => 0,
            };
            client
                .update_referral_status(UpdateReferralStatusRequest {
                    referral_id,
                    request_id: request_id.unwrap_or_else(new_request_id),
                    status: enum_arg("REFERRAL_STATUS_", &status, ReferralStatus::from_str_name)?
                        as i32,
                    reason_code,
                    note,
                    outcome,
                })
                .await
                .map(|r| print_referral(r.into_inner().referral.as_ref()))
        }
        ClientCommand::Watch {
            cursor,
            only_new,
            count,
        } => match client
            .watch_referral_events(WatchReferralEventsRequest { cursor, only_new })
            .await
        {
            Err(status) => Err(status),
            Ok(stream) => {
                let mut stream = stream.into_inner();
                let mut seen = 0;
                let mut result = Ok(());
                while count.is_none_or(|n| seen < n) {
                    match stream.next().await {
                        None => break,
                        Some(Err(status)) => {
                            result = Err(status);
                            break;
                        }
                        Some(Ok(item)) => {
                            if let Some(e) = item.event {
                                // An information request's or application's event names it.
                                let (id, status) = if !e.application_id.is_empty() {
                                    (&e.application_id, e.application_status().as_str_name())
                                } else if e.information_request_id.is_empty() {
                                    (&e.referral_id, e.status().as_str_name())
                                } else {
                                    (
                                        &e.information_request_id,
                                        e.information_request_status().as_str_name(),
                                    )
                                };
                                println!(
                                    "cursor {:>6}  {}  {:<21} {}  {} -> {}  now {}",
                                    e.cursor,
                                    when(e.occurred_at.as_ref()),
                                    short(e.r#type().as_str_name()),
                                    id,
                                    e.from_agency,
                                    e.to_agency,
                                    short(status)
                                );
                            }
                            seen += 1;
                        }
                    }
                }
                result
            }
        },
    };
    result.map_err(describe_status)
}

/// The person an exchange is about, by Emirates ID number and name.
pub(in crate::cli) fn subject(
    emirates_id: String,
    name: String,
    name_ar: String,
) -> Option<Subject> {
    Some(Subject {
        identifier: Some(PersonIdentifier {
            r#type: IdentifierType::EmiratesId as i32,
            value: emirates_id,
            issuing_country: String::new(),
        }),
        full_name: name,
        full_name_ar: name_ar,
        ..Subject::default()
    })
}

/// Documents referenced by id (from `upload`).
pub(super) fn documents(ids: Vec<String>) -> Vec<DocumentReference> {
    ids.into_iter()
        .map(|document_id| DocumentReference {
            document_id,
            title: String::new(),
        })
        .collect()
}

pub(super) fn new_request_id() -> String {
    format!("cli-{}", ulid::Ulid::new())
}

/// `in-progress` → `REFERRAL_STATUS_IN_PROGRESS`.
pub(super) fn enum_arg<E>(
    prefix: &str,
    value: &str,
    parse: fn(&str) -> Option<E>,
) -> anyhow::Result<E> {
    let name = format!("{prefix}{}", value.to_ascii_uppercase().replace('-', "_"));
    parse(&name).with_context(|| format!("{value:?} is not a valid value (looked for {name})"))
}

/// `REFERRAL_STATUS_IN_PROGRESS` → `IN_PROGRESS`.
pub(super) fn short(name: &str) -> &str {
    for prefix in [
        "REFERRAL_STATUS_",
        "REFERRAL_EVENT_TYPE_",
        "REFERRAL_CATEGORY_",
        "REFERRAL_PRIORITY_",
        "STATUS_REASON_",
        "REFERRAL_OUTCOME_",
        "INFORMATION_REQUEST_STATUS_",
        "DECLINE_REASON_",
        "APPLICATION_STATUS_",
        "CLEARANCE_STATUS_",
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return rest;
        }
    }
    name
}

pub(super) fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

fn print_referral(r: Option<&Referral>) {
    let Some(r) = r else {
        println!("(no referral in the answer)");
        return;
    };
    println!("referral {}  {}", r.id, short(r.status().as_str_name()));
    println!(
        "  from {} to {}  service {}",
        r.from_agency, r.to_agency, r.service_code
    );
    println!(
        "  category {}  priority {}  created {}",
        short(r.category().as_str_name()),
        short(r.priority().as_str_name()),
        when(r.created_at.as_ref())
    );
    println!("  summary: {}", r.summary);
    println!("  history:");
    for c in &r.status_history {
        let mut line = format!(
            "    {}  {:<12} by {}",
            when(c.changed_at.as_ref()),
            short(c.status().as_str_name()),
            c.actor_agency
        );
        if c.reason_code != 0 {
            line += &format!("  reason {}", short(c.reason_code().as_str_name()));
        }
        if c.outcome != 0 {
            line += &format!("  outcome {}", short(c.outcome().as_str_name()));
        }
        if !c.note.is_empty() {
            line += &format!("  note: {}", c.note);
        }
        println!("{line}");
    }
}

/// A gRPC error with its field violations and reason, for people.
pub(super) fn describe_status(status: tonic::Status) -> anyhow::Error {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        // The message repeats the violations on one line; list them one per line instead.
        text = format!(
            "{:?}: {} invalid field(s)",
            status.code(),
            bad.field_violations.len()
        );
        for v in bad.field_violations {
            text += &format!("\n  {}: {}", v.field, v.description);
        }
    }
    if let Some(info) = status.get_details_error_info() {
        text += &format!("\n  reason: {}", info.reason);
    }
    anyhow::anyhow!(text)
}
