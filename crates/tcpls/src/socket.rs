//! Socket-level facts the protocol core cannot see: kernel TCP statistics,
//! socket options, and opening TCP connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tcpls_proto::ConnectionId;
use tokio::net::TcpStream;

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
    /// Lowest round-trip time seen (the path without queues), microseconds.
    pub min_rtt_us: u32,
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
    /// The SYN carried data and the peer acknowledged it: TCP Fast Open
    /// saved this connection a round trip.
    pub fast_open: bool,
    /// Its congestion controller (`TCP_CONGESTION`; likewise).
    pub congestion_control: Option<String>,
    /// Its `TCP_USER_TIMEOUT` (`None`: the kernel's default; likewise).
    pub user_timeout: Option<Duration>,
    /// `TCP_NODELAY` is set (likewise).
    pub nodelay: bool,
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
        min_rtt_us: info.min_rtt,
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
        fast_open: info.options & TCPI_OPT_SYN_DATA != 0,
        local_addr: None,
        peer_addr: None,
        congestion_control: None,
        user_timeout: None,
        nodelay: false,
    })
}

/// Sets TCP_NOTSENT_LOWAT (`u32::MAX`: the kernel's default, no limit).
pub(crate) fn set_notsent_lowat(fd: &impl AsRawFd, bytes: u32) {
    let _ = set_int_option(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NOTSENT_LOWAT,
        bytes as libc::c_int,
    );
}

/// Resets a connected TCP socket in place: `connect` with an `AF_UNSPEC`
/// address disconnects it (the kernel's `tcp_disconnect`, which sends an
/// RST), whichever of its descriptors the call goes through; closing a
/// duplicate descriptor would not.
pub(crate) fn reset(fd: &impl AsRawFd) -> std::io::Result<()> {
    // SAFETY: a zeroed sockaddr is valid; AF_UNSPEC needs no more.
    let mut addr: libc::sockaddr = unsafe { std::mem::zeroed() };
    addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: `addr` is a sockaddr of the length passed; `fd` is open.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `tcpi_options` bit: the SYN's data was acknowledged (linux/tcp.h).
const TCPI_OPT_SYN_DATA: u8 = 32;

/// Listen queue of SYNs with data not yet accepted (`TCP_FASTOPEN`).
const FAST_OPEN_QUEUE: libc::c_int = 1024;

/// How long a destination that did not answer a SYN with data is reached
/// without Fast Open.
const FAST_OPEN_BLOCK: Duration = Duration::from_secs(3600);

/// Destinations remembered as dropping SYNs with data, at most this many.
const FAST_OPEN_BLOCK_MAX: usize = 1024;

/// Destinations whose SYN with data went unanswered, and since when.
static FAST_OPEN_BLOCKED: Mutex<Option<HashMap<IpAddr, SystemTime>>> = Mutex::new(None);

/// Runs `f` on the destinations reached without Fast Open, expired ones
/// dropped first.
fn with_blocked<T>(f: impl FnOnce(&mut HashMap<IpAddr, SystemTime>) -> T) -> T {
    let mut g = FAST_OPEN_BLOCKED.lock().unwrap_or_else(|p| p.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    // A clock stepped back counts as fresh: kept.
    map.retain(|_, since| since.elapsed().map_or(true, |d| d < FAST_OPEN_BLOCK));
    f(map)
}

fn fast_open_blocked(ip: IpAddr) -> bool {
    with_blocked(|m| m.contains_key(&ip))
}

/// Destinations this process reaches without TCP Fast Open because a SYN
/// with data to them went unanswered, with when that was (they are tried
/// with it again an hour later). For keeping across runs with
/// [`block_fast_open`], as `tcpls get` does in its session cache file.
pub fn fast_open_blocked_destinations() -> Vec<(IpAddr, SystemTime)> {
    with_blocked(|m| m.iter().map(|(ip, t)| (*ip, *t)).collect())
}

/// Reaches `ip` without TCP Fast Open for an hour from `since` (see
/// [`fast_open_blocked_destinations`]).
pub fn block_fast_open(ip: IpAddr, since: SystemTime) {
    with_blocked(|m| {
        if m.len() < FAST_OPEN_BLOCK_MAX || m.contains_key(&ip) {
            m.insert(ip, since);
        }
    });
}

/// A client connection that asked for Fast Open is established (its
/// handshake done): if its SYN had to be sent again and no data rode on
/// it, something on the path drops SYNs with data (the kernel resent a
/// bare SYN after its 1 s timeout). Later connections to `remote` go
/// without Fast Open for an hour, so they do not wait that second again.
pub(crate) fn note_fast_open_outcome(tcp: &TcpStream, remote: IpAddr) {
    let Ok(info) = tcp_info(ConnectionId::FIRST, tcp) else {
        return;
    };
    if info.fast_open || info.total_retrans == 0 {
        return;
    }
    tracing::info!(%remote, "SYN with data went unanswered: no TCP Fast Open to this address for an hour");
    block_fast_open(remote, SystemTime::now());
}

fn set_int_option(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: `v` is a c_int of the size passed; `fd` is an open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Lets a listening socket accept SYNs with data (`TCP_FASTOPEN`; takes
/// effect where `net.ipv4.tcp_fastopen` has the server bit, 2).
pub(crate) fn enable_fast_open_listener(fd: &impl AsRawFd) {
    if let Err(e) = set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN, FAST_OPEN_QUEUE) {
        tracing::debug!(error = %e, "TCP_FASTOPEN not set on the listener");
    }
}

/// Opens a TCP connection to `remote`, from `bind` when given. With
/// `fast_open` (and a cookie from an earlier connection, held by the
/// kernel) the connection completes at once and the first write goes out
/// in the SYN (`TCP_FASTOPEN_CONNECT`).
pub(crate) async fn tcp_connect(
    remote: SocketAddr,
    bind: Option<SocketAddr>,
    fast_open: bool,
) -> std::io::Result<TcpStream> {
    start_connect(remote, bind, fast_open, None)?
        .0
        .finish()
        .await
}

/// Socket options a new connection gets before its handshake, while the
/// SYN or the ClientHello travels and the caller would wait anyway. Set
/// once the handshake was over, each was a system call on its critical
/// path: those of the client after it read the server's flight and before
/// its request went out, those of the server before its response (a full
/// handshake took about 1 % less time without them; docs/benchmarks.md).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Preset {
    /// TCP_NODELAY is set.
    pub nodelay: bool,
    /// The TCP_USER_TIMEOUT set: the session's own, as it will be unless
    /// the peer's transport parameters ask for a longer one.
    pub user_timeout: Option<Duration>,
}

impl Preset {
    /// Sets TCP_NODELAY and the user timeout `transport` implies.
    pub(crate) fn apply(
        socket: socket2::SockRef<'_>,
        transport: &tcpls_proto::TransportConfig,
    ) -> Self {
        let nodelay = socket.set_nodelay(true).is_ok();
        let user_timeout = transport
            .requested_user_timeout()
            .map(|t| crate::options::kernel_user_timeout(t, transport.failover))
            .filter(|t| socket.set_tcp_user_timeout(Some(*t)).is_ok());
        Self {
            nodelay,
            user_timeout,
        }
    }
}

/// A TCP connection whose SYN is out ([`start_connect`]).
pub(crate) struct Connecting(TcpStream);

/// [`tcp_connect`] in two steps: the SYN leaves now, and the caller does
/// other work (a ClientHello's key shares take longer than a LAN's round
/// trip) before [`Connecting::finish`] waits for the SYN-ACK. With
/// `transport`, the socket also gets its [`Preset`] options once the SYN
/// is out.
pub(crate) fn start_connect(
    remote: SocketAddr,
    bind: Option<SocketAddr>,
    fast_open: bool,
    transport: Option<&tcpls_proto::TransportConfig>,
) -> std::io::Result<(Connecting, Preset)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(remote),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    if let Some(local) = bind {
        socket.bind(&local.into())?;
    }
    if fast_open && !fast_open_blocked(remote.ip()) {
        if let Err(e) = set_int_option(&socket, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT, 1) {
            tracing::debug!(error = %e, "TCP_FASTOPEN_CONNECT not set");
        }
    }
    match socket.connect(&remote.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let preset = transport.map_or_else(Preset::default, |t| Preset::apply((&socket).into(), t));
    Ok((Connecting(TcpStream::from_std(socket.into())?), preset))
}

impl Connecting {
    /// Waits until the connection is established (as tokio's own
    /// `TcpStream::connect` does: writable, then no socket error).
    pub(crate) async fn finish(self) -> std::io::Result<TcpStream> {
        self.0.writable().await?;
        match self.0.take_error()? {
            Some(e) => Err(e),
            None => Ok(self.0),
        }
    }
}
