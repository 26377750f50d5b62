//! An agency's circuit breaker: closed while its system answers; open for a cooldown after
//! `threshold` consecutive retryable failures (nothing is sent); then half-open, when
//! exactly one attempt (the probe) goes through. Only the probe's success closes it; its
//! failure opens it for another cooldown. A pure state machine: the dispatcher asks it
//! before leasing and before each attempt, and tells it each outcome.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The probe is out; nothing else goes until it is answered.
    Probing,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    threshold: u32,
    cooldown: Duration,
}

/// What the breaker lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: everything.
    All,
    /// Half-open: this one attempt, the probe (the breaker now waits for its outcome).
    Probe,
    /// Open, or the probe is out: nothing, until this instant at the earliest (`None`:
    /// until the probe is answered).
    Nothing(Option<Instant>),
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            state: State::Closed { failures: 0 },
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Whether an attempt may go now; `Probe` is handed out once per cooldown.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::All,
            State::Open { until } if now >= until => {
                self.state = State::Probing;
                Admit::Probe
            }
            State::Open { until } => Admit::Nothing(Some(until)),
            State::Probing => Admit::Nothing(None),
        }
    }

    /// Whether attempts go through without a probe.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// The state as `jisr_delivery_breaker_state` reports it: 0 closed, 1 half-open (the
    /// probe is out), 2 open.
    pub fn level(&self) -> i64 {
        use crate::telemetry::metrics::{BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN};
        match self.state {
            State::Closed { .. } => BREAKER_CLOSED,
            State::Probing => BREAKER_HALF_OPEN,
            State::Open { .. } => BREAKER_OPEN,
        }
    }

    /// The agency answered (a success, or a refusal: either shows its system is up).
    pub fn answered(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// An attempt failed in a way worth retrying; returns true if the breaker opened.
    pub fn failed(&mut self, now: Instant) -> bool {
        let opens = match self.state {
            State::Closed { failures } => {
                let failures = failures + 1;
                self.state = State::Closed { failures };
                failures >= self.threshold
            }
            // The probe failed (or an attempt that was already under way when it opened).
            State::Probing | State::Open { .. } => true,
        };
        if opens {
            self.state = State::Open {
                until: now + self.cooldown,
            };
        }
        opens
    }

    /// A probe that was handed out did not reach the agency (nothing was due, or the
    /// dispatcher stopped): the next `admit` may hand out another.
    pub fn probe_unused(&mut self, now: Instant) {
        if self.state == State::Probing {
            self.state = State::Open { until: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_lets_exactly_one_probe_through_per_cooldown() {
        let cooldown = Duration::from_secs(10);
        let mut b = Breaker::new(3, cooldown);
        let t0 = Instant::now();
        assert_eq!(b.admit(t0), Admit::All);
        assert!(!b.failed(t0));
        assert!(!b.failed(t0));
        assert!(b.failed(t0), "the third consecutive failure opens it");
        assert_eq!(b.admit(t0), Admit::Nothing(Some(t0 + cooldown)));
        let t1 = t0 + cooldown;
        assert_eq!(b.admit(t1), Admit::Probe, "after the cooldown, one probe");
        for _ in 0..100 {
            assert_eq!(b.admit(t1), Admit::Nothing(None), "and only one");
        }
        assert!(b.failed(t1), "a failed probe opens it again");
        assert_eq!(b.admit(t1), Admit::Nothing(Some(t1 + cooldown)));
        let t2 = t1 + cooldown;
        assert_eq!(b.admit(t2), Admit::Probe);
        assert!(!b.is_closed());
        b.answered();
        assert!(b.is_closed(), "only the probe's success closes it");
        assert_eq!(b.admit(t2), Admit::All);
    }

    #[test]
    fn a_success_resets_the_count_and_an_unused_probe_is_handed_out_again() {
        let mut b = Breaker::new(2, Duration::from_millis(5));
        let t0 = Instant::now();
        assert!(!b.failed(t0));
        b.answered();
        assert!(!b.failed(t0), "failures must be consecutive");
        assert!(b.failed(t0));
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(b.admit(t1), Admit::Probe);
        b.probe_unused(t1);
        assert_eq!(b.admit(t1), Admit::Probe);
    }
}
