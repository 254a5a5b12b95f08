//! `INFO [section ...]`.

use bytes::Bytes;

use super::hello::REDIS_VERSION;
use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;
use crate::service::Service;

/// Every section, whatever is asked for: `# Server` for tools, `# Raft` with this node's
/// view of the cluster, and `# Keyspace`.
pub(crate) struct Info;

impl Command for Info {
    const NAME: &'static str = "info";
    const ARITY: i32 = -1;

    fn parse(_args: Args) -> Result<Self, Refusal> {
        Ok(Info)
    }
}

impl LocalCommand for Info {
    async fn execute(self, cx: &mut Context<'_>) -> Value {
        Value::Verbatim(Bytes::from(info(cx.service)))
    }
}

/// The INFO text.
fn info(service: &Service) -> String {
    let status = service.status();
    let members: Vec<String> = status
        .members
        .iter()
        .map(|m| {
            let kind = if m.voter { "voter" } else { "learner" };
            format!("{}@{}:{kind}", m.id, m.addr)
        })
        .collect();
    let leader = status
        .leader
        .map_or(String::from("none"), |l| l.to_string());
    format!(
        "# Server\r\nredis_version:{REDIS_VERSION}\r\nraft_cli_version:{}\r\n\r\n# Raft\r\n\
         raft_role:{}\r\nraft_node_id:{}\r\nraft_leader_id:{}\r\nraft_term:{}\r\n\
         raft_commit_index:{}\r\nraft_applied_index:{}\r\nraft_members:{}\r\n\r\n\
         # Keyspace\r\ndb0:keys={},expires={},avg_ttl=0\r\n",
        env!("CARGO_PKG_VERSION"),
        status.role,
        status.id,
        leader,
        status.term,
        status.commit_index,
        status.applied_index,
        members.join(","),
        status.keys,
        service.expiring_keys(),
    )
}
