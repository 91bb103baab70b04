//! Runs the `sitelog` binary's `bench --quick` on a small selection of workloads and checks
//! that `--json` prints one parseable object with sitelog-to-raw ratios.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn bench_quick_json_has_ratios() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["bench", "--quick", "--only", "durable,buffered"])
        .args(["--seconds", "0.1", "--backend", "posix", "--json", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bench --quick took {:?}",
        started.elapsed()
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["quick"], true);
    assert_eq!(v["backends"], serde_json::json!(["posix"]));

    let raw = v["raw"].as_array().unwrap();
    for file in ["fresh", "pre-written"] {
        assert!(raw
            .iter()
            .any(|l| l["file"] == file && l["group_bytes"] == 1 << 20));
    }
    let durable = v["durable"].as_array().unwrap();
    assert!(!durable.is_empty());
    // Both writer models are measured: OS threads and async tasks.
    for kind in ["threads", "tasks"] {
        assert!(durable.iter().any(|c| c["writer_kind"] == kind), "{kind}");
    }
    for cell in durable {
        assert_eq!(cell["backend"], "posix");
        assert!(cell["records"].as_u64().unwrap() > 0, "{cell}");
        assert!(cell["ratio_fresh"].as_f64().unwrap() > 0.0, "{cell}");
        assert!(cell["ratio_prewritten"].as_f64().unwrap() > 0.0, "{cell}");
        assert!(cell["latency"]["p999_us"].as_f64().unwrap() > 0.0, "{cell}");
        // The naive group commit ran in the same cell: ratio, p999s, max and flushes.
        assert!(cell["ratio_baseline"].as_f64().unwrap() > 0.0, "{cell}");
        let base = &cell["baseline"];
        assert!(base["records"].as_u64().unwrap() > 0, "{cell}");
        for lat in [&cell["latency"], &base["latency"]] {
            assert!(lat["p999_us"].as_f64().unwrap() >= lat["p50_us"].as_f64().unwrap());
            assert!(lat["max_us"].as_f64().unwrap() >= lat["p999_us"].as_f64().unwrap());
        }
        assert_eq!(
            cell["baseline_p999_us"], base["latency"]["p999_us"],
            "{cell}"
        );
        assert_eq!(cell["p999_us"], cell["latency"]["p999_us"], "{cell}");
        assert!(cell["max_us"].as_f64().unwrap() > 0.0, "{cell}");
        assert!(cell["baseline_max_us"].as_f64().unwrap() > 0.0, "{cell}");
        // Every flush carries at least one record.
        let flushes = base["flushes"].as_u64().unwrap();
        assert!(
            flushes > 0 && flushes <= base["records"].as_u64().unwrap(),
            "{cell}"
        );
        assert!(base["records_per_flush"].as_f64().unwrap() >= 1.0, "{cell}");
        let flushes = cell["flushes"].as_u64().unwrap();
        assert!(
            flushes > 0 && flushes <= cell["records"].as_u64().unwrap(),
            "{cell}"
        );
        assert!(cell["records_per_flush"].as_f64().unwrap() >= 1.0, "{cell}");
    }
    // The stall runs: the first 200 appends after open, and appends across segment rolls,
    // of sitelog and of the naive group commit.
    let stalls = v["stalls"].as_array().unwrap();
    for backend in ["posix", "naive"] {
        for kind in ["open", "roll"] {
            let r = stalls
                .iter()
                .find(|r| r["backend"] == backend && r["kind"] == kind)
                .unwrap_or_else(|| panic!("no {kind} stall run of {backend}: {v}"));
            if kind == "open" {
                assert_eq!(r["records"], 200, "{r}");
            }
            assert!(r["records"].as_u64().unwrap() > 0, "{r}");
            assert!(r["max_us"].as_f64().unwrap() >= r["latency"]["p50_us"].as_f64().unwrap());
            assert!(r["segments"].as_u64().unwrap() >= 1, "{r}");
            assert!(r["records_per_flush"].as_f64().unwrap() >= 1.0, "{r}");
        }
    }
    let buffered = v["buffered"].as_array().unwrap();
    assert_eq!(buffered.len(), 1);
    assert!(buffered[0]["ratio"].as_f64().unwrap() > 0.0);
    assert!(v["read"].as_array().unwrap().is_empty());
    assert!(v["reopen"].as_array().unwrap().is_empty());
    let targets = v["targets"].as_array().unwrap();
    assert!(targets.iter().any(|t| t["pass"].is_boolean()));
    assert!(targets
        .iter()
        .any(|t| t["name"].as_str().unwrap().contains("naive group commit")));

    // The bench directory it created inside --dir is gone.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// With a 48 MiB disk budget the bench shrinks its segments to 4 MiB, says so, stops its
/// fresh-file raw loops at the budget, and still runs every selected workload.
#[test]
fn bench_stays_within_a_small_disk_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["bench", "--quick", "--only", "durable,buffered"])
        .args(["--seconds", "0.1", "--backend", "posix", "--json"])
        .args(["--max-disk-mib", "48", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(v["disk_budget_bytes"], 48 << 20, "{v}");
    assert_eq!(v["segment_bytes"], 4 << 20, "{v}");
    let notes = v["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("4 MiB segments")),
        "{v}"
    );
    for l in v["raw"].as_array().unwrap() {
        if l["file"] != "fresh" {
            continue; // The pre-written loops overwrite one file, wrapping around.
        }
        // A fresh loop never writes past the budget: fsyncs × group ≤ 48 MiB.
        let written = l["fsyncs"].as_u64().unwrap() * l["group_bytes"].as_u64().unwrap();
        assert!(written <= 48 << 20, "{l}");
    }
    for cell in v["durable"].as_array().unwrap() {
        assert!(cell["records"].as_u64().unwrap() > 0, "{cell}");
        // Payload stays within the budget less three segments.
        let payload = cell["records"].as_u64().unwrap() * cell["record_bytes"].as_u64().unwrap();
        assert!(payload <= 36 << 20, "{cell}");
    }
    assert!(
        v["buffered"][0]["bytes"].as_u64().unwrap() <= 36 << 20,
        "{v}"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// A budget too small for the smallest segments is refused up front, with the reason.
#[test]
fn bench_refuses_a_disk_budget_it_cannot_keep() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["bench", "--quick", "--max-disk-mib", "16", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs at least 32 MiB"), "{stderr}");
    assert!(stderr.contains("--dir"), "{stderr}");
}

#[test]
fn bench_rejects_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["bench", "--seconds", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--seconds"), "{stderr}");
}

#[test]
fn bench_replicated_quick_json_reports_ratio_and_failover() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args([
            "bench",
            "--replicated",
            "--quick",
            "--seconds",
            "0.5",
            "--writers",
            "8",
        ])
        .args(["--kills", "2", "--json", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench --replicated failed: {stderr}");
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert!(v["replicated"]["records"].as_u64().unwrap() > 0, "{v}");
    assert!(v["single_node"]["records"].as_u64().unwrap() > 0, "{v}");
    assert!(v["throughput_ratio"].as_f64().unwrap() > 0.0, "{v}");
    let f = &v["failover_ms"];
    assert_eq!(f["kills"], 2, "{v}");
    // Both kills hit a confirmed leader and the cluster recovered well inside the give-up time.
    let all = f["all"].as_array().unwrap();
    assert_eq!(all.len(), 2, "{v}");
    assert!(
        all.iter()
            .all(|x| (0.0..10_000.0).contains(&x.as_f64().unwrap())),
        "{v}"
    );
}

#[test]
fn bench_read_measures_cold_reads_by_record_size() {
    // Cold reads drop the page cache, which needs root; without it the bench says why.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["bench", "--quick", "--only", "read", "--reopen-gib", "0.01"])
        .args(["--backend", "posix", "--json", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let cold = v["cold_reads"].as_array().unwrap();
    if cold.is_empty() {
        println!("SKIPPED: cold reads not permitted here (drop_caches needs root)");
        return;
    }
    let sizes: Vec<u64> = cold
        .iter()
        .map(|c| c["record_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![100, 1000, 10_000]);
    for c in cold {
        let records = c["records"].as_u64().unwrap();
        let size = c["record_bytes"].as_u64().unwrap();
        assert!(records * size >= 10 << 20, "{c}");
        // The files hold every payload, plus headers.
        assert!(c["file_bytes"].as_u64().unwrap() > records * size, "{c}");
        assert_eq!(c["rounds"].as_array().unwrap().len(), 3, "{c}");
        assert!(c["ratio"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["mb_per_s"].as_f64().unwrap() > 0.0, "{c}");
    }
}

#[test]
fn bench_replicated_with_producers_appends_through_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["bench", "--replicated", "--producers", "--quick"])
        .args(["--seconds", "0.5", "--writers", "8", "--kills", "1"])
        .args(["--insecure", "--json", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench --replicated --producers failed: {stderr}"
    );
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(v["producers"], true, "{v}");
    assert!(v["replicated"]["records"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["failover_ms"]["kills"], 1, "{v}");
}
