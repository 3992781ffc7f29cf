//! What `serve` and `tunnel server` need to run as a service: a listener
//! inherited from systemd (socket activation), and a graceful stop on
//! SIGTERM or SIGINT: stop accepting, close every session with a reason
//! (clients see a clean close, not a failure they would rejoin after), and
//! wait for the closes to go out, within a deadline.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The CLOSE reason sessions get when the server stops.
pub const SHUTDOWN_REASON: &str = "server shutting down";

/// The listening socket systemd (or another supervisor following its
/// `LISTEN_FDS` protocol) passed to this process, if any.
pub fn inherited_listener() -> Result<Option<std::net::TcpListener>> {
    listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .context("taking the inherited listener (LISTEN_FDS)")
}

/// SIGTERM and SIGINT, registered once (a signal that arrives while the
/// server is busy is not lost).
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    pub fn new() -> Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    /// Waits for either; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Stops `server` gracefully: sessions whose handshake finished but that
/// the accept loop had not taken yet are closed like the others (handshakes
/// still running when the listener goes are ended by it); returns how many
/// sessions were closed.
pub async fn stop_server(server: tcpls::Server, mut sessions: Sessions) -> usize {
    // What is already queued comes at once (bounded, in case clients
    // keep arriving); then the listener goes.
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(20), server.accept()).await {
            Ok(Ok(s)) => sessions.spawn(s, std::future::pending()),
            _ => break,
        }
    }
    drop(server);
    sessions.stop().await
}

/// The tasks of a server's live sessions, each closed on [`Self::stop`].
pub struct Sessions {
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    drain: Duration,
}

impl Sessions {
    /// `drain`: how long a stop waits for each session's last records.
    pub fn new(drain: Duration) -> Self {
        Self {
            tasks: JoinSet::new(),
            stop: watch::channel(false).0,
            drain,
        }
    }

    /// Runs `work` (the session's streams) until it ends or the server
    /// stops; then the session is closed with [`SHUTDOWN_REASON`].
    pub fn spawn(
        &mut self,
        session: tcpls::Session,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        // Finished sessions leave the set, so it holds the live ones only.
        while self.tasks.try_join_next().is_some() {}
        let mut stop = self.stop.subscribe();
        let drain = self.drain;
        self.tasks.spawn(async move {
            tokio::select! {
                _ = work => {}
                _ = stop.changed() => {
                    session.close(0, SHUTDOWN_REASON);
                    let _ = tokio::time::timeout(drain, session.drained()).await;
                }
            }
        });
    }

    /// Closes every session and waits (at most the drain time, plus a
    /// little) until their closes are sent. Returns how many there were.
    pub async fn stop(mut self) -> usize {
        while self.tasks.try_join_next().is_some() {}
        let n = self.tasks.len();
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(self.drain + Duration::from_millis(500), all).await;
        n
    }
}
