//! What received data costs, measured with a counting allocator: a hostile
//! peer's tiny records and frames must cost memory within the configured
//! limits, not an allocation (or a retained buffer) per piece.
//!
//! One test function runs the cases in turn: the allocator's count is
//! process-wide, so nothing else may allocate meanwhile.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use tcpls_proto::wire::frame::Frame;
use tcpls_proto::{CallError, Error, StreamId, TransportConfig};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE.fetch_add(new, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

const WINDOW: u64 = 256 << 10;

fn small_windows() -> TransportConfig {
    TransportConfig {
        stream_window: WINDOW,
        session_window: 4 * WINDOW,
        ..Default::default()
    }
}

#[test]
fn hostile_received_data_costs_bounded_memory() {
    plain_tls_one_byte_records();
    tcpls_one_byte_frames_in_order();
    tcpls_one_byte_frames_with_gaps();
}

/// Finding 1: a plain TLS client sends 1-byte records to a server that
/// does not read. Each record used to keep a 16 KiB buffer alive.
fn plain_tls_one_byte_records() {
    let c = plain_client_config(TransportConfig::default());
    let mut p = Net::new(c, server_config(small_windows()), 1);
    p.drive();
    assert!(!p.s.is_tcpls());
    let a = p.c.open_stream().unwrap();
    let before = live();
    // Twice what the server takes before it stops reading the socket.
    for i in 0..2 * WINDOW {
        p.c.write(a, &[i as u8]).unwrap();
        if i % 64 == 0 {
            p.drive();
        }
    }
    p.drive();
    let held = p.s.recv_held();
    let (wire, _) = p.carried_total();
    let grown = live().saturating_sub(before);
    // The server holds at most its window of plaintext; what is not taken
    // waits as wire bytes in the test network.
    assert!(held as u64 <= WINDOW + (16 << 10), "held {held}");
    assert!(
        grown <= 4 * WINDOW as usize + 2 * wire,
        "grew {grown} bytes for {wire} wire bytes"
    );
    drop(p);
}

fn one_byte_frames(stream: u32, offsets: impl Iterator<Item = u64>) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut rec = Vec::new();
    for off in offsets {
        Frame::Stream {
            id: StreamId(stream),
            offset: off,
            fin: false,
            data: &[off as u8],
        }
        .encode(&mut rec);
        if rec.len() > 16_000 {
            records.push(std::mem::take(&mut rec));
        }
    }
    records.push(rec);
    records
}

/// Finding 2, in order: 1-byte frames on 4 streams, never read. They used
/// to cost a heap allocation and a queue entry each.
fn tcpls_one_byte_frames_in_order() {
    let mut p = Net::new(
        client_config(small_windows()),
        server_config(small_windows()),
        2,
    );
    p.drive();
    let ids: Vec<StreamId> = (0..4).map(|_| p.c.open_stream().unwrap()).collect();
    let before = live();
    let mut bytes = 0u64;
    for id in &ids {
        for rec in one_byte_frames(id.0, 0..WINDOW) {
            let sent = p.c.send_raw_record_for_testing(&rec);
            assert!(sent.is_ok(), "{sent:?}, server: {:?}", p.s.error());
            p.drive();
        }
        bytes += WINDOW;
    }
    assert!(p.s.error().is_none(), "{:?}", p.s.error());
    let held = p.s.recv_held() as u64;
    let grown = live().saturating_sub(before) as u64;
    assert!(held <= bytes + (128 << 10), "held {held} for {bytes} bytes");
    assert!(grown <= 2 * bytes, "grew {grown} for {bytes} bytes");
    drop(p);
}

/// Finding 2, with gaps: 1-byte frames at every other offset cannot be
/// merged; the session refuses the peer before they cost more than its
/// memory limit.
fn tcpls_one_byte_frames_with_gaps() {
    let mut p = Net::new(
        client_config(small_windows()),
        server_config(small_windows()),
        3,
    );
    p.drive();
    let id = p.c.open_stream().unwrap();
    let limit = p.s.recv_memory_limit();
    let before = live();
    let mut peak = 0;
    for rec in one_byte_frames(id.0, (1..WINDOW).step_by(2)) {
        if p.c.send_raw_record_for_testing(&rec).is_err() {
            break;
        }
        p.drive();
        peak = peak.max(live().saturating_sub(before));
        if p.s.error().is_some() {
            break;
        }
    }
    assert!(
        matches!(p.s.error(), Some(Error::FlowControl(_))),
        "{:?}",
        p.s.error()
    );
    assert!(matches!(
        p.s.read(id, 10),
        Err(CallError::Closed(_)) | Err(CallError::Usage(_))
    ));
    assert!(peak <= 2 * limit, "peak {peak}, limit {limit}");
}
