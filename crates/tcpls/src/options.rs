//! Applying the transport options a peer asks for (TRANSPORT_OPTION, see
//! `tcpls_proto::session::options`) to the session's sockets, and this
//! side's own choices: `TCP_CONGESTION` and `TCP_USER_TIMEOUT`.

use std::time::Duration;

use tcpls_proto::session::options::{OptionAnswer, OptionStatus, PeerOption};

/// The least `TCP_USER_TIMEOUT` given to the kernel when failover is on
/// (see `Inner::kernel_user_timeout`).
pub(crate) const KERNEL_USER_TIMEOUT_FLOOR: Duration = Duration::from_secs(10);

/// Applies `option` to the sockets `targets` (one connection's, or every
/// one of the session); `failover` as the session has it.
pub(crate) fn apply(
    targets: &[std::sync::Arc<tokio::net::TcpStream>],
    option: &PeerOption,
    failover: bool,
) -> OptionAnswer {
    match option {
        PeerOption::CongestionControl(name) => {
            for tcp in targets {
                set_congestion_control(tcp, name)
                    .map_err(|e| (OptionStatus::Failed, format!("TCP_CONGESTION {name}: {e}")))?;
            }
        }
        PeerOption::UserTimeout(t) => {
            let kernel = kernel_user_timeout(*t, failover);
            for tcp in targets {
                socket2::SockRef::from(&**tcp)
                    .set_tcp_user_timeout(Some(kernel))
                    .map_err(|e| (OptionStatus::Failed, format!("TCP_USER_TIMEOUT: {e}")))?;
            }
        }
        _ => return Err((OptionStatus::Unknown, "not supported here".into())),
    }
    Ok(())
}

/// The `TCP_USER_TIMEOUT` for a session user timeout `t`: with failover
/// the path monitor fails connections at `t` from TCP_INFO, and the
/// kernel's timer is only a backstop (at 250 ms it also aborted healthy
/// connections whose reader was slow: Linux applies it to zero-window
/// probing).
pub(crate) fn kernel_user_timeout(t: Duration, failover: bool) -> Duration {
    if failover {
        t.max(KERNEL_USER_TIMEOUT_FLOOR)
    } else {
        t
    }
}

/// Sets `TCP_CONGESTION` on a socket.
pub(crate) fn set_congestion_control(
    tcp: &tokio::net::TcpStream,
    name: &str,
) -> std::io::Result<()> {
    socket2::SockRef::from(tcp).set_tcp_congestion(name.as_bytes())
}

/// The congestion controller a socket uses (`TCP_CONGESTION`).
pub(crate) fn congestion_control(tcp: &tokio::net::TcpStream) -> Option<String> {
    let name = socket2::SockRef::from(tcp).tcp_congestion().ok()?;
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}
