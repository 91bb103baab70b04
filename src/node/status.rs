//! What a node reports about itself: [`NodeStatus`] and its [`Role`].
//!
//! These are sitelog's own types: the consensus layer converts its state into them, so that
//! the embedding API and the client protocol never depend on the consensus library's types.

use crate::raft::replica::{self, ReplicaStatus};

/// A node's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts writes.
    Leader,
    /// Replicates from the leader and votes.
    Follower,
    /// Asking for votes.
    Candidate,
    /// Replicates but does not vote.
    Learner,
    /// Stopped.
    Shutdown,
}

impl From<replica::Role> for Role {
    fn from(r: replica::Role) -> Self {
        match r {
            replica::Role::Leader => Role::Leader,
            replica::Role::Follower => Role::Follower,
            replica::Role::Candidate => Role::Candidate,
            replica::Role::Learner => Role::Learner,
            replica::Role::Shutdown => Role::Shutdown,
        }
    }
}

/// How far one follower has replicated (known on the leader only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's node id.
    pub node_id: u64,
    /// One past the highest offset it holds matching the leader, if known.
    pub matched_end: Option<u64>,
    /// Entries it is behind the leader's last entry.
    pub lag_entries: u64,
}

impl From<replica::FollowerProgress> for FollowerProgress {
    fn from(f: replica::FollowerProgress) -> Self {
        FollowerProgress {
            node_id: f.node_id,
            matched_end: f.matched_end,
            lag_entries: f.lag_entries,
        }
    }
}

/// A snapshot of a node's state ([`super::Node::status`], `Client::status_of`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub node_id: u64,
    /// Its role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader it knows, if any.
    pub leader: Option<u64>,
    /// One past the highest committed (and applied) offset on this node.
    pub commit_end: u64,
    /// One past the last offset in its log.
    pub log_end: u64,
    /// Voter ids of the effective membership.
    pub voters: Vec<u64>,
    /// Learner ids of the effective membership.
    pub learners: Vec<u64>,
    /// Per follower (leader only).
    pub followers: Vec<FollowerProgress>,
    /// Catch-up by snapshot on this node: (bytes of segments in place, bytes to have); (0, 0)
    /// when there was none.
    pub catch_up_bytes: (u64, u64),
}

impl From<ReplicaStatus> for NodeStatus {
    fn from(s: ReplicaStatus) -> Self {
        NodeStatus {
            node_id: s.node_id,
            role: s.role.into(),
            term: s.term,
            leader: s.leader,
            commit_end: s.commit_end,
            log_end: s.log_end,
            voters: s.voters,
            learners: s.learners,
            followers: s.followers.into_iter().map(Into::into).collect(),
            catch_up_bytes: s.catch_up_bytes,
        }
    }
}
