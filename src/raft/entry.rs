//! Raft entries ↔ log records, and the membership payload encoding.
//!
//! A Raft entry is stored as one record frame (`storage::record`): `offset` = Raft index,
//! `term` = the entry's term, `kind` = normal / blank / membership. Normal payloads are the
//! application bytes as they are; blank entries have an empty payload; membership entries
//! carry this encoding (all integers little-endian, every count and length bounded before
//! anything is allocated):
//!
//! ```text
//! u8   version (1)
//! u8   config count c (1, or 2 during a joint change)
//! c × { u16 n; n × u64 voter id }
//! u16  node count m
//! m × { u64 id; u8 site_len; site (UTF-8); u8 addr_len; addr (UTF-8) }
//! ```

use super::{log_id, AppBytes, Entry, LogId, Membership, NodeInfo};
use crate::codec::{DecodeResult, Reader, Writer};
use crate::limits::{MAX_ADDR_BYTES, MAX_SITE_BYTES};
use crate::storage::{EntryKind, NewRecord, Record};
use crate::{Error, Result};
use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::vote::leader_id_std::CommittedLeaderId;
use openraft::EntryPayload;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The payload of a sitelog Raft entry.
pub type Payload = EntryPayload<AppBytes, u64, NodeInfo>;

/// sitelog's Raft entry: openraft's log id and payload, plus the stored record frame once the
/// entry has been written (read back from a log, or received from a peer). Replication ships
/// that frame as it is stored, its checksum computed once, when the leader wrote it, and
/// verified on every hop: on read, on receipt, and when a follower stores it verbatim.
#[derive(Clone)]
pub struct LogEntry {
    /// (term, index = log offset).
    pub log_id: LogId,
    /// What the entry carries.
    pub payload: Payload,
    /// The stored frame, when known.
    pub frame: Option<Bytes>,
}

impl PartialEq for LogEntry {
    /// Entries are equal when their log ids and payloads are; the frame is an encoding of
    /// them (and is absent before the first write).
    fn eq(&self, other: &Self) -> bool {
        self.log_id == other.log_id && self.payload == other.payload
    }
}

impl fmt::Debug for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogEntry")
            .field("log_id", &self.log_id)
            .field("payload", &self.payload)
            .field("frame_bytes", &self.frame.as_ref().map(|b| b.len()))
            .finish()
    }
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.log_id, self.payload)
    }
}

impl RaftEntry for LogEntry {
    type CommittedLeaderId = CommittedLeaderId<u64>;
    type Payload = Payload;

    fn new(log_id: LogId, payload: Payload) -> Self {
        LogEntry {
            log_id,
            payload,
            frame: None,
        }
    }

    fn log_id_parts(&self) -> (&CommittedLeaderId<u64>, u64) {
        (&self.log_id.leader_id, self.log_id.index)
    }

    fn set_log_id(&mut self, new: LogId) {
        if new != self.log_id {
            // The frame encodes the old log id.
            self.frame = None;
        }
        self.log_id = new;
    }

    fn get_membership(&self) -> Option<Membership> {
        match &self.payload {
            EntryPayload::Membership(m) => Some(m.clone()),
            _ => None,
        }
    }
}

const MEMBERSHIP_VERSION: u8 = 1;
pub use crate::limits::MAX_MEMBERS;
use crate::limits::MAX_MEMBERSHIP_CONFIGS as MAX_CONFIGS;

/// The payload of a record for `entry`, borrowed where possible.
pub enum StoredPayload<'a> {
    /// The bytes as they are (normal and blank entries).
    Borrowed(&'a [u8]),
    /// An encoded membership.
    Owned(Vec<u8>),
}

impl StoredPayload<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            StoredPayload::Borrowed(b) => b,
            StoredPayload::Owned(v) => v,
        }
    }
}

/// The record kind and payload that store `entry` (a membership that does not fit its
/// encoding is refused: [`Error::TooLong`]).
pub fn to_payload(entry: &Entry) -> Result<(EntryKind, StoredPayload<'_>)> {
    Ok(match &entry.payload {
        EntryPayload::Blank => (EntryKind::Blank, StoredPayload::Borrowed(&[])),
        EntryPayload::Normal(d) => (EntryKind::Normal, StoredPayload::Borrowed(&d.0)),
        EntryPayload::Membership(m) => (
            EntryKind::Membership,
            StoredPayload::Owned(encode_membership(m)?),
        ),
    })
}

/// The records that store `entries` (payloads borrowed from `payloads`).
pub fn to_records<'a>(
    entries: &'a [Entry],
    payloads: &'a [(EntryKind, StoredPayload<'a>)],
) -> Vec<NewRecord<'a>> {
    debug_assert_eq!(entries.len(), payloads.len());
    entries
        .iter()
        .zip(payloads)
        .map(|(e, (kind, p))| NewRecord {
            term: e.log_id.leader_id.term,
            kind: *kind,
            // Raft's own entries carry no time: every founding member writes the initial
            // membership entry itself, and its frame must be the same bytes on all of them
            // (so that their sealed segments are identical files any replica can serve).
            timestamp_us: (*kind != EntryKind::Normal).then_some(0),
            payload: p.bytes(),
        })
        .collect()
}

/// The Raft entry a record stores. Fails with [`Error::Corruption`] on a membership payload
/// that does not decode (its frame checksum passed, so this is a bug or a foreign log).
pub fn from_record(rec: Record) -> Result<Entry> {
    let id = log_id(rec.term, rec.offset);
    let frame = (!rec.frame.is_empty()).then(|| rec.frame.clone());
    let mut entry = match rec.kind {
        EntryKind::Normal => Entry::new_normal(id, AppBytes(rec.payload)),
        EntryKind::Blank => Entry::new_blank(id),
        EntryKind::Membership => {
            let m = decode_membership(&rec.payload).map_err(|e| Error::Corruption {
                segment: "raft log".into(),
                file_offset: 0,
                record_offset: Some(rec.offset),
                detail: format!("membership payload does not decode: {e}"),
            })?;
            Entry::new_membership(id, m)
        }
    };
    entry.frame = frame;
    Ok(entry)
}

/// Encodes a membership (see the module docs). Refuses ([`Error::TooLong`]), never cuts, a
/// configuration or node list over [`MAX_MEMBERS`] and a site or address over 255 bytes
/// (`check_node_info` refuses such a node before it is added).
pub fn encode_membership(m: &Membership) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    w.u8(MEMBERSHIP_VERSION);
    let configs = m.get_joint_config();
    w.len_u8("membership configurations", configs.len(), MAX_CONFIGS)?;
    for c in configs {
        w.len_u16("membership voters", c.len(), MAX_MEMBERS)?;
        c.iter().for_each(|&id| w.u64(id));
    }
    let nodes: Vec<_> = m.nodes().collect();
    w.len_u16("membership nodes", nodes.len(), MAX_MEMBERS)?;
    for (id, n) in nodes {
        w.u64(*id);
        w.str_u8("node site", &n.site, MAX_SITE_BYTES)?;
        w.str_u8("node address", &n.addr, MAX_ADDR_BYTES)?;
    }
    Ok(out)
}

/// Checks a node's description fits the membership encoding.
pub fn check_node_info(n: &NodeInfo) -> Result<()> {
    if n.site.len() > MAX_SITE_BYTES || n.addr.len() > MAX_ADDR_BYTES {
        return Err(Error::InvalidArgument(format!(
            "site names and addresses are at most {MAX_SITE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Decodes a membership that fills `buf` exactly.
pub fn decode_membership(buf: &[u8]) -> DecodeResult<Membership> {
    let mut c = Reader::new(buf, "membership");
    let m = decode_membership_from(&mut c)?;
    c.finish(m)
}

/// The smallest encoded node: id, two empty strings.
const MIN_NODE_BYTES: usize = 8 + 1 + 1;

pub(crate) fn decode_membership_from(c: &mut Reader<'_>) -> DecodeResult<Membership> {
    if c.u8()? != MEMBERSHIP_VERSION {
        return Err(c.invalid());
    }
    let n_configs = usize::from(c.u8()?);
    if n_configs == 0 {
        return Err(c.invalid());
    }
    c.check_count(n_configs, MAX_CONFIGS, 2)?;
    let mut configs = Vec::with_capacity(n_configs);
    for _ in 0..n_configs {
        let n = c.count_u16(MAX_MEMBERS, 8)?;
        let mut set = BTreeSet::new();
        for _ in 0..n {
            set.insert(c.u64()?);
        }
        configs.push(set);
    }
    let n_nodes = c.count_u16(MAX_MEMBERS, MIN_NODE_BYTES)?;
    let mut nodes = BTreeMap::new();
    for _ in 0..n_nodes {
        let id = c.u64()?;
        let site = c.str_u8()?;
        let addr = c.str_u8()?;
        nodes.insert(id, NodeInfo { site, addr });
    }
    Membership::new(configs, nodes).map_err(|_| c.invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(site: &str) -> NodeInfo {
        NodeInfo {
            site: site.into(),
            addr: format!("{site}.example:7000"),
        }
    }

    #[test]
    fn membership_round_trips_including_joint_and_learners() {
        let nodes: BTreeMap<u64, NodeInfo> = [
            (1, node("a")),
            (2, node("b")),
            (3, node("c")),
            (9, node("a")),
        ]
        .into();
        let joint = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([1, 2, 9])];
        let m = Membership::new(joint, nodes).unwrap();
        let enc = encode_membership(&m).unwrap();
        assert_eq!(decode_membership(&enc), Ok(m));
        // Every strict prefix and any trailing byte is rejected.
        for n in 0..enc.len() {
            assert!(decode_membership(&enc[..n]).is_err(), "prefix {n}");
        }
        let mut longer = enc.clone();
        longer.push(0);
        assert!(decode_membership(&longer).is_err());
    }

    #[test]
    fn oversized_counts_are_refused_before_allocating() {
        let mut b = vec![MEMBERSHIP_VERSION, 1];
        b.extend_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            decode_membership(&b),
            Err(crate::codec::DecodeError::TooMany { count: 65_535, .. })
        ));
        assert!(decode_membership(&[MEMBERSHIP_VERSION, 3]).is_err());
        assert!(decode_membership(&[2, 1]).is_err());
    }

    #[test]
    fn the_membership_encoding_is_unchanged() {
        let m =
            Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node("a"))])).unwrap();
        let mut want = vec![
            1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0,
        ];
        want.extend_from_slice(b"\x01a\x0ea.example:7000");
        assert_eq!(encode_membership(&m).unwrap(), want);
    }

    #[test]
    fn an_over_long_site_is_refused_not_cut() {
        let long = NodeInfo {
            site: "s".repeat(MAX_SITE_BYTES + 1),
            addr: "x:1".into(),
        };
        assert!(check_node_info(&long).is_err());
        let m = Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, long)])).unwrap();
        let err = encode_membership(&m).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLong {
                    what: "node site",
                    len: 256,
                    max: 255
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn entries_round_trip_through_records() {
        let m =
            Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node("a"))])).unwrap();
        let entries = vec![
            Entry::new_blank(log_id(1, 0)),
            Entry::new_membership(log_id(1, 1), m),
            Entry::new_normal(log_id(2, 2), AppBytes(bytes::Bytes::from_static(b"hi"))),
        ];
        let payloads: Vec<_> = entries.iter().map(|e| to_payload(e).unwrap()).collect();
        let recs = to_records(&entries, &payloads);
        for (e, r) in entries.iter().zip(recs) {
            let rec = Record {
                offset: e.log_id.index,
                term: r.term,
                timestamp_us: 0,
                kind: r.kind,
                payload: bytes::Bytes::copy_from_slice(r.payload),
                frame: bytes::Bytes::new(),
            };
            assert_eq!(&from_record(rec).unwrap(), e);
        }
    }
}
