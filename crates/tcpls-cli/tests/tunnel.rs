//! `tcpls tunnel` end to end on loopback: an unmodified TCP client and
//! server at the ends, half-close and resets carried both ways, the SOCKS5
//! front end and the server's allowlist. (Over two network paths with a
//! failure: tests/netns.rs.)

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{free_port, wait_listening, Reaper, BIN};
use sha2::{Digest, Sha256};

/// Every socket operation of these tests gives up after this long.
const IO_LIMIT: Duration = Duration::from_secs(20);

/// A destination service on loopback. Per connection, by its first byte:
/// `E`: reads to EOF, answers with the SHA-256 of everything it read
/// (including the `E`), then closes (a half-close test);
/// `R`: resets the connection at once;
/// `W`: reads until EOF or an error and reports which on `events`.
fn destination() -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                c.set_read_timeout(Some(IO_LIMIT)).unwrap();
                let mut first = [0u8; 1];
                if c.read_exact(&mut first).is_err() {
                    return; // a probe connection
                }
                match first[0] {
                    b'E' => {
                        let mut all = vec![b'E'];
                        c.read_to_end(&mut all).unwrap();
                        let _ = c.write_all(hex::encode(Sha256::digest(&all)).as_bytes());
                    }
                    b'R' => {
                        socket2::SockRef::from(&c)
                            .set_linger(Some(Duration::ZERO))
                            .unwrap();
                    }
                    _ => {
                        let mut sink = Vec::new();
                        let what = match c.read_to_end(&mut sink) {
                            Ok(_) => "eof".to_string(),
                            Err(e) => format!("{:?}", e.kind()),
                        };
                        let _ = tx.send(what);
                    }
                }
            });
        }
    });
    (port, rx)
}

/// A tunnel server toward `dest_port` and a client in front of it; returns
/// them and the client's port.
fn tunnel(dest_port: u16, server_extra: &[&str], client_extra: &[&str]) -> (Reaper, Reaper, u16) {
    tunnel_logged(dest_port, server_extra, client_extra, Stdio::null())
}

/// [`tunnel`], the server's standard error going to `server_log`.
fn tunnel_logged(
    dest_port: u16,
    server_extra: &[&str],
    client_extra: &[&str],
    server_log: Stdio,
) -> (Reaper, Reaper, u16) {
    let sport = free_port();
    let mut server = Command::new(BIN)
        .args([
            "tunnel",
            "server",
            "--listen",
            &format!("127.0.0.1:{sport}"),
        ])
        .args(["--to", &format!("127.0.0.1:{dest_port}")])
        .args(server_extra)
        .stdout(Stdio::null())
        .stderr(server_log)
        .spawn()
        .unwrap();
    wait_listening(sport, &mut server);
    let server = Reaper(server);
    let cport = free_port();
    let mut client = Command::new(BIN)
        .args([
            "tunnel",
            "client",
            "--listen",
            &format!("127.0.0.1:{cport}"),
        ])
        .args(["--connect", &format!("127.0.0.1:{sport}"), "-k"])
        .args(client_extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(cport, &mut client);
    (server, Reaper(client), cport)
}

fn connect(port: u16) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(IO_LIMIT)).unwrap();
    c.set_write_timeout(Some(IO_LIMIT)).unwrap();
    c
}

/// Sends `body` (starting with `E`), half-closes, and checks the
/// destination's SHA-256 of it comes back before the end of stream.
fn echo_hash(mut c: TcpStream, body: &[u8]) {
    c.write_all(body).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, hex::encode(Sha256::digest(body)));
}

fn body(len: usize) -> Vec<u8> {
    let mut b: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    b[0] = b'E';
    b
}

#[test]
fn a_tunnel_carries_a_connection_with_half_close_both_ways() {
    let (dest, _) = destination();
    let (_s, _c, port) = tunnel(dest, &[], &[]);
    // Two at once over the one session, one large.
    let big = std::thread::spawn(move || echo_hash(connect(port), &body(8 << 20)));
    echo_hash(connect(port), &body(1000));
    big.join().unwrap();
}

/// A tunnel session opened again for a local connection (the server
/// closed the last one when it idled) resumes with a ticket of the first
/// one, and the stream's header travels as early data, which the server
/// takes: no round trip before the destination is named.
#[test]
fn a_reopened_tunnel_session_sends_its_header_as_early_data() {
    let (dest, _rx) = destination();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (_s, _c, port) =
        tunnel_logged(dest, &["-v", "--idle-timeout", "1s"], &[], Stdio::from(log));
    echo_hash(connect(port), &body(1000));
    // The server closes the idle session; the next connection opens one.
    std::thread::sleep(Duration::from_millis(2500));
    echo_hash(connect(port), &body(200_000));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let sessions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tunnel session"))
        .collect();
    assert_eq!(sessions.len(), 2, "{log}");
    assert!(
        sessions[0].contains("early_data=\"none\""),
        "{}",
        sessions[0]
    );
    assert!(
        sessions[1].contains("early_data=\"accepted\""),
        "the second session resumed with early data: {}",
        sessions[1]
    );
}

#[test]
fn resets_are_carried_both_ways() {
    let (dest, events) = destination();
    let (_s, _c, port) = tunnel(dest, &[], &[]);
    // The destination resets: the local client sees a reset, not an EOF.
    let mut c = connect(port);
    c.write_all(b"R").unwrap();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the destination's reset reached the client: {r:?}"
    );
    // The local client resets: the destination sees a reset.
    let c = connect(port);
    (&c).write_all(b"Wsome bytes").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    let what = events.recv_timeout(IO_LIMIT).unwrap();
    assert_eq!(
        what, "ConnectionReset",
        "the client's reset reached the destination"
    );
}

/// A SOCKS5 CONNECT to 127.0.0.1:`port` through the proxy on
/// `proxy`; returns the reply code and the connection.
fn socks5_connect(proxy: u16, port: u16) -> (u8, TcpStream) {
    let mut c = connect(proxy);
    c.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    c.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0], "no authentication");
    let mut req = vec![5, 1, 0, 1, 127, 0, 0, 1];
    req.extend_from_slice(&port.to_be_bytes());
    c.write_all(&req).unwrap();
    let mut rep = [0u8; 10];
    c.read_exact(&mut rep).unwrap();
    (rep[1], c)
}

#[test]
fn socks5_destinations_need_the_servers_allowlist() {
    let (dest, _) = destination();
    let allowed = format!("127.0.0.1:{dest}");
    let (_s, _c, proxy) = tunnel(dest, &["--allow", &allowed], &["--socks5"]);
    let (code, c) = socks5_connect(proxy, dest);
    assert_eq!(code, 0, "the allowed destination is connected");
    echo_hash(c, &body(100_000));
    let other = free_port();
    let (code, _) = socks5_connect(proxy, other);
    assert_eq!(code, 2, "another port is not allowed (SOCKS5 code 2)");
}

#[test]
fn a_tunnel_server_without_destinations_refuses_to_start() {
    let out = Command::new(BIN)
        .args(["tunnel", "server", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--to"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
