//! raft-net-tcp: work in progress (see the open issue for this crate).
