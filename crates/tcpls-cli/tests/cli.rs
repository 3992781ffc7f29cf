//! End-to-end tests of the `tcpls` binary, including interop with the real
//! `openssl` command in both fallback directions.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, json, run_bounded, try_wait_listening, wait_listening, Reaper, BIN};
use sha2::{Digest, Sha256};

fn openssl_available() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: the `openssl` command is not installed (scripts/setup.sh installs it)");
    }
    ok
}

fn write_cert(dir: &Path) -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

fn random_file(path: &Path, len: usize) -> String {
    let data: Vec<u8> = (0..len).map(|i| ((i * 2_654_435_761) >> 7) as u8).collect();
    std::fs::write(path, &data).unwrap();
    hex(&Sha256::digest(&data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn start_tcpls_serve(root: &Path, extra: &[&str]) -> (Reaper, u16) {
    // A port another test took meanwhile makes the server exit: try again.
    let mut why = String::new();
    for _ in 0..3 {
        let port = free_port();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--root"])
            .arg(root)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        match try_wait_listening(port, &mut child) {
            Ok(()) => return (Reaper(child), port),
            Err(e) => {
                drop(Reaper(child));
                why = e;
            }
        }
    }
    panic!("tcpls serve did not start: {why}");
}

#[test]
fn get_over_tcpls_fetches_urls_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let sums: Vec<String> = (0..3)
        .map(|i| random_file(&dir.path().join(format!("f{i}")), 3_000_000 + i))
        .collect();
    let (_srv, port) = start_tcpls_serve(dir.path(), &[]);
    let urls: Vec<String> = (0..3)
        .map(|i| format!("https://127.0.0.1:{port}/f{i}"))
        .collect();
    let out = run_bounded(
        Command::new(BIN)
            .arg("get")
            .args(&urls)
            .args(["--insecure", "--json"]),
        b"",
        Duration::from_secs(60),
    );
    let v = json(&out);
    let reports = v.as_array().unwrap();
    assert_eq!(reports.len(), 3);
    for (r, sum) in reports.iter().zip(&sums) {
        assert_eq!(r["sha256"], *sum);
        assert_eq!(r["tcpls"], true);
        assert_eq!(r["status"], 200);
    }
    // A missing file, with --fail, is an error: curl's exit code 22, and
    // the failure is in the JSON report.
    let out = run_bounded(
        Command::new(BIN).args([
            "get",
            &format!("https://127.0.0.1:{port}/nope"),
            "-k",
            "--json",
            "--fail",
        ]),
        b"",
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(22));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["exit_code"], 22);
    assert!(v[0]["error"].as_str().unwrap().contains("404"));
}

#[test]
fn get_verifies_certificates_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    random_file(&dir.path().join("x"), 10);
    let cert = dir.path().join("served-cert.pem");
    let (_srv, port) = start_tcpls_serve(dir.path(), &["--cert-out", cert.to_str().unwrap()]);
    let url = format!("https://localhost:{port}/x");
    let out = run_bounded(
        Command::new(BIN).args(["get", &url, "--json"]),
        b"",
        Duration::from_secs(30),
    );
    assert!(
        !out.status.success(),
        "self-signed certificate must be refused by default"
    );
    let out = run_bounded(
        Command::new(BIN).args(["get", &url, "--json", "--ca", cert.to_str().unwrap()]),
        b"",
        Duration::from_secs(30),
    );
    json(&out);
}

#[test]
fn tcpls_get_against_openssl_s_server_falls_back() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let sum = random_file(&dir.path().join("page.bin"), 1_500_000);
    let port = free_port();
    let mut child = Command::new("openssl")
        .args([
            "s_server",
            "-WWW",
            "-tls1_3",
            "-accept",
            &port.to_string(),
            "-cert",
            &cert,
            "-key",
            &key,
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, &mut child);
    let _srv = Reaper(child);
    let out = run_bounded(
        Command::new(BIN).args([
            "get",
            &format!("https://127.0.0.1:{port}/page.bin"),
            "--insecure",
            "--json",
        ]),
        b"",
        Duration::from_secs(60),
    );
    let v = json(&out);
    assert_eq!(v[0]["tcpls"], false, "s_server is plain TLS");
    assert_eq!(v[0]["sha256"], sum);

    // With a session cache, the second fetch resumes (plain TLS: OpenSSL
    // reads the tickets on both sides).
    let cache = dir.path().join("sessions.json");
    let get = || {
        json(&run_bounded(
            Command::new(BIN)
                .args(["get", &format!("https://127.0.0.1:{port}/page.bin")])
                .args(["--insecure", "--json", "--session-cache"])
                .arg(&cache),
            b"",
            Duration::from_secs(60),
        ))
    };
    assert_eq!(get()[0]["handshake"], "full");
    let v = get();
    assert_eq!(v[0]["handshake"], "resumed");
    assert_eq!(v[0]["sha256"], sum);
    // A plain TLS server's ticket never carries TCPLS early data.
    assert_eq!(v[0]["early_data"], "none");
}

/// Against `tcpls serve`, the second `get` resumes and sends its request
/// as early data (0-RTT), which the server accepts; the third too (the
/// 0-RTT session's fresh ticket came through its 0.5-RTT records).
#[test]
fn get_sends_its_request_as_early_data_when_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let sum = random_file(&dir.path().join("a.bin"), 300_000);
    let (_srv, port) = start_tcpls_serve(dir.path(), &[]);
    let cache = dir.path().join("sessions.json");
    let get = |extra: &[&str]| {
        json(&run_bounded(
            Command::new(BIN)
                .args(["get", &format!("https://127.0.0.1:{port}/a.bin")])
                .args(["-k", "--json", "--session-cache"])
                .arg(&cache)
                .args(extra),
            b"",
            Duration::from_secs(30),
        ))[0]
            .clone()
    };
    let first = get(&[]);
    assert_eq!(first["early_data"], "none", "{first}");
    for _ in 0..2 {
        let v = get(&[]);
        assert_eq!(v["handshake"], "resumed", "{v}");
        assert_eq!(v["early_data"], "accepted", "{v}");
        assert_eq!(v["sha256"], sum);
    }
    let v = get(&["--no-early-data"]);
    assert_eq!(v["early_data"], "none", "{v}");
    assert_eq!(v["handshake"], "resumed", "{v}");
}

#[test]
fn openssl_s_client_against_tcpls_serve_falls_back() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from tcpls serve\n").unwrap();
    let (_srv, port) = start_tcpls_serve(dir.path(), &[]);
    let out = run_bounded(
        Command::new("openssl").args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-quiet",
            "-ign_eof",
            "-tls1_3",
        ]),
        b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "response: {text}");
    assert!(text.contains("hello from tcpls serve"), "response: {text}");
}

#[test]
fn openssl_s_client_resumes_against_tcpls_serve() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from tcpls serve\n").unwrap();
    let (_srv, port) = start_tcpls_serve(dir.path(), &[]);
    let sess = dir.path().join("session.pem");
    let connect = |flag: &str| {
        let out = run_bounded(
            Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                .args(["-ign_eof", "-tls1_3", flag])
                .arg(&sess),
            b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            Duration::from_secs(30),
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains("hello from tcpls serve"), "response: {text}");
        text
    };
    let first = connect("-sess_out");
    assert!(first.contains("New, TLSv1.3"), "{first}");
    assert!(sess.exists(), "s_client saved no session: no ticket came");
    let second = connect("-sess_in");
    assert!(second.contains("Reused, TLSv1.3"), "{second}");
    // A plain TLS client's early data is refused (it would carry no TCPLS
    // frames, and has nowhere to go before the handshake ends).
    let req = dir.path().join("req.txt");
    std::fs::write(&req, "GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let out = run_bounded(
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-tls1_3", "-sess_in"])
            .arg(&sess)
            .arg("-early_data")
            .arg(&req),
        b"",
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Early data was rejected"), "{text}");
}

#[test]
fn perf_prints_ratio_against_tls_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, port) = start_tcpls_serve(dir.path(), &["--perf"]);
    for extra in [&[][..], &["--upload"][..]] {
        let out = run_bounded(
            Command::new(BIN)
                .args([
                    "perf",
                    &format!("127.0.0.1:{port}"),
                    "--bytes",
                    "16M",
                    "--streams",
                    "2",
                ])
                .args(["--baseline", "tls", "--repeat", "1", "--json", "--insecure"])
                .args(extra),
            b"",
            Duration::from_secs(120),
        );
        let v = json(&out);
        assert!(v["tcpls"]["gbps_median"].as_f64().unwrap() > 0.0);
        assert!(v["tls"]["gbps_median"].as_f64().unwrap() > 0.0);
        assert!(v["ratio_tcpls_to_tls"].as_f64().is_some());
    }
}

/// The demo's story: two connections (from 127.0.0.1 and 127.0.0.2), the
/// first reset mid-transfer, a new one joined from its address, every
/// byte verified, a chart written.
#[test]
fn demo_resets_a_connection_and_still_verifies_its_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("demo.png");
    let out = run_bounded(
        Command::new(BIN)
            .args(["demo", "--bytes", "32M", "--json", "--png"])
            .arg(&png),
        b"",
        Duration::from_secs(60),
    );
    let v = json(&out);
    assert_eq!(v["sha256_verified"], true);
    assert_eq!(v["tcpls"], true);
    assert_eq!(v["bytes"], 32 << 20);
    let conns = v["connections"].as_array().unwrap();
    let reset: Vec<_> = conns.iter().filter(|c| c["reset"] == true).collect();
    assert_eq!(reset.len(), 1, "{v}");
    assert!(reset[0]["local"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(
        conns
            .iter()
            .any(|c| c["local"].as_str().unwrap_or("").starts_with("127.0.0.2:")),
        "{v}"
    );
    assert!(v["reset_at_seconds"].as_f64().is_some());
    let events = v["events"].to_string();
    assert!(events.contains("connection 0 failed"), "{events}");
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
}

/// `serve`'s limits from the command line: sessions per address are
/// capped (the extra one is refused, not left hanging) and an idle session
/// is closed after `--idle-timeout`, which gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_caps_sessions_per_address_and_closes_idle_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, port) = start_tcpls_serve(
        dir.path(),
        &["--idle-timeout", "500ms", "--max-sessions-per-ip", "1"],
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = std::sync::Arc::new(tcpls::ClientConfig::builder().insecure().build().unwrap());
    let bound = Duration::from_secs(30);
    tokio::time::timeout(bound, async {
        let first = tcpls::connect(addr, "localhost", cfg.clone())
            .await
            .unwrap();
        assert!(tcpls::connect(addr, "localhost", cfg.clone())
            .await
            .is_err());
        // The client sends nothing: the server closes the session.
        loop {
            match first.next_event().await {
                Some(tcpls::SessionEvent::Closed(_)) | None => break,
                Some(_) => {}
            }
        }
        let mut again = Err(None);
        for _ in 0..100 {
            match tcpls::connect(addr, "localhost", cfg.clone()).await {
                Ok(s) => {
                    again = Ok(s);
                    break;
                }
                Err(e) => again = Err(Some(e)),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(again.is_ok(), "place not given back: {again:?}");
    })
    .await
    .expect("test timed out");
}

/// The short soak: 20 sessions for 3 s of random verified downloads,
/// uploads and resets against `tcpls serve`; nothing lost, nothing wrong,
/// no session failed, and the server's descriptors are back to a handful.
#[test]
fn soak_moves_verified_data_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, port) = start_tcpls_serve(
        dir.path(),
        &[
            "--perf",
            "--max-sessions-per-ip",
            "0",
            "--max-handshakes-per-ip",
            "0",
        ],
    );
    let out = run_bounded(
        Command::new(BIN)
            .args(["soak", &format!("127.0.0.1:{port}"), "-k", "--json"])
            .args([
                "--sessions",
                "20",
                "--duration",
                "3s",
                "--max-transfer",
                "300K",
            ])
            .args(["--server-pid", &srv.0.id().to_string()]),
        b"",
        Duration::from_secs(60),
    );
    let v = json(&out);
    assert_eq!(v["lost_bytes"], 0, "{v}");
    assert_eq!(v["corrupt_transfers"], 0, "{v}");
    assert_eq!(v["sessions_failed"], 0, "{v}");
    assert!(v["transfers"].as_u64().unwrap() > 20, "{v}");
    assert!(v["resets"].as_u64().unwrap() > 0, "{v}");
    assert!(v["downloaded_bytes"].as_u64().unwrap() > 0);
    assert!(v["uploaded_bytes"].as_u64().unwrap() > 0);
    assert!(
        !v["server"].as_array().unwrap().is_empty(),
        "server sampled"
    );
}

/// A congestion controller this process may set that is not the system's
/// default (so that seeing it in use proves someone set it).
fn non_default_cc() -> Option<String> {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{f}")).ok();
    let default = read("tcp_congestion_control")?;
    let allowed = read("tcp_allowed_congestion_control")?;
    ["reno", "cubic", "bbr"]
        .into_iter()
        .find(|n| *n != default.trim() && allowed.split_whitespace().any(|a| a == *n))
        .map(String::from)
}

/// `tcpls perf --upload` of 4 MB to the server on `port`, its JSON report.
fn upload_perf(port: u16, extra: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(BIN);
    cmd.args(["perf", &format!("127.0.0.1:{port}"), "-k", "--bytes", "4M"])
        .args(["--repeat", "1", "--upload", "--json"])
        .args(extra);
    json(&run_bounded(&mut cmd, b"", Duration::from_secs(60)))
}

/// Transport options over the secure channel (TRANSPORT_OPTION): the
/// server asks each client to send with a congestion controller; the
/// client's upload connection then uses it (read back with getsockopt),
/// unless the client's --accept-cc refuses it, in which case the session
/// goes on with the default and both sides say why. The client's own
/// request to the server is answered too.
#[test]
fn the_server_chooses_the_clients_congestion_controller() {
    let Some(cc) = non_default_cc() else {
        eprintln!("SKIP: no congestion controller besides the default may be set here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_srv, port) = start_tcpls_serve(dir.path(), &["--perf", "--peer-cc", &cc]);
    let perf = |extra: &[&str]| upload_perf(port, extra);
    let events = |v: &serde_json::Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[1].as_str().unwrap().to_string())
            .collect()
    };
    let v = perf(&["--peer-cc", "cubic"]);
    assert_eq!(
        v["connections"][0]["congestion_control"],
        cc.as_str(),
        "{v}"
    );
    let ev = events(&v);
    let asked = format!("peer asked congestion_control={cc} on all connections: applied");
    assert!(ev.contains(&asked), "{ev:?}");
    assert!(
        ev.iter()
            .any(|e| e.starts_with("asked the peer congestion_control=cubic")
                && e.ends_with("applied")),
        "the server answered the client's request: {ev:?}"
    );

    let default = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap();
    let v = perf(&["--accept-cc", default.trim()]);
    assert_eq!(
        v["connections"][0]["congestion_control"],
        default.trim(),
        "{v}"
    );
    let ev = events(&v);
    assert!(
        ev.iter().any(
            |e| e.starts_with(&format!("peer asked congestion_control={cc}"))
                && e.contains("refused")
        ),
        "the refusal is reported: {ev:?}"
    );
}

/// A congestion controller shipped as eBPF through the CLI: `serve
/// --peer-cc tcpls_vegas --peer-cc-program vegas.bpf.o` ships the object,
/// a client whose --accept-cc-programs lists its SHA-256 loads it and its
/// upload connection uses it (getsockopt, in --json); a client with the
/// default policy refuses it and goes on with its default. Root only.
#[cfg(feature = "bpf-cc")]
#[test]
fn the_server_ships_a_bpf_congestion_controller() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: loading BPF congestion controllers needs root");
        return;
    }
    if std::process::Command::new("clang")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: clang is missing (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bpf = dir.path().join("bpf");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/build.sh");
    assert!(Command::new(script).arg(&bpf).status().unwrap().success());
    let object = bpf.join("vegas.bpf.o");
    let digest = hex::encode(openssl::sha::sha256(&std::fs::read(&object).unwrap()));
    let object = object.to_str().unwrap();
    let (_srv, port) = start_tcpls_serve(
        dir.path(),
        &[
            "--perf",
            "--peer-cc",
            "tcpls_vegas",
            "--peer-cc-program",
            object,
        ],
    );
    let perf = |extra: &[&str]| upload_perf(port, extra);
    let v = perf(&["--accept-cc-programs", &digest]);
    assert_eq!(
        v["connections"][0]["congestion_control"], "tcpls_vegas",
        "{v}"
    );
    let asked = format!(
        "peer asked congestion_program=tcpls_vegas sha256={digest} on all connections: applied"
    );
    assert!(v["events"].to_string().contains(&asked), "{v}");

    let v = perf(&[]);
    assert_ne!(
        v["connections"][0]["congestion_control"], "tcpls_vegas",
        "{v}"
    );
    assert!(
        v["events"].to_string().contains("not accepted here"),
        "the refusal is reported: {v}"
    );
    let available =
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").unwrap();
    assert!(
        !available.contains("tcpls_vegas"),
        "unregistered: {available}"
    );
}

/// `serve` as a service: it takes the listening socket systemd passes
/// (socket activation: LISTEN_FDS, fd 3), logs each request with its
/// status, bytes and duration, and on SIGTERM stops accepting, closes
/// every session with a reason the client sees (a clean close, not a
/// failure it would rejoin after) and exits with success.
#[test]
fn serve_runs_as_a_service() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.bin"), vec![7u8; 100_000]).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log_path = dir.path().join("serve.log");
    let mut cmd = Command::new("bash");
    cmd.args([
        "-c",
        r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#,
        BIN,
        "serve",
        "-v",
    ])
    .arg("--root")
    .arg(dir.path())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log_path).unwrap());
    let fd = listener.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec; the
    // listening socket becomes fd 3 without close-on-exec (dup's copy has
    // none), as systemd passes it.
    unsafe {
        cmd.pre_exec(move || {
            let copy = libc::dup(fd);
            if copy < 0 || (copy != 3 && libc::dup2(copy, 3) < 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = Reaper(cmd.spawn().unwrap());
    drop(listener);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = std::sync::Arc::new(tcpls::ClientConfig::builder().insecure().build().unwrap());
    let session = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            let session = tcpls::connect(addr, "localhost", cfg).await.unwrap();
            let mut s = session.open_stream().await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /a.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            s.shutdown().await.unwrap();
            let mut response = Vec::new();
            s.read_to_end(&mut response).await.unwrap();
            assert!(
                response.starts_with(b"HTTP/1.1 200"),
                "{:?}",
                &response[..20]
            );
            session
        })
        .await
        .expect("the request through the inherited listener timed out")
    });
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) },
        0
    );
    let why = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), session.closed()).await })
        .expect("the session was not closed");
    assert!(
        matches!(&why, tcpls_proto::Error::PeerClosed { reason, .. } if reason == "server shutting down"),
        "a clean close with the reason: {why:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = server.0.try_wait().unwrap() {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("inherited listener"), "{log}");
    let sent: Option<u64> = log
        .lines()
        .find_map(|l| l.split_once("GET /a.bin 200 "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok());
    assert!(
        sent.is_some_and(|n| n > 100_000),
        "the request's log line, with status and bytes: {log}"
    );
    assert!(log.contains("closed 1 session"), "{log}");
}

/// Interop with a server nobody here wrote: `tcpls get` against nginx
/// (TLS 1.3, so the plain-TLS fallback path), many runs; none may fail and
/// every body's SHA-256 matches.
#[test]
fn get_against_nginx_never_fails() {
    use std::os::unix::fs::PermissionsExt;
    let Some(nginx) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("SKIP: nginx is not installed (scripts/setup.sh installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // nginx's workers may run as another user: everything readable.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sha = random_file(&www.join("file.bin"), 3_000_000);
    std::fs::set_permissions(www.join("file.bin"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (cert, key) = write_cert(dir.path());
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        // One process (no master and worker): killing it leaves nothing
        // behind (a killed master's worker lived on).
        "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;
         events {{ worker_connections 64; }}
         http {{
           access_log off;
           client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
           uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
           server {{
             listen 127.0.0.1:{port} ssl;
             ssl_certificate {cert}; ssl_certificate_key {key};
             ssl_protocols TLSv1.3;
             root {www};
           }}
         }}",
        www = www.display()
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut child = Command::new(nginx)
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, &mut child);
    let _nginx = Reaper(child);
    for run in 0..40 {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "get",
            &format!("https://127.0.0.1:{port}/file.bin"),
            "-k",
            "--json",
        ]);
        let out = run_bounded(&mut cmd, b"", Duration::from_secs(30));
        let v = json(&out);
        assert_eq!(v[0]["sha256"], sha.as_str(), "run {run}: {v}");
        assert_eq!(v[0]["tcpls"], false);
    }
}

/// A plain TLS 1.3 server (OpenSSL, no TCPLS) that answers each
/// connection's request with `response` and then closes TCP without
/// close_notify, as servers often do. Returns its port.
fn abrupt_tls_server(dir: &Path, responses: Vec<Vec<u8>>) -> u16 {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
    use std::io::{Read, Write};
    let (cert, key) = write_cert(dir);
    let mut b = SslAcceptor::mozilla_modern_v5(SslMethod::tls_server()).unwrap();
    b.set_certificate_chain_file(&cert).unwrap();
    b.set_private_key_file(&key, SslFiletype::PEM).unwrap();
    let acceptor = b.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (tcp, response) in listener.incoming().zip(responses) {
            let Ok(tcp) = tcp else { continue };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(mut tls) = acceptor.accept(tcp) else {
                continue;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = tls.write_all(&response);
            // Dropped without shutdown(): the TCP connection just closes.
        }
    });
    port
}

/// A plain TLS server that closes TCP right after its response, without
/// close_notify: a complete message (Content-Length reached, or chunked
/// to its last chunk) is a success, as curl has it; an incomplete one is
/// reported as truncated with curl's exit code 18, never as a success.
#[test]
fn get_tells_complete_responses_from_truncated_ones_when_tls_ends_abruptly() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 249) as u8).collect();
    let with_length = |len: usize, sent: usize| {
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
        r.extend_from_slice(&body[..sent]);
        r
    };
    let chunked = |complete: bool| {
        let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        r.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        r.extend_from_slice(&body);
        r.extend_from_slice(b"\r\n");
        if complete {
            r.extend_from_slice(b"0\r\n\r\n");
        }
        r
    };
    let port = abrupt_tls_server(
        dir.path(),
        vec![
            with_length(body.len(), body.len()),
            chunked(true),
            with_length(body.len(), body.len() / 2),
            chunked(false),
        ],
    );
    let get = || {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "get",
            &format!("https://127.0.0.1:{port}/x"),
            "-k",
            "--json",
        ]);
        run_bounded(&mut cmd, b"", Duration::from_secs(30))
    };
    let sha = hex(&Sha256::digest(&body));
    for what in ["content-length", "chunked"] {
        let out = get();
        assert!(out.status.success(), "{what}: {out:?}");
        assert_eq!(json(&out)[0]["sha256"], sha.as_str(), "{what}");
    }
    for what in ["content-length", "chunked"] {
        let out = get();
        assert_eq!(out.status.code(), Some(18), "{what} truncated: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("ended"), "{what}: {err}");
    }
}

/// What a browser needs of `serve` (over its plain TLS path, with curl):
/// a directory gives its index.html, content types follow file names,
/// HEAD gives the head alone, and a byte range gives 206 with just those
/// bytes (resumable downloads, video), or 416 when unsatisfiable.
#[test]
fn serve_answers_as_browsers_expect() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP: curl is not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>hi</h1>").unwrap();
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("clip.mp4"), &body).unwrap();
    let (_srv, port) = start_tcpls_serve(dir.path(), &[]);
    let curl = |args: &[&str]| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "--max-time", "20"]).args(args);
        let out = run_bounded(&mut cmd, b"", Duration::from_secs(30));
        assert!(out.status.success(), "curl {args:?} failed");
        out.stdout
    };
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    let head = String::from_utf8(curl(&["-D", "-", "-o", "/dev/null", &url("/")])).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("content-type: text/html"),
        "{head}"
    );
    assert_eq!(curl(&[&url("/")]), b"<h1>hi</h1>");
    let head = String::from_utf8(curl(&["-I", &url("/clip.mp4")])).unwrap();
    assert!(
        head.to_lowercase().contains("content-type: video/mp4"),
        "{head}"
    );
    assert!(head.contains("Content-Length: 50000"), "{head}");
    assert_eq!(
        curl(&["-r", "1000-1999", &url("/clip.mp4")]),
        &body[1000..2000]
    );
    let head = String::from_utf8(curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-r",
        "-10",
        &url("/clip.mp4"),
    ]))
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(
        head.contains("Content-Range: bytes 49990-49999/50000"),
        "{head}"
    );
    let head = String::from_utf8(curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-r",
        "60000-",
        &url("/clip.mp4"),
    ]))
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 416"), "{head}");
}

#[test]
fn mutual_tls_and_the_self_signed_hint() {
    let dir = tempfile::tempdir().unwrap();
    let sum = random_file(&dir.path().join("a.bin"), 100_000);
    let ck = rcgen::generate_simple_self_signed(vec!["client.example".into()]).unwrap();
    let (ccert, ckey) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&ccert, ck.cert.pem()).unwrap();
    std::fs::write(&ckey, ck.key_pair.serialize_pem()).unwrap();
    let cert_out = dir.path().join("server.pem");
    let (_srv, port) = start_tcpls_serve(
        dir.path(),
        &[
            "--client-ca",
            ccert.to_str().unwrap(),
            "--cert-out",
            cert_out.to_str().unwrap(),
        ],
    );
    let url = format!("https://127.0.0.1:{port}/a.bin");
    let get = |extra: &[&str]| {
        run_bounded(
            Command::new(BIN)
                .args(["get", &url, "--json", "--no-session-cache"])
                .args(extra),
            b"",
            Duration::from_secs(30),
        )
    };
    // No trust in the server's self-signed certificate: a hint says what to do.
    let out = get(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hint: self-signed"), "{err}");
    // Trusted server, but no client certificate: refused.
    let ca = cert_out.to_str().unwrap();
    assert!(!get(&["--ca", ca]).status.success());
    // With the client certificate: served.
    let out = get(&[
        "--ca",
        ca,
        "--cert",
        ccert.to_str().unwrap(),
        "--key",
        ckey.to_str().unwrap(),
    ]);
    let v = json(&out);
    assert_eq!(v[0]["sha256"], sum);
}

/// A TCPLS server of canned responses for `get`'s HTTP handling: a chunked
/// body, redirects (same host and to another port), an error page.
async fn canned_server() -> (u16, u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let cfg = tcpls::ServerConfig::builder()
            .self_signed(&["localhost"])
            .unwrap()
            .build()
            .unwrap();
        let server = tcpls::Server::bind("127.0.0.1:0".parse().unwrap(), std::sync::Arc::new(cfg))
            .await
            .unwrap();
        ports.push(server.local_addr().unwrap().port());
        let body = body.clone();
        tokio::spawn(async move {
            while let Ok(session) = server.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    while let Ok(mut s) = session.accept_stream().await {
                        let body = body.clone();
                        tokio::spawn(async move {
                            let mut req = Vec::new();
                            let mut buf = [0u8; 1024];
                            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                                match s.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => req.extend_from_slice(&buf[..n]),
                                }
                            }
                            let line = String::from_utf8_lossy(&req).to_string();
                            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                            let mut out = Vec::new();
                            match path.as_str() {
                                "/chunked" => {
                                    out.extend_from_slice(
                                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                    );
                                    for c in body.chunks(7_777) {
                                        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                                        out.extend_from_slice(c);
                                        out.extend_from_slice(b"\r\n");
                                    }
                                    out.extend_from_slice(b"0\r\nX-Done: yes\r\n\r\n");
                                }
                                "/redirect" => out.extend_from_slice(
                                    b"HTTP/1.1 302 Found\r\nLocation: /chunked\r\nContent-Length: 0\r\n\r\n",
                                ),
                                p if p.starts_with("/elsewhere/") => {
                                    let port = &p["/elsewhere/".len()..];
                                    out.extend_from_slice(format!(
                                        "HTTP/1.1 301 Moved\r\nLocation: https://localhost:{port}/redirect\r\nContent-Length: 0\r\n\r\n"
                                    ).as_bytes());
                                }
                                _ => out.extend_from_slice(
                                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
                                ),
                            }
                            let _ = s.write_all(&out).await;
                            let _ = s.shutdown().await;
                        });
                    }
                });
            }
        });
    }
    (ports[0], ports[1], body)
}

/// `get`'s HTTP and curl conventions: chunked bodies, `-L` (same host and
/// across hosts), `--fail`, `--resolve`, `--connect-timeout` and the exit
/// codes 6, 7, 22, 28 and 60.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_speaks_http_as_curl_does() {
    let (a, b, body) = canned_server().await;
    let sum = hex(&Sha256::digest(&body));
    let get = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            run_bounded(
                Command::new(BIN).arg("get").args(&args).args([
                    "--no-session-cache",
                    "--fallback-after",
                    "10s",
                ]),
                b"",
                Duration::from_secs(60),
            )
        })
        .await
        .unwrap()
    };
    let url = |port: u16, path: &str| format!("https://localhost:{port}{path}");
    // Chunked.
    let v = json(&get(vec![url(a, "/chunked"), "-k".into(), "--json".into()]).await);
    assert_eq!(v[0]["sha256"], sum, "{v}");
    // A redirect not followed is the response itself.
    let v = json(&get(vec![url(a, "/redirect"), "-k".into(), "--json".into()]).await);
    assert_eq!(v[0]["status"], 302, "{v}");
    // Followed: to the same host, and from another host.
    let v = json(
        &get(vec![
            url(b, &format!("/elsewhere/{a}")),
            "-k".into(),
            "-L".into(),
            "--json".into(),
        ])
        .await,
    );
    assert_eq!(v[0]["status"], 200, "{v}");
    assert_eq!(v[0]["sha256"], sum, "{v}");
    assert_eq!(v[0]["redirects"].as_array().unwrap().len(), 2, "{v}");
    // --fail: 22; without it the error page is the body, exit 0.
    let out = get(vec![url(a, "/missing"), "-k".into(), "--fail".into()]).await;
    assert_eq!(out.status.code(), Some(22));
    let out = get(vec![url(a, "/missing"), "-k".into()]).await;
    assert!(out.status.success());
    assert_eq!(out.stdout, b"nope");
    // --resolve: a name that does not exist, pointed at the server.
    let out = get(vec![
        "https://tcpls.invalid:443/chunked".into(),
        "-k".into(),
        "--json".into(),
        "--resolve".into(),
        format!("tcpls.invalid:443:127.0.0.1"),
    ])
    .await;
    assert_eq!(out.status.code(), Some(7), "port 443 is closed here");
    let out = get(vec![
        format!("https://tcpls.invalid:{a}/chunked"),
        "-k".into(),
        "--json".into(),
        "--resolve".into(),
        format!("tcpls.invalid:{a}:127.0.0.1"),
    ])
    .await;
    assert_eq!(json(&out)[0]["sha256"], sum);
    // Exit codes: no such host (6), nobody listening (7), self-signed
    // without --ca or -k (60), a server that never answers (28).
    let out = get(vec!["https://tcpls.invalid/".into()]).await;
    assert_eq!(out.status.code(), Some(6));
    let closed = free_port();
    let out = get(vec![url(closed, "/")]).await;
    assert_eq!(out.status.code(), Some(7));
    let out = get(vec![url(a, "/chunked")]).await;
    assert_eq!(out.status.code(), Some(60));
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let out = get(vec![
        url(port, "/"),
        "-k".into(),
        "--connect-timeout".into(),
        "1s".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(28));
    drop(silent);
}

/// `tcpls connect`: what was negotiated on standard error, the stream's
/// bytes on standard output; the end of standard input half-closes.
#[test]
fn connect_shows_the_session_and_relays_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from tcpls serve\n").unwrap();
    let (_srv, port) = start_tcpls_serve(dir.path(), &[]);
    let out = run_bounded(
        Command::new(BIN).args([
            "connect",
            &format!("localhost:{port}"),
            "-k",
            "--alpn",
            "http/1.1",
            "--no-session-cache",
        ]),
        b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("hello from tcpls serve"), "{text}");
    let info = String::from_utf8_lossy(&out.stderr);
    for want in [
        "TCPLS",
        "as localhost",
        "cipher suite TLS_",
        "ALPN http/1.1",
        "certificate 0: subject",
        "failover on",
    ] {
        assert!(info.contains(want), "{want:?} missing: {info}");
    }
}

/// A real browser: headless Chromium loads a page from `tcpls serve` (its
/// plain TLS path, ALPN http/1.1) whose script fetches a 50 MiB file and
/// writes its length and SHA-256 into the page, which Chromium dumps.
#[test]
fn headless_chromium_loads_a_page_and_a_50_mib_file() {
    let ok = Command::new("chromium-headless-shell")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: chromium-headless-shell is not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sum = random_file(&dir.path().join("big.bin"), 50 << 20);
    std::fs::write(
        dir.path().join("index.html"),
        r#"<!doctype html><html><head><title>tcpls</title></head><body><p id="s">loading</p>
<script>
fetch('/big.bin').then(r => r.arrayBuffer()).then(async b => {
  const h = new Uint8Array(await crypto.subtle.digest('SHA-256', b));
  const hex = Array.from(h).map(x => x.toString(16).padStart(2, '0')).join('');
  document.getElementById('s').textContent = 'fetched ' + b.byteLength + ' ' + hex;
}).catch(e => { document.getElementById('s').textContent = 'error ' + e; });
</script></body></html>"#,
    )
    .unwrap();
    let (_srv, port) = start_tcpls_serve(dir.path(), &[]);
    let profile = tempfile::tempdir().unwrap();
    let out = run_bounded(
        Command::new("chromium-headless-shell")
            .args([
                "--no-sandbox",
                "--disable-gpu",
                "--ignore-certificate-errors",
                "--virtual-time-budget=60000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("https://127.0.0.1:{port}/")),
        b"",
        Duration::from_secs(120),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(&format!("fetched {} {sum}", 50 << 20)),
        "page: {dom}\nchromium: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
