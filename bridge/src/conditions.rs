//! kstatus-style conditions: `Ready` is always present; `Reconciling` and `Stalled`
//! are present only while True (abnormal-true polarity), so `kstatus` and Flux health
//! checks read our objects correctly.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// The overall state an object is in, as kstatus sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Ready=True.
    Ready { reason: String, message: String },
    /// Ready=False, Reconciling=True: work is under way.
    Progressing { reason: String, message: String },
    /// Ready=False, Stalled=True: it cannot proceed without a change.
    Stalled { reason: String, message: String },
}

/// Sets one condition, keeping lastTransitionTime when the status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// Removes a condition by type.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the Ready condition is True.
pub fn is_ready(conditions: &[Condition]) -> bool {
    find(conditions, READY).is_some_and(|c| c.status == "True")
}

/// Rewrites the kstatus conditions for `health`, observed at `generation`.
pub fn apply_health(
    conditions: &mut Vec<Condition>,
    health: &Health,
    generation: Option<i64>,
    now: &Time,
) {
    let cond = |type_: &str, status: &str, reason: &str, message: &str| Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    };
    match health {
        Health::Ready { reason, message } => {
            set_condition(conditions, cond(READY, "True", reason, message));
            remove_condition(conditions, RECONCILING);
            remove_condition(conditions, STALLED);
        }
        Health::Progressing { reason, message } => {
            set_condition(conditions, cond(READY, "False", reason, message));
            set_condition(conditions, cond(RECONCILING, "True", reason, message));
            remove_condition(conditions, STALLED);
        }
        Health::Stalled { reason, message } => {
            set_condition(conditions, cond(READY, "False", reason, message));
            set_condition(conditions, cond(STALLED, "True", reason, message));
            remove_condition(conditions, RECONCILING);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn ready_removes_abnormal_conditions() {
        let mut c = vec![];
        apply_health(
            &mut c,
            &Health::Stalled {
                reason: "FetchFailed".into(),
                message: "x".into(),
            },
            Some(1),
            &t(10),
        );
        assert!(find(&c, STALLED).is_some());
        assert!(!is_ready(&c));
        apply_health(
            &mut c,
            &Health::Ready {
                reason: "Applied".into(),
                message: "ok".into(),
            },
            Some(2),
            &t(20),
        );
        assert!(is_ready(&c));
        assert!(find(&c, STALLED).is_none());
        assert!(find(&c, RECONCILING).is_none());
        assert_eq!(
            find(&c, READY).map(|c| c.observed_generation),
            Some(Some(2))
        );
    }

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let mut c = vec![];
        apply_health(
            &mut c,
            &Health::Ready {
                reason: "A".into(),
                message: "a".into(),
            },
            Some(1),
            &t(10),
        );
        apply_health(
            &mut c,
            &Health::Ready {
                reason: "B".into(),
                message: "b".into(),
            },
            Some(2),
            &t(20),
        );
        let ready = find(&c, READY).expect("ready present");
        assert_eq!(ready.last_transition_time, t(10));
        assert_eq!(ready.reason, "B");
        apply_health(
            &mut c,
            &Health::Progressing {
                reason: "C".into(),
                message: "c".into(),
            },
            Some(3),
            &t(30),
        );
        assert_eq!(find(&c, READY).expect("ready").last_transition_time, t(30));
        assert!(find(&c, RECONCILING).is_some());
    }
}
