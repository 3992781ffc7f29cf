//! Child processes that must not outlive a test, and waiting for them to
//! listen.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// Kills the child when the test ends, pass or fail.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `child` accepts on 127.0.0.1:`port` (20 s at most),
/// failing early if `child` exits.
pub fn wait_listening(port: u16, child: &mut Child) {
    if let Err(e) = try_wait_listening(port, child) {
        panic!("{e}");
    }
}

/// [`wait_listening`] that returns why it gave up. Something else may hold
/// the port (`free_port` can hand one port to two tests running at once):
/// only `child`'s own listener counts, and `child` then exits on its
/// failed bind.
pub fn try_wait_listening(port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && listens(child.id(), port)
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("server exited early: {status}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listening on {port}"))
}

/// Whether process `pid` holds a socket listening on port `port` (from
/// the inodes in /proc/net/tcp{,6} and the process's descriptors).
fn listens(pid: u32, port: u16) -> bool {
    let Ok(v4) = std::fs::read_to_string("/proc/net/tcp") else {
        return true; // no procfs: trust the connect
    };
    let table = v4 + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let suffix = format!(":{port:04X}");
    let sockets: Vec<String> = table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let listening = f.get(1)?.ends_with(&suffix) && *f.get(3)? == "0A";
            let inode = f.get(9)?;
            listening.then(|| format!("socket:[{inode}]"))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
    })
}
