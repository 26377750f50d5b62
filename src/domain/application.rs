//! Joint services: one application, a clearance from each of several agencies,
//! one status derived from the clearances, never set by hand. After HL7 FHIR
//! RequestOrchestration: one parent (the application), one task per agency (a clearance).
//!
//! ```text
//! clearance:   WAITING ─▶ REQUESTED ─▶ ACCEPTED ─▶ IN_REVIEW ─▶ APPROVED (conditions)
//!              (its prerequisites      └──────────┴──────────┴─▶ REJECTED (reason)
//!               not approved yet)      IN_REVIEW ⇄ INFORMATION_REQUESTED
//! application: IN_PROGRESS ─▶ APPROVED   the decision rule is met
//!                          ─▶ REJECTED   the rule can no longer be met
//!                          ─▶ WITHDRAWN  by the lead agency
//! ```
//!
//! Everything here is pure: the definition of a joint service (from the directory config),
//! its validation, the status the clearances imply, which clearances may be requested now,
//! and the due dates and expected completion the dependency graph and the calendar give.
//! The exchange service builds on it (`domain::exchange::application`): an application's
//! moves, its fan-out through the outbox, the deadline sweep.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::directory::calendar::{add_working_days, Calendar};

/// One joint service, as the directory config defines it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JointServiceSpec {
    pub code: String,
    /// The clearances it needs, one per agency.
    pub clearances: Vec<ClearanceSpec>,
    /// How many approvals decide it: all of them (not set), or at least this many.
    #[serde(default)]
    pub required_approvals: Option<u32>,
}

/// One agency's clearance within a joint service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClearanceSpec {
    pub agency: String,
    /// Working days the agency has, from the moment its clearance is requested.
    pub time_frame_working_days: u32,
    /// Agencies whose clearances must be approved before this one is requested.
    #[serde(default)]
    pub after: Vec<String>,
    /// What a clearance past its due date means.
    #[serde(default)]
    pub on_deadline: OnDeadline,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnDeadline {
    /// It stays open and overdue; both sides are told.
    #[default]
    StaysOverdue,
    /// Silence is consent: it counts as approved at its due date.
    DeemedApproved,
}

/// Where one clearance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clearance {
    /// Its prerequisites are not all approved yet: not requested.
    Waiting,
    Requested,
    Accepted,
    InReview,
    InformationRequested,
    /// Approved at this time (ms).
    Approved(i64),
    Rejected,
}

impl Clearance {
    fn is_open(self) -> bool {
        !matches!(self, Clearance::Approved(_) | Clearance::Rejected)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplicationStatus {
    InProgress,
    Approved,
    Rejected,
    Withdrawn,
}

/// What is wrong with a joint service's definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("joint service {0} needs at least one clearance")]
    NoClearance(String),
    #[error("joint service {service} names agency {agency} for two clearances")]
    DuplicateAgency { service: String, agency: String },
    #[error("joint service {service}: the clearance of {agency} comes after {missing}, which has no clearance in it")]
    UnknownPrerequisite {
        service: String,
        agency: String,
        missing: String,
    },
    #[error("joint service {service}: the clearances of {cycle} wait for each other")]
    Cycle { service: String, cycle: String },
    #[error("joint service {service}: required_approvals = {required} must be from 1 to its {clearances} clearances")]
    RequiredApprovals {
        service: String,
        required: u32,
        clearances: usize,
    },
}

impl JointServiceSpec {
    /// Checks the definition: at least one clearance, one per agency, prerequisites that are
    /// clearances of this service and never wait for each other, a reachable decision rule.
    pub fn validate(&self) -> Result<(), SpecError> {
        let service = || self.code.clone();
        if self.clearances.is_empty() {
            return Err(SpecError::NoClearance(service()));
        }
        let mut seen = BTreeSet::new();
        for c in &self.clearances {
            if !seen.insert(c.agency.as_str()) {
                return Err(SpecError::DuplicateAgency {
                    service: service(),
                    agency: c.agency.clone(),
                });
            }
        }
        for c in &self.clearances {
            if let Some(missing) = c.after.iter().find(|a| !seen.contains(a.as_str())) {
                return Err(SpecError::UnknownPrerequisite {
                    service: service(),
                    agency: c.agency.clone(),
                    missing: missing.clone(),
                });
            }
        }
        if self.order().len() < self.clearances.len() {
            let ordered: BTreeSet<&str> = self.order().iter().map(|c| c.agency.as_str()).collect();
            let cycle: Vec<&str> = self
                .clearances
                .iter()
                .map(|c| c.agency.as_str())
                .filter(|a| !ordered.contains(a))
                .collect();
            return Err(SpecError::Cycle {
                service: service(),
                cycle: cycle.join(", "),
            });
        }
        let required = self.required();
        if required == 0 || required as usize > self.clearances.len() {
            return Err(SpecError::RequiredApprovals {
                service: service(),
                required,
                clearances: self.clearances.len(),
            });
        }
        Ok(())
    }

    /// Approvals that decide the application.
    pub fn required(&self) -> u32 {
        self.required_approvals
            .unwrap_or(self.clearances.len() as u32)
    }

    fn clearance(&self, agency: &str) -> Option<&ClearanceSpec> {
        self.clearances.iter().find(|c| c.agency == agency)
    }

    /// The clearances with every prerequisite before its dependents (Kahn's algorithm, in
    /// the order of the definition among equals). Shorter than `clearances` on a cycle.
    fn order(&self) -> Vec<&ClearanceSpec> {
        let mut placed: BTreeSet<&str> = BTreeSet::new();
        let mut order = Vec::new();
        loop {
            let next: Vec<&ClearanceSpec> = self
                .clearances
                .iter()
                .filter(|c| !placed.contains(c.agency.as_str()))
                .filter(|c| c.after.iter().all(|a| placed.contains(a.as_str())))
                .collect();
            if next.is_empty() {
                return order;
            }
            for c in next {
                placed.insert(&c.agency);
                order.push(c);
            }
        }
    }

    /// The clearances that can still be approved: not rejected, and no prerequisite
    /// (however far back) rejected.
    fn approvable(&self, states: &BTreeMap<String, Clearance>) -> BTreeSet<String> {
        let mut approvable = BTreeSet::new();
        for c in self.order() {
            let rejected = states.get(&c.agency) == Some(&Clearance::Rejected);
            if !rejected && c.after.iter().all(|a| approvable.contains(a)) {
                approvable.insert(c.agency.clone());
            }
        }
        approvable
    }

    /// The application's status, from its clearances by the decision rule: APPROVED once
    /// enough are approved, REJECTED as soon as enough can no longer be, else IN_PROGRESS.
    /// A clearance missing from `states` is WAITING.
    pub fn status(
        &self,
        states: &BTreeMap<String, Clearance>,
        withdrawn: bool,
    ) -> ApplicationStatus {
        if withdrawn {
            return ApplicationStatus::Withdrawn;
        }
        let required = self.required() as usize;
        let approved = self
            .clearances
            .iter()
            .filter(|c| matches!(states.get(&c.agency), Some(Clearance::Approved(_))))
            .count();
        if approved >= required {
            ApplicationStatus::Approved
        } else if self.approvable(states).len() < required {
            ApplicationStatus::Rejected
        } else {
            ApplicationStatus::InProgress
        }
    }

    /// The clearances to request now: WAITING, with every prerequisite approved.
    pub fn ready(&self, states: &BTreeMap<String, Clearance>) -> Vec<String> {
        self.clearances
            .iter()
            .filter(|c| matches!(states.get(&c.agency), None | Some(Clearance::Waiting)))
            .filter(|c| {
                c.after
                    .iter()
                    .all(|a| matches!(states.get(a), Some(Clearance::Approved(_))))
            })
            .map(|c| c.agency.clone())
            .collect()
    }

    /// Each clearance's due date and the application's expected completion, as of `now`.
    ///
    /// A clearance is requested when its last prerequisite is approved, or, while that has
    /// not happened, when it is expected to be; it is due `time_frame_working_days` working
    /// days after. An open clearance is expected to finish at its due date, or `now` if that
    /// has passed (it is late: everything after it moves); an approved one finished when it
    /// was approved. The application is expected to complete when the last of the approvals
    /// it needs is expected: with k of n, the k-th earliest among the clearances that can
    /// still be approved. None when it can no longer be approved.
    pub fn schedule(
        &self,
        submitted_at: i64,
        states: &BTreeMap<String, Clearance>,
        now: i64,
        calendar: &Calendar,
    ) -> Schedule {
        let mut finish: BTreeMap<&str, i64> = BTreeMap::new();
        let mut due_at = BTreeMap::new();
        for c in self.order() {
            let start = c
                .after
                .iter()
                .filter_map(|a| finish.get(a.as_str()).copied())
                .fold(submitted_at, i64::max);
            let due = add_working_days(start, c.time_frame_working_days, calendar);
            due_at.insert(c.agency.clone(), due);
            let state = states.get(&c.agency).copied().unwrap_or(Clearance::Waiting);
            finish.insert(
                &c.agency,
                match state {
                    Clearance::Approved(at) => at,
                    _ => due.max(now),
                },
            );
        }
        let approvable = self.approvable(states);
        let mut finishes: Vec<i64> = approvable.iter().map(|a| finish[a.as_str()]).collect();
        finishes.sort_unstable();
        let expected_completion = finishes.get(self.required() as usize - 1).copied();
        Schedule {
            due_at,
            expected_completion,
        }
    }

    /// Whether an open clearance past its due date counts as approved now (the service
    /// says silence is consent for it).
    pub fn deemed_approved(&self, agency: &str, state: Clearance, due_at: i64, now: i64) -> bool {
        state.is_open()
            && state != Clearance::Waiting
            && now >= due_at
            && self
                .clearance(agency)
                .is_some_and(|c| c.on_deadline == OnDeadline::DeemedApproved)
    }
}

/// Due dates by agency, and when the application is expected to be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub due_at: BTreeMap<String, i64>,
    pub expected_completion: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::calendar::utc_date;
    use time::{Month, Weekday};

    const DAY: i64 = 86_400_000;

    fn clearance(agency: &str, days: u32, after: &[&str]) -> ClearanceSpec {
        ClearanceSpec {
            agency: agency.into(),
            time_frame_working_days: days,
            after: after.iter().map(|a| a.to_string()).collect(),
            on_deadline: OnDeadline::StaysOverdue,
        }
    }

    fn spec(clearances: Vec<ClearanceSpec>, required: Option<u32>) -> JointServiceSpec {
        JointServiceSpec {
            code: "completion-certificate".into(),
            clearances,
            required_approvals: required,
        }
    }

    fn states(pairs: &[(&str, Clearance)]) -> BTreeMap<String, Clearance> {
        pairs.iter().map(|(a, s)| (a.to_string(), *s)).collect()
    }

    /// Monday 2026-12-07 09:00 UTC; Friday and Saturday are the weekend.
    fn monday() -> i64 {
        let date = time::Date::from_calendar_date(2026, Month::December, 7).unwrap();
        (i64::from(date.to_julian_day()) - 2_440_588) * DAY + 9 * 3_600_000
    }

    fn calendar() -> Calendar {
        Calendar::new(&[Weekday::Friday, Weekday::Saturday], &[]).unwrap()
    }

    fn day_of(ms: i64) -> String {
        utc_date(ms).unwrap().to_string()
    }

    #[test]
    fn definitions_are_checked() {
        let ok = spec(
            vec![clearance("a", 5, &[]), clearance("b", 3, &["a"])],
            None,
        );
        assert_eq!(ok.validate(), Ok(()));
        assert!(matches!(
            spec(vec![], None).validate(),
            Err(SpecError::NoClearance(_))
        ));
        assert!(matches!(
            spec(vec![clearance("a", 1, &[]), clearance("a", 2, &[])], None).validate(),
            Err(SpecError::DuplicateAgency { agency, .. }) if agency == "a"
        ));
        assert!(matches!(
            spec(vec![clearance("a", 1, &["x"])], None).validate(),
            Err(SpecError::UnknownPrerequisite { missing, .. }) if missing == "x"
        ));
        let cycle = spec(
            vec![
                clearance("a", 1, &[]),
                clearance("b", 1, &["c"]),
                clearance("c", 1, &["b"]),
            ],
            None,
        );
        assert_eq!(
            cycle.validate(),
            Err(SpecError::Cycle {
                service: "completion-certificate".into(),
                cycle: "b, c".into()
            })
        );
        for required in [0, 3] {
            assert!(matches!(
                spec(
                    vec![clearance("a", 1, &[]), clearance("b", 1, &[])],
                    Some(required)
                )
                .validate(),
                Err(SpecError::RequiredApprovals { .. })
            ));
        }
    }

    #[test]
    fn all_must_approve_and_one_rejection_decides_at_once() {
        let s = spec(
            vec![
                clearance("a", 5, &[]),
                clearance("b", 5, &[]),
                clearance("c", 5, &[]),
            ],
            None,
        );
        use Clearance::*;
        assert_eq!(s.status(&states(&[]), false), ApplicationStatus::InProgress);
        let two = states(&[("a", Approved(1)), ("b", Approved(2)), ("c", InReview)]);
        assert_eq!(s.status(&two, false), ApplicationStatus::InProgress);
        let all = states(&[("a", Approved(1)), ("b", Approved(2)), ("c", Approved(3))]);
        assert_eq!(s.status(&all, false), ApplicationStatus::Approved);
        let one_no = states(&[("a", Rejected), ("b", Requested), ("c", Requested)]);
        assert_eq!(s.status(&one_no, false), ApplicationStatus::Rejected);
        assert_eq!(s.status(&all, true), ApplicationStatus::Withdrawn);
    }

    #[test]
    fn k_of_n_decides_when_k_approve_or_k_can_no_longer_approve() {
        let s = spec(
            vec![
                clearance("a", 5, &[]),
                clearance("b", 5, &[]),
                clearance("c", 5, &[]),
            ],
            Some(2),
        );
        use Clearance::*;
        let one_no = states(&[("a", Rejected), ("b", Requested), ("c", InReview)]);
        assert_eq!(s.status(&one_no, false), ApplicationStatus::InProgress);
        let two_no = states(&[("a", Rejected), ("b", Rejected), ("c", Approved(5))]);
        assert_eq!(s.status(&two_no, false), ApplicationStatus::Rejected);
        let two_yes = states(&[("a", Rejected), ("b", Approved(4)), ("c", Approved(5))]);
        assert_eq!(s.status(&two_yes, false), ApplicationStatus::Approved);
    }

    #[test]
    fn dependents_are_requested_only_after_their_prerequisites_approve() {
        // Civil defence only after planning; roads after both.
        let s = spec(
            vec![
                clearance("planning", 5, &[]),
                clearance("municipality", 5, &[]),
                clearance("civil-defence", 3, &["planning"]),
                clearance("roads", 2, &["planning", "civil-defence"]),
            ],
            None,
        );
        use Clearance::*;
        assert_eq!(s.ready(&states(&[])), ["planning", "municipality"]);
        let planning_in_review = states(&[("planning", InReview), ("municipality", Requested)]);
        assert!(s.ready(&planning_in_review).is_empty());
        let planning_done = states(&[("planning", Approved(9)), ("municipality", Requested)]);
        assert_eq!(s.ready(&planning_done), ["civil-defence"]);
        // A rejected prerequisite makes its dependents unapprovable: all-must-approve fails.
        let planning_no = states(&[("planning", Rejected), ("municipality", Approved(1))]);
        assert_eq!(s.status(&planning_no, false), ApplicationStatus::Rejected);
        assert!(s.ready(&planning_no).is_empty());
    }

    #[test]
    fn a_rejection_upstream_counts_against_k_of_n_for_every_dependent() {
        // 2 of 3, but b and c both wait for a: a's rejection leaves one approvable.
        let s = spec(
            vec![
                clearance("a", 1, &[]),
                clearance("b", 1, &["a"]),
                clearance("c", 1, &["a"]),
            ],
            Some(2),
        );
        let a_no = states(&[("a", Clearance::Rejected)]);
        assert_eq!(s.status(&a_no, false), ApplicationStatus::Rejected);
    }

    #[test]
    fn the_expected_completion_follows_the_dependency_graph_and_the_calendar() {
        let s = spec(
            vec![
                clearance("planning", 5, &[]),
                clearance("municipality", 4, &[]),
                clearance("civil-defence", 3, &["planning"]),
            ],
            None,
        );
        let cal = calendar();
        let submitted = monday();
        let plan = s.schedule(submitted, &states(&[]), submitted, &cal);
        // Planning: 5 working days after Monday 7 Dec, Friday and Saturday off: Tue 8, Wed 9,
        // Thu 10, Sun 13, Mon 14.
        assert_eq!(day_of(plan.due_at["planning"]), "2026-12-14");
        assert_eq!(day_of(plan.due_at["municipality"]), "2026-12-13");
        // Civil defence starts when planning is expected to approve: Tue 15, Wed 16, Thu 17.
        assert_eq!(day_of(plan.due_at["civil-defence"]), "2026-12-17");
        assert_eq!(day_of(plan.expected_completion.unwrap()), "2026-12-17");

        // Planning approves early (Wednesday): civil defence's frame starts then.
        let early = states(&[("planning", Clearance::Approved(submitted + 2 * DAY))]);
        let plan = s.schedule(submitted, &early, submitted + 2 * DAY, &cal);
        assert_eq!(day_of(plan.due_at["civil-defence"]), "2026-12-14");
        assert_eq!(day_of(plan.expected_completion.unwrap()), "2026-12-14");

        // Planning is late: on Wednesday 16 Dec it is still in review; what comes after moves.
        let late_now = submitted + 9 * DAY;
        let late = states(&[
            ("planning", Clearance::InReview),
            ("municipality", Clearance::Approved(submitted + DAY)),
        ]);
        let plan = s.schedule(submitted, &late, late_now, &cal);
        assert_eq!(
            day_of(plan.due_at["planning"]),
            "2026-12-14",
            "its own due date stays"
        );
        // Civil defence from Wed 16: Thu 17, Sun 20, Mon 21.
        assert_eq!(day_of(plan.due_at["civil-defence"]), "2026-12-21");
        assert_eq!(day_of(plan.expected_completion.unwrap()), "2026-12-21");

        // Rejected: no completion to expect.
        let no = states(&[("municipality", Clearance::Rejected)]);
        assert_eq!(
            s.schedule(submitted, &no, submitted, &cal)
                .expected_completion,
            None
        );
    }

    #[test]
    fn k_of_n_completes_at_the_kth_expected_approval() {
        let s = spec(
            vec![
                clearance("a", 1, &[]),
                clearance("b", 3, &[]),
                clearance("c", 10, &[]),
            ],
            Some(2),
        );
        let cal = calendar();
        let plan = s.schedule(monday(), &states(&[]), monday(), &cal);
        assert_eq!(plan.expected_completion, Some(plan.due_at["b"]));
    }

    #[test]
    fn silence_is_consent_only_where_the_service_says_so_and_only_once_due() {
        let mut s = spec(vec![clearance("a", 5, &[]), clearance("b", 5, &[])], None);
        s.clearances[0].on_deadline = OnDeadline::DeemedApproved;
        let due = 1_000;
        assert!(s.deemed_approved("a", Clearance::InReview, due, due));
        assert!(
            !s.deemed_approved("a", Clearance::InReview, due, due - 1),
            "not yet due"
        );
        assert!(
            !s.deemed_approved("a", Clearance::Rejected, due, due + 1),
            "decided"
        );
        assert!(
            !s.deemed_approved("a", Clearance::Waiting, due, due + 1),
            "never requested"
        );
        assert!(
            !s.deemed_approved("b", Clearance::InReview, due, due + 1),
            "stays overdue"
        );
    }

    #[test]
    fn definitions_read_from_toml() {
        let s: JointServiceSpec = toml::from_str(
            r#"
            code = "completion-certificate"
            required_approvals = 2
            [[clearances]]
            agency = "planning-survey"
            time_frame_working_days = 5
            [[clearances]]
            agency = "civil-defence"
            time_frame_working_days = 3
            after = ["planning-survey"]
            on_deadline = "deemed_approved"
            "#,
        )
        .unwrap();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.clearances[1].on_deadline, OnDeadline::DeemedApproved);
        assert_eq!(s.required(), 2);
    }
}
