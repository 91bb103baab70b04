use super::*;
use crate::limits::{append_message_bytes, max_record_bytes_for_frame};

fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig::new(1, "a", dir, "127.0.0.1:0", 7)
}

#[test]
fn default_config_is_valid_and_its_batch_fits_the_frame() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    cfg.validate().unwrap();
    assert!(append_message_bytes(cfg.log.max_record_bytes) <= cfg.net.max_frame_bytes);
    // The figure the README gives for the default 72 MiB frame limit.
    assert_eq!(
        max_record_bytes_for_frame(cfg.net.max_frame_bytes),
        1_179_576
    );
}

#[test]
fn the_largest_fitting_record_limit_is_accepted_and_one_more_byte_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let max = max_record_bytes_for_frame(cfg.net.max_frame_bytes);
    cfg.log.max_record_bytes = max as u32;
    cfg.validate().unwrap();
    assert!(append_message_bytes(cfg.log.max_record_bytes) <= cfg.net.max_frame_bytes);
    // One aligned step more no longer fits.
    cfg.log.max_record_bytes = max as u32 + 8;
    assert!(append_message_bytes(cfg.log.max_record_bytes) > cfg.net.max_frame_bytes);
    let err = cfg.validate().unwrap_err();
    assert!(
        matches!(err, Error::TooLong { len, max: m, .. } if len == max as usize + 8 && m == max as usize),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_node_with_records_too_large_for_its_frames_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.log.max_record_bytes = 8 << 20; // 64 × 8 MiB is far over the 72 MiB frame limit
    let err = match Node::start(cfg).await {
        Ok(_) => panic!("a node with 8 MiB records started on 72 MiB frames"),
        Err(e) => e,
    };
    assert!(
        matches!(err, Error::TooLong { len, .. } if len == 8 << 20),
        "{err:?}"
    );
    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(entries, 0, "nothing was written before the refusal");
}
