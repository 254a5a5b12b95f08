//! Linearizability checker for a key-value register model.
//!
//! The whole-cluster simulation records every client operation with the logical time it was
//! called and the logical time it returned, then asks [`check`] whether some total order of the
//! operations (a linearization) both respects real time (an operation that returned before
//! another was called comes first) and explains every result with a sequential key-value store.
//!
//! Algorithm:
//! - P-compositionality: every operation touches one key, and a history is linearizable exactly
//!   when each per-key sub-history is, so each key is checked on its own.
//! - Wing & Gong's search with Lowe's memoization: depth-first search over "which operations are
//!   linearized so far", where the next operation may be any one that was called before every
//!   not-yet-linearized operation returned; a cache of (linearized set, register state) pairs
//!   already explored cuts the search from factorial to roughly `ops * 2^concurrency`.
//! - Unknown outcomes (a request that timed out or whose node crashed, `ret == None`) may take
//!   effect at any point after their call, or never. Reads with unknown outcome constrain
//!   nothing and are dropped. Writes get a return time of infinity and are optional: the search
//!   succeeds once every *completed* operation is linearized.
//! - Two exact reductions keep unknown-outcome writes cheap. Values that no read returns and no
//!   CAS expects are indistinguishable, so the register stores them all as one "unread" value.
//!   Unknown-outcome operations with the same effect are interchangeable, so they are taken in
//!   call order (the earlier-called one is available whenever the later one is).
//!
//! Limits: a per-key operation count ([`OPS_PER_KEY_MAX`]) and a per-key search step budget
//! ([`STEPS_PER_KEY_MAX`]); exceeding either yields [`LinearizabilityError::TooComplex`] rather
//! than an unbounded search.
//!
//! ```ignore
//! let mut history = History::new();
//! let put = history.invoke(1, KvOp::Put { key: 7, value: 1 });
//! let get = history.invoke(2, KvOp::Get { key: 7 });
//! history.complete(put, KvResult::PutOk);
//! history.complete(get, KvResult::GetOk(Some(1)));
//! history.check().unwrap();
//! ```

// Shared by several test crates; each uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Most operations checked for one key. This is the capacity of the fixed-size bitset that
/// records which operations are linearized; the simulation keeps per-key histories near 200.
pub const OPS_PER_KEY_MAX: usize = 256;

/// Default search step budget for one key. A concurrency-5 history of 150 operations needs a
/// few thousand steps; a million (about half a second in a debug build) means the history is far
/// too concurrent or holds too many unknown-outcome writes to be checked exhaustively.
pub const STEPS_PER_KEY_MAX: u64 = 1_000_000;

/// Words in the linearized-set bitset.
const BITSET_WORDS: usize = OPS_PER_KEY_MAX / 64;

/// Most linearized operations shown before the point where the search got stuck.
const PLACED_SHOWN_MAX: usize = 5;

/// An operation a client submits to the key-value store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put { key: u64, value: u64 },
    /// Read `key`.
    Get { key: u64 },
    /// Set `key` to `new` if it currently holds `expected` (`None`: the key is absent).
    Cas {
        key: u64,
        expected: Option<u64>,
        new: u64,
    },
}

impl KvOp {
    /// The single key the operation touches.
    pub fn key(&self) -> u64 {
        match *self {
            KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Cas { key, .. } => key,
        }
    }
}

/// What the store answered.
// The `Ok` suffix is part of the interface agreed with the simulation test, and reads well
// next to `KvOp`'s variants of the same names.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvResult {
    /// The put took effect.
    PutOk,
    /// The value read (`None`: the key is absent).
    GetOk(Option<u64>),
    /// Whether the compare-and-set found `expected` and wrote `new`.
    CasOk(bool),
}

/// One client operation with its real-time interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued the operation (reported in errors only).
    pub client: u64,
    /// What was asked.
    pub op: KvOp,
    /// Logical time of the call.
    pub call: u64,
    /// Logical time of the return and the result; `None` when the outcome is unknown (timed out,
    /// node crashed): the operation may have taken effect at any time after `call`, or never.
    pub ret: Option<(u64, KvResult)>,
}

impl Operation {
    fn result(&self) -> Option<KvResult> {
        self.ret.map(|(_, result)| result)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} ", self.client)?;
        match self.op {
            KvOp::Put { key, value } => write!(f, "put(key {key}, {value})")?,
            KvOp::Get { key } => write!(f, "get(key {key})")?,
            KvOp::Cas { key, expected, new } => {
                write!(f, "cas(key {key}, {} -> {new})", show(expected))?
            }
        }
        match self.ret {
            None => write!(f, " [{}, ?] -> unknown", self.call),
            Some((ret, result)) => {
                write!(f, " [{}, {ret}] -> ", self.call)?;
                match result {
                    KvResult::PutOk => write!(f, "ok"),
                    KvResult::GetOk(value) => write!(f, "{}", show(value)),
                    KvResult::CasOk(succeeded) => write!(f, "{succeeded}"),
                }
            }
        }
    }
}

/// Identifies an operation recorded in a [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(usize);

/// Records calls and returns with a logical clock that ticks once per event, so an operation
/// that returned before another was called always has the smaller time.
///
/// An operation that is never completed has an unknown outcome. That is always sound to
/// assume, also for requests that were rejected outright (it only makes the check weaker).
#[derive(Debug, Clone, Default)]
pub struct History {
    operations: Vec<Operation>,
    /// Operations that certainly never took effect (refused before anything was written, or
    /// reads that failed): left out of the check.
    abandoned: Vec<bool>,
    clock: u64,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` called `op` now.
    pub fn invoke(&mut self, client: u64, op: KvOp) -> OpId {
        let id = OpId(self.operations.len());
        let call = self.tick();
        self.operations.push(Operation {
            client,
            op,
            call,
            ret: None,
        });
        self.abandoned.push(false);
        id
    }

    /// Records that operation `id` certainly never took effect: it is left out of the check.
    /// (Leaving it with an unknown outcome is also sound, but makes the search larger.)
    pub fn abandon(&mut self, id: OpId) {
        assert!(
            self.operations[id.0].ret.is_none(),
            "a completed operation cannot be abandoned"
        );
        self.abandoned[id.0] = true;
    }

    /// Records that operation `id` returned `result` now.
    ///
    /// Panics if `id` already completed or `result` does not fit the operation: both are bugs
    /// in the test harness, not in the system under test.
    pub fn complete(&mut self, id: OpId, result: KvResult) {
        let ret = self.tick();
        let operation = &mut self.operations[id.0];
        assert!(
            operation.ret.is_none(),
            "operation completed twice: {operation}, again with {result:?}"
        );
        assert!(
            result_fits(&operation.op, &result),
            "result {result:?} does not fit {operation}"
        );
        operation.ret = Some((ret, result));
    }

    /// Operations that returned a result.
    pub fn completed(&self) -> usize {
        self.operations.iter().filter(|op| op.ret.is_some()).count()
    }

    /// Operations whose outcome is unknown (not completed, not abandoned).
    pub fn unknown(&self) -> usize {
        let open = |(op, abandoned): &(&Operation, &bool)| op.ret.is_none() && !**abandoned;
        self.operations
            .iter()
            .zip(&self.abandoned)
            .filter(open)
            .count()
    }

    /// Everything recorded so far, in call order.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Checks the recorded history with [`check`].
    pub fn check(&self) -> Result<(), LinearizabilityError> {
        let kept: Vec<Operation> = self
            .operations
            .iter()
            .zip(&self.abandoned)
            .filter(|(_, abandoned)| !**abandoned)
            .map(|(op, _)| *op)
            .collect();
        check(&kept)
    }

    fn tick(&mut self) -> u64 {
        let now = self.clock;
        self.clock += 1;
        now
    }
}

/// Bounds on the search for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most operations on one key (capped at [`OPS_PER_KEY_MAX`]); unknown-outcome reads are
    /// not counted.
    pub ops_per_key_max: usize,
    /// Most search steps (operations tried at some point of a partial linearization) per key.
    pub steps_per_key_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ops_per_key_max: OPS_PER_KEY_MAX,
            steps_per_key_max: STEPS_PER_KEY_MAX,
        }
    }
}

/// Why a history was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinearizabilityError {
    /// No linearization of the operations on `key` exists.
    NotLinearizable {
        /// The key whose sub-history fails.
        key: u64,
        /// A few operations at the heart of the violation: those that cannot be linearized
        /// after the longest consistent prefix found, and the write that prefix ends with.
        offending: Vec<Operation>,
        /// A multi-line, human-readable account of the longest consistent prefix and why
        /// nothing can follow it.
        explanation: String,
    },
    /// The search for `key` hit a limit; nothing is known about its linearizability.
    TooComplex {
        /// The key that was given up on.
        key: u64,
        /// Operations on the key (after dropping unknown-outcome reads).
        operations: usize,
        /// Search steps taken; 0 when the operation count alone was over the limit.
        steps: u64,
        /// The limits in force.
        limits: Limits,
    },
    /// An operation is malformed (a harness bug).
    InvalidOperation {
        /// Its position in the history.
        index: usize,
        /// The operation.
        operation: Operation,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for LinearizabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinearizabilityError::NotLinearizable {
                key, explanation, ..
            } => write!(f, "not linearizable on key {key}:\n{explanation}"),
            LinearizabilityError::TooComplex {
                key,
                operations,
                steps,
                limits,
            } => {
                if *steps == 0 {
                    write!(
                        f,
                        "key {key} has {operations} operations, more than the {} the checker \
                         handles per key",
                        limits.ops_per_key_max.min(OPS_PER_KEY_MAX)
                    )
                } else {
                    write!(
                        f,
                        "gave up on key {key} ({operations} operations) after {steps} search \
                         steps; lower the concurrency or the unknown-outcome writes per key"
                    )
                }
            }
            LinearizabilityError::InvalidOperation {
                index,
                operation,
                reason,
            } => write!(f, "operation #{index} ({operation}) is malformed: {reason}"),
        }
    }
}

impl std::error::Error for LinearizabilityError {}

/// Checks that `history` is linearizable with respect to a key-value store whose keys all start
/// absent, using the default [`Limits`].
///
/// Operations are ordered by real time only when one returned strictly before the other was
/// called (`ret < call`); equal times count as concurrent.
///
/// A key that is not linearizable is reported before one that was too complex to decide.
pub fn check(history: &[Operation]) -> Result<(), LinearizabilityError> {
    check_with_limits(history, Limits::default())
}

/// [`check`] with explicit limits.
pub fn check_with_limits(
    history: &[Operation],
    limits: Limits,
) -> Result<(), LinearizabilityError> {
    let mut keys: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (index, operation) in history.iter().enumerate() {
        validate(index, operation)?;
        // A read whose outcome is unknown constrains nothing.
        if matches!(operation.op, KvOp::Get { .. }) && operation.ret.is_none() {
            continue;
        }
        keys.entry(operation.op.key()).or_default().push(index);
    }
    let mut gave_up = None;
    for (&key, indices) in &keys {
        match check_key(history, key, indices, limits) {
            Ok(()) => {}
            Err(error @ LinearizabilityError::TooComplex { .. }) => {
                gave_up.get_or_insert(error);
            }
            Err(error) => return Err(error),
        }
    }
    gave_up.map_or(Ok(()), Err)
}

fn validate(index: usize, operation: &Operation) -> Result<(), LinearizabilityError> {
    let reason = match operation.ret {
        Some((ret, _)) if ret < operation.call => "it returns before it is called",
        Some((_, result)) if !result_fits(&operation.op, &result) => {
            "its result does not fit the kind of operation"
        }
        _ => return Ok(()),
    };
    Err(LinearizabilityError::InvalidOperation {
        index,
        operation: *operation,
        reason,
    })
}

fn result_fits(op: &KvOp, result: &KvResult) -> bool {
    matches!(
        (op, result),
        (KvOp::Put { .. }, KvResult::PutOk)
            | (KvOp::Get { .. }, KvResult::GetOk(_))
            | (KvOp::Cas { .. }, KvResult::CasOk(_))
    )
}

/// Checks the operations `indices` of `history`, which all touch `key`.
fn check_key(
    history: &[Operation],
    key: u64,
    indices: &[usize],
    limits: Limits,
) -> Result<(), LinearizabilityError> {
    let too_complex = |steps| LinearizabilityError::TooComplex {
        key,
        operations: indices.len(),
        steps,
        limits,
    };
    if indices.len() > limits.ops_per_key_max.min(OPS_PER_KEY_MAX) {
        return Err(too_complex(0));
    }
    let entries = build_entries(history, indices);
    match search(&entries, limits.steps_per_key_max) {
        Outcome::Linearizable => Ok(()),
        Outcome::GaveUp { steps } => Err(too_complex(steps)),
        Outcome::Stuck(deepest) => Err(explain(history, key, &entries, &deepest)),
    }
}

/// The register as the search sees it. Values that no read returns and no CAS expects behave
/// identically (nothing ever compares equal to them), so they are all one `Unread` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Register {
    Absent,
    Value(u64),
    Unread,
}

/// An operation as the search sees it: its effect on the register and what it observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Write(Register),
    Read(Register),
    Cas {
        expected: Register,
        new: Register,
        /// `None` when the outcome is unknown.
        succeeded: Option<bool>,
    },
}

/// Applies `effect` to `state`; `None` when the operation cannot be linearized there.
fn apply(state: Register, effect: Effect) -> Option<Register> {
    match effect {
        Effect::Write(value) => Some(value),
        Effect::Read(value) => (state == value).then_some(state),
        Effect::Cas {
            expected,
            new,
            succeeded,
        } => {
            let matches = state == expected;
            match succeeded {
                Some(succeeded) if succeeded != matches => None,
                Some(_) => Some(if matches { new } else { state }),
                // An unknown-outcome CAS that does not match changes nothing: applying it is
                // the same as never applying it, so only the matching case is explored.
                None => matches.then_some(new),
            }
        }
    }
}

/// One operation of a key's sub-history.
#[derive(Debug)]
struct Entry {
    /// Position in the caller's history.
    index: usize,
    call: u64,
    /// `u64::MAX` when the outcome is unknown.
    ret: u64,
    completed: bool,
    effect: Effect,
    /// For an unknown-outcome operation: the closest earlier-called unknown-outcome operation
    /// with the same effect. The two are interchangeable, so this one is only linearized after
    /// that one, which removes symmetric branches without losing any linearization.
    twin_before: Option<usize>,
}

/// The entries for `indices`, sorted by call time.
fn build_entries(history: &[Operation], indices: &[usize]) -> Vec<Entry> {
    let mut observed = HashSet::new();
    for &index in indices {
        let operation = &history[index];
        match (operation.op, operation.result()) {
            (_, Some(KvResult::GetOk(Some(value)))) => observed.insert(value),
            (
                KvOp::Cas {
                    expected: Some(value),
                    ..
                },
                _,
            ) => observed.insert(value),
            _ => false,
        };
    }
    let canonical = |value: Option<u64>| match value {
        None => Register::Absent,
        Some(value) if observed.contains(&value) => Register::Value(value),
        Some(_) => Register::Unread,
    };
    let mut entries: Vec<Entry> = indices
        .iter()
        .map(|&index| {
            let operation = &history[index];
            let effect = match (operation.op, operation.result()) {
                (KvOp::Put { value, .. }, _) => Effect::Write(canonical(Some(value))),
                (KvOp::Get { .. }, Some(KvResult::GetOk(value))) => Effect::Read(canonical(value)),
                (KvOp::Cas { expected, new, .. }, result) => Effect::Cas {
                    expected: canonical(expected),
                    new: canonical(Some(new)),
                    succeeded: match result {
                        Some(KvResult::CasOk(succeeded)) => Some(succeeded),
                        _ => None,
                    },
                },
                (KvOp::Get { .. }, _) => {
                    unreachable!("unknown reads are dropped, results validated")
                }
            };
            Entry {
                index,
                call: operation.call,
                ret: operation.ret.map_or(u64::MAX, |(ret, _)| ret),
                completed: operation.ret.is_some(),
                effect,
                twin_before: None,
            }
        })
        .collect();
    entries.sort_by_key(|entry| (entry.call, entry.index));
    let twins: Vec<Option<usize>> = entries
        .iter()
        .enumerate()
        .map(|(position, entry)| {
            if entry.completed {
                return None;
            }
            entries[..position]
                .iter()
                .rposition(|earlier| !earlier.completed && earlier.effect == entry.effect)
        })
        .collect();
    for (entry, twin) in entries.iter_mut().zip(twins) {
        entry.twin_before = twin;
    }
    entries
}

/// The set of linearized entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bits([u64; BITSET_WORDS]);

impl Bits {
    const EMPTY: Bits = Bits([0; BITSET_WORDS]);

    fn contains(&self, position: usize) -> bool {
        self.0[position / 64] & (1 << (position % 64)) != 0
    }

    fn with(mut self, position: usize) -> Bits {
        self.0[position / 64] |= 1 << (position % 64);
        self
    }

    /// The smallest position at or after `from` not in the set; `OPS_PER_KEY_MAX` if none.
    fn next_absent(&self, from: usize) -> usize {
        let mut word_index = from / 64;
        if word_index >= BITSET_WORDS {
            return OPS_PER_KEY_MAX;
        }
        let mut word = self.0[word_index] | ((1u64 << (from % 64)) - 1);
        loop {
            if word != u64::MAX {
                return word_index * 64 + word.trailing_ones() as usize;
            }
            word_index += 1;
            if word_index == BITSET_WORDS {
                return OPS_PER_KEY_MAX;
            }
            word = self.0[word_index];
        }
    }
}

/// A memoized search configuration. Hashed by hand: one `write_u64` per word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemoKey {
    bits: Bits,
    state: Register,
}

impl Hash for MemoKey {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        for word in self.bits.0 {
            hasher.write_u64(word);
        }
        match self.state {
            Register::Absent => hasher.write_u64(0),
            Register::Unread => hasher.write_u64(1),
            Register::Value(value) => {
                hasher.write_u64(2);
                hasher.write_u64(value);
            }
        }
    }
}

/// A multiply-rotate hasher (as in rustc's FxHash): the memo keys are not attacker-controlled,
/// and SipHash would dominate the search time in debug builds.
#[derive(Debug, Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// The smallest return time among entries not in `bits`: exactly the entries not in `bits`
/// called at or before it may be linearized next.
fn bound(entries: &[Entry], bits: Bits) -> u64 {
    let mut bound = u64::MAX;
    let mut position = bits.next_absent(0);
    // Entries are sorted by call, and each returns after its call, so entries called after the
    // running minimum cannot lower it.
    while position < entries.len() && entries[position].call <= bound {
        bound = bound.min(entries[position].ret);
        position = bits.next_absent(position + 1);
    }
    bound
}

/// A node of the depth-first search.
#[derive(Debug)]
struct Frame {
    bits: Bits,
    state: Register,
    /// Completed entries in `bits`.
    completed: usize,
    bound: u64,
    /// Where to look for the next candidate.
    cursor: usize,
}

impl Frame {
    fn new(entries: &[Entry], bits: Bits, state: Register, completed: usize) -> Frame {
        Frame {
            bits,
            state,
            completed,
            bound: bound(entries, bits),
            cursor: 0,
        }
    }

    /// The next entry to try linearizing at this node.
    fn next_candidate(&mut self, entries: &[Entry]) -> Option<usize> {
        loop {
            let position = self.bits.next_absent(self.cursor);
            if position >= entries.len() || entries[position].call > self.bound {
                return None;
            }
            self.cursor = position + 1;
            match entries[position].twin_before {
                Some(twin) if !self.bits.contains(twin) => continue,
                _ => return Some(position),
            }
        }
    }
}

/// The consistent partial linearization with the most completed operations.
#[derive(Debug)]
struct Deepest {
    /// Entry positions in linearization order.
    path: Vec<usize>,
    bits: Bits,
    state: Register,
    completed: usize,
}

#[derive(Debug)]
enum Outcome {
    Linearizable,
    GaveUp { steps: u64 },
    Stuck(Deepest),
}

fn search(entries: &[Entry], steps_max: u64) -> Outcome {
    let completed_total = entries.iter().filter(|entry| entry.completed).count();
    if completed_total == 0 {
        return Outcome::Linearizable;
    }
    let mut seen: HashSet<MemoKey, BuildHasherDefault<FastHasher>> = HashSet::default();
    let root = Frame::new(entries, Bits::EMPTY, Register::Absent, 0);
    seen.insert(MemoKey {
        bits: root.bits,
        state: root.state,
    });
    let mut deepest = Deepest {
        path: Vec::new(),
        bits: root.bits,
        state: root.state,
        completed: 0,
    };
    // `path[i]` is the entry that led from `stack[i]` to `stack[i + 1]`.
    let mut path: Vec<usize> = Vec::new();
    let mut stack = vec![root];
    let mut steps: u64 = 0;
    while let Some(top) = stack.last_mut() {
        let Some(position) = top.next_candidate(entries) else {
            stack.pop();
            path.pop();
            continue;
        };
        if steps == steps_max {
            return Outcome::GaveUp { steps };
        }
        steps += 1;
        let entry = &entries[position];
        let Some(state) = apply(top.state, entry.effect) else {
            continue;
        };
        let bits = top.bits.with(position);
        if !seen.insert(MemoKey { bits, state }) {
            continue;
        }
        let completed = top.completed + usize::from(entry.completed);
        if completed == completed_total {
            return Outcome::Linearizable;
        }
        path.push(position);
        if completed > deepest.completed {
            deepest = Deepest {
                path: path.clone(),
                bits,
                state,
                completed,
            };
        }
        stack.push(Frame::new(entries, bits, state, completed));
    }
    Outcome::Stuck(deepest)
}

/// Builds the error for a key whose search got stuck, from the deepest partial linearization.
fn explain(
    history: &[Operation],
    key: u64,
    entries: &[Entry],
    deepest: &Deepest,
) -> LinearizabilityError {
    // Replay the prefix with real values (the search only knows canonical ones).
    let mut register: Option<u64> = None;
    let mut last_writer = None;
    for &position in &deepest.path {
        let operation = &history[entries[position].index];
        match operation.op {
            KvOp::Put { value, .. } => {
                register = Some(value);
                last_writer = Some(*operation);
            }
            KvOp::Cas { expected, new, .. } if register == expected => {
                register = Some(new);
                last_writer = Some(*operation);
            }
            KvOp::Get { .. } | KvOp::Cas { .. } => {}
        }
    }
    let written: HashSet<u64> = entries
        .iter()
        .filter_map(|entry| match history[entry.index] {
            Operation {
                op: KvOp::Put { value, .. },
                ..
            } => Some(value),
            Operation {
                op: KvOp::Cas { new, .. },
                ret,
                ..
            } if ret.map(|(_, result)| result) != Some(KvResult::CasOk(false)) => Some(new),
            _ => None,
        })
        .collect();

    let mut frame = Frame::new(entries, deepest.bits, deepest.state, deepest.completed);
    let mut blocked = Vec::new();
    let mut contradicted = Vec::new();
    let mut completed_candidates = Vec::new();
    while let Some(position) = frame.next_candidate(entries) {
        let entry = &entries[position];
        let operation = history[entry.index];
        let reason = if apply(deepest.state, entry.effect).is_some() {
            "it fits here, but no order of the remaining operations follows".to_string()
        } else {
            if entry.completed {
                contradicted.push(operation);
            }
            contradiction(register, &operation, &written)
        };
        if entry.completed {
            completed_candidates.push(operation);
        }
        blocked.push(format!("  {operation}: {reason}"));
    }

    let completed_total = entries.iter().filter(|entry| entry.completed).count();
    let mut explanation = format!(
        "{} operations on key {key}, {completed_total} of them completed. The longest consistent \
         prefix linearizes {} completed operations and leaves the register at {}.\n",
        entries.len(),
        deepest.completed,
        show(register)
    );
    let shown = deepest.path.len().min(PLACED_SHOWN_MAX);
    if shown > 0 {
        explanation.push_str(&format!(
            "Its last {shown} of {} operations, in order:\n",
            deepest.path.len()
        ));
    }
    for &position in &deepest.path[deepest.path.len() - shown..] {
        explanation.push_str(&format!("  {}\n", history[entries[position].index]));
    }
    explanation.push_str("No remaining operation can come next:\n");
    explanation.push_str(&blocked.join("\n"));

    let mut offending: Vec<Operation> = last_writer.into_iter().collect();
    if contradicted.is_empty() {
        offending.extend(completed_candidates);
    } else {
        offending.extend(contradicted);
    }
    LinearizabilityError::NotLinearizable {
        key,
        offending,
        explanation,
    }
}

/// Why `operation` cannot be linearized when the register holds `register`.
fn contradiction(register: Option<u64>, operation: &Operation, written: &HashSet<u64>) -> String {
    match (operation.op, operation.result()) {
        (_, Some(KvResult::GetOk(value))) => {
            let mut reason = format!(
                "it read {} but the register holds {}",
                show(value),
                show(register)
            );
            if let Some(value) = value.filter(|value| !written.contains(value)) {
                reason.push_str(&format!(" (no operation on this key writes {value})"));
            }
            reason
        }
        (KvOp::Cas { expected, .. }, Some(KvResult::CasOk(true))) => format!(
            "it succeeded, so the register held {}, but it holds {}",
            show(expected),
            show(register)
        ),
        (KvOp::Cas { .. }, Some(KvResult::CasOk(false))) => format!(
            "it failed although the register holds the expected {}",
            show(register)
        ),
        (KvOp::Cas { expected, .. }, None) => format!(
            "its outcome is unknown, and it would not apply: the register holds {}, not {}",
            show(register),
            show(expected)
        ),
        (op, result) => unreachable!("{op:?} with {result:?} always applies"),
    }
}

/// A register value for humans.
fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "absent".to_string(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn done(client: u64, op: KvOp, call: u64, ret: u64, result: KvResult) -> Operation {
        Operation {
            client,
            op,
            call,
            ret: Some((ret, result)),
        }
    }

    fn put(client: u64, key: u64, value: u64, call: u64, ret: u64) -> Operation {
        done(client, KvOp::Put { key, value }, call, ret, KvResult::PutOk)
    }

    fn get(client: u64, key: u64, value: Option<u64>, call: u64, ret: u64) -> Operation {
        done(client, KvOp::Get { key }, call, ret, KvResult::GetOk(value))
    }

    fn cas(
        client: u64,
        key: u64,
        expected: Option<u64>,
        new: u64,
        ok: bool,
        span: (u64, u64),
    ) -> Operation {
        let op = KvOp::Cas { key, expected, new };
        done(client, op, span.0, span.1, KvResult::CasOk(ok))
    }

    fn unknown(client: u64, op: KvOp, call: u64) -> Operation {
        Operation {
            client,
            op,
            call,
            ret: None,
        }
    }

    #[track_caller]
    fn assert_rejected(history: &[Operation], expected_key: u64) -> Vec<Operation> {
        match check(history) {
            Err(LinearizabilityError::NotLinearizable { key, offending, .. }) => {
                assert_eq!(key, expected_key, "{}", check(history).unwrap_err());
                assert!(!offending.is_empty());
                offending
            }
            other => panic!("expected a violation on key {expected_key}, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(History::new().check(), Ok(()));
    }

    #[test]
    fn sequential_history_is_accepted() {
        let history = [
            get(1, 0, None, 0, 1),
            put(1, 0, 5, 2, 3),
            get(2, 0, Some(5), 4, 5),
            cas(1, 0, Some(5), 6, true, (6, 7)),
            cas(2, 0, Some(5), 7, false, (8, 9)),
            cas(3, 0, None, 8, false, (10, 11)),
            get(3, 0, Some(6), 12, 13),
            put(1, 0, 6, 14, 15),
            get(2, 0, Some(6), 16, 17),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn cas_on_absent_key_is_accepted() {
        let history = [
            cas(1, 0, None, 1, true, (0, 1)),
            cas(2, 0, None, 2, false, (2, 3)),
            get(1, 0, Some(1), 4, 5),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn concurrent_writes_may_take_effect_in_either_order() {
        for (first, second) in [(1, 2), (2, 1)] {
            let history = [
                put(1, 0, 1, 0, 10),
                put(2, 0, 2, 1, 9),
                get(3, 0, Some(first), 11, 12),
                get(3, 0, Some(first), 13, 14),
            ];
            assert_eq!(check(&history), Ok(()), "final value {first}");
            // A read concurrent with both writes may see either, or neither.
            let history = [
                put(1, 0, 1, 0, 10),
                put(2, 0, 2, 1, 9),
                get(3, 0, None, 2, 3),
                get(4, 0, Some(second), 4, 5),
                get(3, 0, Some(first), 11, 12),
            ];
            assert_eq!(check(&history), Ok(()), "intermediate value {second}");
        }
    }

    #[test]
    fn equal_times_count_as_concurrent() {
        let history = [put(1, 0, 1, 0, 5), get(2, 0, None, 5, 6)];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn pending_write_may_be_observed_or_not() {
        let write = KvOp::Put { key: 0, value: 2 };
        // Observed.
        let history = [
            put(1, 0, 1, 0, 1),
            unknown(2, write, 2),
            get(3, 0, Some(2), 10, 11),
        ];
        assert_eq!(check(&history), Ok(()));
        // Not observed, ever.
        let history = [
            put(1, 0, 1, 0, 1),
            unknown(2, write, 2),
            get(3, 0, Some(1), 10, 11),
            get(3, 0, Some(1), 100, 101),
        ];
        assert_eq!(check(&history), Ok(()));
        // Not observed at first, observed much later.
        let history = [
            put(1, 0, 1, 0, 1),
            unknown(2, write, 2),
            get(3, 0, Some(1), 10, 11),
            get(3, 0, Some(2), 100, 101),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn pending_write_takes_effect_at_most_once_and_not_before_its_call() {
        let write = KvOp::Put { key: 0, value: 2 };
        // Seen, then overwritten by an earlier value, then seen again: it would take effect twice.
        let history = [
            put(1, 0, 1, 0, 1),
            unknown(2, write, 2),
            get(3, 0, Some(2), 3, 4),
            put(1, 0, 1, 5, 6),
            get(3, 0, Some(2), 7, 8),
        ];
        assert_rejected(&history, 0);
        // Seen before it was called.
        let history = [get(3, 0, Some(2), 0, 1), unknown(2, write, 2)];
        assert_rejected(&history, 0);
        // Two identical pending writes may each take effect once.
        let history = [
            put(1, 0, 1, 0, 1),
            unknown(2, write, 2),
            unknown(4, write, 2),
            get(3, 0, Some(2), 3, 4),
            put(1, 0, 1, 5, 6),
            get(3, 0, Some(2), 7, 8),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn unknown_read_is_dropped() {
        let history = [
            put(1, 0, 1, 0, 1),
            unknown(2, KvOp::Get { key: 0 }, 2),
            unknown(2, KvOp::Get { key: 9 }, 3),
            get(3, 0, Some(1), 4, 5),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn unknown_cas_applies_only_if_it_matches() {
        let swap = |expected| KvOp::Cas {
            key: 0,
            expected,
            new: 5,
        };
        for seen in [Some(1), Some(5)] {
            let history = [
                put(1, 0, 1, 0, 1),
                unknown(2, swap(Some(1)), 2),
                get(3, 0, seen, 4, 5),
            ];
            assert_eq!(check(&history), Ok(()), "read {seen:?}");
        }
        // The CAS expects a value the register never holds, so it cannot have written 5.
        let history = [
            put(1, 0, 1, 0, 1),
            unknown(2, swap(Some(7)), 2),
            get(3, 0, Some(5), 4, 5),
        ];
        assert_rejected(&history, 0);
        // An unknown CAS on an absent key.
        let history = [unknown(2, swap(None), 0), get(3, 0, Some(5), 4, 5)];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn failed_cas_explained_by_an_unread_pending_write() {
        let history = [
            put(1, 0, 1, 0, 1),
            unknown(2, KvOp::Put { key: 0, value: 9 }, 2),
            cas(3, 0, Some(1), 3, false, (3, 4)),
        ];
        assert_eq!(check(&history), Ok(()));
        assert_rejected(&[history[0], history[2]], 0);
    }

    #[test]
    fn stale_read_after_completed_write_is_rejected() {
        let history = [
            put(1, 0, 1, 0, 1),
            put(2, 0, 2, 2, 3),
            get(3, 0, Some(1), 4, 5),
        ];
        let offending = assert_rejected(&history, 0);
        assert_eq!(offending, vec![history[1], history[2]]);
        let message = check(&history).unwrap_err().to_string();
        assert!(
            message.contains("it read 1 but the register holds 2"),
            "{message}"
        );
    }

    #[test]
    fn read_of_value_never_written_is_rejected() {
        let history = [put(1, 0, 1, 0, 1), get(2, 0, Some(42), 2, 3)];
        let offending = assert_rejected(&history, 0);
        assert!(offending.contains(&history[1]));
        let message = check(&history).unwrap_err().to_string();
        assert!(
            message.contains("no operation on this key writes 42"),
            "{message}"
        );
        assert_rejected(&[get(2, 0, Some(42), 2, 3)], 0);
    }

    #[test]
    fn reads_seeing_writes_in_opposite_orders_are_rejected() {
        let history = [
            put(1, 0, 1, 0, 10),
            put(2, 0, 2, 0, 10),
            get(3, 0, Some(1), 1, 2),
            get(3, 0, Some(2), 3, 4),
            get(4, 0, Some(2), 1, 2),
            get(4, 0, Some(1), 3, 4),
        ];
        assert_rejected(&history, 0);
    }

    #[test]
    fn lost_acknowledged_write_is_rejected() {
        assert_rejected(&[put(1, 0, 1, 0, 1), get(2, 0, None, 2, 3)], 0);
        let history = [
            put(1, 0, 1, 0, 1),
            put(1, 0, 2, 2, 3),
            get(2, 0, Some(2), 4, 5),
            get(2, 0, Some(1), 6, 7),
        ];
        assert_rejected(&history, 0);
    }

    #[test]
    fn cas_succeeding_twice_on_the_same_expected_value_is_rejected() {
        let history = [
            put(1, 0, 1, 0, 1),
            cas(2, 0, Some(1), 2, true, (2, 5)),
            cas(3, 0, Some(1), 3, true, (3, 6)),
        ];
        let offending = assert_rejected(&history, 0);
        assert!(offending.contains(&history[1]) || offending.contains(&history[2]));
        // A concurrent write of the expected value in between makes it possible.
        let mut allowed = history.to_vec();
        allowed.push(put(4, 0, 1, 2, 7));
        assert_eq!(check(&allowed), Ok(()));
    }

    #[test]
    fn keys_are_checked_independently() {
        let history = [
            put(1, 0, 1, 0, 10),
            put(1, 1, 1, 11, 12),
            get(2, 0, Some(1), 13, 14),
            get(2, 1, None, 15, 16),
            get(2, 2, None, 17, 18),
        ];
        assert_rejected(&history, 1);
        let without_key_1 = [history[0], history[2], history[4]];
        assert_eq!(check(&without_key_1), Ok(()));
    }

    #[test]
    fn history_records_call_and_return_order() {
        let mut history = History::new();
        let first = history.invoke(1, KvOp::Put { key: 3, value: 1 });
        let read = history.invoke(2, KvOp::Get { key: 3 });
        history.complete(first, KvResult::PutOk);
        // Never completed: its outcome is unknown.
        history.invoke(1, KvOp::Put { key: 3, value: 2 });
        history.complete(read, KvResult::GetOk(Some(1)));
        let ops = history.operations();
        assert_eq!(ops[0].ret, Some((2, KvResult::PutOk)));
        assert_eq!(ops[1].ret, Some((4, KvResult::GetOk(Some(1)))));
        assert_eq!(ops[2].ret, None);
        assert_eq!(history.check(), Ok(()));
        let late = history.invoke(2, KvOp::Get { key: 3 });
        history.complete(late, KvResult::GetOk(None));
        assert!(matches!(
            history.check(),
            Err(LinearizabilityError::NotLinearizable { key: 3, .. })
        ));
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn history_rejects_mismatched_result() {
        let mut history = History::new();
        let id = history.invoke(1, KvOp::Get { key: 0 });
        history.complete(id, KvResult::PutOk);
    }

    #[test]
    fn malformed_operations_are_reported() {
        let backwards = put(1, 0, 1, 5, 4);
        assert!(matches!(
            check(&[backwards]),
            Err(LinearizabilityError::InvalidOperation { index: 0, .. })
        ));
        let mismatched = done(1, KvOp::Get { key: 0 }, 0, 1, KvResult::CasOk(true));
        let error = check(&[put(1, 0, 1, 0, 1), mismatched]).unwrap_err();
        assert!(
            matches!(
                error,
                LinearizabilityError::InvalidOperation { index: 1, .. }
            ),
            "{error}"
        );
    }

    #[test]
    fn limits_give_a_distinct_error() {
        let many: Vec<Operation> = (0..=OPS_PER_KEY_MAX as u64)
            .map(|i| put(1, 0, i, 2 * i, 2 * i + 1))
            .collect();
        assert!(matches!(
            check(&many),
            Err(LinearizabilityError::TooComplex {
                key: 0,
                steps: 0,
                ..
            })
        ));
        assert_eq!(check(&many[..OPS_PER_KEY_MAX]), Ok(()));

        let mut rng = Rng(7);
        let history = widened_history(&mut rng, 1, 100, 5);
        let limits = Limits {
            ops_per_key_max: OPS_PER_KEY_MAX,
            steps_per_key_max: 10,
        };
        let error = check_with_limits(&history, limits).unwrap_err();
        assert!(
            matches!(
                error,
                LinearizabilityError::TooComplex {
                    key: 0,
                    steps: 10,
                    ..
                }
            ),
            "{error}"
        );
        // A violation on another key is still reported first.
        let mut with_violation = history.clone();
        with_violation.push(get(1, 1, Some(1), 0, 1));
        assert!(matches!(
            check_with_limits(&with_violation, limits),
            Err(LinearizabilityError::NotLinearizable { key: 1, .. })
        ));
    }

    /// SplitMix64: deterministic, so a seed reproduces any failure.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// The sequential key-value register: the next state and the result of `op`.
    fn model(register: Option<u64>, op: KvOp) -> (Option<u64>, KvResult) {
        match op {
            KvOp::Put { value, .. } => (Some(value), KvResult::PutOk),
            KvOp::Get { .. } => (register, KvResult::GetOk(register)),
            KvOp::Cas { expected, new, .. } if register == expected => {
                (Some(new), KvResult::CasOk(true))
            }
            KvOp::Cas { .. } => (register, KvResult::CasOk(false)),
        }
    }

    /// Values are small so that equal values are written often: that makes the search work.
    const VALUES: u64 = 6;
    /// Never produced by the generators.
    const VALUE_NEVER_WRITTEN: u64 = 1 << 40;
    /// Logical time between consecutive linearization points of one key.
    const SPACING: u64 = 10;

    fn random_op(rng: &mut Rng, key: u64, register: Option<u64>) -> KvOp {
        let value = rng.below(VALUES);
        match rng.below(3) {
            0 => KvOp::Put { key, value },
            1 => KvOp::Get { key },
            _ => {
                let expected = match rng.below(3) {
                    0 => register,
                    1 => None,
                    _ => Some(rng.below(VALUES)),
                };
                KvOp::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
        }
    }

    /// Runs `ops_per_key` random operations per key sequentially against the model, one every
    /// `SPACING` ticks, then widens each into a random interval around its linearization point,
    /// so that about `concurrency` operations per key overlap. Some operations lose their
    /// outcome, and some writes that never took effect are added with unknown outcome. The
    /// result is linearizable by construction.
    fn widened_history(
        rng: &mut Rng,
        keys: u64,
        ops_per_key: u64,
        concurrency: u64,
    ) -> Vec<Operation> {
        let width = concurrency * SPACING / 2;
        let mut history = Vec::new();
        for key in 0..keys {
            let mut register = None;
            for i in 0..ops_per_key {
                let point = width + SPACING * (i + 1);
                let call = point - rng.below(width + 1);
                let ret = point + rng.below(width + 1);
                let client = key * concurrency + rng.below(concurrency);
                if rng.chance(3) {
                    let lost = KvOp::Put {
                        key,
                        value: rng.below(2 * VALUES),
                    };
                    history.push(unknown(client, lost, call));
                }
                let op = random_op(rng, key, register);
                let (next, result) = model(register, op);
                register = next;
                let ret = if rng.chance(5) {
                    None
                } else {
                    Some((ret, result))
                };
                history.push(Operation {
                    client,
                    op,
                    call,
                    ret,
                });
            }
        }
        history
    }

    /// Changes one completed read to return a value nothing writes; returns its key.
    fn corrupt_one_read(rng: &mut Rng, history: &mut [Operation]) -> Option<u64> {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].ret, Some((_, KvResult::GetOk(_)))))
            .collect();
        let &chosen = reads.get(rng.below(reads.len().max(1) as u64) as usize)?;
        let (ret, _) = history[chosen].ret?;
        history[chosen].ret = Some((ret, KvResult::GetOk(Some(VALUE_NEVER_WRITTEN))));
        Some(history[chosen].op.key())
    }

    #[test]
    fn widened_sequential_histories_are_accepted_and_corrupted_reads_rejected() {
        for seed in 0..300 {
            let mut rng = Rng(seed);
            let concurrency = 1 + rng.below(8);
            let keys = 1 + rng.below(3);
            let ops_per_key = 1 + rng.below(60);
            let mut history = widened_history(&mut rng, keys, ops_per_key, concurrency);
            if let Err(error) = check(&history) {
                panic!("seed {seed}: linearizable history rejected: {error}");
            }
            let Some(key) = corrupt_one_read(&mut rng, &mut history) else {
                continue;
            };
            match check(&history) {
                Err(LinearizabilityError::NotLinearizable { key: reported, .. }) => {
                    assert_eq!(reported, key, "seed {seed}")
                }
                other => panic!("seed {seed}: corrupted read on key {key} not rejected: {other:?}"),
            }
        }
    }

    /// Tries every order of every subset that includes all completed operations: no pruning.
    fn brute_force(history: &[Operation]) -> bool {
        fn extend(ops: &[Operation], used: &mut [bool], register: Option<u64>) -> bool {
            if ops
                .iter()
                .zip(used.iter())
                .all(|(op, &used)| used || op.ret.is_none())
            {
                return true;
            }
            for next in 0..ops.len() {
                let waits = ops.iter().zip(used.iter()).any(|(other, &used)| {
                    !used && other.ret.is_some_and(|(ret, _)| ret < ops[next].call)
                });
                if used[next] || waits {
                    continue;
                }
                let (state, result) = model(register, ops[next].op);
                if ops[next]
                    .ret
                    .is_some_and(|(_, expected)| expected != result)
                {
                    continue;
                }
                used[next] = true;
                if extend(ops, used, state) {
                    return true;
                }
                used[next] = false;
            }
            false
        }
        let ops: Vec<Operation> = history
            .iter()
            .filter(|op| op.ret.is_some() || !matches!(op.op, KvOp::Get { .. }))
            .copied()
            .collect();
        extend(&ops, &mut vec![false; ops.len()], None)
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let (mut accepted, mut rejected) = (0, 0);
        for seed in 0..3000 {
            let mut rng = Rng(seed);
            let history: Vec<Operation> = (0..1 + rng.below(7))
                .map(|_| {
                    let call = rng.below(12);
                    let value = rng.below(3);
                    let other = rng.below(4);
                    let op = match rng.below(3) {
                        0 => KvOp::Put { key: 0, value },
                        1 => KvOp::Get { key: 0 },
                        _ => KvOp::Cas {
                            key: 0,
                            expected: other.checked_sub(1),
                            new: value,
                        },
                    };
                    let result = match op {
                        KvOp::Put { .. } => KvResult::PutOk,
                        KvOp::Get { .. } => KvResult::GetOk(other.checked_sub(1)),
                        KvOp::Cas { .. } => KvResult::CasOk(rng.chance(50)),
                    };
                    let ret = (!rng.chance(25)).then(|| (call + rng.below(6), result));
                    Operation {
                        client: 0,
                        op,
                        call,
                        ret,
                    }
                })
                .collect();
            let expected = brute_force(&history);
            match check(&history) {
                Ok(()) => assert!(expected, "seed {seed}: accepted {history:#?}"),
                Err(LinearizabilityError::NotLinearizable { .. }) => {
                    assert!(!expected, "seed {seed}: rejected {history:#?}")
                }
                Err(error) => panic!("seed {seed}: {error}"),
            }
            if expected {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        assert!(
            accepted > 300 && rejected > 300,
            "accepted {accepted}, rejected {rejected}"
        );
    }

    #[test]
    fn many_unread_pending_writes_stay_cheap() {
        let mut history = vec![put(1, 0, 1, 0, 1)];
        for i in 0..60 {
            history.push(unknown(
                2 + i,
                KvOp::Put {
                    key: 0,
                    value: 100 + i,
                },
                2,
            ));
        }
        for i in 0..60 {
            history.push(get(1, 0, Some(1), 10 + 2 * i, 11 + 2 * i));
        }
        history.push(cas(1, 0, Some(1), 2, false, (200, 201)));
        let started = Instant::now();
        assert_eq!(check(&history), Ok(()));
        history.push(get(1, 0, Some(VALUE_NEVER_WRITTEN), 300, 301));
        assert_rejected(&history, 0);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn fifty_keys_of_150_operations_at_concurrency_5_check_quickly() {
        let mut rng = Rng(2026);
        let mut history = widened_history(&mut rng, 50, 150, 5);
        let started = Instant::now();
        assert_eq!(check(&history), Ok(()));
        let accepted_in = started.elapsed();
        let key = corrupt_one_read(&mut rng, &mut history).expect("the history has reads");
        let started = Instant::now();
        assert_rejected(&history, key);
        let rejected_in = started.elapsed();
        eprintln!(
            "{} operations: accepted in {accepted_in:?}, rejected in {rejected_in:?}",
            history.len()
        );
        // Generous: a regression to exponential search takes minutes, not seconds.
        assert!(accepted_in + rejected_in < Duration::from_secs(5));
    }
}
