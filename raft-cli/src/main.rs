//! The `raft` binary (work in progress, see the raft-cli issue).
fn main() {
    eprintln!("raft: the node binary is not built yet; see README.md");
    std::process::exit(2);
}
