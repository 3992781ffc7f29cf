//! `tcpls tunnel`: unmodified applications over TCPLS. The client side
//! accepts local TCP connections (plain, or SOCKS5 CONNECT requests) and
//! carries each as one stream of a shared TCPLS session; the server side
//! connects each stream to its destination. The applications get the
//! session's failover and aggregation without changes, as with mptcpize
//! or stunnel (seed 003's single-ended proxy).

mod allow;
mod client;
mod header;
mod relay;
mod server;
mod socks5;

use anyhow::Result;

#[derive(clap::Subcommand, Debug)]
pub enum TunnelCmd {
    /// Accept local TCP connections (or SOCKS5 requests) and carry each
    /// over one TCPLS session to a `tunnel server`.
    Client(client::TunnelClientArgs),
    /// Accept TCPLS sessions from `tunnel client`s and connect each stream
    /// to `--to` (or to the destination a SOCKS5 stream names, if
    /// `--allow` permits it).
    Server(server::TunnelServerArgs),
}

pub async fn run(cmd: TunnelCmd) -> Result<()> {
    match cmd {
        TunnelCmd::Client(a) => client::run(a).await,
        TunnelCmd::Server(a) => server::run(a).await,
    }
}
