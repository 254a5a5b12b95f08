//! Cluster configurations: voters, learners and joint consensus (paper section 6, thesis
//! chapter 4).
//!
//! A configuration is *joint* while `voters_outgoing` is non-empty: a decision then needs a
//! majority of `voters` **and** a majority of `voters_outgoing` (paper section 6).

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::types::{LogIndex, NodeId};

/// Members listed in one configuration, at most. Bounds decoding of untrusted bytes.
pub const MEMBERS_MAX: usize = 1024;
/// Bytes of one member's address, at most.
pub const ADDRESS_BYTES_MAX: usize = 1024;

/// A cluster configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Voters of the (new) configuration.
    pub voters: BTreeSet<NodeId>,
    /// Voters of the old configuration while a joint change is in progress; empty otherwise.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Non-voting members that receive the log (thesis section 4.2.1).
    pub learners: BTreeSet<NodeId>,
    /// Network address of each member, for the transport. The engine never reads it.
    pub addresses: BTreeMap<NodeId, String>,
}

/// Why a configuration or a change to one is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// A configuration needs at least one voter.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// Node id 0 means "nobody".
    #[error("node id 0 is reserved")]
    ReservedId,
    /// A node may not be voter and learner at once.
    #[error("node {0} is both a voter and a learner")]
    VoterAndLearner(NodeId),
    /// Too many members.
    #[error("more than {MEMBERS_MAX} members")]
    TooManyMembers,
    /// Bytes from disk or network that do not decode.
    #[error("malformed membership encoding: {0}")]
    Malformed(&'static str),
    /// A node was listed twice ([`MembershipBuilder`]).
    #[error("node {0} is listed twice")]
    DuplicateMember(NodeId),
    /// An address is longer than [`ADDRESS_BYTES_MAX`]: a configuration entry holding it
    /// could not be decoded again.
    #[error("the address of node {0} is longer than {ADDRESS_BYTES_MAX} bytes")]
    AddressTooLong(NodeId),
}

impl Membership {
    /// A configuration of the given voters, no learners, no addresses (for transports that
    /// need none, like raft-core's in-memory router; a TCP cluster builds its configuration
    /// with [`Membership::builder`]).
    pub fn new_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Builds a configuration member by member, each with its address:
    ///
    /// ```
    /// use raft_core::Membership;
    ///
    /// let membership = Membership::builder()
    ///     .voter(1, "10.0.0.1:7001")
    ///     .voter(2, "10.0.0.2:7001")
    ///     .voter(3, "10.0.0.3:7001")
    ///     .learner(4, "10.0.0.4:7001")
    ///     .build()?;
    /// assert!(membership.is_voter(3) && membership.is_learner(4));
    /// assert_eq!(membership.addresses[&2], "10.0.0.2:7001");
    /// # Ok::<(), raft_core::MembershipError>(())
    /// ```
    pub fn builder() -> MembershipBuilder {
        MembershipBuilder::default()
    }

    /// Checks the structural rules: at least one voter, no id 0, no node both voter and
    /// learner, and what [`Membership::decode`] needs to read the configuration back from its
    /// log entry (at most [`MEMBERS_MAX`] members and addresses, no address over
    /// [`ADDRESS_BYTES_MAX`] bytes).
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if self.all_members().count() > MEMBERS_MAX || self.addresses.len() > MEMBERS_MAX {
            return Err(MembershipError::TooManyMembers);
        }
        if let Some((id, _)) = self
            .addresses
            .iter()
            .find(|(_, address)| address.len() > ADDRESS_BYTES_MAX)
        {
            return Err(MembershipError::AddressTooLong(*id));
        }
        if self.all_members().any(|id| id == 0) {
            return Err(MembershipError::ReservedId);
        }
        if let Some(id) = self
            .learners
            .iter()
            .find(|id| self.voters.contains(id) || self.voters_outgoing.contains(id))
        {
            return Err(MembershipError::VoterAndLearner(*id));
        }
        Ok(())
    }

    /// Whether a joint change is in progress.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Whether `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Whether `id` is in the configuration at all.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member (voters of both halves and learners), each once, in id order.
    pub fn all_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let all: BTreeSet<NodeId> = self
            .voters
            .iter()
            .chain(self.voters_outgoing.iter())
            .chain(self.learners.iter())
            .copied()
            .collect();
        all.into_iter()
    }

    /// Whether the nodes for which `granted` returns true form a quorum: a majority of `voters`
    /// and, when joint, a majority of `voters_outgoing` too.
    pub fn is_quorum(&self, granted: impl Fn(NodeId) -> bool) -> bool {
        majority_of(&self.voters, &granted)
            && (self.voters_outgoing.is_empty() || majority_of(&self.voters_outgoing, &granted))
    }

    /// The highest index that a quorum has reached, given each voter's matched index.
    /// For a joint configuration this is the smaller of the two halves' answers.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> LogIndex) -> LogIndex {
        let incoming = quorum_index(&self.voters, &matched);
        if self.voters_outgoing.is_empty() {
            incoming
        } else {
            incoming.min(quorum_index(&self.voters_outgoing, &matched))
        }
    }

    /// The configuration that leaves joint consensus: only the new voters remain.
    pub fn leave_joint(&self) -> Membership {
        let mut next = self.clone();
        let removed: Vec<NodeId> = self
            .voters_outgoing
            .difference(&self.voters)
            .copied()
            .collect();
        next.voters_outgoing.clear();
        for id in removed {
            if !next.learners.contains(&id) {
                next.addresses.remove(&id);
            }
        }
        next
    }

    /// Encodes the configuration for a log entry. Layout (all integers little-endian):
    /// `u32 count, count x u64` for voters, voters_outgoing and learners in turn, then
    /// `u32 count, count x (u64 id, u32 len, len bytes utf-8)` for addresses.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        for set in [&self.voters, &self.voters_outgoing, &self.learners] {
            buf.put_u32_le(set.len() as u32);
            for id in set {
                buf.put_u64_le(*id);
            }
        }
        buf.put_u32_le(self.addresses.len() as u32);
        for (id, addr) in &self.addresses {
            buf.put_u64_le(*id);
            buf.put_u32_le(addr.len() as u32);
            buf.put_slice(addr.as_bytes());
        }
        buf.freeze()
    }

    /// Decodes [`Membership::encode`]'s output. Bad input is an error, never a panic, and never
    /// allocates more than the input's length justifies.
    pub fn decode(mut bytes: &[u8]) -> Result<Membership, MembershipError> {
        let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
        for set in sets.iter_mut() {
            let count = take_count(&mut bytes)?;
            for _ in 0..count {
                set.insert(take_u64(&mut bytes)?);
            }
        }
        let mut addresses = BTreeMap::new();
        let count = take_count(&mut bytes)?;
        for _ in 0..count {
            let id = take_u64(&mut bytes)?;
            let len = take_u32(&mut bytes)? as usize;
            if len > ADDRESS_BYTES_MAX || len > bytes.len() {
                return Err(MembershipError::Malformed("address length"));
            }
            let (addr, rest) = bytes.split_at(len);
            let addr = std::str::from_utf8(addr)
                .map_err(|_| MembershipError::Malformed("address utf-8"))?;
            addresses.insert(id, addr.to_owned());
            bytes = rest;
        }
        if !bytes.is_empty() {
            return Err(MembershipError::Malformed("trailing bytes"));
        }
        let [voters, voters_outgoing, learners] = sets;
        let membership = Membership {
            voters,
            voters_outgoing,
            learners,
            addresses,
        };
        membership.validate()?;
        Ok(membership)
    }
}

/// Builds a [`Membership`] in which every member has an address. See
/// [`Membership::builder`].
#[derive(Clone, Debug, Default)]
pub struct MembershipBuilder {
    membership: Membership,
    /// The first mistake made while adding members, reported by [`MembershipBuilder::build`].
    error: Option<MembershipError>,
}

impl MembershipBuilder {
    /// Adds a voter reachable at `address` (`host:port` for raft-net-tcp).
    pub fn voter(self, id: NodeId, address: impl ToString) -> Self {
        self.add(id, address.to_string(), true)
    }

    /// Adds a learner (it receives the log but does not vote) reachable at `address`.
    pub fn learner(self, id: NodeId, address: impl ToString) -> Self {
        self.add(id, address.to_string(), false)
    }

    fn add(mut self, id: NodeId, address: String, voter: bool) -> Self {
        if self.error.is_some() {
            return self;
        }
        let m = &mut self.membership;
        if m.addresses.contains_key(&id) {
            self.error = Some(MembershipError::DuplicateMember(id));
            return self;
        }
        m.addresses.insert(id, address);
        if voter {
            m.voters.insert(id);
        } else {
            m.learners.insert(id);
        }
        self
    }

    /// The configuration, once it passes [`Membership::validate`]; or the first mistake
    /// (a node listed twice, an address over [`ADDRESS_BYTES_MAX`] bytes, no voter, id 0,
    /// more than [`MEMBERS_MAX`] members).
    pub fn build(self) -> Result<Membership, MembershipError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        self.membership.validate()?;
        Ok(self.membership)
    }
}

impl std::fmt::Display for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "voters={:?}", self.voters)?;
        if self.is_joint() {
            write!(f, " outgoing={:?}", self.voters_outgoing)?;
        }
        if !self.learners.is_empty() {
            write!(f, " learners={:?}", self.learners)?;
        }
        Ok(())
    }
}

fn majority_of(voters: &BTreeSet<NodeId>, granted: &impl Fn(NodeId) -> bool) -> bool {
    let yes = voters.iter().filter(|id| granted(**id)).count();
    yes > voters.len() / 2
}

/// The largest index that a majority of `voters` has matched: sort descending and take the
/// element at position `len / 2`.
fn quorum_index(voters: &BTreeSet<NodeId>, matched: &impl Fn(NodeId) -> LogIndex) -> LogIndex {
    if voters.is_empty() {
        return 0;
    }
    let mut indexes: Vec<LogIndex> = voters.iter().map(|id| matched(*id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[voters.len() / 2]
}

fn take_u64(bytes: &mut &[u8]) -> Result<u64, MembershipError> {
    let (head, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or(MembershipError::Malformed("truncated id"))?;
    *bytes = rest;
    Ok(u64::from_le_bytes(*head))
}

fn take_u32(bytes: &mut &[u8]) -> Result<u32, MembershipError> {
    let (head, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or(MembershipError::Malformed("truncated length"))?;
    *bytes = rest;
    Ok(u32::from_le_bytes(*head))
}

fn take_count(bytes: &mut &[u8]) -> Result<usize, MembershipError> {
    let count = take_u32(bytes)? as usize;
    if count > MEMBERS_MAX {
        return Err(MembershipError::TooManyMembers);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joint(new: &[NodeId], old: &[NodeId]) -> Membership {
        Membership {
            voters: new.iter().copied().collect(),
            voters_outgoing: old.iter().copied().collect(),
            ..Default::default()
        }
    }

    /// Golden table for majority commit (paper section 5.3, 5.4.2) and joint commit (section 6).
    #[test]
    fn committed_index_golden_table() {
        /// (voters, outgoing voters, matched index per node, expected commit index)
        type Case<'a> = (
            &'a [NodeId],
            &'a [NodeId],
            &'a [(NodeId, LogIndex)],
            LogIndex,
        );
        let cases: &[Case<'_>] = &[
            (&[1], &[], &[(1, 5)], 5),
            (&[1, 2], &[], &[(1, 5), (2, 3)], 3),
            (&[1, 2, 3], &[], &[(1, 5), (2, 3), (3, 1)], 3),
            (&[1, 2, 3, 4], &[], &[(1, 5), (2, 3), (3, 1), (4, 9)], 3),
            (
                &[1, 2, 3, 4, 5],
                &[],
                &[(1, 5), (2, 3), (3, 1), (4, 9), (5, 0)],
                3,
            ),
            (
                &[4, 5, 6],
                &[1, 2, 3],
                &[(1, 9), (2, 9), (3, 9), (4, 1), (5, 2), (6, 0)],
                1,
            ),
            (
                &[4, 5, 6],
                &[1, 2, 3],
                &[(1, 9), (2, 0), (3, 0), (4, 9), (5, 9), (6, 9)],
                0,
            ),
            (&[1, 2, 3], &[1, 2], &[(1, 7), (2, 4), (3, 7)], 4),
        ];
        for (new, old, matched, want) in cases {
            let m = joint(new, old);
            let got = m.committed_index(|id| {
                matched
                    .iter()
                    .find(|(n, _)| *n == id)
                    .map(|(_, i)| *i)
                    .unwrap_or(0)
            });
            assert_eq!(
                got, *want,
                "voters={new:?} outgoing={old:?} matched={matched:?}"
            );
        }
    }

    #[test]
    fn quorum_needs_both_halves_when_joint() {
        let m = joint(&[4, 5, 6], &[1, 2, 3]);
        assert!(!m.is_quorum(|id| [1, 2, 3].contains(&id)));
        assert!(!m.is_quorum(|id| [4, 5, 6].contains(&id)));
        assert!(m.is_quorum(|id| [1, 2, 4, 5].contains(&id)));
    }

    #[test]
    fn encode_decode_round_trip_and_rejects_garbage() {
        let mut m = joint(&[1, 2, 3], &[3, 4]);
        m.learners.insert(9);
        m.addresses.insert(1, "127.0.0.1:7001".into());
        let bytes = m.encode();
        assert_eq!(Membership::decode(&bytes).unwrap(), m);
        for cut in 0..bytes.len() {
            assert!(
                Membership::decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let huge_count = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            Membership::decode(&huge_count),
            Err(MembershipError::TooManyMembers)
        );
    }

    #[test]
    fn the_builder_gives_every_member_its_address_and_refuses_mistakes() {
        let built = Membership::builder()
            .voter(1, "a:1")
            .voter(2, String::from("b:2"))
            .learner(3, "c:3")
            .build()
            .unwrap();
        let mut expected = Membership::new_voters([1, 2]);
        expected.learners.insert(3);
        expected.addresses = [(1, "a:1"), (2, "b:2"), (3, "c:3")]
            .into_iter()
            .map(|(id, addr)| (id, addr.to_string()))
            .collect();
        assert_eq!(built, expected);
        assert_eq!(Membership::decode(&built.encode()).unwrap(), built);

        let twice = Membership::builder().voter(1, "a:1").learner(1, "a:1");
        assert_eq!(twice.build(), Err(MembershipError::DuplicateMember(1)));
        let long = "a".repeat(ADDRESS_BYTES_MAX + 1);
        let too_long = Membership::builder().voter(1, "a:1").voter(2, long);
        assert_eq!(too_long.build(), Err(MembershipError::AddressTooLong(2)));
        let longest = "a".repeat(ADDRESS_BYTES_MAX);
        let fits = Membership::builder().voter(1, longest).build().unwrap();
        assert_eq!(Membership::decode(&fits.encode()).unwrap(), fits);
        let no_voter = Membership::builder().learner(1, "a:1");
        assert_eq!(no_voter.build(), Err(MembershipError::NoVoters));
        let zero = Membership::builder().voter(0, "a:1");
        assert_eq!(zero.build(), Err(MembershipError::ReservedId));
    }

    #[test]
    fn validate_rejects_voter_learner_overlap() {
        let mut m = Membership::new_voters([1, 2]);
        m.learners.insert(2);
        assert_eq!(m.validate(), Err(MembershipError::VoterAndLearner(2)));
        // What decode could not read back from a log entry.
        let mut long = Membership::new_voters([1]);
        long.addresses.insert(1, "a".repeat(ADDRESS_BYTES_MAX + 1));
        assert_eq!(long.validate(), Err(MembershipError::AddressTooLong(1)));
        assert!(Membership::decode(&long.encode()).is_err());
        let mut many = Membership::new_voters([1]);
        many.addresses = (1..=MEMBERS_MAX as u64 + 1)
            .map(|id| (id, "a".into()))
            .collect();
        assert_eq!(many.validate(), Err(MembershipError::TooManyMembers));
        assert!(Membership::decode(&many.encode()).is_err());
        assert_eq!(
            Membership::default().validate(),
            Err(MembershipError::NoVoters)
        );
    }
}
