//! raft-net-tcp benchmarks: frame encode/decode throughput of an AppendEntries with 64 entries
//! of 256 bytes, loopback request round trip, and pipelined requests per second.
//!
//! Run: `cargo bench -p benches --bench net_tcp`. Besides criterion's estimates, the round
//! trip prints its p50 and p99 over individually timed requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raft_core::node::MessageHandler;
use raft_core::{ChunkStatus, Entry, LogId, Message, MessageBody, SnapshotChunk, SnapshotChunkAck};
use raft_net_tcp::codec::{decode_frame, encode_frame};
use raft_net_tcp::{
    ClientHandler, ClientRequest, ClientResponse, Frame, TcpClient, TcpConfig, TcpServer,
};

const ENTRIES: u64 = 64;
const ENTRY_BYTES: usize = 256;
const FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;
const CLUSTER: u64 = 1;
/// Payload of each client request in the network benchmarks.
const REQUEST_BYTES: usize = 64;
/// Requests per iteration of the pipelined benchmark, and how many are in flight at once.
const PIPELINED_REQUESTS: usize = 1024;
const PIPELINE_DEPTH: usize = 64;
/// Individually timed round trips for the percentiles.
const TIMED_ROUND_TRIPS: usize = 20_000;

fn append_entries() -> Frame {
    Frame::Raft(Message {
        from: 1,
        to: 2,
        term: 7,
        body: MessageBody::AppendEntries {
            prev_log_id: LogId::new(7, 1_000),
            entries: (0..ENTRIES)
                .map(|i| Entry::normal(7, 1_001 + i, vec![(i % 251) as u8; ENTRY_BYTES]))
                .collect(),
            leader_commit: 999,
            round: 42,
        },
    })
}

fn codec(c: &mut Criterion) {
    let frame = append_entries();
    let mut encoded = BytesMut::new();
    encode_frame(&frame, FRAME_BYTES_MAX, &mut encoded).unwrap();
    let frame_bytes = encoded.len() as u64;
    println!("net_tcp_codec: append_entries_64x256 frame_bytes={frame_bytes}");

    let mut group = c.benchmark_group("net_tcp_codec");
    group.throughput(Throughput::Bytes(frame_bytes));
    group.bench_function("encode_append_entries_64x256", |b| {
        let mut buffer = BytesMut::with_capacity(frame_bytes as usize);
        b.iter(|| {
            buffer.clear();
            encode_frame(&frame, FRAME_BYTES_MAX, &mut buffer).unwrap();
        })
    });
    group.bench_function("decode_append_entries_64x256", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&encoded[..]),
            |buffer| decode_frame(buffer, FRAME_BYTES_MAX).unwrap().unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

struct NoNode;

#[async_trait]
impl MessageHandler for NoNode {
    fn deliver(&self, _msg: Message) {}
    async fn deliver_snapshot_chunk(&self, chunk: SnapshotChunk) -> SnapshotChunkAck {
        SnapshotChunkAck {
            from: chunk.to,
            term: chunk.term,
            snapshot: chunk.meta.last_log_id,
            status: ChunkStatus::Refused("benchmark".into()),
            next_offset: 0,
        }
    }
}

struct Echo;

#[async_trait]
impl ClientHandler for Echo {
    async fn handle(&self, request: ClientRequest) -> ClientResponse {
        ClientResponse::Ok(request.payload)
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

fn network(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, client) = runtime.block_on(async {
        let server = TcpServer::bind(
            "127.0.0.1:0",
            TcpConfig::new(CLUSTER, 1),
            Arc::new(NoNode),
            Some(Arc::new(Echo)),
        )
        .await
        .unwrap();
        let client =
            TcpClient::new(server.local_addr().to_string(), TcpConfig::new(CLUSTER, 0)).unwrap();
        (server, Arc::new(client))
    });
    let payload = Bytes::from(vec![7u8; REQUEST_BYTES]);

    // Percentiles of individually timed sequential round trips.
    let mut samples = runtime.block_on(async {
        let mut samples = Vec::with_capacity(TIMED_ROUND_TRIPS);
        for _ in 0..TIMED_ROUND_TRIPS {
            let started = Instant::now();
            client.request(payload.clone()).await.unwrap();
            samples.push(started.elapsed());
        }
        samples
    });
    samples.sort();
    println!(
        "net_tcp_round_trip_percentiles: requests={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );

    let mut group = c.benchmark_group("net_tcp_loopback");
    group.throughput(Throughput::Elements(1));
    group.bench_function("request_round_trip_64B", |b| {
        b.to_async(&runtime)
            .iter(|| async { client.request(payload.clone()).await.unwrap() })
    });
    group.throughput(Throughput::Elements(PIPELINED_REQUESTS as u64));
    group.bench_function("pipelined_requests_64B_depth64", |b| {
        b.to_async(&runtime).iter(|| async {
            let per_task = PIPELINED_REQUESTS / PIPELINE_DEPTH;
            let tasks: Vec<_> = (0..PIPELINE_DEPTH)
                .map(|_| {
                    let client = client.clone();
                    let payload = payload.clone();
                    tokio::spawn(async move {
                        for _ in 0..per_task {
                            client.request(payload.clone()).await.unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        })
    });
    group.finish();
    runtime.block_on(server.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = codec, network
}
criterion_main!(benches);
