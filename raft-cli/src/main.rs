//! The `raft` binary: parses arguments, sets up logging, and calls the raft-cli library.

use std::ffi::{c_int, c_long};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raft_cli::admin::{self, ClusterArgs, MembersCommand};
use raft_cli::config::{NodeArgs, NodeSettings};
use raft_core::NodeId;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: a node allocates small buffers on one thread and
/// frees them on another (messages, entries, responses), which made glibc's malloc, free and
/// heap growth (`sysmalloc`, `mprotect`) about a fifth of a leader's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (mimalloc.h; the same in its v2 and
/// v3, which the `mimalloc` crate builds).
const MI_OPTION_PURGE_DELAY: c_int = 15;

extern "C" {
    /// Sets a mimalloc option (mimalloc.h); options are read when used, so setting one at
    /// the start of `main` takes effect for the whole run.
    fn mi_option_set(option: c_int, value: c_long);
}

/// Keeps freed memory in the process instead of returning it to the kernel 10 ms later
/// (mimalloc's default). A node frees and reallocates tens of megabytes a second (log
/// entries dropped after a snapshot, values replaced in the table); returning them made
/// every reuse a page fault again: about 2,000 faults a second per node under
/// `raft bench --clients 64`, with several percent of a leader's CPU spent in them. The
/// price is that the resident size stays at its high-water mark.
fn keep_freed_memory() {
    // SAFETY: `mi_option_set` is mimalloc's C API, linked in by the `mimalloc` crate; it
    // takes an option id and a value, has no other preconditions, and -1 is the documented
    // value of `mi_option_purge_delay` for "never purge".
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// A replicated key-value store on Raft, with a Redis-protocol front end.
#[derive(Parser, Debug)]
#[command(name = "raft", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs one node of a replicated key-value store.
    Node(Box<NodeArgs>),
    /// A node's settings, resolved before the runtime is built (not a command-line word).
    #[command(skip)]
    Resolved(Box<NodeSettings>),
    /// Starts a local 3-node cluster, kills its leader, adds and removes a node, and reports.
    Demo,
    /// A closed-loop load generator against a running cluster.
    Bench(raft_cli::bench::BenchArgs),
    /// Measures raft-log on this machine's disk (in --dir) against a plain pwrite +
    /// fdatasync file: appends, point reads, reopen.
    BenchLog(raft_cli::bench_log::BenchLogArgs),
    /// Sets KEY to VALUE.
    Put {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Prints the value of KEY (linearizable read); exits with 1 if it is absent.
    Get {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The key.
        key: String,
    },
    /// Deletes KEY.
    Delete {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The key.
        key: String,
    },
    /// Sets KEY to NEW if it holds --expected (or, without it, if it is absent); exits with 1
    /// if it did not write.
    Cas {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The key.
        key: String,
        /// The new value.
        new: String,
        /// The value KEY must hold.
        #[arg(long)]
        expected: Option<String>,
    },
    /// A table of the members: id, address, role, term, commit, applied, match, lag.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Adds, promotes, removes or lists members.
    Members {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Hands leadership to node ID.
    TransferLeader {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The new leader.
        id: NodeId,
    },
    /// Builds a snapshot now (on the leader, or on --node).
    Snapshot {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The member to snapshot.
        #[arg(long, value_name = "HOST:PORT")]
        node: Option<String>,
    },
    /// Writes a consistent snapshot of the leader (or of --node) to FILE, with a checksum;
    /// prints its index, term and size.
    Backup(raft_cli::backup::save::BackupArgs),
    /// Prepares a data directory from a backup FILE, from which node --id of a new cluster
    /// of --peers starts with the backup's state.
    Restore(raft_cli::backup::restore::RestoreArgs),
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The runtime of `raft node`: `worker_threads` 1 is a single-threaded runtime, 0 one
/// worker per CPU core, any other number that many workers.
fn node_runtime(worker_threads: usize) -> tokio::runtime::Builder {
    match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let mut command = cli.command;
    // Clients (bench, demo, admin commands) run on one thread: a load generator's tasks
    // spend their time waiting on sockets, and a second thread only adds wake-ups.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    if let Command::Node(args) = command {
        let settings = match (*args).resolve() {
            Ok(settings) => settings,
            Err(e) => {
                eprintln!("raft: {e:#}");
                return ExitCode::from(2);
            }
        };
        builder = node_runtime(settings.worker_threads);
        command = Command::Resolved(Box::new(settings));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("raft: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("raft: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs a command; `Ok(false)` means "ran, but the answer is negative" (exit code 1).
async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Node(args) => {
            let settings = (*args).resolve()?;
            init_logging(&settings.log_level);
            raft_cli::node::run(settings).await?;
        }
        Command::Resolved(settings) => {
            init_logging(&settings.log_level);
            let settings = *settings;
            raft_cli::node::run(settings).await?;
        }
        command => {
            init_logging("warn");
            return run_client(command).await;
        }
    }
    Ok(true)
}

async fn run_client(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Node(_) | Command::Resolved(_) => unreachable!("handled by run"),
        Command::Demo => raft_cli::demo::run().await?,
        Command::Bench(args) => raft_cli::bench::run(args).await?,
        Command::BenchLog(args) => raft_cli::bench_log::run(args).await?,
        Command::Put {
            cluster,
            key,
            value,
        } => admin::put(&cluster, &key, &value).await?,
        Command::Get { cluster, key } => return admin::get(&cluster, &key).await,
        Command::Delete { cluster, key } => admin::delete(&cluster, &key).await?,
        Command::Cas {
            cluster,
            key,
            new,
            expected,
        } => return admin::cas(&cluster, &key, &new, expected.as_deref()).await,
        Command::Status { cluster, json } => admin::status(&cluster, json).await?,
        Command::Members { cluster, command } => admin::members(&cluster, command).await?,
        Command::TransferLeader { cluster, id } => admin::transfer_leader(&cluster, id).await?,
        Command::Snapshot { cluster, node } => admin::snapshot(&cluster, node.as_deref()).await?,
        Command::Backup(args) => raft_cli::backup::save::run(&args).await?,
        Command::Restore(args) => raft_cli::backup::restore::run(&args).await?,
    }
    Ok(true)
}
