//! Counters of client requests, per protocol: requests by command, failed ones by kind of
//! error, and open Redis connections. Relaxed atomic increments on the request path (no
//! lock); the exporter reads them at each scrape.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::redis::{COMMAND_NAMES, ERROR_KINDS as REDIS_ERROR_KINDS, INVALID_COMMAND};
use crate::service::{NATIVE_COMMANDS, NATIVE_ERROR_KINDS};

/// Requests of one protocol by command, and failed ones by kind of error. The names come
/// from fixed lists, each with a last name that takes whatever is not in it, so the number of
/// exported series is bounded whatever clients send.
#[derive(Debug)]
pub struct RequestCounters {
    commands: &'static [&'static str],
    error_kinds: &'static [&'static str],
    /// One per command, and one for the last name.
    requests: Box<[AtomicU64]>,
    errors: Box<[AtomicU64]>,
}

impl RequestCounters {
    /// Counters for `commands` and `error_kinds`; a name not in a list is counted under its
    /// last name (`invalid`, `other`).
    pub fn new(
        commands: &'static [&'static str],
        error_kinds: &'static [&'static str],
    ) -> RequestCounters {
        assert!(
            !commands.is_empty() && !error_kinds.is_empty(),
            "a list of names needs its last name for the rest"
        );
        let zeros = |len: usize| (0..len).map(|_| AtomicU64::new(0)).collect();
        RequestCounters {
            commands,
            error_kinds,
            requests: zeros(commands.len()),
            errors: zeros(error_kinds.len()),
        }
    }

    /// Counts a request of `command`.
    pub fn request(&self, command: &str) {
        add(&self.requests, position(self.commands, command));
    }

    /// Counts a failed request whose error is of `kind`.
    pub fn error(&self, kind: &str) {
        add(&self.errors, position(self.error_kinds, kind));
    }

    /// Requests by command, every command listed (zeros included).
    pub fn requests(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        read(self.commands, &self.requests)
    }

    /// Failed requests by kind of error, every kind listed.
    pub fn errors(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        read(self.error_kinds, &self.errors)
    }
}

/// Where `name` is in `names`, or the last place.
fn position(names: &[&str], name: &str) -> usize {
    names
        .iter()
        .position(|n| *n == name)
        .unwrap_or(names.len() - 1)
}

fn add(counters: &[AtomicU64], at: usize) {
    counters[at].fetch_add(1, Ordering::Relaxed);
}

fn read<'a>(
    names: &'static [&'static str],
    counters: &'a [AtomicU64],
) -> impl Iterator<Item = (&'static str, u64)> + 'a {
    names
        .iter()
        .zip(counters)
        .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
}

/// What the node's client endpoints counted.
#[derive(Debug)]
pub struct ClientMetrics {
    /// The native client protocol (raft-net-tcp's client channel).
    pub native: RequestCounters,
    /// The Redis protocol.
    pub redis: RequestCounters,
    redis_connections_open: AtomicU64,
    redis_connections_refused: AtomicU64,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        ClientMetrics {
            native: RequestCounters::new(NATIVE_COMMANDS, NATIVE_ERROR_KINDS),
            redis: RequestCounters::new(&REDIS_COMMANDS, REDIS_ERROR_KINDS),
            redis_connections_open: AtomicU64::new(0),
            redis_connections_refused: AtomicU64::new(0),
        }
    }
}

/// The Redis commands and, last, what named none (an unknown command, a wrong arity or a
/// refused option).
static REDIS_COMMANDS: [&str; COMMAND_NAMES.len() + 1] = {
    let mut names = [INVALID_COMMAND; COMMAND_NAMES.len() + 1];
    let mut i = 0;
    while i < COMMAND_NAMES.len() {
        names[i] = COMMAND_NAMES[i];
        i += 1;
    }
    names
};

impl ClientMetrics {
    /// A Redis connection was accepted; it counts as open until the guard is dropped.
    pub fn redis_connection_opened(&self) -> RedisConnectionGuard<'_> {
        self.redis_connections_open.fetch_add(1, Ordering::Relaxed);
        RedisConnectionGuard(self)
    }

    /// A Redis connection was refused (`redis_connections_max` reached).
    pub fn redis_connection_refused(&self) {
        self.redis_connections_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Redis connections open now.
    pub fn redis_connections_open(&self) -> u64 {
        self.redis_connections_open.load(Ordering::Relaxed)
    }

    /// Redis connections refused since start.
    pub fn redis_connections_refused(&self) -> u64 {
        self.redis_connections_refused.load(Ordering::Relaxed)
    }
}

/// Counts a Redis connection as open while it lives.
#[derive(Debug)]
pub struct RedisConnectionGuard<'a>(&'a ClientMetrics);

impl Drop for RedisConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0
            .redis_connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_the_lists_are_counted_under_the_last_name() {
        let counters = RequestCounters::new(&["get", "set", "invalid"], &["err", "other"]);
        counters.request("set");
        counters.request("set");
        counters.request("flushall");
        counters.error("err");
        counters.error("WRONGTYPE");
        let requests: Vec<_> = counters.requests().collect();
        assert_eq!(requests, [("get", 0), ("set", 2), ("invalid", 1)]);
        let errors: Vec<_> = counters.errors().collect();
        assert_eq!(errors, [("err", 1), ("other", 1)]);
    }

    #[test]
    fn every_redis_command_has_a_counter_of_its_own_and_the_last_is_invalid() {
        let metrics = ClientMetrics::default();
        for name in COMMAND_NAMES {
            metrics.redis.request(name);
        }
        let counted: Vec<_> = metrics.redis.requests().collect();
        assert_eq!(counted.last(), Some(&(INVALID_COMMAND, 0)));
        assert!(counted[..counted.len() - 1].iter().all(|(_, n)| *n == 1));
    }

    #[test]
    fn open_redis_connections_are_counted_while_their_guard_lives() {
        let metrics = ClientMetrics::default();
        let first = metrics.redis_connection_opened();
        let second = metrics.redis_connection_opened();
        assert_eq!(metrics.redis_connections_open(), 2);
        drop(first);
        drop(second);
        assert_eq!(metrics.redis_connections_open(), 0);
    }
}
