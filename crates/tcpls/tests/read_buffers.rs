//! Received stream data is kept as slices of the reader's 256 KiB buffers;
//! a hostile client that puts 4 KiB of stream data in every 256 KiB it
//! sends (the rest padding) must not make the server keep a whole buffer
//! alive per 4 KiB. Measured with a counting allocator: this file holds one
//! test, so nothing else allocates meanwhile.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tcpls::{ConnectionId, Server, TransportConfig};
use tcpls_proto::wire::frame::Frame;
use tcpls_proto::StreamId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

const WINDOW: u64 = 1 << 20;
const PIECE: usize = 4096;

#[tokio::test]
async fn sparse_stream_data_does_not_pin_read_buffers() {
    tokio::time::timeout(Duration::from_secs(60), run())
        .await
        .expect("test timed out");
}

async fn run() {
    let t = TransportConfig {
        stream_window: WINDOW,
        session_window: WINDOW,
        failover: false,
        ..Default::default()
    };
    let (scfg, ccfg) = common::configs(t);
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), scfg)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();

    // A client driven by hand: the raw records are what a runtime never sends.
    let first = ConnectionId(0);
    let mut c = tcpls_proto::Session::connect(ccfg, "localhost", Instant::now()).unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut inbuf = BytesMut::with_capacity(64 << 10);
    let mut out = Vec::new();
    loop {
        out.clear();
        c.poll_transmit(first, &mut out, usize::MAX).unwrap();
        tcp.write_all(&out).await.unwrap();
        if !c.is_handshaking() {
            break;
        }
        assert!(
            tcp.read_buf(&mut inbuf).await.unwrap() > 0,
            "server hung up"
        );
        c.recv(first, &mut inbuf, Instant::now()).unwrap();
    }
    assert!(c.is_tcpls());
    let session = server.accept().await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    // The server's answers (ACKs, tokens) are read and dropped.
    tokio::spawn(async move {
        let mut sink = vec![0u8; 64 << 10];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    });

    let id = c.open_stream().unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let data = vec![0x5au8; PIECE];
    let padding = vec![0u8; 16_000];
    let mut peak = 0;
    for i in 0..WINDOW / PIECE as u64 {
        let mut rec = Vec::new();
        Frame::Stream {
            id: StreamId(id.0),
            offset: i * PIECE as u64,
            fin: false,
            data: &data,
        }
        .encode(&mut rec);
        c.send_raw_record_for_testing(&rec).unwrap();
        // About one read buffer of padding after each piece.
        for _ in 0..16 {
            c.send_raw_record_for_testing(&padding).unwrap();
        }
        out.clear();
        c.poll_transmit(first, &mut out, usize::MAX).unwrap();
        wr.write_all(&out).await.unwrap();
        peak = peak.max(LIVE.load(Ordering::Relaxed).saturating_sub(before));
    }
    // Let the server take everything in.
    for _ in 0..100 {
        if session.peak_buffered() >= WINDOW {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        session.peak_buffered(),
        WINDOW,
        "server did not take it all"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let grown = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    peak = peak.max(grown);
    // Without compaction every piece keeps its 256 KiB buffer: 64 MiB.
    // The budget is 3 MiB (twice the window plus 1 MiB), plus the buffers
    // being read into and the test's own.
    eprintln!("grown {grown} peak {peak}");
    assert!(grown < 8 << 20, "server holds {grown} bytes for {WINDOW}");
    assert!(peak < 12 << 20, "peak {peak} bytes for {WINDOW}");
    drop(session);
}
