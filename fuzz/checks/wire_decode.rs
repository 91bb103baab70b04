//! Check logic of the `wire_decode` fuzz target: every decoder of bytes that arrive from the
//! network (`raft::wire` RPCs, the client protocol, the handshake, membership payloads, the
//! fetch protocol's repair messages) on arbitrary input. Properties: no panic, no allocation beyond what the input can justify
//! (libFuzzer's malloc limit catches that), and whatever decodes re-encodes to something that
//! decodes to the same value (round trip), so a decoder never invents data.
//!
//! Input layout: byte 0 selects the decoder (mod 9); the rest is the message.

use bytes::Bytes;
use sitelog::net::fetch;
use sitelog::net::handshake::{decode_answer, Hello};
use sitelog::node::protocol::{Reply, Request};
use sitelog::raft::entry::{decode_membership, encode_membership};
use sitelog::raft::wire;

pub fn check(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let msg = Bytes::copy_from_slice(body);
    match sel % 9 {
        0 => {
            if let Ok(req) = wire::decode_append(&msg) {
                let again = wire::decode_append(&wire::encode_append(&req).expect("re-encodes"))
                    .expect("round trip");
                assert_eq!(again.entries, req.entries);
                assert_eq!(
                    (again.vote, again.prev_log_id, again.leader_commit),
                    (req.vote, req.prev_log_id, req.leader_commit)
                );
            }
        }
        1 => {
            if let Ok(r) = wire::decode_append_resp(&msg) {
                assert_eq!(
                    wire::decode_append_resp(&wire::encode_append_resp(&r)).expect("round trip"),
                    r
                );
            }
        }
        2 => {
            if let Ok((req, pre)) = wire::decode_vote(&msg) {
                let (again, again_pre) =
                    wire::decode_vote(&wire::encode_vote(&req, pre)).expect("round trip");
                assert_eq!(
                    (again.vote, again.last_log_id, again_pre),
                    (req.vote, req.last_log_id, pre)
                );
            }
        }
        3 => {
            if let Ok(r) = wire::decode_vote_resp(&msg) {
                assert_eq!(
                    wire::decode_vote_resp(&wire::encode_vote_resp(&r)).expect("round trip"),
                    r
                );
            }
        }
        4 => {
            if let Ok(r) = wire::decode_stream_result(&msg) {
                assert_eq!(
                    wire::decode_stream_result(&wire::encode_stream_result(&r))
                        .expect("round trip"),
                    r
                );
            }
        }
        5 => {
            if let Ok(r) = Request::decode(&msg) {
                let enc = r.encode().expect("re-encodes");
                assert_eq!(Request::decode(&enc).expect("round trip"), r);
            }
        }
        6 => {
            if let Ok(r) = Reply::decode(&msg) {
                // Status replies drop fields the wire does not carry; compare the encoding.
                let enc = r.encode().expect("re-encodes");
                let again = Reply::decode(&enc).expect("round trip");
                assert_eq!(again.encode().expect("re-encodes"), enc);
            }
        }
        7 => {
            if let Ok(h) = Hello::decode(&msg) {
                assert_eq!(Hello::decode(&h.encode()).expect("round trip"), h);
            }
            let _ = decode_answer(&msg, 0);
        }
        _ => {
            if let Ok(m) = decode_membership(&msg) {
                let enc = encode_membership(&m).expect("re-encodes");
                assert_eq!(decode_membership(&enc), Ok(m));
            }
            // The repair messages of the fetch protocol (small, fixed-size), on the same bytes.
            if let Some(base) = fetch::decode_identify(&msg) {
                assert_eq!(
                    fetch::decode_identify(&fetch::encode_identify(base)),
                    Some(base)
                );
            }
            if let Ok(info) = fetch::decode_identity(&msg) {
                let again = fetch::decode_identity(&fetch::identity_reply(info.as_ref()));
                assert_eq!(again.expect("round trip"), info);
            }
        }
    }
}
