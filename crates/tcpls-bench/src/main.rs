//! `tcpls-bench`: TCPLS side by side with plain TCP, TLS 1.3 over TCP
//! (OpenSSL and rustls) and QUIC (quinn), in one process, on loopback, with
//! the same cipher suite and transfer size, repetitions interleaved.
//!
//! ```text
//! cargo run --release -p tcpls-bench -- --bytes 2G --repeat 3 \
//!     --json bench.json --png bench.png
//! ```

mod certs;
mod chart;
mod cpu;
mod io;
mod measure;
mod peers;
mod report;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use tcpls::CipherSuite;

/// Lines of the bulk-transfer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Line {
    /// TCP without TLS.
    Tcp,
    /// TLS 1.3/TCP through tokio-openssl (the vendored OpenSSL TCPLS uses).
    Openssl,
    /// TLS 1.3/TCP through tokio-rustls with aws-lc-rs: the reference.
    Rustls,
    /// QUIC through quinn, default configuration, one bidirectional stream.
    Quinn,
    /// TCPLS, one stream, record ACKs off.
    Tcpls,
    /// TCPLS, one stream, record ACKs on (the default configuration).
    TcplsAcks,
    /// TCPLS, 16 streams sharing the bytes, ACKs off.
    Tcpls16,
    /// TCPLS, 2 coupled connections (round-robin), ACKs off.
    Tcpls2conn,
    /// TCPLS, 8 concurrent sessions sharing the bytes, ACKs off.
    Tcpls8sessions,
}

/// Peers of the handshake-rate and latency figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    Tcp,
    Openssl,
    Rustls,
    Quinn,
    Tcpls,
}

impl Peer {
    /// The name of this peer's resumed-handshake series, for the stacks
    /// that have one here (quinn's would need 0-RTT-free resumption
    /// configured; not measured).
    pub fn resumed_name(self) -> Option<&'static str> {
        match self {
            Peer::Openssl => Some("openssl-resumed"),
            Peer::Rustls => Some("rustls-resumed"),
            Peer::Tcpls => Some("tcpls-resumed"),
            Peer::Tcp | Peer::Quinn => None,
        }
    }

    /// Name of its line of resumptions without key exchange (psk_ke), for
    /// the stacks that offer that mode.
    pub fn psk_ke_name(self) -> Option<&'static str> {
        match self {
            Peer::Openssl => Some("openssl-psk-ke"),
            Peer::Tcpls => Some("tcpls-psk-ke"),
            _ => None,
        }
    }
}

#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// Bytes of each bulk transfer (server to client), e.g. 512M, 2G.
    #[arg(long, default_value = "2G", value_parser = parse_size)]
    pub bytes: u64,
    /// Repetitions of every figure, interleaved across peers; the median is
    /// reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Bulk-transfer lines to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["tcp", "openssl", "rustls", "quinn", "tcpls", "tcpls-acks", "tcpls16", "tcpls2conn", "tcpls8sessions"])]
    pub lines: Vec<Line>,
    /// Full handshakes per repetition and peer, one after another (also
    /// the number of TCPLS joins); 0 skips the handshake figures.
    #[arg(long, default_value_t = 500)]
    pub handshakes: u32,
    /// Peers of the handshake-rate figure (TCPLS adds its join rate).
    #[arg(long, value_delimiter = ',', default_values = ["openssl", "rustls", "quinn", "tcpls"])]
    pub handshake_peers: Vec<Peer>,
    /// One-byte request/response round trips per repetition and peer; 0
    /// skips the latency figures.
    #[arg(long, default_value_t = 2000)]
    pub round_trips: u32,
    /// Peers of the latency figure.
    #[arg(long, value_delimiter = ',', default_values = ["tcp", "openssl", "rustls", "quinn", "tcpls"])]
    pub latency_peers: Vec<Peer>,
    /// TCPLS per-stream send buffer, e.g. 256K (default: the library's,
    /// 512 KiB). Smaller keeps many streams' queued bytes warm in cache;
    /// larger wakes writers less often.
    #[arg(long, value_parser = parse_size)]
    pub send_buffer: Option<u64>,
    /// TLS 1.3 cipher suite of every peer.
    #[arg(long, default_value = "TLS_AES_128_GCM_SHA256", value_parser = parse_suite)]
    pub cipher: CipherSuite,
    /// tokio worker threads of each side: servers and clients run on two
    /// runtimes, as two processes would.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// tokio worker threads of each side for the 8-session line (0: one
    /// per core): a server with many sessions should use every core.
    #[arg(long, default_value_t = 0)]
    pub session_workers: usize,
    /// Check every received byte against the sent pattern (costs CPU:
    /// leave off for figures).
    #[arg(long)]
    pub verify: bool,
    /// Write the JSON report here (`-`: standard output, and no table).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a bar chart (goodput and CPU per GiB) here.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// TrueType font for the chart.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

/// A byte count with an optional binary suffix (K, M, G: KiB, MiB, GiB).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&s[..s.len() - 1], 10),
        Some(b'M') => (&s[..s.len() - 1], 20),
        Some(b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4096, 512M or 2G"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n && *v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

fn parse_suite(s: &str) -> Result<CipherSuite, String> {
    CipherSuite::from_name(s).ok_or_else(|| {
        let names: Vec<_> = CipherSuite::ALL.iter().map(|c| c.name()).collect();
        format!("unknown suite {s:?}; one of {}", names.join(", "))
    })
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if args.repeat == 0 || args.workers == 0 {
        bail!("--repeat and --workers must be at least 1");
    }
    let runtime = |name: &str, workers: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .enable_all()
            .build()
    };
    let (servers, clients) = (
        runtime("server", args.workers)?,
        runtime("client", args.workers)?,
    );
    // The 8-session line's own runtimes, one worker per core by default.
    let many = if args.lines.contains(&Line::Tcpls8sessions) {
        let n = match args.session_workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Some((
            runtime(measure::MANY_SERVER_THREAD, n)?,
            runtime("client-many", n)?,
            n,
        ))
    } else {
        None
    };
    let cfg = Arc::new(certs::Configs::new(args.cipher)?);
    let rts = measure::Runtimes {
        server: servers.handle().clone(),
        client: clients.handle().clone(),
        many: many
            .as_ref()
            .map(|(s, c, n)| (s.handle().clone(), c.handle().clone(), *n)),
    };
    let results = clients.block_on(measure::run(&args, &cfg, &rts))?;
    let report = report::Report::new(&args, results);
    match args.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => println!("{}", serde_json::to_string_pretty(&report)?),
        other => {
            print!("{}", report.table());
            if let Some(p) = other {
                std::fs::write(p, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
        }
    }
    if let Some(p) = &args.png {
        chart::draw(&report, p, &args.font)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("99999999999G").is_err());
        assert!(parse_size("G").is_err());
    }
}
