//! # raft-examples
//!
//! Whole programs that embed the workspace's crates the way an application would. Each is
//! built and run by `cargo test --workspace`, and runs on its own with `cargo run`:
//!
//! - `replicated_counter.rs` (`cargo run -p raft-examples --example replicated_counter`): a
//!   counter replicated on three servers over loopback TCP, with raft-log's durable log,
//!   raft-snapshot's snapshot store and windowed snapshot sender, raft-net-tcp's server,
//!   transport and leader-following client, and a state machine of its own. It increments
//!   through the client, reads linearizably on a follower, kills the leader, keeps writing
//!   through the new one, has a new server catch up from a snapshot and replace the dead one,
//!   and shuts everything down cleanly, printing each step.
