//! The gateway's configuration: `config/jisr.toml`, overridden by `JISR_...` environment
//! variables (loaded by `crate::config`).
//!
//! This is the one place that knows every section: each subsystem owns its own section's
//! type and validation (`tls::TlsConfig`, `store::DatabaseConfig`, `layers::limits`,
//! `audit::AuditConfig`, `delivery::DeliveryConfig`, `adapters::AdapterConfig`, the
//! directory's catalogue, `domain::policy::PolicyConfig`, `layers::officer::OfficerConfig`
//! …); this module assembles them, checks what spans sections (agency ids, policy against
//! the registry and the catalogue), and hands each component its part.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::adapters::{AdapterConfig, BuildContext};
use crate::audit::AuditConfig;
use crate::common::{is_slug, GATEWAY_ACTOR, SLUG_RULE};
use crate::config::{socket_addr, ConfigError};
use crate::delivery::dispatcher::Adapters;
use crate::delivery::DeliveryConfig;
use crate::directory::config::{
    AgencyEntry, CalendarConfig, ContactConfig, DirectoryConfig, RoutingConfig, ServiceConfig,
};
use crate::domain::application::JointServiceSpec;
use crate::domain::information_request::InformationRequestsConfig;
use crate::domain::policy::{PolicyAgency, PolicyConfig, PolicySettings, ROLE_AUDITOR};
use crate::layers::limits::LimitsConfig;
use crate::layers::officer::OfficerConfig;
use crate::store::blobs::DocumentsConfig;
use crate::store::DatabaseConfig;
use crate::telemetry::TelemetryConfig;
use crate::tls::config::is_trust_domain;
use crate::tls::TlsConfig;

use super::admin::AdminConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This gateway node's name; it names the node's audit log.
    #[serde(default = "default_node_id")]
    pub node_id: String,
    /// Address the mTLS gRPC listener binds.
    #[serde(deserialize_with = "socket_addr")]
    pub listen_addr: SocketAddr,
    /// SPIFFE trust domain of agency identities: spiffe://<trust_domain>/agency/<id>.
    pub trust_domain: String,
    pub tls: TlsConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The agency registry.
    #[serde(default)]
    pub agencies: Vec<AgencyConfig>,
    /// Working days for services' time frames: weekend and public holidays.
    #[serde(default)]
    pub calendar: CalendarConfig,
    /// The guided routing questionnaire of DirectoryService.RecommendAgency.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Once-only documents: where they are stored, and size limits.
    #[serde(default)]
    pub documents: DocumentsConfig,
    /// Information requests: default time frame and expiry.
    #[serde(default)]
    pub information_requests: InformationRequestsConfig,
    /// Officer identity tokens (`authorization: Bearer`): JWKS and/or introspection.
    #[serde(default)]
    pub officers: OfficerConfig,
    /// Traces: the OTLP collector, service name, sampling, resource attributes.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The admin listener (/metrics, /livez, /readyz) and how the gateway drains on SIGTERM.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Joint services: one application, a clearance from each of several agencies
    /// (`domain::application`; `jisr.v1.ApplicationService` runs applications for them).
    #[serde(default)]
    pub joint_services: Vec<JointServiceSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyConfig {
    /// Stable id, the last segment of the agency's SPIFFE id: lowercase letters, digits, '-'.
    pub id: String,
    pub name_en: String,
    pub name_ar: String,
    /// Roles beyond exchanging cases: "auditor" may read the audit trail.
    #[serde(default)]
    pub roles: Vec<String>,
    /// How the gateway delivers to this agency (default: the agency pulls from its inbox).
    #[serde(default)]
    pub adapter: AdapterConfig,
    /// What the agency may do (default: nothing; see `domain::policy`).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// What the agency does, in English and Arabic (DirectoryService).
    #[serde(default)]
    pub description_en: String,
    #[serde(default)]
    pub description_ar: String,
    /// Ways to contact the agency.
    #[serde(default)]
    pub contacts: Vec<ContactConfig>,
    /// The services the agency accepts referrals and information requests for.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
}

fn default_node_id() -> String {
    "jisr-1".into()
}

impl Config {
    /// Loads `path` and applies the `JISR_...` variables of the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        crate::config::load(path, Config::validate)
    }

    /// Parses TOML text and applies overrides from `vars` (name, value pairs; names not
    /// starting with `JISR_` are ignored). `JISR_A__B` sets key `b` of table `a`.
    pub fn parse(
        path: &Path,
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        crate::config::parse(path, text, vars, Config::validate)
    }

    /// Each section's own rules, then what spans sections; the first broken rule is the
    /// error.
    fn validate(&self) -> Result<(), ConfigError> {
        if !is_slug(&self.node_id) {
            return Err(ConfigError::invalid("node_id", &self.node_id, SLUG_RULE));
        }
        if !is_trust_domain(&self.trust_domain) {
            return Err(ConfigError::invalid(
                "trust_domain",
                &self.trust_domain,
                "a SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_', e.g. jisr.gov.ae",
            ));
        }
        self.tls.validate()?;
        self.database.validate()?;
        self.audit.validate()?;
        self.delivery.validate()?;
        self.documents.validate()?;
        self.information_requests.validate()?;
        self.limits.validate()?;
        self.telemetry.validate()?;
        self.admin.validate()?;
        let mut seen = std::collections::HashSet::new();
        for (i, agency) in self.agencies.iter().enumerate() {
            let key = |field: &str| format!("agencies[{i}].{field}");
            if !is_slug(&agency.id) || agency.id == GATEWAY_ACTOR {
                return Err(ConfigError::invalid(key("id"), &agency.id, SLUG_RULE));
            }
            if !seen.insert(agency.id.as_str()) {
                return Err(ConfigError::invalid(
                    key("id"),
                    &agency.id,
                    "an id no other agency has",
                ));
            }
            for (j, role) in agency.roles.iter().enumerate() {
                if role != ROLE_AUDITOR {
                    return Err(ConfigError::invalid(
                        key(&format!("roles[{j}]")),
                        role,
                        "a known role: \"auditor\"",
                    ));
                }
            }
            agency
                .adapter
                .validate(&|field| key(&format!("adapter.{field}")))?;
            for (field, value) in [("name_en", &agency.name_en), ("name_ar", &agency.name_ar)] {
                if value.trim().is_empty() {
                    return Err(ConfigError::invalid(key(field), value, "a non-empty name"));
                }
            }
        }
        let mut codes = std::collections::HashSet::new();
        for (i, joint) in self.joint_services.iter().enumerate() {
            let key = |field: &str| format!("joint_services[{i}].{field}");
            if !codes.insert(joint.code.as_str()) {
                return Err(ConfigError::invalid(
                    key("code"),
                    &joint.code,
                    "a code no other joint service has",
                ));
            }
            if let Err(e) = joint.validate() {
                return Err(ConfigError::invalid(
                    key("clearances"),
                    &joint.code,
                    &e.to_string(),
                ));
            }
            for (j, clearance) in joint.clearances.iter().enumerate() {
                if self.agency(&clearance.agency).is_none() {
                    return Err(ConfigError::invalid(
                        key(&format!("clearances[{j}].agency")),
                        &clearance.agency,
                        "the id of an agency in the registry",
                    ));
                }
            }
        }
        // policy.apply names joint services (which policy::check cannot see).
        for (i, agency) in self.agencies.iter().enumerate() {
            for (j, code) in agency.policy.apply.iter().enumerate() {
                if code != "*" && !codes.contains(code.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("agencies[{i}].policy.apply[{j}]"),
                        code,
                        "the code of a [[joint_services]] entry, or \"*\"",
                    ));
                }
            }
        }
        // Services, contacts, the calendar and the routing questionnaire.
        crate::directory::config::validate(&self.directory())?;
        crate::layers::officer::validate(&self.officers)?;
        let problems = crate::domain::policy::check(&self.policy());
        if !problems.is_empty() {
            return Err(ConfigError::Policy(problems));
        }
        Ok(())
    }

    /// Whether the agency holds `role`.
    pub fn has_role(&self, agency: &str, role: &str) -> bool {
        self.agency(agency)
            .is_some_and(|a| a.roles.iter().any(|r| r == role))
    }

    /// The name of this node's audit log in checkpoints (C2SP origin and key name).
    pub fn audit_origin(&self) -> String {
        format!("{}/jisr/{}", self.trust_domain, self.node_id)
    }

    pub fn agency(&self, id: &str) -> Option<&AgencyConfig> {
        self.agencies.iter().find(|a| a.id == id)
    }

    /// The registered agency ids.
    pub fn agency_ids(&self) -> impl Iterator<Item = &str> {
        self.agencies.iter().map(|a| a.id.as_str())
    }

    /// Where `jisr certs init` puts an agency's client certificate and key.
    pub fn dev_agency_cert_paths(&self, agency: &str) -> (PathBuf, PathBuf) {
        self.tls.dev_agency_cert_paths(agency)
    }

    /// The directory's part: every agency's listing, the calendar, the questionnaire.
    pub fn directory(&self) -> DirectoryConfig {
        DirectoryConfig {
            agencies: self
                .agencies
                .iter()
                .map(|a| AgencyEntry {
                    id: a.id.clone(),
                    name_en: a.name_en.clone(),
                    name_ar: a.name_ar.clone(),
                    description_en: a.description_en.clone(),
                    description_ar: a.description_ar.clone(),
                    contacts: a.contacts.clone(),
                    services: a.services.clone(),
                })
                .collect(),
            calendar: self.calendar.clone(),
            routing: self.routing.clone(),
        }
    }

    /// The policy's part: every agency's rules, roles and services, and whether officer
    /// tokens can be verified at all.
    pub fn policy(&self) -> PolicySettings {
        PolicySettings {
            agencies: self
                .agencies
                .iter()
                .map(|a| PolicyAgency {
                    id: a.id.clone(),
                    roles: a.roles.clone(),
                    policy: a.policy.clone(),
                    services: a.services.iter().map(|s| s.code.clone()).collect(),
                })
                .collect(),
            officers_enabled: self.officers.enabled(),
        }
    }

    /// The push adapter of every agency that has one.
    pub fn build_adapters(&self) -> anyhow::Result<Adapters> {
        crate::adapters::build(
            self.agencies
                .iter()
                .map(|a| (&a.adapter, self.adapter_context(&a.id))),
        )
    }

    /// What the adapter of `agency` is built with.
    pub fn adapter_context(&self, agency: &str) -> BuildContext {
        BuildContext {
            agency: agency.to_string(),
            ca_cert: self.tls.ca_cert.clone(),
            client_cert: self.delivery.client_cert.clone(),
            client_key: self.delivery.client_key.clone(),
            timeout: Duration::from_millis(self.delivery.timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../config/jisr.toml");

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::parse(
            Path::new("config/jisr.toml"),
            SAMPLE,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn sample_config_holds_the_nine_referral_agencies() {
        let config = parse(&[]).expect("sample config parses");
        let ids: Vec<_> = config.agencies.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            &ids[..9],
            [
                "social-services",
                "family-court",
                "police",
                "suburbs-affairs",
                "housing",
                "human-resources",
                "digital",
                "family-development",
                "charity"
            ],
            "{ids:?}"
        );
        assert!(config.agencies.iter().all(|a| !a.name_ar.is_ascii()));
        assert!(config.has_role("digital", ROLE_AUDITOR));
    }

    #[test]
    fn sample_config_defines_the_building_completion_certificate_as_a_joint_service() {
        let config = parse(&[]).expect("sample config parses");
        let joint = config
            .joint_services
            .iter()
            .find(|j| j.code == "building-completion-certificate")
            .expect("the joint service");
        assert_eq!(joint.clearances.len(), 9);
        assert_eq!(joint.required(), 9, "all must approve");
        let civil_defence = joint
            .clearances
            .iter()
            .find(|c| c.agency == "civil-defence")
            .unwrap();
        assert_eq!(civil_defence.after, ["planning-survey"]);
        // Planning 7, then civil defence 5, then the digital office 2: 14 working days.
        let calendar = crate::directory::calendar::Calendar::from_config(&config.calendar).unwrap();
        let start = 1_796_634_000_000; // Monday 2026-12-07 09:00 UTC
        let plan = joint.schedule(start, &Default::default(), start, &calendar);
        assert_eq!(
            plan.expected_completion,
            Some(crate::directory::calendar::add_working_days(
                start, 14, &calendar
            ))
        );
    }

    #[test]
    fn policy_apply_must_name_a_joint_service() {
        let lead = "apply = [\"building-completion-certificate\"]";
        assert!(SAMPLE.contains(lead), "the sample's lead agency");
        let e = Config::parse(
            Path::new("config/jisr.toml"),
            &SAMPLE.replacen(lead, "apply = [\"no-such-service\"]", 1),
            std::iter::empty(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("policy.apply[0]") && e.contains("no-such-service"),
            "{e}"
        );
    }

    #[test]
    fn a_joint_service_must_name_registered_agencies_and_no_cycle() {
        let base = "[[joint_services]]\ncode = \"x\"\n";
        let clearance = |agency: &str, after: &str| {
            format!("[[joint_services.clearances]]\nagency = \"{agency}\"\ntime_frame_working_days = 2\nafter = [{after}]\n")
        };
        // Appended after the sample's own (joint_services[0]), so this one is [1].
        let err = |toml: String| {
            Config::parse(
                Path::new("config/jisr.toml"),
                &format!("{SAMPLE}\n{toml}"),
                std::iter::empty(),
            )
            .unwrap_err()
            .to_string()
        };
        let e = err(format!("{base}{}", clearance("nobody", "")));
        assert!(
            e.contains("joint_services[1].clearances[0].agency") && e.contains("nobody"),
            "{e}"
        );
        let e = err(format!(
            "{base}{}{}",
            clearance("police", "\"housing\""),
            clearance("housing", "\"police\"")
        ));
        assert!(
            e.contains("joint_services[1].clearances") && e.contains("wait for each other"),
            "{e}"
        );
    }

    #[test]
    fn sample_config_holds_the_building_certificate_agencies_calendar_and_questionnaire() {
        let config = parse(&[]).expect("sample config parses");
        for id in [
            "city-municipality",
            "electricity-water-gas",
            "planning-survey",
            "municipal-affairs",
            "civil-defence",
            "roads-transport",
            "telecom",
        ] {
            let agency = config.agency(id).unwrap_or_else(|| panic!("missing {id}"));
            assert!(!agency.services.is_empty(), "{id} offers a service");
        }
        assert!(config.agencies.iter().all(|a| !a.services.is_empty()));
        assert_eq!(
            config.calendar.weekend,
            [time::Weekday::Saturday, time::Weekday::Sunday]
        );
        assert!(config.calendar.holidays.len() >= 5);
        assert!(!config.routing.questions.is_empty() && !config.routing.rules.is_empty());
    }

    #[test]
    fn directory_settings_have_defaults() {
        let minimal = "listen_addr = \"127.0.0.1:1\"\ntrust_domain = \"x\"\n\
                       [tls]\nca_cert = \"a\"\nserver_cert = \"b\"\nserver_key = \"c\"\n\
                       [database]\nurl = \"sqlite://x.db\"\n\
                       [[agencies]]\nid = \"housing\"\nname_en = \"Housing\"\nname_ar = \"الإسكان\"\n";
        let config = Config::parse(Path::new("x"), minimal, Vec::new()).unwrap();
        let agency = &config.agencies[0];
        assert!(agency.services.is_empty() && agency.contacts.is_empty());
        assert!(agency.description_en.is_empty());
        assert_eq!(
            config.calendar.weekend,
            [time::Weekday::Saturday, time::Weekday::Sunday],
            "the UAE weekend by default"
        );
        assert!(config.calendar.holidays.is_empty());
        assert!(config.routing.questions.is_empty() && config.routing.rules.is_empty());
    }

    #[test]
    fn environment_overrides_top_level_and_nested_keys() {
        let config = parse(&[
            ("JISR_LISTEN_ADDR", "0.0.0.0:9000"),
            ("JISR_DATABASE__URL", "postgres://postgres@127.0.0.1/test"),
            ("JISR_DATABASE__MAX_CONNECTIONS", "3"),
            ("JISR_LOG", "debug"),
            ("OTHER_VAR", "x"),
        ])
        .unwrap();
        assert_eq!(config.listen_addr.port(), 9000);
        assert_eq!(config.database.url, "postgres://postgres@127.0.0.1/test");
        assert_eq!(config.database.max_connections, 3);
    }

    #[test]
    fn bad_value_names_key_value_expectation_and_variable() {
        let err = parse(&[("JISR_LISTEN_ADDR", "not-an-address")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`listen_addr`"), "{err}");
        assert!(err.contains("not-an-address"), "{err}");
        assert!(err.contains("expected a socket address"), "{err}");
        assert!(err.contains("JISR_LISTEN_ADDR"), "{err}");
    }

    #[test]
    fn wrong_type_and_unknown_key_are_refused() {
        let err = parse(&[("JISR_DATABASE__MAX_CONNECTIONS", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.max_connections"), "{err}");
        assert!(err.contains("many"), "{err}");
        let err = parse(&[("JISR_LISTN_ADDR", "1")]).unwrap_err().to_string();
        assert!(err.contains("listn_addr"), "{err}");
    }

    /// The sample config with a `rest` adapter for the charity (agencies[8]).
    fn with_rest(adapter: &str) -> Result<Config, ConfigError> {
        // After the charity's own keys, before its services or the next agency.
        let start = SAMPLE.find("id = \"charity\"").expect("the charity");
        let end = SAMPLE[start..]
            .find("\n[")
            .map_or(SAMPLE.len(), |i| start + i + 1);
        let text = format!(
            "{}[agencies.adapter]\nkind = \"rest\"\n{adapter}\n{}",
            &SAMPLE[..end],
            &SAMPLE[end..]
        );
        Config::parse(Path::new("x"), &text, Vec::new())
    }

    #[test]
    fn a_rest_adapter_parses_with_auth_and_mappings() {
        let config = with_rest(
            r#"url = "https://charity.example.ae/api/jisr"
timeout_ms = 5000
[agencies.adapter.auth]
kind = "api_key"
header = "X-Api-Key"
key_env = "CHARITY_API_KEY"
[agencies.adapter.mapping.referral]
path = "/referrals"
rename = { "subject.full_name" = "person.name" }
flatten = ["consent"]
constants = { "source" = "jisr", "schema.version" = 2 }
drop = ["attachments"]
"#,
        )
        .unwrap();
        let AdapterConfig::Rest(rest) = &config.agency("charity").unwrap().adapter else {
            panic!("not rest")
        };
        assert_eq!(rest.timeout_ms, Some(5000));
        assert_eq!(rest.auth.kind(), "api_key");
        let m = rest.mapping.referral.as_ref().unwrap();
        assert_eq!(m.path, "/referrals");
        assert_eq!(m.constants["schema.version"], serde_json::json!(2));
        assert!(rest.mapping.status_update.is_none());
        assert_eq!(config.agency("charity").unwrap().adapter.kind(), "rest");
    }

    #[test]
    fn rest_adapter_settings_are_checked() {
        let err = |adapter: &str| with_rest(adapter).unwrap_err().to_string();
        let mtls = "[agencies.adapter.auth]\nkind = \"mtls\"\n";
        let e = err(&format!("url = \"http://charity.example.ae\"\n{mtls}"));
        assert!(
            e.contains("agencies[8].adapter.url") && e.contains("http://charity.example.ae"),
            "{e}"
        );
        let e = err(&format!(
            "url = \"https://c.example.ae\"\ntimeout_ms = 0\n{mtls}"
        ));
        assert!(e.contains("adapter.timeout_ms"), "{e}");
        let e = err("url = \"https://c.example.ae\"\n[agencies.adapter.auth]\nkind = \"bearer\"\ntoken_env = \"NOT-A-VAR\"\n");
        assert!(
            e.contains("adapter.auth.token_env") && e.contains("NOT-A-VAR"),
            "{e}"
        );
        let e = err("url = \"https://c.example.ae\"\n[agencies.adapter.auth]\nkind = \"api_key\"\nheader = \"Bad Header\"\nkey_env = \"K\"\n");
        assert!(e.contains("adapter.auth.header"), "{e}");
        let e = err(&format!(
            "url = \"https://c.example.ae\"\n{mtls}[agencies.adapter.mapping.referral]\npath = \"referrals\"\n"
        ));
        assert!(e.contains("adapter.mapping.referral.path"), "{e}");
        let e = err(&format!(
            "url = \"https://c.example.ae\"\n{mtls}[agencies.adapter.mapping.status_update]\ndrop = [\"a..b\"]\n"
        ));
        assert!(
            e.contains("adapter.mapping.status_update.drop") && e.contains("a..b"),
            "{e}"
        );
        let e = err(&format!(
            "url = \"https://c.example.ae\"\n{mtls}[agencies.adapter.mapping.information_requests]\n"
        ));
        assert!(e.contains("information_requests"), "{e}");
        let e = err("url = \"https://c.example.ae\"\n[agencies.adapter.auth]\nkind = \"bearer\"\ntoken = \"s3cret\"\n");
        assert!(e.contains("token"), "an inline secret is refused: {e}");
        let e = err("url = \"https://c.example.ae\"\n");
        assert!(e.contains("auth"), "{e}");
    }

    /// The sample config with `adapter` (a TOML table body) for the charity (agencies[8]).
    fn with_adapter(kind: &str, adapter: &str) -> Result<Config, ConfigError> {
        let start = SAMPLE.find("id = \"charity\"").expect("the charity");
        let end = SAMPLE[start..]
            .find("\n[")
            .map_or(SAMPLE.len(), |i| start + i + 1);
        let text = format!(
            "{}[agencies.adapter]\nkind = \"{kind}\"\n{adapter}\n{}",
            &SAMPLE[..end],
            &SAMPLE[end..]
        );
        Config::parse(Path::new("x"), &text, Vec::new())
    }

    #[test]
    fn a_webhook_adapter_is_one_registry_line_away() {
        let config = with_adapter(
            "webhook",
            "url = \"https://hooks.charity.example.ae/jisr\"\nsecret_env = \"CHARITY_HOOK_SECRET\"\n",
        )
        .unwrap();
        let adapter = &config.agency("charity").unwrap().adapter;
        assert_eq!(adapter.kind(), "webhook");
        let e = with_adapter(
            "webhook",
            "url = \"https://h.example.ae\"\nsecret_env = \"1BAD\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("agencies[8].adapter.secret_env") && e.contains("1BAD"),
            "{e}"
        );
        let e = with_adapter("carrier-pigeon", "").unwrap_err().to_string();
        assert!(e.contains("carrier-pigeon"), "{e}");
        assert_eq!(AdapterConfig::default().kind(), "inbox");
    }

    #[test]
    fn semantic_rules_name_the_key() {
        let err = parse(&[("JISR_DATABASE__URL", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`database.url`") && err.contains("mysql://x"),
            "{err}"
        );
        let dup = SAMPLE.replace("id = \"police\"", "id = \"housing\"");
        let err = Config::parse(Path::new("x"), &dup, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agencies[") && err.contains("housing"),
            "{err}"
        );
        let err = parse(&[("JISR_TRUST_DOMAIN", "Bad Domain")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trust_domain") && err.contains("Bad Domain"),
            "{err}"
        );
    }
}
