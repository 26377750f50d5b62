//! The referral lifecycle (after the HL7 FHIR Task state machine) and who may move it.
//!
//! ```text
//! SUBMITTED ─▶ DELIVERED ─▶ ACCEPTED ─▶ IN_PROGRESS ─▶ COMPLETED (outcome)
//!                       └─▶ REJECTED (reason code)   IN_PROGRESS ⇄ ON_HOLD
//! any non-terminal ─▶ WITHDRAWN (sender)      delivery given up ─▶ FAILED (gateway)
//! ```
//!
//! The recipient may also accept or reject straight from SUBMITTED: acting on a referral
//! it found by listing or watching proves it was received (FHIR Task allows
//! requested → accepted too), and DELIVERED is only recorded once an adapter confirms.

use crate::common::ApiError;
use crate::pb::v1::ReferralStatus as S;

/// Which side of a referral is acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Sender,
    Recipient,
    Gateway,
}

impl Actor {
    pub fn name(self) -> &'static str {
        match self {
            Actor::Sender => "sender",
            Actor::Recipient => "recipient",
            Actor::Gateway => "gateway",
        }
    }
}

/// A move the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct TransitionError {
    pub from: S,
    pub to: S,
    pub actor: Actor,
    /// The actor may never set `to`, whatever the current status.
    pub actor_may_not_set: bool,
}

impl TransitionError {
    /// The refusal the caller gets (FAILED_PRECONDITION, naming both statuses).
    pub fn into_error(self, referral_id: &str) -> ApiError {
        ApiError::Transition {
            referral_id: referral_id.to_string(),
            current: short(self.from),
            requested: short(self.to),
            not_settable: self.actor_may_not_set,
            message: self.describe(),
        }
    }

    fn describe(&self) -> String {
        let (from, to) = (short(self.from), short(self.to));
        if self.actor_may_not_set {
            return format!(
                "the {} may not set {to} (the referral is {from}); {}",
                self.actor.name(),
                who_sets(self.to)
            );
        }
        let allowed: Vec<_> = allowed_from(self.from, self.actor)
            .into_iter()
            .map(short)
            .collect();
        let allowed = if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        };
        format!("the referral is {from}; it cannot move to {to} (allowed next: {allowed})")
    }
}

/// The status name without its enum prefix, as people say it: IN_PROGRESS.
pub fn short(status: S) -> &'static str {
    status
        .as_str_name()
        .strip_prefix("REFERRAL_STATUS_")
        .unwrap_or("UNSPECIFIED")
}

pub fn is_final(status: S) -> bool {
    matches!(
        status,
        S::Completed | S::Rejected | S::Withdrawn | S::Failed
    )
}

/// The statuses `actor` may set.
fn settable_by(actor: Actor) -> &'static [S] {
    match actor {
        Actor::Sender => &[S::Withdrawn],
        Actor::Recipient => &[
            S::Accepted,
            S::Rejected,
            S::InProgress,
            S::OnHold,
            S::Completed,
        ],
        Actor::Gateway => &[S::Delivered, S::Failed],
    }
}

fn who_sets(status: S) -> &'static str {
    match status {
        S::Withdrawn => "only the sender may set it",
        S::Delivered | S::Failed => "only the gateway sets it",
        S::Submitted | S::Unspecified => "it is never set by an update",
        _ => "only the recipient may set it",
    }
}

/// Every status the lifecycle allows after `from`, for `actor`.
pub fn allowed_from(from: S, actor: Actor) -> Vec<S> {
    let edges: &[S] = match from {
        S::Submitted => &[
            S::Delivered,
            S::Accepted,
            S::Rejected,
            S::Failed,
            S::Withdrawn,
        ],
        S::Delivered => &[S::Accepted, S::Rejected, S::Withdrawn],
        S::Accepted => &[S::InProgress, S::Withdrawn],
        S::InProgress => &[S::OnHold, S::Completed, S::Withdrawn],
        S::OnHold => &[S::InProgress, S::Withdrawn],
        _ => &[],
    };
    edges
        .iter()
        .copied()
        .filter(|s| settable_by(actor).contains(s))
        .collect()
}

/// Checks one move of the lifecycle.
pub fn check_transition(from: S, to: S, actor: Actor) -> Result<(), TransitionError> {
    let err = |actor_may_not_set| TransitionError {
        from,
        to,
        actor,
        actor_may_not_set,
    };
    if !settable_by(actor).contains(&to) {
        return Err(err(true));
    }
    if !allowed_from(from, actor).contains(&to) {
        return Err(err(false));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_path_is_allowed() {
        let path = [
            (S::Submitted, S::Delivered, Actor::Gateway),
            (S::Delivered, S::Accepted, Actor::Recipient),
            (S::Accepted, S::InProgress, Actor::Recipient),
            (S::InProgress, S::OnHold, Actor::Recipient),
            (S::OnHold, S::InProgress, Actor::Recipient),
            (S::InProgress, S::Completed, Actor::Recipient),
        ];
        for (from, to, actor) in path {
            assert_eq!(
                check_transition(from, to, actor),
                Ok(()),
                "{from:?} -> {to:?}"
            );
        }
    }

    #[test]
    fn who_may_set_is_enforced() {
        let e = check_transition(S::Delivered, S::Accepted, Actor::Sender).unwrap_err();
        assert!(e.actor_may_not_set);
        assert!(e.to_string().contains("only the recipient"), "{e}");
        assert!(check_transition(S::Accepted, S::Withdrawn, Actor::Recipient).is_err());
        assert!(check_transition(S::Submitted, S::Delivered, Actor::Recipient).is_err());
        assert!(check_transition(S::Submitted, S::Failed, Actor::Sender).is_err());
        assert_eq!(
            check_transition(S::OnHold, S::Withdrawn, Actor::Sender),
            Ok(())
        );
    }

    #[test]
    fn final_states_are_final_and_errors_name_the_current_status() {
        for from in [S::Completed, S::Rejected, S::Withdrawn, S::Failed] {
            assert!(is_final(from));
            for actor in [Actor::Sender, Actor::Recipient, Actor::Gateway] {
                assert!(allowed_from(from, actor).is_empty());
            }
        }
        let e = check_transition(S::Completed, S::InProgress, Actor::Recipient).unwrap_err();
        assert!(e.to_string().contains("the referral is COMPLETED"), "{e}");
        assert!(e.to_string().contains("none"), "{e}");
        let e = check_transition(S::Accepted, S::Completed, Actor::Recipient).unwrap_err();
        assert!(e.to_string().contains("IN_PROGRESS"), "{e}");
    }
}
