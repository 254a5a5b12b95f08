//! A server's memory grows with the bytes peers actually send, never with the lengths they
//! announce: 40 peers announcing huge or large frames cost a few kilobytes each.
//!
//! This file holds a single test because it measures the whole process's heap with a counting
//! global allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use raft_net_tcp::handshake::Channel;
use tokio::io::AsyncWriteExt;
use tokio::time::sleep;

struct Counting;

static CURRENT_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let now = CURRENT_BYTES.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK_BYTES.fetch_max(now, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(pointer, layout) };
        CURRENT_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PEERS: usize = 40;
/// What 40 peers may cost on top of the baseline. Allocating what they announce would cost
/// 40 x 1 MiB (or 40 x 4 GiB); buffering what they send costs about 40 x 16 KiB.
const GROWTH_BYTES_MAX: usize = 4 * 1024 * 1024;

#[tokio::test]
async fn memory_follows_bytes_received_not_bytes_announced() {
    let mut config = config(1);
    config.frame_bytes_max = 1024 * 1024;
    config.frame_timeout_ms = 10_000;
    let server = start_server(1, config).await;
    let addr = server.addr();
    let mut warmup = raw_connect(&addr, Channel::Raft, 2).await;
    warmup.write_all(&[0, 0, 1, 0, 0]).await.unwrap();
    sleep(Duration::from_millis(100)).await;
    drop(warmup);
    sleep(Duration::from_millis(100)).await;

    let baseline = CURRENT_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(baseline, Ordering::Relaxed);

    // 40 peers announce 4 GiB frames: refused from the prefix, nothing buffered.
    let mut liars = Vec::new();
    for _ in 0..PEERS {
        let mut peer = raw_connect(&addr, Channel::Raft, 2).await;
        peer.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        liars.push(peer);
    }
    for peer in &mut liars {
        assert_closed(peer, Duration::from_secs(2)).await;
    }
    drop(liars);

    // 40 peers announce 1 MiB frames (allowed) and send 1 KiB of each, then stall.
    let mut stallers = Vec::new();
    for _ in 0..PEERS {
        let mut peer = raw_connect(&addr, Channel::Raft, 2).await;
        let mut bytes = (1024u32 * 1024).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0x93; 1024]);
        peer.write_all(&bytes).await.unwrap();
        stallers.push(peer);
    }
    sleep(Duration::from_millis(300)).await;
    assert_eq!(server.server.stats().connections_open, PEERS as u64);

    let growth = PEAK_BYTES.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("heap growth for {PEERS} peers: {growth} bytes");
    assert!(
        growth < GROWTH_BYTES_MAX,
        "heap grew by {growth} bytes for {PEERS} peers (limit {GROWTH_BYTES_MAX})"
    );
    assert_serving(&addr).await;
}
