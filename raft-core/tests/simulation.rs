//! Seeded, deterministic whole-cluster simulation of the engine.
//!
//! Each seed builds a 3 to 7 server cluster (some servers start outside the configuration),
//! runs clients doing put / get / compare-and-set against it while the network loses,
//! duplicates, delays and reorders messages, partitions (symmetric and one-way) come and go,
//! servers crash (losing writes that were not yet durable) and restart, clocks skip ticks, and
//! the leader changes the membership (learners, catch-up, removal, joint consensus), transfers
//! leadership and compacts its log behind snapshots. After every step the cluster checks
//! election safety, log matching, leader completeness, state machine safety and monotonic
//! commit. At the end the network heals, a leader must be elected and a write must commit
//! within a bounded number of steps, and the recorded client history must be linearizable.
//!
//! * `cargo test -p raft-core --test simulation` runs `RAFT_SIM_SEEDS` seeds (default 300).
//! * `RAFT_SIM_SEED=S` replays one seed; `RAFT_SIM_FIRST_SEED=F` shifts the range.

#[path = "sim/cluster.rs"]
mod cluster;
#[path = "sim/command.rs"]
mod command;
#[path = "sim/linearizability.rs"]
mod linearizability;
#[path = "sim/rng.rs"]
mod rng;

use std::collections::BTreeMap;

use cluster::{Cluster, Command, Faults, Rng, Stats};
use linearizability::{History, KvOp, KvResult, OpId};
use raft_core::engine::{Config, Role};
use raft_core::{LogId, LogIndex, Membership, NodeId};

/// Steps with faults, then the healed phase's limit for electing a leader and committing.
const FAULT_STEPS: u64 = 1_200;
const HEAL_STEPS_MAX: u64 = 2_000;
/// Client operations per seed, at most (keeps per-key histories small for the checker).
const OPS_MAX: usize = 500;
const KEYS: u64 = 6;
const CLIENTS: u64 = 4;
/// A client gives up on an operation after this many steps (its outcome stays unknown).
const OP_TIMEOUT_STEPS: u64 = 150;

#[derive(Clone, Copy, Debug)]
enum Waiting {
    Idle,
    Write {
        op: OpId,
        node: NodeId,
        incarnation: u64,
        log_id: LogId,
        since: u64,
        cas: bool,
    },
    Read {
        op: OpId,
        node: NodeId,
        incarnation: u64,
        read_id: u64,
        index: Option<LogIndex>,
        since: u64,
        key: u64,
    },
}

struct Driver {
    cluster: Cluster,
    rng: Rng,
    history: History,
    clients: Vec<Waiting>,
    ops: usize,
    next_value: u64,
    next_read_id: u64,
    incarnations: BTreeMap<NodeId, u64>,
    max_nodes_down: usize,
    /// How violent the faults are: 0 calm, 1 stormy, 2 chaotic (leader-hunting crashes,
    /// frequent partitions, one entry per message).
    storm: u64,
    /// Chaotic seeds: the last leader seen, and when to crash a freshly elected one (new
    /// leaders dying before their first entry spreads is where Figure 8 lives).
    last_leader: Option<(NodeId, u64)>,
    crash_new_leader_at: Option<u64>,
}

impl Driver {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
        let storm = seed % 3;
        let voters = 3 + rng.below(3); // 3..=5
        let spares = rng.below(3).min(7 - voters); // up to 7 servers in all
        let snapshot_distance = [0, 25, 60, 150][rng.below(4) as usize];
        let check_quorum = rng.below(5) != 0;
        let config = Config {
            election_ticks_min: 10,
            election_ticks_max: 20,
            heartbeat_ticks: 2,
            pre_vote: rng.below(5) != 0,
            check_quorum,
            // Lease reads (bounded clock drift: a clock here skips at most 5% of its ticks,
            // well inside the 2-tick margin of a 10-tick lease).
            lease_read: check_quorum && rng.below(4) == 0,
            entries_per_message_max: if storm == 2 {
                1
            } else {
                1 + rng.below(16) as usize
            },
            inflight_messages_max: 1 + rng.below(8) as usize,
            replication_timeout_ticks: 10,
            uncommitted_entries_max: 200,
            snapshot_distance,
            snapshot_trailing_entries: rng.below(20),
            // A small window of payloads in memory: followers that lag are sent entries read
            // back from the log store in every seed; small byte limits push back on
            // proposals and appends in some.
            log_cache_bytes_max: [0, 256, 4096][rng.below(3) as usize],
            snapshot_log_bytes: [0, 0, 3000][rng.below(3) as usize],
            uncommitted_bytes_max: [2048, 4096][rng.below(2) as usize],
            unapplied_bytes_max: [4096, 1 << 20][rng.below(2) as usize],
            apply_queue_bytes_max: [256, 1 << 20][rng.below(2) as usize],
            catchup_gap_entries: 5,
            ..Config::default()
        };
        let faults = Faults {
            loss: [0, 20, 100, 250][rng.below(3 + (storm == 2) as u64) as usize],
            duplicate: [0, 20, 50][rng.below(3) as usize],
            delay_steps_max: 1 + rng.below(4),
            persist_delay_steps_max: rng.below(4),
            tick_skip: [0, 50][rng.below(2) as usize],
            torn_write: [0, 2, 10][rng.below(3) as usize],
        };
        let cluster = Cluster::new(seed, voters, spares, config, faults);
        let incarnations = cluster.ids().into_iter().map(|id| (id, 0)).collect();
        Driver {
            cluster,
            rng,
            history: History::new(),
            clients: vec![Waiting::Idle; CLIENTS as usize],
            ops: 0,
            next_value: 1,
            next_read_id: 1,
            incarnations,
            max_nodes_down: (voters as usize - 1) / 2,
            storm,
            last_leader: None,
            crash_new_leader_at: None,
        }
    }

    fn run(&mut self) -> Result<(), String> {
        for _ in 0..FAULT_STEPS {
            self.inject_faults();
            self.drive_clients(true);
            self.cluster.step();
        }
        self.heal_and_check_liveness()?;
        self.history
            .check()
            .map_err(|e| format!("linearizability: {e}"))
    }

    // ----- faults -----

    fn inject_faults(&mut self) {
        let r = self.rng.below(1000 - 350 * self.storm);
        if self.storm == 2 {
            self.hunt_new_leaders();
            if self.rng.chance(8) {
                self.crash_leader();
            }
        }
        match r {
            0..=2 => self.crash_one(),
            3..=22 => self.restart_one(),
            23..=25 => self.partition(),
            26..=28 => self.block_one_way(),
            29..=38 => self.cluster.blocked.clear(),
            39..=44 => self.change_membership(),
            45..=47 => self.transfer_leadership(),
            48 => self.request_snapshot(),
            _ => {}
        }
    }

    fn crash_one(&mut self) {
        let down = self.cluster.ids().len() - self.cluster.up_ids().len();
        if down >= self.max_nodes_down {
            return;
        }
        if let Some(id) = self.rng.pick(&self.cluster.up_ids()) {
            self.cluster.crash(id);
            *self.incarnations.get_mut(&id).unwrap() += 1;
        }
    }

    /// Crashes the current leader, ignoring the minority limit: the chaotic seeds hunt
    /// leaders to force the elections in which Figure 8 style bugs live.
    fn crash_leader(&mut self) {
        if let Some(id) = self.cluster.leader() {
            self.cluster.crash(id);
            *self.incarnations.get_mut(&id).unwrap() += 1;
        }
    }

    /// A newly elected leader is crashed a few steps later with some probability, before the
    /// entries it re-replicates (and its no-op) have spread.
    fn hunt_new_leaders(&mut self) {
        let now = self.cluster.step_no;
        let current = self
            .cluster
            .leader()
            .map(|l| (l, self.cluster.nodes[&l].engine().term()));
        if current.is_some() && current != self.last_leader {
            self.last_leader = current;
            if self.rng.chance(300) {
                self.crash_new_leader_at = Some(now + 1 + self.rng.below(6));
            }
        }
        if self.crash_new_leader_at.is_some_and(|at| at <= now) {
            self.crash_new_leader_at = None;
            self.crash_leader();
        }
    }

    fn restart_one(&mut self) {
        let down: Vec<NodeId> = self
            .cluster
            .ids()
            .into_iter()
            .filter(|id| !self.cluster.nodes[id].is_up())
            .collect();
        if let Some(id) = self.rng.pick(&down) {
            self.cluster.start(id);
        }
    }

    fn partition(&mut self) {
        let ids = self.cluster.ids();
        let side: Vec<bool> = ids.iter().map(|_| self.rng.below(2) == 0).collect();
        self.cluster.blocked.clear();
        for (i, a) in ids.iter().enumerate() {
            for (j, b) in ids.iter().enumerate() {
                if side[i] != side[j] {
                    self.cluster.blocked.insert((*a, *b));
                }
            }
        }
    }

    fn block_one_way(&mut self) {
        let ids = self.cluster.ids();
        let (Some(a), Some(b)) = (self.rng.pick(&ids), self.rng.pick(&ids)) else {
            return;
        };
        if a != b {
            self.cluster.blocked.insert((a, b));
        }
    }

    fn change_membership(&mut self) {
        let Some(leader) = self.cluster.leader() else {
            return;
        };
        let ids = self.cluster.ids();
        let engine = self.cluster.engine_mut(leader);
        let current = engine.membership().clone();
        let outsiders: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|id| !current.contains(*id))
            .collect();
        let voters: Vec<NodeId> = current.voters.iter().copied().collect();
        let choice = self.rng.below(5);
        let result = match choice {
            0 => match self.rng.pick(&outsiders) {
                Some(id) => engine.add_learner(id, String::new()).map(|_| ()),
                None => Ok(()),
            },
            1 => {
                let candidates: Vec<NodeId> = ids
                    .iter()
                    .copied()
                    .filter(|id| !current.is_voter(*id))
                    .collect();
                match self.rng.pick(&candidates) {
                    Some(id) if current.voters.len() < 5 => {
                        engine.add_voter(id, String::new()).map(|_| ())
                    }
                    _ => Ok(()),
                }
            }
            2 => {
                let removable: Vec<NodeId> = current
                    .all_members()
                    .filter(|_| current.voters.len() > 3)
                    .collect();
                match self.rng.pick(&removable) {
                    Some(id) => engine.remove_server(id).map(|_| ()),
                    None => Ok(()),
                }
            }
            _ => {
                // Joint consensus: replace up to two voters at once, keeping 3 to 5 voters.
                let mut target: Membership = current.clone();
                target.voters_outgoing.clear();
                for _ in 0..2 {
                    if let (Some(out), Some(inn)) = (self.rng.pick(&voters), self.rng.pick(&ids)) {
                        if !target.voters.contains(&inn) {
                            target.voters.remove(&out);
                            target.learners.remove(&inn);
                            target.voters.insert(inn);
                        }
                    }
                }
                engine.change_membership(target).map(|_| ())
            }
        };
        if result.is_ok() {
            self.cluster.stats.config_changes += 1;
        }
    }

    fn transfer_leadership(&mut self) {
        let Some(leader) = self.cluster.leader() else {
            return;
        };
        let engine = self.cluster.engine_mut(leader);
        let voters: Vec<NodeId> = engine.membership().voters.iter().copied().collect();
        if let Some(target) = self.rng.pick(&voters) {
            if engine.transfer_leadership(target).is_ok() {
                self.cluster.stats.transfers += 1;
            }
        }
    }

    fn request_snapshot(&mut self) {
        if let Some(id) = self.rng.pick(&self.cluster.up_ids()) {
            self.cluster.engine_mut(id).request_snapshot();
        }
    }

    // ----- clients -----

    fn drive_clients(&mut self, start_new: bool) {
        for c in 0..self.clients.len() {
            self.clients[c] = self.poll_client(self.clients[c]);
            if start_new && matches!(self.clients[c], Waiting::Idle) && self.rng.chance(300) {
                self.clients[c] = self.start_op(c as u64);
            }
        }
    }

    fn node_alive(&self, node: NodeId, incarnation: u64) -> bool {
        self.cluster.nodes[&node].is_up() && self.incarnations[&node] == incarnation
    }

    fn poll_client(&mut self, w: Waiting) -> Waiting {
        let now = self.cluster.step_no;
        match w {
            Waiting::Idle => Waiting::Idle,
            Waiting::Write {
                op,
                node,
                incarnation,
                log_id,
                since,
                cas,
                ..
            } => {
                if !self.node_alive(node, incarnation) || now - since > OP_TIMEOUT_STEPS {
                    return Waiting::Idle; // Outcome unknown.
                }
                match self.cluster.nodes[&node].applied_results.get(&log_id.index) {
                    Some((term, outcome)) if *term == log_id.term => {
                        let result = if cas {
                            KvResult::CasOk(outcome.expect("cas outcome"))
                        } else {
                            KvResult::PutOk
                        };
                        self.history.complete(op, result);
                        Waiting::Idle
                    }
                    Some(_) => Waiting::Idle, // Another entry took the index: outcome unknown.
                    None => w,
                }
            }
            Waiting::Read {
                op,
                node,
                incarnation,
                read_id,
                index,
                since,
                key,
            } => {
                if !self.node_alive(node, incarnation) || now - since > OP_TIMEOUT_STEPS {
                    return Waiting::Idle;
                }
                let n = self.cluster.nodes.get_mut(&node).unwrap();
                if let Some(pos) = n.failed_reads.iter().position(|r| *r == read_id) {
                    n.failed_reads.swap_remove(pos);
                    return Waiting::Idle;
                }
                let index = index.or_else(|| {
                    let pos = n.read_states.iter().position(|(r, _)| *r == read_id)?;
                    Some(n.read_states.swap_remove(pos).1)
                });
                match index {
                    Some(i) if n.kv.applied.index >= i => {
                        let value = n.kv.map.get(&key).copied();
                        self.history.complete(op, KvResult::GetOk(value));
                        Waiting::Idle
                    }
                    _ => Waiting::Read {
                        op,
                        node,
                        incarnation,
                        read_id,
                        index,
                        since,
                        key,
                    },
                }
            }
        }
    }

    fn start_op(&mut self, client: u64) -> Waiting {
        if self.ops >= OPS_MAX {
            return Waiting::Idle;
        }
        let ups = self.cluster.up_ids();
        let target = match self.cluster.leader() {
            Some(l) if self.rng.chance(700) => l,
            _ => match self.rng.pick(&ups) {
                Some(id) => id,
                None => return Waiting::Idle,
            },
        };
        let key = self.rng.below(KEYS);
        let since = self.cluster.step_no;
        let incarnation = self.incarnations[&target];
        let engine = self.cluster.engine_mut(target);
        match self.rng.below(3) {
            0 => {
                let read_id = self.next_read_id;
                self.next_read_id += 1;
                if engine.read_index(read_id).is_err() {
                    return Waiting::Idle;
                }
                self.ops += 1;
                let op = self.history.invoke(client, KvOp::Get { key });
                Waiting::Read {
                    op,
                    node: target,
                    incarnation,
                    read_id,
                    index: None,
                    since,
                    key,
                }
            }
            kind => {
                let new = self.next_value;
                self.next_value += 1;
                let (command, kv_op) = if kind == 1 {
                    (
                        Command::Put { key, value: new },
                        KvOp::Put { key, value: new },
                    )
                } else {
                    let expected = match self.rng.below(3) {
                        0 => None,
                        _ => Some(self.rng.below(self.next_value)),
                    };
                    (
                        Command::Cas { key, expected, new },
                        KvOp::Cas { key, expected, new },
                    )
                };
                let Ok(log_id) = engine.propose(command.encode()) else {
                    return Waiting::Idle;
                };
                self.ops += 1;
                let op = self.history.invoke(client, kv_op);
                Waiting::Write {
                    op,
                    node: target,
                    incarnation,
                    log_id,
                    since,
                    cas: kind == 2,
                }
            }
        }
    }

    // ----- liveness -----

    fn heal_and_check_liveness(&mut self) -> Result<(), String> {
        self.cluster.heal();
        for inc in self.incarnations.values_mut() {
            *inc += 0;
        }
        let elected = self
            .cluster
            .run_until(HEAL_STEPS_MAX, |c| c.leader().is_some());
        if !elected {
            return Err(format!(
                "liveness: no leader {HEAL_STEPS_MAX} steps after healing\n{}",
                self.cluster.describe()
            ));
        }
        // Let every client finish (or time out), then a fresh write must commit.
        for _ in 0..OP_TIMEOUT_STEPS + 1 {
            self.drive_clients(false);
            self.cluster.step();
        }
        let mut committed = false;
        for _ in 0..HEAL_STEPS_MAX {
            self.cluster.step();
            let Some(leader) = self.cluster.leader() else {
                continue;
            };
            let engine = self.cluster.engine_mut(leader);
            if engine.role() != Role::Leader {
                continue;
            }
            let Ok(log_id) = engine.propose(
                Command::Put {
                    key: KEYS,
                    value: 0,
                }
                .encode(),
            ) else {
                continue;
            };
            let done = self.cluster.run_until(HEAL_STEPS_MAX / 4, |c| {
                c.nodes[&leader]
                    .applied_results
                    .get(&log_id.index)
                    .is_some_and(|(t, _)| *t == log_id.term)
            });
            if done {
                committed = true;
                break;
            }
        }
        if !committed {
            return Err("liveness: a write did not commit after healing".into());
        }
        Ok(())
    }
}

fn run_seed(seed: u64) -> Result<Stats, String> {
    let mut driver = Driver::new(seed);
    driver.run()?;
    let mut stats = driver.cluster.stats.clone();
    let ops = driver.history.operations();
    stats.ops_completed = ops.iter().filter(|op| op.ret.is_some()).count() as u64;
    stats.ops_unknown = ops.len() as u64 - stats.ops_completed;
    Ok(stats)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

#[test]
fn simulation() {
    let seeds: Vec<u64> = match env_u64("RAFT_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("RAFT_SIM_FIRST_SEED").unwrap_or(0);
            let count = env_u64("RAFT_SIM_SEEDS").unwrap_or(300);
            (first..first + count).collect()
        }
    };
    let mut total = Stats::default();
    for seed in &seeds {
        let outcome = std::panic::catch_unwind(|| run_seed(*seed));
        let failure = match outcome {
            Ok(Ok(stats)) => {
                total.steps += stats.steps;
                total.elections += stats.elections;
                total.crashes += stats.crashes;
                total.snapshots_installed += stats.snapshots_installed;
                total.snapshots_built += stats.snapshots_built;
                total.config_changes += stats.config_changes;
                total.transfers += stats.transfers;
                total.messages += stats.messages;
                total.torn_writes += stats.torn_writes;
                total.fetches += stats.fetches;
                total.ops_completed += stats.ops_completed;
                total.ops_unknown += stats.ops_unknown;
                continue;
            }
            Ok(Err(message)) => message,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into()),
        };
        panic!(
            "simulation: seed {seed} failed: {failure}\nreplay: RAFT_SIM_SEED={seed} cargo test -p raft-core --test simulation -- --nocapture"
        );
    }
    let summary = format!(
        "simulation: {} seeds, {} steps, 0 violations ({} client ops acknowledged, {} with unknown outcome, {} elections, {} crashes ({} torn writes), {} config changes, {} transfers, {} snapshots built, {} installed, {} reads back from the log, {} messages)\n",
        seeds.len(),
        total.steps,
        total.ops_completed,
        total.ops_unknown,
        total.elections,
        total.crashes,
        total.torn_writes,
        total.config_changes,
        total.transfers,
        total.snapshots_built,
        total.snapshots_installed,
        total.fetches,
        total.messages
    );
    // Written to the process's stdout directly: the test harness captures `println!` of
    // passing tests, and this line is meant to be seen in every run.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(summary.as_bytes());
    let _ = out.flush();
}
