//! `jisr client apply | application | applications | clear | withdraw`: applications for
//! joint services.

use clap::Subcommand;
use tonic::transport::Channel;

use super::{describe_status, documents, enum_arg, new_request_id, short, subject, when};
use crate::pb::v1::application_service_client::ApplicationServiceClient;
use crate::pb::v1::*;

#[derive(Subcommand)]
pub enum Command {
    /// Submit an application for a joint service (as its lead agency).
    Apply {
        /// The joint service's code, e.g. building-completion-certificate.
        #[arg(long)]
        service: String,
        /// Emirates ID number of the applicant.
        #[arg(long)]
        emirates_id: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        summary: String,
        /// One of the service's reference fields as name=value (e.g. plot-number=118-204);
        /// repeat for more.
        #[arg(long = "ref", value_name = "NAME=VALUE")]
        references: Vec<String>,
        /// A document for every clearing agency (its id from `upload`); repeat for more.
        #[arg(long = "attach", value_name = "DOCUMENT_ID")]
        attachments: Vec<String>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show one application (the lead sees every clearance, a clearing agency its own).
    Application { application_id: String },
    /// List the applications you lead or clear.
    Applications {
        /// led or clearing (default: both).
        #[arg(long)]
        direction: Option<String>,
        #[arg(long, default_value_t = 20)]
        page_size: i32,
    },
    /// Move your agency's clearance of an application.
    Clear {
        application_id: String,
        /// accepted, in-review, information-requested, approved or rejected.
        #[arg(long)]
        status: String,
        /// A condition of an approval; repeat for more.
        #[arg(long = "condition")]
        conditions: Vec<String>,
        /// Why (required for rejected).
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, default_value = "")]
        note: String,
        /// The information request you sent the lead (for information-requested).
        #[arg(long, default_value = "")]
        information_request: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Withdraw an application you lead.
    Withdraw {
        application_id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        request_id: Option<String>,
    },
}

pub async fn run(channel: Channel, command: Command) -> anyhow::Result<()> {
    let mut client = ApplicationServiceClient::new(channel);
    let result = match command {
        Command::Apply {
            service,
            emirates_id,
            name,
            summary,
            references,
            attachments,
            request_id,
        } => {
            let references = references
                .iter()
                .map(|r| {
                    let (name, value) = r
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("{r:?}: write name=value"))?;
                    Ok(ReferenceField {
                        name: name.to_string(),
                        value: value.to_string(),
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            let application = Application {
                service_code: service,
                subject: subject(emirates_id, name, String::new()),
                summary,
                references,
                attachments: documents(attachments),
                ..Application::default()
            };
            client
                .submit_application(SubmitApplicationRequest {
                    request_id: request_id.unwrap_or_else(new_request_id),
                    application: Some(application),
                })
                .await
                .map(|r| print_application(r.into_inner().application.as_ref()))
        }
        Command::Application { application_id } => client
            .get_application(GetApplicationRequest { application_id })
            .await
            .map(|r| print_application(r.into_inner().application.as_ref())),
        Command::Applications {
            direction,
            page_size,
        } => {
            let direction = match direction {
                Some(d) => enum_arg(
                    "APPLICATION_DIRECTION_",
                    &d,
                    ApplicationDirection::from_str_name,
                )? as i32,
                None => 0,
            };
            client
                .list_applications(ListApplicationsRequest {
                    direction,
                    page_size,
                    ..ListApplicationsRequest::default()
                })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    for a in &r.applications {
                        println!(
                            "{}  {:<12} lead {}  {}  expected {}",
                            a.id,
                            short(a.status().as_str_name()),
                            a.lead_agency,
                            a.service_code,
                            when(a.expected_completion_at.as_ref())
                        );
                    }
                    println!("({} shown)", r.applications.len());
                })
        }
        Command::Clear {
            application_id,
            status,
            conditions,
            reason,
            note,
            information_request,
            request_id,
        } => client
            .update_clearance(UpdateClearanceRequest {
                application_id,
                request_id: request_id.unwrap_or_else(new_request_id),
                status: enum_arg("CLEARANCE_STATUS_", &status, ClearanceStatus::from_str_name)?
                    as i32,
                conditions,
                reason,
                note,
                information_request_id: information_request,
            })
            .await
            .map(|r| print_application(r.into_inner().application.as_ref())),
        Command::Withdraw {
            application_id,
            reason,
            request_id,
        } => client
            .withdraw_application(WithdrawApplicationRequest {
                application_id,
                request_id: request_id.unwrap_or_else(new_request_id),
                reason,
            })
            .await
            .map(|r| print_application(r.into_inner().application.as_ref())),
    };
    result.map_err(describe_status)
}

/// An application and its clearances, for people.
pub fn print_application(a: Option<&Application>) {
    let Some(a) = a else {
        println!("(no application in the answer)");
        return;
    };
    println!(
        "application {}  {}{}",
        a.id,
        short(a.status().as_str_name()),
        if a.overdue { "  OVERDUE" } else { "" }
    );
    println!(
        "  {} led by {}  due {}  expected {}",
        a.service_code,
        a.lead_agency,
        when(a.due_at.as_ref()),
        when(a.expected_completion_at.as_ref())
    );
    for r in &a.references {
        println!("  {}: {}", r.name, r.value);
    }
    for c in &a.clearances {
        let mut line = format!(
            "    {:<24} {:<22} due {}",
            c.agency,
            short(c.status().as_str_name()),
            when(c.due_at.as_ref())
        );
        if !c.after.is_empty() {
            line += &format!("  after {}", c.after.join(", "));
        }
        if c.overdue {
            line += "  OVERDUE";
        }
        if c.deemed_approved {
            line += "  (deemed)";
        }
        for condition in &c.conditions {
            line += &format!("\n      condition: {condition}");
        }
        if !c.reason.is_empty() {
            line += &format!("\n      reason: {}", c.reason);
        }
        println!("{line}");
    }
}
