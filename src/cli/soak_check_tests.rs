use super::*;

fn site(node: u64, disk: u64, rss: u64, fds: u64, threads: u64) -> SiteFigures {
    SiteFigures {
        node,
        disk_bytes: disk,
        rss_bytes: rss,
        rss_anon_bytes: rss / 2,
        fds,
        sockets: 0,
        threads,
        segments: 0,
    }
}

fn bucket(lat: &[f32], sites: &[(usize, SiteFigures)]) -> Bucket {
    Bucket {
        lat_ms: lat.to_vec(),
        sites: sites.iter().copied().collect(),
        ..Bucket::default()
    }
}

#[test]
fn a_bucket_remembers_its_slowest_message_and_when_it_was_sent() {
    let mut b = Bucket::default();
    assert_eq!(b.slowest, None);
    for (ms, at_s) in [(3.0, 20.1), (146.0, 21.3), (9.0, 22.0), (146.0, 23.0)] {
        b.add(ms, at_s);
    }
    assert_eq!(b.lat_ms.len(), 4);
    assert_eq!(b.slowest, Some((146.0, 21.3)), "the first of equals");
}

#[test]
fn p99_is_nearest_rank() {
    let lat: Vec<f32> = (1..=100).map(|x| x as f32).collect();
    assert_eq!(bucket(&lat, &[]).p99_ms(), 99.0);
    assert_eq!(bucket(&[], &[]).p99_ms(), 0.0);
}

#[test]
fn disk_bound_starts_after_the_first_fill_and_needs_retention() {
    let mb = 1 << 20;
    // Slot 0 fills (5 MiB, then 10 MiB = its retention), then holds 12 MiB.
    let b = [
        bucket(&[], &[(0, site(1, 5 * mb, 0, 0, 0))]),
        bucket(&[], &[(0, site(1, 10 * mb, 0, 0, 0))]),
        bucket(&[], &[(0, site(1, 12 * mb, 0, 0, 0))]),
    ];
    assert!(!check_disk(&b, None, 11 * mb).checked);
    assert!(check_disk(&b, Some(10 * mb), 12 * mb).ok);
    let broken = check_disk(&b, Some(10 * mb), 11 * mb);
    assert!(broken.checked && !broken.ok, "{broken:?}");
    assert!(
        !check_disk(&b, Some(64 * mb), 11 * mb).checked,
        "never filled"
    );
}

#[test]
fn growth_compares_last_third_with_middle_third_and_skips_fresh_processes() {
    let mb = 1 << 20;
    let s = |rss| site(1, 0, rss, 20, 10);
    let mut b = vec![
        bucket(&[], &[(0, s(100 * mb))]),
        bucket(&[], &[(0, s(40 * mb))]),
        bucket(&[], &[(0, s(40 * mb))]),
    ];
    // 100 -> 40 -> 40: the first third does not count; no growth.
    assert!(check_growth(&b, true, 0).ok);
    b[2].sites.insert(0, s(70 * mb));
    let g = check_growth(&b, true, 0);
    assert!(g.checked && !g.ok, "40 -> 70 MiB is growth: {g:?}");
    // Without retention only the anonymous part counts (20 -> 35 MiB: still growth)...
    assert!(!check_growth(&b, false, 0).ok);
    // ...and mapped log pages growing with the log do not.
    b[2].sites.get_mut(&0).unwrap().rss_anon_bytes = 20 * mb;
    assert!(check_growth(&b, false, 0).ok);
    assert!(!check_growth(&b, true, 0).ok);
    // The same bucket is where the slot's process restarted: a transient, left out, and
    // nothing is left to compare.
    b[2].fresh.insert(0);
    assert!(!check_growth(&b, true, 0).checked);
    // So is a minute a fire or a restart overlapped (on every site).
    b[2].fresh.clear();
    b[2].disrupted = true;
    assert!(!check_growth(&b, true, 0).checked);
    b[2].disrupted = false;
    // Within 10 % plus the slack: fine.
    b[2].fresh.clear();
    b[2].sites.insert(0, s(40 * mb + 4 * mb + RSS_SLACK_BYTES));
    assert!(check_growth(&b, true, 0).ok);
    // A thread more is within the absolute slack.
    b[2].sites.insert(0, site(1, 0, 40 * mb, 20, 11));
    assert!(check_growth(&b, true, 0).ok);
    b[2].sites
        .insert(0, site(1, 0, 40 * mb, 20 + 2 + FD_SLACK + 1, 10));
    assert!(!check_growth(&b, true, 0).ok, "descriptors leaking");
    // ...unless they are the log's segments (the log grew: the disk bound's business).
    b[2].sites.get_mut(&0).unwrap().segments = 3 + FD_SLACK;
    assert!(check_growth(&b, true, 0).ok);
    // ...or sockets: the 16 clients' connections moved here with the leadership.
    b[2].sites.get_mut(&0).unwrap().segments = 0;
    b[2].sites.get_mut(&0).unwrap().sockets = 3 + FD_SLACK;
    assert!(check_growth(&b, true, 16).ok);
    b[2].sites.get_mut(&0).unwrap().sockets = 20 + 3 + 16 + FD_SLACK;
    assert!(!check_growth(&b, true, 16).ok, "sockets leaking");
}

#[test]
fn p99_bound_skips_disrupted_minutes_and_minute_zero() {
    let mut b = vec![
        bucket(&[500.0], &[]),
        bucket(&[10.0], &[]),
        bucket(&[19.0], &[]),
        bucket(&[300.0], &[]),
    ];
    b[3].disrupted = true;
    assert_eq!(first_steady(&b), Some(1));
    assert!(check_p99(&b, P99_FACTOR).ok);
    b[2].lat_ms = vec![21.0];
    assert!(!check_p99(&b, P99_FACTOR).ok);
    assert!(check_p99(&b, 3.0).ok, "a looser factor");
    b[1].disrupted = true;
    assert_eq!(
        first_steady(&b),
        Some(2),
        "minute 1 disrupted: minute 2 is the base"
    );
    assert!(check_p99(&b, P99_FACTOR).ok);
}
