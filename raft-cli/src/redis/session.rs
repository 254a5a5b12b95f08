//! What a connection remembers between requests: its id and name, its protocol, the
//! transaction it is queueing (MULTI) and the keys it watches (WATCH); and the endpoint's
//! list of connections, for CLIENT LIST.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use super::cmd::Local;
use crate::kv::{Op, Version};
use crate::resp::{Protocol, Value};

/// Commands a transaction may queue, at most; past it the transaction is discarded at EXEC
/// (EXECABORT), as Redis does when it cannot queue a command.
pub const TRANSACTION_COMMANDS_MAX: usize = 64 * 1024;
/// Bytes of arguments a transaction may queue, at most (each argument counted with 16 bytes
/// of encoding besides its own): its commands travel in one log entry, which holds 4 MiB by
/// default (`entry_bytes_max`); the rest is room for the entry's own encoding.
pub const TRANSACTION_BYTES_MAX: usize = 3 << 20;
/// Keys one connection may watch at once, at most: each is looked up again when EXEC is
/// applied, on every replica.
pub const WATCHED_KEYS_MAX: usize = 64 * 1024;

/// A command queued between MULTI and EXEC.
pub(crate) enum Queued {
    /// A data command: part of the transaction's log entry.
    Op(Op),
    /// A connection command, executed at EXEC.
    Local(Local),
    /// A command refused for its arguments, answered with this error at EXEC (Redis refuses
    /// only unknown commands and wrong arities when queueing).
    Error(Value),
}

/// A transaction being queued.
#[derive(Default)]
pub(crate) struct Transaction {
    /// The commands, in order.
    pub queued: Vec<Queued>,
    /// Whether a command was refused when queued: EXEC then discards the transaction.
    pub failed: bool,
    /// Bytes of the queued commands' arguments.
    pub bytes: usize,
}

/// One connection's state.
pub(crate) struct Session {
    /// The connection's id (CLIENT ID).
    pub id: u64,
    /// The protocol replies are encoded in.
    pub protocol: Protocol,
    /// The transaction being queued, after MULTI.
    pub transaction: Option<Transaction>,
    /// Watched keys with the versions read when they were watched, in order, each once.
    pub watched: Vec<(Bytes, Version)>,
    clients: Arc<Clients>,
}

impl Session {
    /// A new connection from `addr` to `local_addr`, registered in `clients`.
    pub fn open(clients: Arc<Clients>, addr: SocketAddr, local_addr: SocketAddr) -> Session {
        let id = clients.register(addr, local_addr);
        Session {
            id,
            protocol: Protocol::Resp2,
            transaction: None,
            watched: Vec::new(),
            clients,
        }
    }

    /// The connection's name (CLIENT GETNAME), if set.
    pub fn name(&self) -> Option<Bytes> {
        self.clients
            .with(self.id, |entry| entry.name.clone())
            .flatten()
    }

    /// Names the connection (an empty name removes it).
    pub fn set_name(&self, name: Bytes) {
        let name = (!name.is_empty()).then_some(name);
        self.clients.with(self.id, |entry| entry.name = name);
    }

    /// Records the protocol (for CLIENT INFO) and encodes replies in it from now on.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
        self.clients
            .with(self.id, |entry| entry.protocol = protocol);
    }

    /// The endpoint's connections.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Forgets the watched keys (UNWATCH, and after EXEC or DISCARD).
    pub fn unwatch(&mut self) {
        self.watched = Vec::new();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.clients.unregister(self.id);
    }
}

/// What CLIENT LIST shows of one connection.
#[derive(Clone, Debug)]
pub(crate) struct ClientEntry {
    addr: SocketAddr,
    local_addr: SocketAddr,
    name: Option<Bytes>,
    opened_at: Instant,
    protocol: Protocol,
}

/// The connections of one Redis endpoint (at most its `connections_max`).
#[derive(Debug, Default)]
pub(crate) struct Clients {
    next_id: AtomicU64,
    entries: Mutex<BTreeMap<u64, ClientEntry>>,
}

impl Clients {
    fn register(&self, addr: SocketAddr, local_addr: SocketAddr) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = ClientEntry {
            addr,
            local_addr,
            name: None,
            opened_at: Instant::now(),
            protocol: Protocol::Resp2,
        };
        self.lock().insert(id, entry);
        id
    }

    fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ClientEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with<T>(&self, id: u64, f: impl FnOnce(&mut ClientEntry) -> T) -> Option<T> {
        self.lock().get_mut(&id).map(f)
    }

    /// CLIENT INFO's line for connection `id` (ending in a newline), if it is open.
    pub fn info_line(&self, id: u64) -> Option<String> {
        self.lock().get(&id).map(|entry| line(id, entry))
    }

    /// CLIENT LIST's lines, one per open connection, by id.
    pub fn list(&self) -> String {
        self.lock()
            .iter()
            .map(|(id, entry)| line(*id, entry))
            .collect()
    }
}

/// A connection as CLIENT INFO and CLIENT LIST show it: the fields Redis shows first, with
/// the ones this server does not track left at their idle values.
fn line(id: u64, entry: &ClientEntry) -> String {
    let name = entry
        .name
        .as_ref()
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .unwrap_or_default();
    let resp = match entry.protocol {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    };
    format!(
        "id={id} addr={} laddr={} fd=-1 name={name} age={} idle=0 flags=N db=0 sub=0 psub=0 \
         ssub=0 multi=-1 user=default resp={resp}\n",
        entry.addr,
        entry.local_addr,
        entry.opened_at.elapsed().as_secs(),
    )
}
