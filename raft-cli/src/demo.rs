//! `raft demo`.

/// Runs the demo.
pub async fn run() -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
