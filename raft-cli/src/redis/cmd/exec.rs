//! `EXEC`.

use super::{reply_of, service_error, unexpected, write, Args, Command, Context, Refusal};
use crate::kv::{Answer, Batch, KvCommand, KvResponse, Op, ReadOp};
use crate::redis::session::Queued;
use crate::resp::Value;

/// Runs the queued transaction: its data commands as one log entry, applied atomically on
/// every replica, with the watched keys' versions (nothing runs, and the answer is a nil
/// array, if one changed). A transaction that only reads needs no entry: its reads and the
/// check of the watched keys run at one moment on this node after a read barrier. Queued
/// connection commands (PING, ECHO, ...) run after the entry is applied, their answers in
/// their places. The watched keys are forgotten either way.
pub(crate) struct Exec;

impl Command for Exec {
    const NAME: &'static str = "exec";
    const ARITY: i32 = 1;

    fn parse(_args: Args) -> Result<Self, Refusal> {
        Ok(Exec)
    }
}

impl Exec {
    /// Runs the transaction.
    pub async fn run(self, cx: &mut Context<'_>) -> Value {
        let Some(transaction) = cx.session.transaction.take() else {
            return Value::error("ERR", "EXEC without MULTI");
        };
        let watched = std::mem::take(&mut cx.session.watched);
        if transaction.failed {
            return Value::error(
                "EXECABORT",
                "Transaction discarded because of previous errors.",
            );
        }
        let ops: Vec<Op> = transaction
            .queued
            .iter()
            .filter_map(|queued| match queued {
                Queued::Op(op) => Some(op.clone()),
                _ => None,
            })
            .collect();
        let answer = if ops.iter().all(|op| matches!(op, Op::Read(_))) {
            let reads: Vec<ReadOp> = ops
                .into_iter()
                .filter_map(|op| match op {
                    Op::Read(read) => Some(read),
                    Op::Write(_) => None,
                })
                .collect();
            if reads.is_empty() && watched.is_empty() {
                Ok(Answer::Array(Vec::new()))
            } else {
                cx.service
                    .read_transaction(&reads, &watched)
                    .await
                    .map_err(service_error)
            }
        } else {
            let batch = Batch {
                ops,
                watched,
                transaction: true,
                reply_bytes_max: cx.service.reply_bytes_max() as u64,
            };
            match write(cx.service, KvCommand::Redis(batch)).await {
                Ok(KvResponse::Answer(answer)) => Ok(answer),
                Ok(other) => Err(unexpected(other)),
                Err(e) => Err(e),
            }
        };
        match answer {
            Ok(Answer::Array(answers)) => merge(cx, transaction.queued, answers).await,
            Ok(other) => reply_of(other),
            Err(e) => e,
        }
    }
}

/// EXEC's reply: the data commands' answers and the connection commands' replies, in the
/// order they were queued.
async fn merge(cx: &mut Context<'_>, queued: Vec<Queued>, answers: Vec<Answer>) -> Value {
    let mut answers = answers.into_iter();
    let mut replies = Vec::with_capacity(queued.len());
    for queued in queued {
        let reply = match queued {
            Queued::Op(_) => answers.next().map_or(Value::Nil, reply_of),
            Queued::Local(command) => command.execute(cx).await,
            Queued::Error(error) => error,
        };
        replies.push(reply);
    }
    Value::Array(replies)
}
