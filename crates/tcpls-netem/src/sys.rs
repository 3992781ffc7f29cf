//! The few system calls std does not wrap: waiting with a nanosecond
//! timeout, signals as a file descriptor, socket options, timer slack.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// Asks the kernel to wake timers within 1 µs of their expiry instead of
/// the default 50 µs slack: the delay line's accuracy budget is 1 ms, and
/// slack is the one part of the wake-up latency that is ours to choose.
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer; no memory is passed.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// Switches this process to SCHED_FIFO at `priority`, with its memory
/// locked: a real-time task that waits for a page fault to be served (a
/// busy machine reclaiming memory) is late all the same.
pub fn realtime(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: passes a pointer to a live sched_param; mlockall takes flags.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// SIGTERM, SIGINT and SIGHUP as a readable file descriptor, so that the
/// main loop's one `ppoll` waits for packets, deadlines and signals alike,
/// without signal handlers and their async-signal-safety rules.
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Blocks the signals (call before starting threads, which inherit the
    /// mask) and opens the descriptor. Children started with
    /// `std::process::Command` get an empty mask again from std.
    pub fn new() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before
        // use; the calls get valid pointers to it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// The signal number pending, if any.
    pub fn take(&self) -> Option<i32> {
        // SAFETY: reads at most one signalfd_siginfo into a buffer of that
        // size.
        unsafe {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let n = libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                std::mem::size_of::<libc::signalfd_siginfo>(),
            );
            (n == std::mem::size_of::<libc::signalfd_siginfo>() as isize)
                .then_some(info.ssi_signo as i32)
        }
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no
/// limit). `ppoll` rather than `poll` because poll's millisecond timeout
/// would round every wake-up up by as much as the whole accuracy budget.
/// Returns which descriptors are readable; an interrupted wait returns none.
pub fn wait_readable<const N: usize>(
    fds: [RawFd; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: pfds has N initialised entries; ts_ptr is null or points to
    // a live timespec; a null signal mask leaves the mask unchanged.
    let n = unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            N as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok([false; N]);
        }
        return Err(e);
    }
    Ok(pfds.map(|p| p.revents != 0))
}

fn sockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for writes of an int-sized option.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// The descriptor of this process's netfilter netlink socket.
///
/// The `nfq` crate (0.2.5, the latest release) owns its socket and does not
/// expose it (its next version adds `AsRawFd`), yet the main loop must
/// wait on it together with a deadline, and its receive buffer must grow.
/// This process opens exactly one `NETLINK_NETFILTER` socket, so it is
/// found among the open descriptors by its domain and protocol. The
/// descriptor is only polled and given a socket option; reads and writes
/// stay with `nfq`.
pub fn find_netfilter_socket() -> io::Result<RawFd> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_nf = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok()
            == Some(libc::AF_NETLINK)
            && sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).ok()
                == Some(libc::NETLINK_NETFILTER);
        if is_nf {
            found.push(fd);
        }
    }
    match found[..] {
        [fd] => Ok(fd),
        _ => Err(io::Error::other(format!(
            "expected one netfilter netlink socket, found {}",
            found.len()
        ))),
    }
}

/// Sets a socket's receive buffer, past `net.core.rmem_max` (root only):
/// the kernel drops a queued packet when the buffer holding its
/// notification is full, and a burst at 200 Mbit/s while this process is
/// not scheduled outgrows the default 208 KiB. Returns the size in effect
/// (the kernel doubles the request for its bookkeeping).
pub fn force_rcvbuf(fd: RawFd, bytes: usize) -> io::Result<usize> {
    let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    // SAFETY: passes a pointer to a live int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)? as usize)
}

/// The interface index of `dev` in this network namespace, if it exists.
pub fn ifindex(dev: &str) -> Option<u32> {
    let name = std::ffi::CString::new(dev).ok()?;
    // SAFETY: name is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (i != 0).then_some(i)
}

/// Whether this process is still in the network namespace that
/// `/run/netns/NAME` names. `ip netns del` only removes that name; a process
/// inside keeps the namespace (and its interfaces, and so the veth peer in
/// another namespace) alive. Noticing the name is gone is how this process
/// learns the namespace was deleted, and exits so that it really goes.
pub fn in_named_netns(name: &str) -> bool {
    let mine = std::fs::metadata("/proc/self/ns/net");
    let named = std::fs::metadata(Path::new("/run/netns").join(name));
    match (mine, named) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
