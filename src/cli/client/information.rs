//! `jisr client ask | answer | decline | request | requests`: information requests.

use clap::Subcommand;
use tonic::transport::Channel;

use super::{describe_status, enum_arg, new_request_id, short, subject, when};
use crate::pb::v1::information_request_service_client::InformationRequestServiceClient;
use crate::pb::v1::respond_to_information_request_request::Response as Reply;
use crate::pb::v1::*;

#[derive(Subcommand)]
pub enum Command {
    /// Ask another agency for information about a person.
    Ask {
        #[arg(long)]
        to: String,
        /// Emirates ID number of the person.
        #[arg(long)]
        emirates_id: String,
        #[arg(long)]
        name: String,
        /// A question as code=text (add `+doc` after the code to ask for documents:
        /// `salary-certificate+doc=Latest salary certificate`); repeat for more.
        #[arg(long = "question", value_name = "CODE=TEXT", required = true)]
        questions: Vec<String>,
        /// The referral the request belongs to.
        #[arg(long)]
        referral: Option<String>,
        /// When the answer is due (RFC 3339); default: the configured time frame.
        #[arg(long)]
        due: Option<String>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Answer an information request you were asked.
    Answer {
        information_request_id: String,
        /// An answer as code=value; repeat for more.
        #[arg(long = "answer", value_name = "CODE=VALUE")]
        answers: Vec<String>,
        /// A document answering a question, as code=document-id; repeat for more.
        #[arg(long = "document", value_name = "CODE=DOCUMENT_ID")]
        documents: Vec<String>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Decline an information request you were asked.
    Decline {
        information_request_id: String,
        /// e.g. not-held, subject-not-found, no-legal-basis, consent-missing, other.
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show one information request.
    Request { information_request_id: String },
    /// List information requests you sent or received.
    Requests {
        /// sent or received (default: both).
        #[arg(long)]
        direction: Option<String>,
        /// Only overdue ones.
        #[arg(long)]
        overdue: bool,
        #[arg(long, default_value_t = 20)]
        page_size: i32,
    },
}

pub async fn run(channel: Channel, command: Command) -> anyhow::Result<()> {
    let mut client = InformationRequestServiceClient::new(channel);
    let result = match command {
        Command::Ask {
            to,
            emirates_id,
            name,
            questions,
            referral,
            due,
            request_id,
        } => {
            let due_at = match due {
                Some(d) => Some(timestamp_arg(&d)?),
                None => None,
            };
            let questions = questions
                .iter()
                .map(|q| {
                    let (code, text) = pair(q)?;
                    let (code, document_requested) = match code.strip_suffix("+doc") {
                        Some(code) => (code, true),
                        None => (code, false),
                    };
                    Ok(Question {
                        code: code.to_string(),
                        text: text.to_string(),
                        document_requested,
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            let request = InformationRequest {
                to_agency: to,
                referral_id: referral.unwrap_or_default(),
                subject: subject(emirates_id, name, String::new()),
                questions,
                due_at,
                ..InformationRequest::default()
            };
            client
                .request_information(RequestInformationRequest {
                    request_id: request_id.unwrap_or_else(new_request_id),
                    information_request: Some(request),
                })
                .await
                .map(|r| print_request(r.into_inner().information_request.as_ref()))
        }
        Command::Answer {
            information_request_id,
            answers,
            documents,
            request_id,
        } => {
            let mut out: Vec<Answer> = Vec::new();
            for a in &answers {
                let (code, value) = pair(a)?;
                answer_for(&mut out, code).value = value.to_string();
            }
            for d in &documents {
                let (code, id) = pair(d)?;
                answer_for(&mut out, code)
                    .documents
                    .push(DocumentReference {
                        document_id: id.to_string(),
                        title: String::new(),
                    });
            }
            respond(
                &mut client,
                information_request_id,
                request_id,
                Reply::Answers(InformationRequestAnswers { answers: out }),
            )
            .await
        }
        Command::Decline {
            information_request_id,
            reason,
            note,
            request_id,
        } => {
            let reason = enum_arg("DECLINE_REASON_", &reason, DeclineReason::from_str_name)?;
            respond(
                &mut client,
                information_request_id,
                request_id,
                Reply::Decline(InformationRequestDecline {
                    reason: reason as i32,
                    note,
                }),
            )
            .await
        }
        Command::Request {
            information_request_id,
        } => client
            .get_information_request(GetInformationRequestRequest {
                information_request_id,
            })
            .await
            .map(|r| print_request(r.into_inner().information_request.as_ref())),
        Command::Requests {
            direction,
            overdue,
            page_size,
        } => {
            let direction = match direction {
                Some(d) => enum_arg(
                    "INFORMATION_REQUEST_DIRECTION_",
                    &d,
                    InformationRequestDirection::from_str_name,
                )? as i32,
                None => 0,
            };
            client
                .list_information_requests(ListInformationRequestsRequest {
                    direction,
                    overdue_only: overdue,
                    page_size,
                    ..ListInformationRequestsRequest::default()
                })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    for ir in &r.information_requests {
                        println!(
                            "{}  {:<9} {} -> {}  due {}{}",
                            ir.id,
                            short(ir.status().as_str_name()),
                            ir.from_agency,
                            ir.to_agency,
                            when(ir.due_at.as_ref()),
                            if ir.overdue { "  OVERDUE" } else { "" }
                        );
                    }
                    println!("({} shown)", r.information_requests.len());
                })
        }
    };
    result.map_err(describe_status)
}

async fn respond(
    client: &mut InformationRequestServiceClient<Channel>,
    information_request_id: String,
    request_id: Option<String>,
    reply: Reply,
) -> Result<(), tonic::Status> {
    client
        .respond_to_information_request(RespondToInformationRequestRequest {
            information_request_id,
            request_id: request_id.unwrap_or_else(new_request_id),
            response: Some(reply),
        })
        .await
        .map(|r| print_request(r.into_inner().information_request.as_ref()))
}

/// The answer to `code`, added when missing.
fn answer_for<'a>(answers: &'a mut Vec<Answer>, code: &str) -> &'a mut Answer {
    let i = match answers.iter().position(|a| a.question_code == code) {
        Some(i) => i,
        None => {
            answers.push(Answer {
                question_code: code.to_string(),
                ..Answer::default()
            });
            answers.len() - 1
        }
    };
    &mut answers[i]
}

/// `code=text` → (code, text).
fn pair(arg: &str) -> anyhow::Result<(&str, &str)> {
    arg.split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{arg:?} is not CODE=VALUE"))
}

fn timestamp_arg(text: &str) -> anyhow::Result<prost_types::Timestamp> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow::anyhow!("{text:?} is not an RFC 3339 time: {e}"))?;
    Ok(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    })
}

fn print_request(r: Option<&InformationRequest>) {
    let Some(r) = r else {
        println!("(no information request in the answer)");
        return;
    };
    println!(
        "information request {}  {}{}",
        r.id,
        short(r.status().as_str_name()),
        if r.overdue { "  OVERDUE" } else { "" }
    );
    println!(
        "  from {} to {}  due {}",
        r.from_agency,
        r.to_agency,
        when(r.due_at.as_ref())
    );
    if !r.referral_id.is_empty() {
        println!("  about referral {}", r.referral_id);
    }
    for q in &r.questions {
        println!("  ? {}: {}", q.code, q.text);
    }
    for a in &r.answers {
        println!("  = {}: {}", a.question_code, a.value);
        for d in &a.documents {
            println!("      document {}", d.document_id);
        }
    }
    if r.decline_reason != 0 {
        println!(
            "  declined: {}  {}",
            short(r.decline_reason().as_str_name()),
            r.decline_note
        );
    }
}
