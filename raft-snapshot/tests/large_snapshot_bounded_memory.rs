//! A snapshot of 1 GiB is built, sent over loopback TCP (raft-net-tcp's transport and server)
//! in 1 MiB chunks with 4 in flight, received, verified and read back, while the heap of the
//! whole process (sender and receiver together) never exceeds 64 MiB.
//!
//! Ignored by default (it writes 2 GiB to the temporary directory). Run it with:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-snap cargo test --release -p raft-snapshot \
//!     --test large_snapshot_bounded_memory -- --ignored --nocapture
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use raft_core::node::{MessageHandler, SnapshotStore, Transport};
use raft_core::{LogId, Membership, Message, SnapshotChunk, SnapshotChunkAck, SnapshotMeta};
use raft_net_tcp::{TcpConfig, TcpServer, TcpTransport};
use raft_snapshot::{FileSnapshotStore, SenderConfig, SnapshotSender, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

const SNAPSHOT_BYTES: u64 = 1 << 30;
const MEMORY_BYTES_MAX: usize = 64 << 20;
const CLUSTER: u64 = 9;

/// The receiving node: chunks go straight into its store.
struct Receiver(FileSnapshotStore);

#[async_trait]
impl MessageHandler for Receiver {
    fn deliver(&self, _msg: Message) {}

    async fn deliver_snapshot_chunk(&self, chunk: SnapshotChunk) -> SnapshotChunkAck {
        let (status, next_offset) = self.0.receive_chunk(&chunk).await.expect("storage");
        SnapshotChunkAck {
            from: chunk.to,
            term: chunk.term,
            snapshot: chunk.meta.last_log_id,
            status,
            next_offset,
        }
    }
}

/// Peak resident set size of this process, from /proc/self/status (VmHWM), in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Deterministic content: each 8-byte word holds its offset mixed with a constant.
fn fill(buf: &mut [u8], offset: u64) {
    for (i, word) in buf.chunks_mut(8).enumerate() {
        let value = (offset + 8 * i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        word.copy_from_slice(&value.to_le_bytes()[..word.len()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes 2 GiB; run in release, see the module docs"]
async fn a_1_gib_snapshot_transfers_with_peak_memory_under_64_mib() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();

    let started = Instant::now();
    let mut writer = leader
        .begin(SnapshotMeta {
            last_log_id: LogId::new(1, 1_000_000),
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
        fill(&mut buf, offset);
        writer.write_all(&buf).await.unwrap();
        offset += buf.len() as u64;
    }
    let meta = writer.finish().await.unwrap();
    assert_eq!(meta.size_bytes, SNAPSHOT_BYTES);
    println!("built 1 GiB in {:?}", started.elapsed());

    let server = TcpServer::bind(
        "127.0.0.1:0",
        TcpConfig::new(CLUSTER, 2),
        Arc::new(Receiver(follower.clone())),
        None,
    )
    .await
    .unwrap();
    let transport = Arc::new(TcpTransport::new(TcpConfig::new(CLUSTER, 1)).unwrap());
    transport.set_peers(&BTreeMap::from([(2, server.local_addr().to_string())]));
    let sender = SnapshotSender::new(
        Arc::new(leader.clone()),
        transport.clone(),
        SenderConfig::default(),
    )
    .unwrap();
    let started = Instant::now();
    let report = sender
        .send(
            Target {
                from: 1,
                to: 2,
                term: 1,
            },
            meta.clone(),
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    println!(
        "sent 1 GiB in {elapsed:?} ({:.0} MB/s), {} chunks",
        SNAPSHOT_BYTES as f64 / 1e6 / elapsed.as_secs_f64(),
        report.chunks_sent
    );
    assert_eq!(report.bytes_sent, SNAPSHOT_BYTES, "nothing sent twice");
    assert_eq!(follower.latest().await.unwrap(), Some(meta.clone()));

    // Restore as a state machine would: a stream, checked against size and CRC at its end.
    let mut reader = follower.open(&meta).await.unwrap();
    let mut expected = vec![0u8; (1 << 20) + 8];
    let mut offset = 0u64;
    loop {
        let n = reader.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        let aligned = offset - offset % 8;
        fill(&mut expected[..n + 8], aligned);
        let skip = (offset - aligned) as usize;
        assert_eq!(&buf[..n], &expected[skip..skip + n], "bytes at {offset}");
        offset += n as u64;
    }
    assert_eq!(offset, SNAPSHOT_BYTES);

    server.shutdown().await;
    transport.shutdown();
    let peak_heap = PEAK_BYTES.load(Ordering::Relaxed);
    let peak_rss = peak_rss_bytes();
    println!(
        "peak heap {:.1} MiB, peak RSS {:.1} MiB (sender and receiver together)",
        peak_heap as f64 / (1 << 20) as f64,
        peak_rss as f64 / (1 << 20) as f64
    );
    assert!(
        peak_heap < MEMORY_BYTES_MAX,
        "peak heap {peak_heap} bytes >= 64 MiB"
    );
    assert!(
        peak_rss < MEMORY_BYTES_MAX as u64,
        "peak RSS {peak_rss} bytes >= 64 MiB"
    );
}
