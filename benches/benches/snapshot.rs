//! raft-snapshot benchmark: transfer of a 256 MiB snapshot over loopback TCP (raft-net-tcp's
//! transport and server) from one `FileSnapshotStore` to another, in 1 MiB chunks, with the
//! windowed `SnapshotSender` at window 1 (stop-and-wait, what raft-core's own sender does) and
//! window 4 (the default). Every transfer goes into a fresh receiving directory and includes
//! the receiver's CRC checks, periodic syncs, final sync and atomic publish; the receiving
//! directory is on the temporary directory's disk (`disk`) and, where `/dev/shm` exists, on
//! tmpfs (`tmpfs`: syncs cost nothing, which isolates the transfer path from the disk).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-snap cargo bench -p benches --bench snapshot`.
//! Besides criterion's throughput it prints the peak heap during the transfers (a counting
//! allocator, sender and receiver together) and the process's peak RSS (VmHWM).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raft_core::node::{MessageHandler, SnapshotStore, Transport};
use raft_core::{LogId, Membership, Message, SnapshotChunk, SnapshotChunkAck, SnapshotMeta};
use raft_net_tcp::{TcpConfig, TcpServer, TcpTransport};
use raft_snapshot::{FileSnapshotStore, SenderConfig, SnapshotSender, Target};
use tokio::io::AsyncWriteExt;

/// Counts live heap bytes and remembers the peak.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SNAPSHOT_BYTES: u64 = 256 << 20;
const CHUNK_BYTES: u32 = 1 << 20;
const CLUSTER: u64 = 5;

/// The receiving node: chunks go straight into the current store.
struct Receiver(Mutex<FileSnapshotStore>);

#[async_trait]
impl MessageHandler for Receiver {
    fn deliver(&self, _msg: Message) {}

    async fn deliver_snapshot_chunk(&self, chunk: SnapshotChunk) -> SnapshotChunkAck {
        let store = self.0.lock().unwrap().clone();
        let (status, next_offset) = store.receive_chunk(&chunk).await.expect("storage");
        SnapshotChunkAck {
            from: chunk.to,
            term: chunk.term,
            snapshot: chunk.meta.last_log_id,
            status,
            next_offset,
        }
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn build(store: &FileSnapshotStore) -> SnapshotMeta {
    let mut writer = store
        .begin(SnapshotMeta {
            last_log_id: LogId::new(1, 1_000),
            membership: Membership::new_voters([1, 2]),
            membership_log_id: LogId::new(1, 1),
            size_bytes: 0,
            crc32: 0,
            created_unix_ms: 0,
        })
        .await
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < SNAPSHOT_BYTES {
        for (i, word) in buf.chunks_mut(8).enumerate() {
            let value = (offset + 8 * i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            word.copy_from_slice(&value.to_le_bytes());
        }
        writer.write_all(&buf).await.unwrap();
        offset += buf.len() as u64;
    }
    writer.finish().await.unwrap()
}

fn transfer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = FileSnapshotStore::open(leader_dir.path()).unwrap();
    let meta = runtime.block_on(build(&leader));
    let first_dir = tempfile::tempdir().unwrap();
    let receiver = Arc::new(Receiver(Mutex::new(
        FileSnapshotStore::open(first_dir.path()).unwrap(),
    )));
    let (server, transport) = runtime.block_on(async {
        let server = TcpServer::bind(
            "127.0.0.1:0",
            TcpConfig::new(CLUSTER, 2),
            receiver.clone(),
            None,
        )
        .await
        .unwrap();
        let transport = Arc::new(TcpTransport::new(TcpConfig::new(CLUSTER, 1)).unwrap());
        transport.set_peers(&BTreeMap::from([(2, server.local_addr().to_string())]));
        (server, transport)
    });
    let target = Target {
        from: 1,
        to: 2,
        term: 1,
    };

    let mut group = c.benchmark_group("snapshot_transfer");
    group.throughput(Throughput::Bytes(SNAPSHOT_BYTES));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(15));
    // The receiver on the real disk (its syncs included), and on tmpfs where syncs are free,
    // which isolates the transfer path (read, CRC, frames, loopback, CRC, write).
    let shm = std::path::Path::new("/dev/shm");
    let mut placements = vec![("disk", std::env::temp_dir())];
    if shm.is_dir() {
        placements.push(("tmpfs", shm.to_path_buf()));
    }
    for (placement, parent) in placements {
        for window_chunks in [1u32, 4] {
            let sender = SnapshotSender::new(
                Arc::new(leader.clone()),
                transport.clone(),
                SenderConfig {
                    chunk_bytes: CHUNK_BYTES,
                    window_chunks,
                    ..SenderConfig::default()
                },
            )
            .unwrap();
            PEAK_BYTES.store(LIVE_BYTES.load(Ordering::Relaxed), Ordering::Relaxed);
            let baseline = LIVE_BYTES.load(Ordering::Relaxed);
            let name = format!("256MiB_chunk1MiB_window{window_chunks}_{placement}");
            group.bench_function(&name, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let dir = tempfile::tempdir_in(&parent).unwrap();
                        *receiver.0.lock().unwrap() = FileSnapshotStore::open(dir.path()).unwrap();
                        let started = Instant::now();
                        let report = runtime.block_on(sender.send(target, meta.clone())).unwrap();
                        total += started.elapsed();
                        assert_eq!(report.bytes_sent, SNAPSHOT_BYTES);
                    }
                    total
                })
            });
            let peak = PEAK_BYTES.load(Ordering::Relaxed);
            println!(
                "snapshot_transfer {name}: peak heap during transfers {:.1} MiB \
             ({:.1} MiB above the {:.1} MiB baseline), process peak RSS {:.1} MiB",
                peak as f64 / (1 << 20) as f64,
                (peak - baseline.min(peak)) as f64 / (1 << 20) as f64,
                baseline as f64 / (1 << 20) as f64,
                peak_rss_mib()
            );
        }
    }
    group.finish();
    runtime.block_on(server.shutdown());
    transport.shutdown();
}

criterion_group!(benches, transfer);
criterion_main!(benches);
