//! The `tcpls` command: serve files, fetch them, measure goodput, demo,
//! and the benchmark tools (idle sessions, plots, the MPTCP baseline).

mod access_log;
mod client;
mod connect;
mod demo;
mod exit;
mod get;
mod http;
mod idle;
mod mptcp;
mod perf;
mod plot;
mod serve;
mod service;
mod session_cache;
mod soak;
mod tunnel;
mod units;

use clap::{Parser, Subcommand};

/// TCPLS: streams, over TCP and TLS 1.3, in user space.
#[derive(Parser, Debug)]
#[command(name = "tcpls", version, about)]
struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve files (and perf endpoints) over TCPLS and plain TLS 1.3.
    Serve(serve::ServeArgs),
    /// Fetch https:// URLs over TCPLS (plain HTTPS with ordinary servers).
    Get(get::GetArgs),
    /// Measure goodput against `tcpls serve`, optionally beside plain TLS.
    Perf(perf::PerfArgs),
    /// Server and client on loopback: two connections, one reset
    /// mid-transfer, every byte verified, a goodput chart.
    Demo(demo::DemoArgs),
    /// An interactive session, like `openssl s_client`: shows what was
    /// negotiated, then copies standard input to a stream and the stream
    /// to standard output.
    Connect(connect::ConnectArgs),
    /// Hold many idle sessions against a server and report its memory.
    Idle(idle::IdleArgs),
    /// Many sessions of random verified transfers and resets for a long
    /// time; bytes lost (must be 0), failures, server memory over time.
    Soak(soak::SoakArgs),
    /// Draw goodput-over-time PNGs from `perf --timeline` files.
    Plot(plot::PlotArgs),
    /// The same download over the kernel's MPTCP, for comparisons.
    #[command(subcommand)]
    Mptcp(mptcp::MptcpCmd),
    /// Carry unmodified applications' TCP connections over one TCPLS
    /// session (like stunnel, with failover and aggregation), optionally
    /// as a SOCKS5 proxy.
    #[command(subcommand)]
    Tunnel(tunnel::TunnelCmd),
}

/// Raises the open-file limit to its hard maximum: a server (or the idle
/// benchmark) holds a socket per connection, far beyond the usual 1024.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a properly initialised struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only on a terminal: logs sent to a file stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let r = match cli.cmd {
        Cmd::Serve(a) => {
            raise_fd_limit();
            serve::run(a).await
        }
        Cmd::Get(a) => get::run(a).await,
        Cmd::Perf(a) => perf::run(a).await,
        Cmd::Demo(a) => demo::run(a).await,
        Cmd::Connect(a) => connect::run(a).await,
        Cmd::Mptcp(c) => mptcp::run(c).await,
        Cmd::Plot(a) => plot::run(a),
        Cmd::Idle(a) => idle::run(a).await,
        Cmd::Soak(a) => soak::run(a).await,
        Cmd::Tunnel(c) => {
            raise_fd_limit();
            tunnel::run(c).await
        }
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpls: error: {}", client::describe(&e));
            std::process::ExitCode::from(exit::code_of(&e))
        }
    }
}
