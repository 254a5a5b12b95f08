//! # raft-cli
//!
//! The library behind the `raft` binary: a replicated key-value node composed of raft-core
//! (consensus), raft-log (the durable log), raft-net-tcp (peers and native clients) and a
//! snapshot store, with a Redis-protocol front end, a native cluster client that finds the
//! leader itself, a one-command demo and a closed-loop load generator.
//!
//! The binary only parses arguments, sets up logging and calls into these modules. Algorithm
//! logic lives in the libraries; what is here is wiring and protocol translation.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use bytes::Bytes;
//! use raft_cli::client::ClusterClient;
//!
//! let client = ClusterClient::new(vec!["127.0.0.1:7001".into()], 1);
//! client.put(Bytes::from("greeting"), Bytes::from("hello")).await?;
//! assert_eq!(client.get(Bytes::from("greeting")).await?, Some(Bytes::from("hello")));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod admin;
pub mod backup;
pub mod bench;
pub mod bench_log;
pub mod client;
pub mod config;
pub mod demo;
pub mod expiry;
pub mod join;
pub mod kv;
pub mod local;
pub mod metrics;
pub mod node;
pub mod proto;
pub mod redis;
pub mod resp;
pub mod service;
pub mod snapshots;
pub mod tls;
pub mod workload;
