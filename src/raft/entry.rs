//! Raft entries ↔ log records, and the membership payload encoding.
//!
//! A Raft entry is stored as one record frame (`storage::record`): `offset` = Raft index,
//! `term` = the entry's term, `kind` = normal / blank / membership / produce / register.
//! Normal payloads are the application bytes as they are; blank entries have an empty payload;
//! produce and register entries carry the producer headers below (issue 17); membership
//! entries carry this encoding (all integers little-endian, every count and length bounded
//! before anything is allocated):
//!
//! ```text
//! u8   version (1)
//! u8   config count c (1, or 2 during a joint change)
//! c × { u16 n; n × u64 voter id }
//! u16  node count m
//! m × { u64 id; u8 site_len; site (UTF-8); u8 addr_len; addr (UTF-8) }
//! ```
//!
//! Producer payloads (the dedup clock `ts_ms` is chosen by the leader; the record's own
//! timestamp is stamped by the log, after the decision):
//!
//! ```text
//! produce  = u8 version (1), u64 producer, u64 seq, u64 ts_ms, message   (25 header bytes)
//! register = u8 version (1), u64 ts_ms, u64 idle_expiry_ms, u32 max_producers  (21 bytes)
//! ```
//!
//! A producer's id is the offset of its Register entry. Readers see messages, not headers:
//! [`message_view`].

use super::dedup::ProducerEntry;
use super::{log_id, AppData, AppKind, Entry, LogId, Membership, NodeInfo};
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
pub type Payload = EntryPayload<AppData, u64, NodeInfo>;

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
    /// The bytes as they are (normal, produce, register and blank entries).
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
        EntryPayload::Normal(d) => (d.kind.entry_kind(), StoredPayload::Borrowed(&d.bytes)),
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
            // Application entries (plain and producer ones) are stamped by the log.
            timestamp_us: matches!(kind, EntryKind::Blank | EntryKind::Membership).then_some(0),
            payload: p.bytes(),
        })
        .collect()
}

/// A [`Error::Corruption`] for a payload at `offset` that does not decode.
fn bad_payload(offset: u64, what: &str, e: crate::codec::DecodeError) -> Error {
    Error::Corruption {
        segment: "raft log".into(),
        file_offset: 0,
        record_offset: Some(offset),
        detail: format!("{what} payload does not decode: {e}"),
    }
}

/// The Raft entry a record stores. Fails with [`Error::Corruption`] on a membership or
/// producer payload that does not decode (its frame checksum passed, so this is a bug or a
/// foreign log).
pub fn from_record(rec: Record) -> Result<Entry> {
    let id = log_id(rec.term, rec.offset);
    let frame = (!rec.frame.is_empty()).then(|| rec.frame.clone());
    let mut entry = match rec.kind {
        EntryKind::Normal => Entry::new_normal(id, AppData::normal(rec.payload)),
        EntryKind::Blank => Entry::new_blank(id),
        EntryKind::Membership => {
            let m = decode_membership(&rec.payload)
                .map_err(|e| bad_payload(rec.offset, "membership", e))?;
            Entry::new_membership(id, m)
        }
        EntryKind::Produce | EntryKind::Register => {
            let kind = match rec.kind {
                EntryKind::Produce => AppKind::Produce,
                _ => AppKind::Register,
            };
            let d = AppData {
                kind,
                bytes: rec.payload,
            };
            producer_entry(&d).map_err(|e| bad_payload(rec.offset, "producer", e))?;
            Entry::new_normal(id, d)
        }
    };
    entry.frame = frame;
    Ok(entry)
}

/// Bytes of the header before a produced message.
pub const PRODUCE_HEADER_BYTES: usize = 1 + 8 + 8 + 8;
/// Bytes of a register payload.
pub const REGISTER_BYTES: usize = 1 + 8 + 8 + 4;
const PRODUCER_PAYLOAD_VERSION: u8 = 1;

/// The payload of a produced message: its header, then the message (copied once).
pub fn encode_produce(producer: u64, seq: u64, ts_ms: u64, message: &[u8]) -> AppData {
    let mut out = Vec::with_capacity(PRODUCE_HEADER_BYTES + message.len());
    let mut w = Writer::new(&mut out);
    w.u8(PRODUCER_PAYLOAD_VERSION);
    w.u64(producer);
    w.u64(seq);
    w.u64(ts_ms);
    w.raw(message);
    AppData {
        kind: AppKind::Produce,
        bytes: out.into(),
    }
}

/// The payload of a producer registration.
pub fn encode_register(ts_ms: u64, idle_expiry_ms: u64, max_producers: u32) -> AppData {
    let mut out = Vec::with_capacity(REGISTER_BYTES);
    let mut w = Writer::new(&mut out);
    w.u8(PRODUCER_PAYLOAD_VERSION);
    w.u64(ts_ms);
    w.u64(idle_expiry_ms);
    w.u32(max_producers);
    AppData {
        kind: AppKind::Register,
        bytes: out.into(),
    }
}

/// `(producer, seq, ts_ms)` of a produce payload, and the message after the header.
pub fn decode_produce_header(payload: &[u8]) -> DecodeResult<(u64, u64, u64, &[u8])> {
    let mut c = Reader::new(payload, "produce header");
    if c.u8()? != PRODUCER_PAYLOAD_VERSION {
        return Err(c.invalid());
    }
    let (producer, seq, ts_ms) = (c.u64()?, c.u64()?, c.u64()?);
    Ok((producer, seq, ts_ms, c.rest()))
}

fn decode_register(payload: &[u8]) -> DecodeResult<ProducerEntry> {
    let mut c = Reader::new(payload, "register");
    if c.u8()? != PRODUCER_PAYLOAD_VERSION {
        return Err(c.invalid());
    }
    let e = ProducerEntry::Register {
        ts_ms: c.u64()?,
        idle_expiry_ms: c.u64()?,
        max_producers: c.u32()?,
    };
    c.finish(e)
}

/// The producer table's view of an application entry: `None` for a plain message.
pub fn producer_entry(d: &AppData) -> DecodeResult<Option<ProducerEntry>> {
    Ok(match d.kind {
        AppKind::Normal => None,
        AppKind::Produce => {
            let (producer, seq, ts_ms, _) = decode_produce_header(&d.bytes)?;
            Some(ProducerEntry::Produce {
                producer,
                seq,
                ts_ms,
            })
        }
        AppKind::Register => Some(decode_register(&d.bytes)?),
    })
}

/// The record a reader sees for `rec`: a plain message as it is, a produced one as a normal
/// record of its message (the header cut off; the frame stays the stored one), and `None` for
/// Raft's own entries and registrations (they carry no message). A produce header that does
/// not decode is [`Error::Corruption`], never skipped.
pub fn message_view(mut rec: Record) -> Result<Option<Record>> {
    match rec.kind {
        EntryKind::Normal => Ok(Some(rec)),
        EntryKind::Blank | EntryKind::Membership | EntryKind::Register => Ok(None),
        EntryKind::Produce => {
            decode_produce_header(&rec.payload)
                .map_err(|e| bad_payload(rec.offset, "producer", e))?;
            rec.payload = rec.payload.slice(PRODUCE_HEADER_BYTES..);
            rec.kind = EntryKind::Normal;
            Ok(Some(rec))
        }
    }
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
            Entry::new_normal(log_id(2, 2), AppData::normal(Bytes::from_static(b"hi"))),
            Entry::new_normal(log_id(2, 3), encode_produce(9, 4, 77, b"msg")),
            Entry::new_normal(log_id(2, 4), encode_register(77, 1000, 16)),
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

    fn record(kind: EntryKind, payload: Bytes) -> Record {
        Record {
            offset: 5,
            term: 2,
            timestamp_us: 9,
            kind,
            payload,
            frame: Bytes::new(),
        }
    }

    #[test]
    fn producer_payloads_round_trip_and_refuse_prefixes() {
        let p = encode_produce(9, 4, 77, b"msg");
        assert_eq!(p.bytes.len(), PRODUCE_HEADER_BYTES + 3);
        assert_eq!(&p.message()[..], b"msg");
        assert_eq!(
            producer_entry(&p),
            Ok(Some(ProducerEntry::Produce {
                producer: 9,
                seq: 4,
                ts_ms: 77
            }))
        );
        let r = encode_register(77, 1000, 16);
        assert_eq!(r.bytes.len(), REGISTER_BYTES);
        assert!(r.message().is_empty());
        assert_eq!(
            producer_entry(&r),
            Ok(Some(ProducerEntry::Register {
                ts_ms: 77,
                idle_expiry_ms: 1000,
                max_producers: 16
            }))
        );
        // Any prefix of a header, a register with a byte more, or another version: refused,
        // and a record holding one is corruption, never an entry.
        for d in [&p, &r] {
            let header = match d.kind {
                AppKind::Produce => PRODUCE_HEADER_BYTES,
                _ => REGISTER_BYTES,
            };
            for n in 0..header {
                let cut = AppData {
                    kind: d.kind,
                    bytes: d.bytes.slice(..n),
                };
                assert!(producer_entry(&cut).is_err(), "prefix {n}");
                let err = from_record(record(d.kind.entry_kind(), cut.bytes)).unwrap_err();
                assert!(matches!(err, Error::Corruption { .. }), "{err:?}");
            }
            let mut other = d.bytes.to_vec();
            other[0] = 2;
            let other = AppData {
                kind: d.kind,
                bytes: other.into(),
            };
            assert!(producer_entry(&other).is_err());
        }
        let mut longer = r.bytes.to_vec();
        longer.push(0);
        let longer = AppData {
            kind: AppKind::Register,
            bytes: longer.into(),
        };
        assert!(producer_entry(&longer).is_err());
        assert_eq!(producer_entry(&AppData::normal(Bytes::new())), Ok(None));
    }

    #[test]
    fn the_producer_payload_encodings_are_unchanged() {
        let mut want = vec![1u8];
        for v in [9u64, 4, 77] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        want.extend_from_slice(b"msg");
        assert_eq!(&encode_produce(9, 4, 77, b"msg").bytes[..], &want[..]);
        let mut want = vec![1u8];
        for v in [77u64, 1000] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        want.extend_from_slice(&16u32.to_le_bytes());
        assert_eq!(&encode_register(77, 1000, 16).bytes[..], &want[..]);
    }

    #[test]
    fn readers_see_messages_not_headers() {
        let plain = record(EntryKind::Normal, Bytes::from_static(b"plain"));
        assert_eq!(message_view(plain.clone()).unwrap(), Some(plain));
        let produced = record(EntryKind::Produce, encode_produce(1, 2, 3, b"msg").bytes);
        let seen = message_view(produced).unwrap().unwrap();
        assert_eq!((seen.kind, &seen.payload[..]), (EntryKind::Normal, &b"msg"[..]));
        assert_eq!((seen.offset, seen.term, seen.timestamp_us), (5, 2, 9));
        let reg = record(EntryKind::Register, encode_register(1, 2, 3).bytes);
        assert_eq!(message_view(reg).unwrap(), None);
        assert_eq!(message_view(record(EntryKind::Blank, Bytes::new())).unwrap(), None);
        let short = record(EntryKind::Produce, Bytes::from_static(&[1, 2]));
        assert!(matches!(
            message_view(short),
            Err(Error::Corruption { record_offset: Some(5), .. })
        ));
    }

    #[test]
    fn producer_entries_are_stamped_by_the_log_raft_entries_are_not() {
        let entries = vec![
            Entry::new_blank(log_id(1, 0)),
            Entry::new_normal(log_id(1, 1), encode_produce(0, 0, 1, b"m")),
            Entry::new_normal(log_id(1, 2), encode_register(1, 2, 3)),
        ];
        let payloads: Vec<_> = entries.iter().map(|e| to_payload(e).unwrap()).collect();
        let stamps: Vec<_> = to_records(&entries, &payloads)
            .iter()
            .map(|r| (r.kind, r.timestamp_us))
            .collect();
        assert_eq!(
            stamps,
            [
                (EntryKind::Blank, Some(0)),
                (EntryKind::Produce, None),
                (EntryKind::Register, None)
            ]
        );
    }
}
