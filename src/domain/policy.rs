//! Per-agency policy from the config, default deny: which RPCs an agency may call, which
//! agencies and services it may send referrals and information requests to, which RPCs need
//! an officer token, and its roles. Every decision names the rule that made it; the rule
//! goes into the call's audit entry.
//!
//! ```toml
//! [agencies.policy]
//! allow = ["jisr.v1.ReferralService/*", "jisr.v1.DirectoryService/ListAgencies"]
//! refer_to = ["housing", "police/urgent-protection"]   # agency, or agency/service; "*" any
//! ask = ["*"]                                          # information requests: agencies
//! apply = ["building-completion-certificate"]          # joint services it may lead; "*" any
//! officer_required = ["jisr.v1.ReferralService/SubmitReferral"]
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::audit::context::AuditContext;
use crate::common::contract::served_rpcs;
use crate::common::ApiError;

/// The service only auditors may call (by role, never by an `allow` pattern).
pub const AUDIT_SERVICE: &str = "jisr.v1.AuditService";
/// Standard services every registered agency may call.
/// Reflection answers both versions: many clients (Python's grpcio-reflection, GUI tools)
/// still ask v1alpha.
const STANDARD_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

pub const RULE_DEFAULT_DENY: &str = "policy.default-deny";
pub const RULE_STANDARD: &str = "builtin.standard-services";
pub const RULE_AUDITOR_ROLE: &str = "role.auditor";
pub const RULE_AUDITOR_REQUIRED: &str = "audit.auditor-role";

/// One agency's policy, as written in the config.
/// The role that may call AuditService.
pub const ROLE_AUDITOR: &str = "auditor";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// RPCs the agency may call: `package.Service/Method`, `package.Service/*`, or `*`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Where it may send referrals: `agency`, `agency/service-code`, or `*`.
    #[serde(default)]
    pub refer_to: Vec<String>,
    /// Which agencies it may send information requests to: `agency` or `*`.
    #[serde(default)]
    pub ask: Vec<String>,
    /// Which joint services it may submit applications for (lead): codes, or `*`.
    #[serde(default)]
    pub apply: Vec<String>,
    /// RPCs it may call only with a valid officer token (same patterns as `allow`).
    #[serde(default)]
    pub officer_required: Vec<String>,
}

/// What the policy decided, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rule: String,
}

impl Decision {
    fn allow(rule: impl Into<String>) -> Decision {
        Decision {
            allowed: true,
            rule: rule.into(),
        }
    }
    fn deny(rule: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            rule: rule.into(),
        }
    }

    /// Notes an allowing decision in the call's audit entry, or refuses (POLICY_DENIED,
    /// naming the rule) with a message from `explain`.
    pub fn check(
        &self,
        audit: &AuditContext,
        explain: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        if self.allowed {
            audit.allow(&self.rule);
            Ok(())
        } else {
            Err(ApiError::PolicyDenied {
                rule: self.rule.clone(),
                message: explain(),
            })
        }
    }
}

/// Every agency's policy, ready to decide.
#[derive(Debug, Clone, Default)]
pub struct Policy(Arc<HashMap<String, AgencyPolicy>>);

#[derive(Debug, Clone, Default)]
struct AgencyPolicy {
    config: PolicyConfig,
    auditor: bool,
}

/// What the policy is built and checked from: each agency's rules, roles and services.
#[derive(Debug, Clone, Default)]
pub struct PolicySettings {
    pub agencies: Vec<PolicyAgency>,
    /// Whether officer tokens can be verified (an `[officers]` verifier is configured).
    pub officers_enabled: bool,
}

#[derive(Debug, Clone, Default)]
pub struct PolicyAgency {
    pub id: String,
    pub roles: Vec<String>,
    pub policy: PolicyConfig,
    /// The codes of the services the agency offers.
    pub services: Vec<String>,
}

impl PolicySettings {
    fn agency(&self, id: &str) -> Option<&PolicyAgency> {
        self.agencies.iter().find(|a| a.id == id)
    }
}

impl Policy {
    pub fn of(config: &PolicySettings) -> Policy {
        Policy(Arc::new(
            config
                .agencies
                .iter()
                .map(|a| {
                    (
                        a.id.clone(),
                        AgencyPolicy {
                            config: a.policy.clone(),
                            auditor: a.roles.iter().any(|r| r == ROLE_AUDITOR),
                        },
                    )
                })
                .collect(),
        ))
    }

    /// May `agency` call `method` (`package.Service/Method`, no leading slash)?
    pub fn rpc(&self, agency: &str, method: &str) -> Decision {
        let service = method.split('/').next().unwrap_or_default();
        if STANDARD_SERVICES.contains(&service) {
            return Decision::allow(RULE_STANDARD);
        }
        let Some(p) = self.0.get(agency) else {
            return Decision::deny(RULE_DEFAULT_DENY);
        };
        if service == AUDIT_SERVICE {
            return if p.auditor {
                Decision::allow(RULE_AUDITOR_ROLE)
            } else {
                Decision::deny(RULE_AUDITOR_REQUIRED)
            };
        }
        match p.config.allow.iter().find(|pat| rpc_matches(pat, method)) {
            Some(pat) => Decision::allow(format!("policy.allow:{pat}")),
            None => Decision::deny(RULE_DEFAULT_DENY),
        }
    }

    /// The `officer_required` rule that makes `agency` need an officer token for `method`.
    pub fn officer_required(&self, agency: &str, method: &str) -> Option<String> {
        let p = self.0.get(agency)?;
        p.config
            .officer_required
            .iter()
            .find(|pat| rpc_matches(pat, method))
            .map(|pat| format!("policy.officer_required:{pat}"))
    }

    /// May `from` send a referral for `service` to `to`?
    pub fn may_refer(&self, from: &str, to: &str, service: &str) -> Decision {
        let rules = self.0.get(from).map(|p| &p.config.refer_to);
        match rules.and_then(|r| {
            r.iter()
                .find(|rule| target_matches(rule, to, Some(service)))
        }) {
            Some(rule) => Decision::allow(format!("policy.refer_to:{rule}")),
            None => Decision::deny("policy.refer_to.default-deny"),
        }
    }

    /// May `from` send an information request to `to`?
    pub fn may_ask(&self, from: &str, to: &str) -> Decision {
        let rules = self.0.get(from).map(|p| &p.config.ask);
        match rules.and_then(|r| r.iter().find(|rule| target_matches(rule, to, None))) {
            Some(rule) => Decision::allow(format!("policy.ask:{rule}")),
            None => Decision::deny("policy.ask.default-deny"),
        }
    }

    /// May `lead` submit applications for joint service `service`?
    pub fn may_apply(&self, lead: &str, service: &str) -> Decision {
        let rules = self.0.get(lead).map(|p| &p.config.apply);
        match rules.and_then(|r| r.iter().find(|rule| *rule == "*" || *rule == service)) {
            Some(rule) => Decision::allow(format!("policy.apply:{rule}")),
            None => Decision::deny("policy.apply.default-deny"),
        }
    }
}

/// `*`, `package.Service/*` or an exact `package.Service/Method`.
fn rpc_matches(pattern: &str, method: &str) -> bool {
    pattern == "*"
        || pattern == method
        || pattern
            .strip_suffix("/*")
            .is_some_and(|service| method.split('/').next() == Some(service))
}

/// `*`, `agency` (any of its services) or `agency/service`.
fn target_matches(rule: &str, agency: &str, service: Option<&str>) -> bool {
    if rule == "*" {
        return true;
    }
    match rule.split_once('/') {
        None => rule == agency,
        Some((a, s)) => a == agency && service.is_some_and(|service| service == s),
    }
}

/// Policy mistakes `jisr config check` reports (and `serve` refuses to start with): rules
/// naming an unknown RPC, agency or service, and rules that can never match.
pub fn check(config: &PolicySettings) -> Vec<String> {
    let rpcs = served_rpcs();
    let policy = Policy::of(config);
    let mut problems = Vec::new();
    let services_of = |agency: &str| -> Option<Vec<&str>> {
        config
            .agency(agency)
            .map(|a| a.services.iter().map(String::as_str).collect())
    };
    for a in &config.agencies {
        let key = |field: &str, i: usize| {
            format!(
                "agencies[{}].policy.{field}[{i}] (agency {})",
                index_of(config, &a.id),
                a.id
            )
        };
        let auditor = a.roles.iter().any(|r| r == ROLE_AUDITOR);
        for (field, patterns) in [
            ("allow", &a.policy.allow),
            ("officer_required", &a.policy.officer_required),
        ] {
            for (i, pat) in patterns.iter().enumerate() {
                if !rpcs.iter().any(|m| rpc_matches(pat, m)) {
                    problems.push(format!(
                        "{}: {pat:?} names no RPC of the contract; write package.Service/Method or package.Service/*",
                        key(field, i)
                    ));
                } else if field == "allow" && pat != "*" && pat.starts_with(AUDIT_SERVICE) {
                    let why = if auditor {
                        "auditors reach AuditService through their role; this rule is never used"
                    } else {
                        "AuditService is only for agencies with the auditor role, so this rule can never match"
                    };
                    problems.push(format!("{}: {pat:?}: {why}", key(field, i)));
                }
            }
        }
        if !a.policy.officer_required.is_empty() && !config.officers_enabled {
            problems.push(format!(
                "agencies[{}].policy.officer_required (agency {}): no officer token can be verified \
                 (configure [officers] jwks_file, jwks_url or introspection), so these RPCs could never be called",
                index_of(config, &a.id),
                a.id
            ));
        }
        for (i, pat) in a.policy.officer_required.iter().enumerate() {
            let allowed = rpcs
                .iter()
                .filter(|m| rpc_matches(pat, m))
                .any(|m| policy.rpc(&a.id, m).allowed);
            if !allowed && rpcs.iter().any(|m| rpc_matches(pat, m)) {
                problems.push(format!(
                    "{}: {pat:?} requires an officer token for RPCs the agency may not call at all, so it can never match",
                    key("officer_required", i)
                ));
            }
        }
        for (field, rules) in [("refer_to", &a.policy.refer_to), ("ask", &a.policy.ask)] {
            for (i, rule) in rules.iter().enumerate() {
                if rule == "*" {
                    continue;
                }
                let (agency, service) = match rule.split_once('/') {
                    Some((ag, s)) => (ag, Some(s)),
                    None => (rule.as_str(), None),
                };
                match services_of(agency) {
                    None => problems.push(format!(
                        "{}: {rule:?} names no registered agency",
                        key(field, i)
                    )),
                    Some(_) if agency == a.id => problems.push(format!(
                        "{}: {rule:?} is the agency itself; exchanges go to other agencies, so it can never match",
                        key(field, i)
                    )),
                    Some(offered) => {
                        if let Some(s) = service {
                            if field == "ask" {
                                problems.push(format!(
                                    "{}: {rule:?}: information requests name no service; write the agency only",
                                    key(field, i)
                                ));
                            } else if !offered.contains(&s) {
                                problems.push(format!(
                                    "{}: {rule:?}: {agency} offers no service {s:?} (it offers: {}), so it can never match",
                                    key(field, i),
                                    offered.join(", ")
                                ));
                            }
                        }
                    }
                }
            }
        }
        let may_call = |m: &str| policy.rpc(&a.id, m).allowed;
        if !a.policy.refer_to.is_empty() && !may_call("jisr.v1.ReferralService/SubmitReferral") {
            problems.push(format!(
                "agencies[{}].policy.refer_to (agency {}): the agency may not call ReferralService/SubmitReferral, so these rules can never match",
                index_of(config, &a.id),
                a.id
            ));
        }
        if !a.policy.ask.is_empty()
            && !may_call("jisr.v1.InformationRequestService/RequestInformation")
        {
            problems.push(format!(
                "agencies[{}].policy.ask (agency {}): the agency may not call InformationRequestService/RequestInformation, so these rules can never match",
                index_of(config, &a.id),
                a.id
            ));
        }
    }
    problems
}

fn index_of(config: &PolicySettings, agency: &str) -> usize {
    config
        .agencies
        .iter()
        .position(|a| a.id == agency)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_methods_services_and_everything() {
        let m = "jisr.v1.ReferralService/SubmitReferral";
        assert!(rpc_matches("*", m));
        assert!(rpc_matches("jisr.v1.ReferralService/*", m));
        assert!(rpc_matches(m, m));
        assert!(!rpc_matches("jisr.v1.ReferralService/GetReferral", m));
        assert!(!rpc_matches("jisr.v1.Referral/*", m));
        assert!(target_matches("housing", "housing", Some("x")));
        assert!(target_matches("housing/x", "housing", Some("x")));
        assert!(!target_matches("housing/y", "housing", Some("x")));
        assert!(!target_matches("housing/x", "housing", None));
        assert!(!target_matches("police", "housing", None));
    }

    fn sample() -> PolicySettings {
        crate::server::config::Config::parse(
            std::path::Path::new("config/jisr.toml"),
            include_str!("../../config/jisr.toml"),
            Vec::new(),
        )
        .expect("the sample config is valid, policy included")
        .policy()
    }

    #[test]
    fn config_check_names_each_policy_mistake() {
        let mut config = sample();
        let police = config
            .agencies
            .iter_mut()
            .find(|a| a.id == "police")
            .unwrap();
        police.policy.allow.push("jisr.v1.ReferalService/*".into());
        police.policy.allow.push("jisr.v1.AuditService/*".into());
        police.policy.refer_to = vec![
            "nowhere".into(),
            "police".into(),
            "housing/no-such-service".into(),
        ];
        police.policy.ask = vec!["housing/housing-support".into()];
        police.policy.officer_required = vec!["jisr.v1.ReferralService/SubmitReferral".into()];
        let telecom = config
            .agencies
            .iter_mut()
            .find(|a| a.id == "telecom")
            .unwrap();
        telecom.policy.refer_to = vec!["housing".into()];
        let problems = check(&config);
        let text = problems.join("\n");
        for expected in [
            "\"jisr.v1.ReferalService/*\" names no RPC",
            "AuditService is only for agencies with the auditor role",
            "\"nowhere\" names no registered agency",
            "\"police\" is the agency itself",
            "housing offers no service \"no-such-service\"",
            "information requests name no service",
            "no officer token can be verified",
            "(agency telecom): the agency may not call ReferralService/SubmitReferral",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert_eq!(problems.len(), 8, "{text}");
        assert!(check(&sample()).is_empty());
    }

    #[test]
    fn default_deny_roles_and_rules_decide_with_their_names() {
        let policy = Policy::of(&sample());
        let submit = "jisr.v1.ReferralService/SubmitReferral";
        assert_eq!(
            policy.rpc("social-services", submit),
            Decision::allow("policy.allow:jisr.v1.ReferralService/*")
        );
        assert_eq!(
            policy.rpc("telecom", submit),
            Decision::deny(RULE_DEFAULT_DENY)
        );
        assert_eq!(
            policy.rpc("unknown", submit),
            Decision::deny(RULE_DEFAULT_DENY)
        );
        let checkpoint = "jisr.v1.AuditService/GetCheckpoint";
        assert_eq!(
            policy.rpc("digital", checkpoint),
            Decision::allow(RULE_AUDITOR_ROLE)
        );
        assert_eq!(
            policy.rpc("social-services", checkpoint),
            Decision::deny(RULE_AUDITOR_REQUIRED)
        );
        assert_eq!(
            policy.rpc("telecom", "grpc.health.v1.Health/Check"),
            Decision::allow(RULE_STANDARD)
        );
        assert_eq!(
            policy.rpc(
                "telecom",
                "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
            ),
            Decision::allow(RULE_STANDARD)
        );
        assert!(policy.may_refer("social-services", "housing", "x").allowed);
        assert!(!policy.may_refer("telecom", "housing", "x").allowed);
        assert!(!policy.may_ask("telecom", "housing").allowed);
    }

    #[test]
    fn the_contract_lists_the_rpcs_the_gateway_serves() {
        let rpcs = served_rpcs();
        assert!(rpcs.contains(&"jisr.v1.ReferralService/SubmitReferral".to_string()));
        assert!(rpcs.contains(&"jisr.adapter.v1.InboxService/PullDeliveries".to_string()));
        assert!(!rpcs.iter().any(|r| r.contains("AgencyEndpointService")));
    }
}
