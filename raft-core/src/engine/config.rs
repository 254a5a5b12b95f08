//! Engine parameters. Time is counted in ticks: the engine has no clock; whoever drives it
//! calls [`crate::engine::Engine::tick`] at a fixed interval (the async node: every
//! `tick_ms` milliseconds).

/// Why a configuration is rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid engine config: {0}")]
pub struct ConfigError(pub &'static str);

/// Tuning parameters of the engine. [`Config::default`] suits a LAN with a 10 ms tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Lower bound of the randomized election timeout (paper section 5.2), in ticks. Also the
    /// check-quorum period and the leader-stickiness window.
    pub election_ticks_min: u64,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    pub election_ticks_max: u64,
    /// A leader sends heartbeats this often, in ticks. Must be well below `election_ticks_min`.
    pub heartbeat_ticks: u64,
    /// Run a pre-vote round before incrementing the term (thesis section 9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for `election_ticks_min` steps down, and a
    /// follower that heard from a leader within `election_ticks_min` refuses to vote for others
    /// (thesis sections 6.2 and 4.2.3).
    pub check_quorum: bool,
    /// Serve linearizable reads from a leader lease instead of a heartbeat round. Assumes that
    /// clocks run at the same rate within `lease_margin_ticks` per `election_ticks_min`: the
    /// lease relies on followers not electing a new leader within `election_ticks_min` of hearing
    /// from this one. Requires `check_quorum`.
    pub lease_read: bool,
    /// Safety margin subtracted from the lease, in ticks.
    pub lease_margin_ticks: u64,
    /// Entries per AppendEntries message, at most.
    pub entries_per_message_max: usize,
    /// Payload bytes per AppendEntries message, at most (one entry is always allowed).
    pub message_bytes_max: u64,
    /// AppendEntries messages in flight to one peer, at most (pipelining window).
    pub inflight_messages_max: usize,
    /// Payload bytes in flight to one peer, at most.
    pub inflight_bytes_max: u64,
    /// A peer that has not acknowledged its oldest in-flight message for this many ticks is
    /// probed again from its match index (the messages were probably lost).
    pub replication_timeout_ticks: u64,
    /// Uncommitted entries a leader accepts, at most; more proposals are refused (back-pressure).
    pub uncommitted_entries_max: u64,
    /// Bytes ([`crate::Entry::size_bytes`]) of uncommitted entries a leader accepts, at most;
    /// more proposals are refused (back-pressure). One proposal is always allowed when none is
    /// uncommitted.
    pub uncommitted_bytes_max: u64,
    /// Bytes of entries in memory that the state machine has not applied yet (uncommitted ones
    /// included), at most: a leader refuses proposals, a follower drops AppendEntries (the
    /// leader resends) past it. With `log_cache_bytes_max`, this bounds the log's payloads in
    /// memory.
    pub unapplied_bytes_max: u64,
    /// Bytes of entries handed to the state machine and not applied yet, at most (the apply
    /// queue); more wait in the log.
    pub apply_queue_bytes_max: u64,
    /// Payload bytes of entries already durable and applied that are kept in memory to
    /// replicate to followers without reading the log store; older payloads are read back
    /// from the log store when a lagging follower needs them.
    pub log_cache_bytes_max: u64,
    /// Payload bytes of one entry, at most.
    pub entry_bytes_max: u64,
    /// Ask for a snapshot when the applied index is this far past the last snapshot; 0 = never.
    pub snapshot_distance: u64,
    /// Ask for a snapshot when the entries applied since the last snapshot hold this many bytes
    /// ([`crate::Entry::size_bytes`]); 0 = never. Whichever of this and `snapshot_distance`
    /// comes first triggers it.
    pub snapshot_log_bytes: u64,
    /// A snapshot that `snapshot_distance` or `snapshot_log_bytes` calls for also waits until
    /// the log since the latest snapshot holds at least this percentage of that snapshot's
    /// size (0 = no wait): a large state is not rewritten in full to compact a little log.
    /// Three nodes each writing a 500 MB snapshot every 100,000 writes of 150 bytes saturated
    /// the disk they shared, and their log syncs stalled for 300-400 ms. The wait ends at
    /// [`super::SNAPSHOT_POSTPONE_FACTOR_MAX`] times either threshold, so the log stays bounded.
    pub snapshot_log_ratio_percent: u64,
    /// Entries kept in the log below a snapshot so slow followers can catch up without one.
    pub snapshot_trailing_entries: u64,
    /// A catching-up server is promoted to voter once its match index is within this many
    /// entries of the leader's last index (jraft's "log sync stopping gap").
    pub catchup_gap_entries: u64,
    /// Pending linearizable reads, at most; more are refused.
    pub pending_reads_max: usize,
    /// Seed of the engine's random number generator (election timeouts). Combined with the
    /// node id so that nodes sharing a seed still draw different timeouts. The engine's
    /// default is fixed (runs are reproducible); `node::NodeConfig::new` draws one from the
    /// operating system.
    pub random_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_ticks_min: 15,
            election_ticks_max: 30,
            heartbeat_ticks: 3,
            pre_vote: true,
            check_quorum: true,
            lease_read: false,
            lease_margin_ticks: 2,
            entries_per_message_max: 1024,
            message_bytes_max: 1 << 20,
            inflight_messages_max: 64,
            inflight_bytes_max: 8 << 20,
            replication_timeout_ticks: 8,
            uncommitted_entries_max: 100_000,
            uncommitted_bytes_max: 32 << 20,
            unapplied_bytes_max: 64 << 20,
            apply_queue_bytes_max: 16 << 20,
            log_cache_bytes_max: 32 << 20,
            entry_bytes_max: 4 << 20,
            snapshot_distance: 100_000,
            snapshot_log_bytes: 64 << 20,
            snapshot_log_ratio_percent: 50,
            snapshot_trailing_entries: 10_000,
            catchup_gap_entries: 100,
            pending_reads_max: 100_000,
            random_seed: 0x5eed,
        }
    }
}

impl Config {
    /// Checks that the parameters make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError("heartbeat_ticks must be at least 1"));
        }
        if self.election_ticks_min <= self.heartbeat_ticks {
            return Err(ConfigError(
                "election_ticks_min must exceed heartbeat_ticks",
            ));
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return Err(ConfigError(
                "election_ticks_max must exceed election_ticks_min",
            ));
        }
        if self.lease_read && !self.check_quorum {
            return Err(ConfigError("lease_read requires check_quorum"));
        }
        if self.lease_read && self.lease_margin_ticks >= self.election_ticks_min {
            return Err(ConfigError(
                "lease_margin_ticks must be below election_ticks_min",
            ));
        }
        if self.entries_per_message_max == 0 || self.message_bytes_max == 0 {
            return Err(ConfigError("message limits must be positive"));
        }
        if self.inflight_messages_max == 0 || self.inflight_bytes_max == 0 {
            return Err(ConfigError("in-flight limits must be positive"));
        }
        if self.replication_timeout_ticks == 0 || self.uncommitted_entries_max == 0 {
            return Err(ConfigError(
                "replication timeout and uncommitted limit must be positive",
            ));
        }
        if self.pending_reads_max == 0 || self.entry_bytes_max == 0 {
            return Err(ConfigError("read and entry limits must be positive"));
        }
        if self.uncommitted_bytes_max == 0 || self.apply_queue_bytes_max == 0 {
            return Err(ConfigError(
                "uncommitted and apply queue byte limits must be positive",
            ));
        }
        if self.unapplied_bytes_max < self.uncommitted_bytes_max {
            return Err(ConfigError(
                "unapplied_bytes_max must be at least uncommitted_bytes_max",
            ));
        }
        Ok(())
    }
}
