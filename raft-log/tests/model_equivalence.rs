//! Any sequence of appends, truncations, purges, hard state saves and reopens leaves the log
//! exactly as an in-memory model says: same bounds, same entries, same hard state.

use bytes::Bytes;
use proptest::prelude::*;
use raft_core::{Entry, EntryKind, HardState, LogId};
use raft_log::{Error, Options, RaftLog};

/// Tiny segments so that sequences cross many segment boundaries.
const SEGMENT_BYTES: u64 = 4 << 10;
/// Payloads up to this size; a few records fill a segment.
const PAYLOAD_BYTES_MAX: usize = 700;

#[derive(Clone, Debug)]
enum Op {
    /// Append `sizes.len()` entries with these payload sizes, in term `last term + term_step`.
    Append {
        sizes: Vec<usize>,
        term_step: u64,
    },
    /// Truncate from a position picked in the stored range (as a fraction of it).
    Truncate {
        at: u16,
    },
    /// Purge up to a position picked in (or past) the stored range.
    Purge {
        at: u16,
        past_end: u64,
    },
    SaveHardState {
        term: u64,
        vote: Option<u64>,
        commit: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prop::collection::vec(0..PAYLOAD_BYTES_MAX, 1..12), 0..2u64)
            .prop_map(|(sizes, term_step)| Op::Append { sizes, term_step }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => (any::<u16>(), prop_oneof![3 => Just(0u64), 1 => 1..5u64])
            .prop_map(|(at, past_end)| Op::Purge { at, past_end }),
        1 => (0..100u64, prop::option::of(1..5u64), 0..100u64)
            .prop_map(|(term, vote, commit)| Op::SaveHardState { term, vote, commit }),
        1 => Just(Op::Reopen),
    ]
}

/// What the log must hold.
#[derive(Debug, Default)]
struct Model {
    purged: LogId,
    entries: Vec<Entry>,
    hard_state: HardState,
}

impl Model {
    fn last(&self) -> LogId {
        self.entries.last().map_or(self.purged, Entry::log_id)
    }

    /// Picks an index in `[first, last]` from a fraction; `None` when the log is empty.
    fn pick(&self, at: u16) -> Option<u64> {
        let first = self.purged.index + 1;
        let count = self.entries.len() as u64;
        (count > 0).then(|| first + u64::from(at) * count / (u64::from(u16::MAX) + 1))
    }
}

fn payload(index: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| (index as usize).wrapping_mul(131).wrapping_add(i) as u8)
        .collect()
}

fn check(log: &RaftLog, model: &Model) -> Result<(), TestCaseError> {
    let state = log.state();
    prop_assert_eq!(state.purged, model.purged);
    prop_assert_eq!(state.last, model.last());
    prop_assert_eq!(state.hard_state, model.hard_state);
    let (first, next) = (model.purged.index + 1, model.last().index + 1);
    let stored = log
        .entries(first, next, u64::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&stored, &model.entries);
    for expected in &model.entries {
        let got = log
            .entry(expected.index)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&got, expected);
    }
    prop_assert!(
        log.entry(model.purged.index).is_err(),
        "entry at the purge point"
    );
    prop_assert!(log.entry(next).is_err(), "entry past the end");
    for (index, expected) in [(model.purged.index, model.purged), (next - 1, model.last())] {
        let term = log
            .term(index)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(term, expected.term);
    }
    if model.purged.index > 0 {
        let below = log.entries(model.purged.index, next, u64::MAX);
        prop_assert!(
            matches!(below, Err(Error::OutOfRange { .. })),
            "read below: {:?}",
            below
        );
    }
    Ok(())
}

fn apply(log: &RaftLog, model: &mut Model, op: &Op) -> Result<(), Error> {
    match op {
        Op::Append { sizes, term_step } => {
            let term = model.last().term.max(1) + term_step;
            let next = model.last().index + 1;
            let batch: Vec<Entry> = sizes
                .iter()
                .zip(next..)
                .map(|(&len, index)| {
                    let kind = if len == 0 {
                        EntryKind::Blank
                    } else {
                        EntryKind::Normal
                    };
                    Entry {
                        term,
                        index,
                        kind,
                        data: payload(index, len),
                    }
                })
                .collect();
            log.append(&batch)?;
            model.entries.extend(batch);
        }
        Op::Truncate { at } => {
            if let Some(from) = model.pick(*at) {
                log.truncate(from)?;
                model
                    .entries
                    .truncate((from - model.purged.index - 1) as usize);
            }
        }
        Op::Purge { at, past_end } => {
            let upto_index = match model.pick(*at) {
                Some(index) if *past_end == 0 => index,
                _ => model.last().index + past_end,
            };
            if upto_index > model.purged.index {
                let term = model.last().term + 1;
                let upto = LogId::new(term, upto_index);
                log.purge(upto)?;
                let remove = ((upto_index - model.purged.index) as usize).min(model.entries.len());
                model.entries.drain(..remove);
                model.purged = upto;
            }
        }
        Op::SaveHardState { term, vote, commit } => {
            let hard_state = HardState {
                term: *term,
                voted_for: *vote,
                commit: *commit,
            };
            log.save_hard_state(hard_state)?;
            model.hard_state = hard_state;
        }
        Op::Reopen => unreachable!("reopen is handled by the caller, which owns the log"),
    }
    Ok(())
}

fn run(ops: &[Op], direct_io: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes: SEGMENT_BYTES,
        direct_io,
    };
    let mut log = RaftLog::open(dir.path(), options).unwrap();
    let mut model = Model::default();
    for op in ops {
        if let Op::Reopen = op {
            // Close the log (joining its preallocation thread) before opening it again.
            drop(log);
            log = RaftLog::open(dir.path(), options).unwrap();
        } else {
            apply(&log, &mut model, op)
                .map_err(|e| TestCaseError::fail(format!("{op:?} failed: {e}")))?;
        }
        check(&log, &model)?;
    }
    drop(log);
    let log = RaftLog::open(dir.path(), options).unwrap();
    check(&log, &model)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_the_model_through_any_operation_sequence(
        ops in prop::collection::vec(op(), 1..40),
        direct_io in any::<bool>(),
    ) {
        run(&ops, direct_io)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    /// The same property over many more and longer sequences (minutes): `cargo test -p
    /// raft-log --release -- --ignored`.
    #[test]
    #[ignore]
    fn log_matches_the_model_through_long_sequences_heavy(
        ops in prop::collection::vec(op(), 1..200),
        direct_io in any::<bool>(),
    ) {
        run(&ops, direct_io)?;
    }
}
