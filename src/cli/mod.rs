//! The `jisr` command line: one subcommand per job, dispatched from one enum.

mod audit;
mod bench;
pub mod certs;
mod client;
mod demo;
mod echo;
pub mod operator;
mod outbox;
mod sandbox;
mod seed;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::server::config::Config;
use crate::server::Gateway;
use crate::tls::client::AgencyCredentials;

#[derive(Parser)]
#[command(
    name = "jisr",
    version,
    about = "Jisr: a gRPC interoperability gateway between government agency systems"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "JISR_CONFIG",
        default_value = "config/jisr.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until Ctrl-C or SIGTERM (creates the development PKI when the
    /// config asks for it and it is missing).
    Serve,
    /// The development PKI.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Call the gateway as an agency, with its development certificate.
    Client(client::ClientArgs),
    /// Load generator: SubmitReferral over mTLS; prints one JSON line.
    Bench(bench::BenchArgs),
    /// The audit trail: verify, export, prove.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// The closed loop end to end, on loopback, with nothing to set up: a referral
    /// (default), or `joint`: an application for the building completion certificate
    /// through its nine clearances.
    Demo {
        #[arg(value_enum, default_value = "referral")]
        scenario: demo::Scenario,
    },
    /// Deliveries to agencies: list, retry dead ones, replay delivered ones.
    Outbox {
        #[command(subcommand)]
        command: outbox::OutboxCommand,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a CA, the server certificate and one client certificate per configured
    /// agency (ECDSA P-256) under the config's tls.dev_pki_dir.
    Init {
        /// Replace an existing development PKI.
        #[arg(long)]
        force: bool,
    },
    /// Revoke an agency's development certificate: add its serial to the development CRL
    /// (<tls.dev_pki_dir>/crl.pem), re-signed by the development CA. A running gateway
    /// refuses it from its next reload (tls.reload_interval_secs, or SIGHUP).
    Revoke {
        /// The agency id, e.g. housing.
        agency: String,
        /// Why (recorded with the revocation in the node's audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, then print a summary.
    Check,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The demo brings its own configuration; every other command reads the file.
    let config = match cli.command {
        Command::Demo { .. } => None,
        _ => match Config::load(&cli.config) {
            Ok(config) => Some(config),
            Err(e) => {
                crate::telemetry::init();
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    // The demo prints its own timeline; the gateway's logs would drown it. Only the
    // gateway exports traces.
    let telemetry = match (&cli.command, &config) {
        (Command::Serve, Some(config)) => {
            let _inside = runtime.enter();
            match crate::telemetry::init_with_traces("info", &config.telemetry, &config.node_id) {
                Ok(telemetry) => telemetry,
                Err(e) => {
                    crate::telemetry::init();
                    eprintln!("error: telemetry: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        (Command::Demo { .. }, _) => {
            crate::telemetry::init_with_default("warn");
            Default::default()
        }
        _ => {
            crate::telemetry::init();
            Default::default()
        }
    };
    let result = runtime.block_on(run(cli, config));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: Option<Config>) -> anyhow::Result<()> {
    let Some(config) = config else {
        let scenario = match cli.command {
            Command::Demo { scenario } => scenario,
            _ => demo::Scenario::Referral,
        };
        return demo::run(scenario).await;
    };
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Certs {
            command: CertsCommand::Init { force },
        } => {
            let report = certs::init_dev_pki(&config, force)?;
            println!(
                "development PKI written to {}: CA, server certificate, {} agency certificates (ECDSA P-256), empty CRL",
                report.dir.display(),
                report.agencies
            );
            println!(
                "audit checkpoint verifier key: {}",
                report.audit_verifier_key
            );
            Ok(())
        }
        Command::Certs {
            command: CertsCommand::Revoke { agency, reason },
        } => {
            let report = certs::revoke_dev_agency(&config, &agency)?;
            operator::record(
                &config,
                operator::CERTS_REVOKE,
                &[
                    format!("cert:{}", report.serial),
                    format!("agency:{agency}"),
                ],
                &reason,
            )
            .await?;
            if report.already_revoked {
                println!(
                    "the development certificate of {agency} (serial {}) is already on {}",
                    report.serial,
                    report.crl.display()
                );
            } else {
                println!(
                    "revoked the development certificate of {agency} (serial {}): {} lists {} certificate(s); \
                     a running gateway refuses it after its next TLS reload (within tls.reload_interval_secs = {}s, or on SIGHUP)",
                    report.serial,
                    report.crl.display(),
                    report.listed,
                    config.tls.reload_interval_secs
                );
            }
            if !config.tls.crls.contains(&report.crl) {
                eprintln!(
                    "warning: {} is not in tls.crls, so the gateway does not read it",
                    report.crl.display()
                );
            }
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            println!(
                "{}: ok — node {}, listening on {}, trust domain {}, database {}, {} agencies",
                cli.config.display(),
                config.node_id,
                config.listen_addr,
                config.trust_domain,
                crate::store::redact(&config.database.url),
                config.agencies.len()
            );
            Ok(())
        }
        Command::Client(args) => client::run(&config, args).await,
        Command::Bench(args) => bench::run(&config, args).await,
        Command::Audit { command } => audit::run(&config, command).await,
        Command::Outbox { command } => outbox::run(&config, command).await,
        Command::Demo { scenario } => demo::run(scenario).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.tls.dev_pki {
        let (created, crl) = certs::ensure_dev_pki(&config)?;
        if let Some(report) = created {
            tracing::info!(
                dir = %report.dir.display(),
                agencies = report.agencies,
                "TLS files were missing: created a development PKI (CA, server certificate, one client certificate per agency, empty CRL)"
            );
        }
        if let Some(done) = crl {
            tracing::info!("{done}");
        }
    }
    let gateway = Gateway::start(&config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: not ready, then draining in-flight calls");
    gateway.drain().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// An agency's development credentials, as `jisr certs init` wrote them.
fn dev_credentials(config: &Config, agency: &str) -> anyhow::Result<AgencyCredentials> {
    config
        .agency(agency)
        .with_context(|| format!("agency {agency:?} is not in the config's agency registry"))?;
    let (cert, key) = config.dev_agency_cert_paths(agency);
    AgencyCredentials::from_files(&config.tls.ca_cert, &cert, &key).with_context(|| {
        "run `jisr certs init` (or `jisr serve` once) to create the development certificates"
    })
}

/// The address clients dial: the listen address, with a wildcard host made local.
fn dial_addr(config: &Config, explicit: Option<&str>) -> String {
    if let Some(addr) = explicit {
        return addr.to_string();
    }
    let mut addr = config.listen_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr.to_string()
}
