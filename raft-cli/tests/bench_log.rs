//! `raft bench-log` runs the log-store benchmark in a directory of the user's disk with
//! tiny settings: every case reports plausible numbers in its JSON, the progress indicator
//! goes to stderr, the table has a ratio per workload, and nothing is left in the directory.

mod common;

use common::run_raft;

const TINY: &[&str] = &[
    "--seconds",
    "0.05",
    "--entry-bytes",
    "256,4096",
    "--batch",
    "1,16",
    "--read-entries",
    "3000",
    "--reopen-entries",
    "5000",
    "--segment-bytes",
    "1048576",
];

fn bench_log(dir: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["bench-log", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    run_raft(None, &args)
}

#[test]
fn bench_log_measures_every_case_prints_json_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = bench_log(dir.path(), &["--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let appends = report["appends"].as_array().expect("appends");
    let workloads: Vec<(u64, u64)> = appends
        .iter()
        .map(|a| {
            (
                a["entry_bytes"].as_u64().unwrap(),
                a["batch"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(workloads, vec![(256, 1), (256, 16), (4096, 1), (4096, 16)]);
    for a in appends {
        for field in ["raft_log_entries_per_sec", "floor_entries_per_sec", "ratio"] {
            let value = a[field].as_f64().unwrap();
            assert!(value.is_finite() && value > 0.0, "{field} in {a}");
        }
        assert!(a["rounds"].as_u64().unwrap() >= 2, "{a}");
    }
    let reads = &report["point_reads"];
    assert_eq!(reads["entries"].as_u64(), Some(3000), "{reads}");
    for field in [
        "raft_log_entry_per_sec",
        "raft_log_entry_ref_per_sec",
        "floor_per_sec",
    ] {
        assert!(reads[field].as_f64().unwrap() > 0.0, "{field} in {reads}");
    }
    let reopen = &report["reopen"];
    assert_eq!(reopen["entries"].as_u64(), Some(5000), "{reopen}");
    assert!(reopen["median_ms"].as_f64().unwrap() > 0.0, "{reopen}");
    assert_eq!(report["segment_bytes"].as_u64(), Some(1 << 20));
    // Progress on stderr, one line per case when it is not a terminal.
    for case in ["[1/6] append 256 B, batch 1", "[6/6] reopen, 5000 entries"] {
        assert!(err.contains(case), "{case} missing in {err}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bench_log_prints_a_table_with_ratios_and_refuses_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = bench_log(dir.path(), &["--entry-bytes", "256", "--batch", "4"]);
    assert_eq!(code, 0, "{out}{err}");
    for row in [
        "append 256 B, batch 4",
        "random point reads, 256 B (entry, copy)",
        "random point reads, 256 B (entry_ref, borrowed)",
        "reopen, 5000 x 256 B",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("{row}: {out}"));
        if !row.starts_with("reopen") {
            assert!(
                line.trim_end().ends_with('x') || line.contains("x "),
                "no ratio: {line}"
            );
        }
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());

    let missing = dir.path().join("missing");
    let (code, _, err) = bench_log(&missing, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a directory"), "{err}");
    let (code, _, err) = bench_log(dir.path(), &["--entry-bytes", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--entry-bytes 0"), "{err}");
}
