//! `raft demo`, the README's first command, runs to the end, loses nothing and cleans up.

use std::process::Command;

#[test]
fn raft_demo_runs_end_to_end() {
    let output = Command::new(env!("CARGO_BIN_EXE_raft"))
        .arg("demo")
        .output()
        .expect("raft demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for step in [
        "1. ",
        "3. SIGKILL",
        "4. all",
        "7. node 4 joined",
        "8. node 4 removed",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    assert!(stdout.contains(" 0 lost"), "{stdout}");
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("cleaning up: stopping the nodes, removing "))
        .and_then(|l| l.split(' ').next())
        .expect("the demo names its directory");
    assert!(!std::path::Path::new(dir).exists(), "{dir} was not removed");
}
