//! Turning a committed batch into as few durable acks as possible.
//!
//! An [`Ack`] names one contiguous run of sequence numbers within one boot.
//! Terminals send presses in order, so a batch usually collapses into one ack
//! per terminal.

use std::collections::BTreeMap;

use pressline_protocol::{Ack, PressId};

/// Which press form a terminal spoke (acks go back in the same form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Form {
    Native,
    Json,
}

/// Coalesces committed presses (new and duplicate alike) into acks,
/// grouped by terminal and form.
pub fn coalesce<'a>(
    committed: impl IntoIterator<Item = (&'a str, Form, PressId)>,
) -> Vec<(&'a str, Form, Ack)> {
    let mut by_terminal: BTreeMap<(&str, Form), Vec<PressId>> = BTreeMap::new();
    for (terminal, form, id) in committed {
        by_terminal.entry((terminal, form)).or_default().push(id);
    }
    let mut acks = Vec::new();
    for ((terminal, form), mut ids) in by_terminal {
        ids.sort_unstable();
        ids.dedup();
        let mut run: Option<Ack> = None;
        for id in ids {
            match run.as_mut() {
                Some(ack) if ack.boot == id.boot && ack.last_seq.checked_add(1) == Some(id.seq) => {
                    ack.last_seq = id.seq;
                }
                _ => {
                    if let Some(done) = run.take() {
                        acks.push((terminal, form, done));
                    }
                    run = Some(Ack {
                        boot: id.boot,
                        first_seq: id.seq,
                        last_seq: id.seq,
                    });
                }
            }
        }
        if let Some(done) = run {
            acks.push((terminal, form, done));
        }
    }
    acks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(boot: u32, seq: u32) -> PressId {
        PressId { boot, seq }
    }

    #[test]
    fn contiguous_presses_collapse_into_one_ack_per_terminal() {
        let acks = coalesce([
            ("a", Form::Native, id(1, 3)),
            ("b", Form::Json, id(0, 9)),
            ("a", Form::Native, id(1, 4)),
            ("a", Form::Native, id(1, 5)),
        ]);
        assert_eq!(
            acks,
            vec![
                (
                    "a",
                    Form::Native,
                    Ack {
                        boot: 1,
                        first_seq: 3,
                        last_seq: 5
                    }
                ),
                (
                    "b",
                    Form::Json,
                    Ack {
                        boot: 0,
                        first_seq: 9,
                        last_seq: 9
                    }
                ),
            ]
        );
    }

    #[test]
    fn gaps_boots_and_duplicates_are_respected() {
        let acks = coalesce([
            ("a", Form::Native, id(1, 7)),
            ("a", Form::Native, id(1, 5)),
            ("a", Form::Native, id(1, 5)),
            ("a", Form::Native, id(2, 0)),
            ("a", Form::Native, id(1, 8)),
            ("a", Form::Native, id(1, u32::MAX)),
        ]);
        assert_eq!(
            acks.into_iter().map(|(_, _, a)| a).collect::<Vec<_>>(),
            vec![
                Ack {
                    boot: 1,
                    first_seq: 5,
                    last_seq: 5
                },
                Ack {
                    boot: 1,
                    first_seq: 7,
                    last_seq: 8
                },
                Ack {
                    boot: 1,
                    first_seq: u32::MAX,
                    last_seq: u32::MAX
                },
                Ack {
                    boot: 2,
                    first_seq: 0,
                    last_seq: 0
                },
            ]
        );
    }
}
