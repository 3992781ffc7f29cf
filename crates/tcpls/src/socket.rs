//! Socket-level facts the protocol core cannot see: kernel TCP statistics,
//! socket options, and opening TCP connections.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use tcpls_proto::ConnectionId;
use tokio::net::{TcpSocket, TcpStream};

/// Unsent bytes a socket may hold before it stops reporting writable, with
/// coupled sending: enough to keep a fast path busy, small enough that
/// records are not queued deep inside a slow connection.
pub(crate) const NOTSENT_LOWAT: u32 = 128 << 10;

/// Per-connection kernel TCP statistics (`TCP_INFO`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// The connection within the session.
    pub conn: ConnectionId,
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// Round-trip time variation, microseconds.
    pub rttvar_us: u32,
    /// Congestion window, segments.
    pub cwnd: u32,
    /// Sender maximum segment size, bytes.
    pub mss: u32,
    /// Segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// Data segments sent over the connection's life.
    pub data_segs_out: u32,
    /// Most recent delivery rate estimate, bytes per second.
    pub delivery_rate: u64,
    /// Bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Bytes written but not yet sent by the kernel.
    pub notsent_bytes: u32,
    /// Segments sent and not yet acknowledged.
    pub unacked: u32,
    /// Milliseconds since the last ACK arrived.
    pub last_ack_recv_ms: u32,
    /// Milliseconds since the last data arrived.
    pub last_data_recv_ms: u32,
    /// Retransmission timeouts fired since the last ACK (0: none pending).
    pub rto_backoff: u8,
    /// The connection's local address (filled by
    /// [`crate::Session::connection_stats`]).
    pub local_addr: Option<SocketAddr>,
    /// The connection's remote address (likewise).
    pub peer_addr: Option<SocketAddr>,
    /// Its congestion controller (`TCP_CONGESTION`; likewise).
    pub congestion_control: Option<String>,
}

/// Linux's `struct tcp_info` up to `tcpi_delivery_rate` (include/uapi/
/// linux/tcp.h). Declared here because the libc crate's copy stops before
/// the byte counters and the delivery rate. The kernel fills at most the
/// length we pass, so older kernels leave the tail zero.
#[repr(C)]
#[derive(Default)]
struct TcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    rate_flags: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
}

impl ConnectionStats {
    /// What a scheduler needs of these figures.
    pub fn estimate(&self) -> tcpls_proto::session::scheduler::PathEstimate {
        tcpls_proto::session::scheduler::PathEstimate {
            rtt: Some(std::time::Duration::from_micros(self.rtt_us as u64)),
            cwnd_bytes: Some(self.cwnd as u64 * self.mss as u64),
            delivery_rate: Some(self.delivery_rate).filter(|r| *r > 0),
            loss: if self.data_segs_out == 0 {
                0.0
            } else {
                self.total_retrans as f64 / self.data_segs_out as f64
            },
        }
    }
}

/// Reads `TCP_INFO` of a socket.
pub(crate) fn tcp_info(conn: ConnectionId, fd: &impl AsRawFd) -> std::io::Result<ConnectionStats> {
    let mut info = TcpInfo::default();
    let mut len = std::mem::size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: `info` is a plain repr(C) struct of `len` bytes that the
    // kernel writes at most `len` bytes into; `fd` is an open socket.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut TcpInfo).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ConnectionStats {
        conn,
        rtt_us: info.rtt,
        rttvar_us: info.rttvar,
        cwnd: info.snd_cwnd,
        mss: info.snd_mss,
        total_retrans: info.total_retrans,
        data_segs_out: info.data_segs_out,
        delivery_rate: info.delivery_rate,
        bytes_acked: info.bytes_acked,
        bytes_received: info.bytes_received,
        notsent_bytes: info.notsent_bytes,
        unacked: info.unacked,
        last_ack_recv_ms: info.last_ack_recv,
        last_data_recv_ms: info.last_data_recv,
        rto_backoff: info.retransmits.max(info.backoff),
        local_addr: None,
        peer_addr: None,
        congestion_control: None,
    })
}

/// Sets TCP_NOTSENT_LOWAT (`u32::MAX`: the kernel's default, no limit).
pub(crate) fn set_notsent_lowat(fd: &impl AsRawFd, bytes: u32) {
    let v = bytes as libc::c_int;
    // SAFETY: `v` is a c_int of the size passed; `fd` is an open socket.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Opens a TCP connection to `remote`, from `bind` when given.
pub(crate) async fn tcp_connect(
    remote: SocketAddr,
    bind: Option<SocketAddr>,
) -> std::io::Result<TcpStream> {
    let Some(local) = bind else {
        return TcpStream::connect(remote).await;
    };
    let socket = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(local)?;
    socket.connect(remote).await
}
