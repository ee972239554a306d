//! Face unlock: the last three stages of the pipeline, after the embedding.
//!
//! `store` matches an embedding against the enrolled templates, `policy` turns one
//! observation per frame into a decision, `actuator` drives the lock. They are separate so
//! each is tested on its own (the policy with injected time, the store with injected write
//! failures, the actuator with a mock pin), and [`act`] is the one place where a decision
//! meets the lock, so the fail-closed rule lives in exactly one function: only
//! `Decision::Unlock` opens, and any actuator error is followed by an attempt to lock.

pub mod actuator;
pub mod app;
pub mod attempts;
pub mod audit_outbox;
pub mod embed_cache;
pub mod frozen;
pub mod live_store;
pub mod policy;
pub mod policy_state;
pub mod rule;
pub mod seal;
pub mod securefs;
pub mod session;
pub mod store;
pub mod sync_state;
pub mod threshold;
pub mod threshold_file;

use std::time::Duration;

use crate::error::Result;
use actuator::Actuator;
use policy::{Decision, Observation};
use rule::Rule;
use store::TemplateStore;

/// Builds the policy's observation for one frame from the frame's embedding, matched under
/// the board's `rule`: `None` means no face was found; `Some(Err(..))` means a stage failed
/// (its message is carried on).
pub fn observe(
    store: &TemplateStore,
    rule: Rule,
    embedding: Option<Result<&[f32]>>,
) -> Observation {
    match embedding {
        None => Observation::NoFace,
        Some(Err(e)) => Observation::Error(e.to_string()),
        Some(Ok(q)) => match store.best_match(q, rule) {
            Ok(best) => Observation::Face {
                best: best.map(|(u, s)| (u.to_string(), s)),
            },
            Err(e) => Observation::Error(e.to_string()),
        },
    }
}

/// Carries out `decision`: opens for `open_time` only on [`Decision::Unlock`]. Returns
/// `Ok(true)` if the lock was pulsed. If the pulse fails, [`Actuator::ensure_locked`] is
/// tried as well and the pulse's error is returned: [`crate::error::Error::Actuator`] when
/// the lock is locked again (treated as locked), [`crate::error::Error::LockStateUnknown`]
/// when LOCKED could not be driven (the caller must stop opening).
pub fn act(actuator: &mut dyn Actuator, decision: &Decision, open_time: Duration) -> Result<bool> {
    if !decision.is_unlock() {
        return Ok(false);
    }
    match actuator.open_for(open_time) {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = actuator.ensure_locked();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::actuator::LogActuator;
    use super::policy::{Policy, PolicyConfig};
    use super::*;
    use crate::error::Error;
    use std::time::Instant;

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 4];
        v[i] = 1.0;
        v
    }

    #[test]
    fn end_to_end_only_k_matching_frames_pulse_once() {
        let mut store = TemplateStore::new("m", 4).unwrap();
        store.add_templates("alice", vec![unit(0)]).unwrap();
        let mut policy = Policy::new(PolicyConfig::default()).unwrap();
        let mut lock = LogActuator::new();
        let t0 = Instant::now();
        let open = Duration::from_millis(3000);
        // (0.6, 0.8, 0, 0) scores 0.6 against alice: above the default threshold 0.5.
        let alice = [0.6, 0.8, 0.0, 0.0];
        // (0, 0.6, 0.8, 0) scores 0 against alice: no match.
        let stranger = [0.0, 0.6, 0.8, 0.0];
        let frames: Vec<Option<Result<&[f32]>>> = vec![
            Some(Ok(&stranger)),
            None,
            Some(Ok(&alice)),
            Some(Err(Error::Msg("detector: bad frame".into()))), // clears progress
            Some(Ok(&alice)),
            Some(Ok(&alice)),
            Some(Ok(&alice)), // 3rd consecutive hit after the error -> unlock
            Some(Ok(&alice)), // cooldown
        ];
        let mut decisions = Vec::new();
        for (i, f) in frames.into_iter().enumerate() {
            let d = policy.observe(
                &observe(&store, Rule::Best, f),
                t0 + Duration::from_millis(100 * i as u64),
            );
            act(&mut lock, &d, open).unwrap();
            decisions.push(d);
        }
        assert_eq!(lock.pulses(), &[open]);
        assert!(decisions[6].is_unlock(), "{:?}", decisions);
        assert_eq!(decisions.iter().filter(|d| d.is_unlock()).count(), 1);
    }

    #[test]
    fn wrong_dimension_embedding_is_an_error_decision_not_a_match() {
        let mut store = TemplateStore::new("m", 4).unwrap();
        store.add_templates("alice", vec![unit(0)]).unwrap();
        for rule in Rule::ALL {
            let obs = observe(&store, rule, Some(Ok(&[1.0, 0.0])));
            assert!(matches!(obs, Observation::Error(_)), "{rule}");
        }
    }

    #[test]
    fn actuator_failure_is_reported_and_relocks() {
        let mut lock = LogActuator::new();
        lock.set_failing(true);
        let d = Decision::Unlock {
            user: "alice".into(),
            score: 0.9,
        };
        assert!(matches!(
            act(&mut lock, &d, Duration::from_secs(1)),
            Err(Error::Actuator(_))
        ));
        assert_eq!(lock.pulse_count(), 0);
        assert_eq!(lock.lock_calls(), 1);
        // LOCKED failing after the pulse is handed on as its own kind, after one more try.
        lock.set_failure(Some(actuator::InjectedFailure::Relock));
        assert!(matches!(
            act(&mut lock, &d, Duration::from_secs(1)),
            Err(Error::LockStateUnknown(_))
        ));
        assert_eq!(lock.lock_calls(), 2);
        // Non-unlock decisions never touch the actuator.
        let mut lock = LogActuator::new();
        for d in [
            Decision::NoFace,
            Decision::NoMatch { best_score: None },
            Decision::Error("x".into()),
            Decision::LockedOut {
                remaining: Duration::from_secs(1),
            },
        ] {
            assert!(!act(&mut lock, &d, Duration::from_secs(1)).unwrap());
        }
        assert_eq!((lock.pulse_count(), lock.lock_calls()), (0, 0));
    }
}
