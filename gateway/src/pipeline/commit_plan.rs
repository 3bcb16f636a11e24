//! What the committer does with one batch, decided before any I/O (pure
//! over its lookups): which presses to offer the store, which to refuse
//! while storage is full, and which new presses count as opinions.
//!
//! - A press sent twice within one batch is offered twice (both copies
//!   get their ack), but only its first copy can be new.
//! - While storage is full, a press the store already has is still offered
//!   (its ack was lost: ack it again); a new one is refused, unacked, so
//!   its terminal keeps it and resends later.
//! - Only new presses reach the misuse filter: a resend is not a second
//!   press.

use pressline_protocol::PressId;

use crate::insight::misuse::{MisuseFilter, NotCounted};
use crate::pipeline::ingest::IncomingPress;
use crate::store::PressToStore;

/// The decision for one batch.
#[derive(Debug, Default)]
pub struct CommitPlan {
    /// What to offer the store, in batch order.
    pub offers: Vec<PressToStore>,
    /// For each offer, its position in the batch (to ack it).
    pub offered_from: Vec<usize>,
    /// New presses refused because storage is full (not acked).
    pub refused_storage_full: u64,
}

/// Plans `batch`. `is_stored` asks the store whether it has a press; its
/// error ends the plan (nothing is acked, terminals resend).
pub fn plan_commit<E>(
    batch: &[IncomingPress],
    mut is_stored: impl FnMut(&str, PressId) -> Result<bool, E>,
    storage_full: bool,
    misuse: &mut MisuseFilter,
) -> Result<CommitPlan, E> {
    let mut plan = CommitPlan {
        offers: Vec::with_capacity(batch.len()),
        offered_from: Vec::with_capacity(batch.len()),
        refused_storage_full: 0,
    };
    let mut in_batch = std::collections::HashSet::with_capacity(batch.len());
    for (i, incoming) in batch.iter().enumerate() {
        let first_in_batch = in_batch.insert((incoming.terminal.as_str(), incoming.press.id));
        let known = !first_in_batch || is_stored(&incoming.terminal, incoming.press.id)?;
        if storage_full && !known {
            plan.refused_storage_full += 1;
            continue;
        }
        let verdict = if known {
            None
        } else {
            let at = pressed_at(incoming).unwrap_or(incoming.received_at_ms);
            misuse.classify(&incoming.terminal, at)
        };
        plan.offers.push(to_store(incoming, verdict));
        plan.offered_from.push(i);
    }
    Ok(plan)
}

fn to_store(incoming: &IncomingPress, not_counted: Option<NotCounted>) -> PressToStore {
    PressToStore {
        terminal: incoming.terminal.clone(),
        id: incoming.press.id,
        button: incoming.press.button,
        received_at_ms: incoming.received_at_ms,
        pressed_at_ms: pressed_at(incoming),
        not_counted,
    }
}

/// When the press happened (Unix ms), from the terminal's `age_ms`.
fn pressed_at(incoming: &IncomingPress) -> Option<i64> {
    incoming
        .press
        .age_ms
        .map(|age| incoming.received_at_ms - age as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insight::misuse::MisuseConfig;
    use crate::pipeline::acks::Form;
    use pressline_protocol::{Button, Press};

    const T0: i64 = 1_790_000_000_000;

    fn press(terminal: &str, seq: u32, at_ms: i64) -> IncomingPress {
        IncomingPress {
            terminal: terminal.into(),
            form: Form::Native,
            press: Press {
                id: PressId { boot: 1, seq },
                button: Button::Happy,
                age_ms: Some(500),
                mac: None,
            },
            received_at_ms: at_ms,
        }
    }

    fn filter() -> MisuseFilter {
        MisuseFilter::new(MisuseConfig::default())
    }

    /// A store that holds the given (terminal, seq)s.
    fn holding<'a>(
        stored: &'a [(&'a str, u32)],
    ) -> impl FnMut(&str, PressId) -> Result<bool, ()> + 'a {
        move |t, id| Ok(stored.contains(&(t, id.seq)))
    }

    #[test]
    fn every_copy_is_offered_and_acked_but_only_the_first_can_be_new() {
        let batch = [press("t1", 0, T0), press("t1", 0, T0)];
        let mut asked = 0;
        let plan = plan_commit(
            &batch,
            |_, _| {
                asked += 1;
                Ok::<_, ()>(false)
            },
            false,
            &mut filter(),
        )
        .unwrap();
        assert_eq!(plan.offered_from, [0, 1]);
        assert_eq!(asked, 1, "the copy is known without asking the store");
        assert_eq!(
            plan.offers[0].pressed_at_ms,
            Some(T0 - 500),
            "dated by its age"
        );
    }

    #[test]
    fn a_full_store_refuses_new_presses_but_still_acks_what_it_has() {
        let batch = [press("t1", 0, T0), press("t1", 1, T0 + 10_000)];
        let plan = plan_commit(&batch, holding(&[("t1", 0)]), true, &mut filter()).unwrap();
        assert_eq!(plan.offered_from, [0], "the stored one, to ack again");
        assert_eq!(plan.refused_storage_full, 1);
    }

    #[test]
    fn a_resend_does_not_count_as_a_second_press() {
        let mut misuse = filter();
        // Two new presses 2 s apart: the second is inside the response
        // interval. A resend of the first between them changes nothing.
        let first = plan_commit(&[press("t1", 0, T0)], holding(&[]), false, &mut misuse).unwrap();
        assert_eq!(first.offers[0].not_counted, None);
        let resend = plan_commit(
            &[press("t1", 0, T0 + 1_000)],
            holding(&[("t1", 0)]),
            false,
            &mut misuse,
        )
        .unwrap();
        assert_eq!(resend.offers[0].not_counted, None, "not judged at all");
        let second = plan_commit(
            &[press("t1", 1, T0 + 2_000)],
            holding(&[("t1", 0)]),
            false,
            &mut misuse,
        )
        .unwrap();
        assert_eq!(
            second.offers[0].not_counted,
            Some(NotCounted::ResponseInterval)
        );
    }

    #[test]
    fn a_store_that_cannot_answer_ends_the_plan() {
        let batch = [press("t1", 0, T0)];
        let failed = plan_commit(&batch, |_, _| Err("io"), false, &mut filter());
        assert_eq!(failed.err(), Some("io"));
    }
}
