//! Congestion controllers shipped as eBPF (TRANSPORT_OPTION 3), for real:
//! the server sends a BPF object built from bpf/*.bpf.c; the client loads
//! it into the kernel when its policy allows, its connections use it, and
//! it is unregistered when the session ends. Refusals (policy, verifier)
//! leave the session working. Needs root and clang; skips otherwise.
#![cfg(feature = "bpf-cc")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tcpls::{CcProgramPolicy, PeerOption, Server, SessionEvent, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Builds the objects with bpf/build.sh into `out`; `None` (with the
/// reason printed) when this machine cannot load them.
fn build_programs(out: &Path) -> Option<()> {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: loading BPF congestion controllers needs root");
        return None;
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!("SKIP: the kernel has no BTF (/sys/kernel/btf/vmlinux)");
        return None;
    }
    if Command::new("clang").arg("--version").output().is_err() {
        eprintln!("SKIP: clang is missing (scripts/setup.sh installs it)");
        return None;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bpf/build.sh");
    let st = Command::new(script).arg(out).status().unwrap();
    assert!(st.success(), "bpf/build.sh failed");
    Some(())
}

fn available() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").unwrap()
}

/// What one session ends with: the client's answer, the controller its
/// connection used, and whether the session still carried data after.
struct Outcome {
    applied: Result<(), String>,
    answered: Result<(), String>,
    in_use: Option<String>,
    echoed: bool,
}

/// A server that ships `program` (registering `name`) to its client,
/// whose policy is `policy`.
async fn ship(name: &str, program: Vec<u8>, policy: CcProgramPolicy) -> Outcome {
    let t = TransportConfig {
        peer_cc_programs: policy,
        ..Default::default()
    };
    let (s, c) = common::configs(t);
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), s)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let option = PeerOption::congestion_program(name, program);
    let srv = tokio::spawn(async move {
        let session = server.accept().await.unwrap();
        session.set_peer_option(None, option).unwrap();
        let (mut tx, mut rx) = session.accept_stream().await.unwrap().split();
        let mut buf = Vec::new();
        rx.read_to_end(&mut buf).await.unwrap();
        tx.write_all(&buf).await.unwrap();
        tx.finish().await.unwrap();
        loop {
            match session.next_event().await {
                Some(SessionEvent::PeerOptionAnswered { answer, .. }) => break answer,
                Some(_) => {}
                None => break Err("no answer".into()),
            }
        }
    });
    let session = tcpls::connect(addr, "localhost", c).await.unwrap();
    let applied = loop {
        match session.next_event().await {
            Some(SessionEvent::PeerOption { applied, .. }) => break applied,
            Some(_) => {}
            None => panic!("the session ended before the program was answered"),
        }
    };
    let in_use = session
        .connection_stats()
        .first()
        .and_then(|s| s.congestion_control.clone());
    // The session goes on, whatever the answer.
    let (mut tx, mut rx) = session.open_stream().await.unwrap().split();
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    tx.write_all(&payload).await.unwrap();
    tx.finish().await.unwrap();
    let mut back = Vec::new();
    rx.read_to_end(&mut back).await.unwrap();
    let answered = srv.await.unwrap();
    session.close(0, "done");
    session.closed().await;
    Outcome {
        applied,
        answered,
        in_use,
        echoed: back == payload,
    }
}

/// Waits until the process holds no program any more.
async fn all_unregistered() -> bool {
    for _ in 0..100 {
        if tcpls::loaded_congestion_programs().is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_bpf_congestion_controller_is_loaded_used_and_unloaded() {
    let dir = tempfile::tempdir().unwrap();
    if build_programs(dir.path()).is_none() {
        return;
    }
    let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
    let digest = |b: &[u8]| openssl::sha::sha256(b);
    tokio::time::timeout(Duration::from_secs(120), async {
        // Allowed by its digest: loaded, registered, used, then gone.
        let reno = read("reno.bpf.o");
        let o = ship(
            "tcpls_reno",
            reno.clone(),
            CcProgramPolicy::Digests(vec![digest(&reno)]),
        )
        .await;
        assert_eq!(o.applied, Ok(()));
        assert_eq!(o.answered, Ok(()));
        assert_eq!(
            o.in_use.as_deref(),
            Some("tcpls_reno"),
            "read back with getsockopt"
        );
        assert!(o.echoed);
        assert!(all_unregistered().await, "unregistered after the session");
        assert!(!available().contains("tcpls_reno"), "{}", available());

        // The delay-based example passes the verifier too.
        let o = ship("tcpls_vegas", read("vegas.bpf.o"), CcProgramPolicy::Any).await;
        assert_eq!(o.applied, Ok(()));
        assert_eq!(o.in_use.as_deref(), Some("tcpls_vegas"));
        assert!(o.echoed);
        assert!(all_unregistered().await);

        // A digest outside the allowlist: refused, the session goes on.
        let o = ship("tcpls_reno", reno, CcProgramPolicy::Digests(vec![[7; 32]])).await;
        let why = o.applied.unwrap_err();
        assert!(why.contains("SHA-256"), "{why}");
        assert!(o.answered.unwrap_err().contains("SHA-256"));
        assert_ne!(o.in_use.as_deref(), Some("tcpls_reno"));
        assert!(o.echoed);
        assert!(!available().contains("tcpls_reno"));

        // Refused by the verifier: reported to both sides, nothing
        // registered, the session goes on.
        let o = ship(
            "tcpls_rejected",
            read("rejected.bpf.o"),
            CcProgramPolicy::Any,
        )
        .await;
        let why = o.applied.unwrap_err();
        assert!(
            why.contains("verifier") && why.contains("tcp_sock"),
            "{why}"
        );
        assert!(o.answered.unwrap_err().contains("verifier"));
        assert!(o.echoed);
        assert!(!available().contains("tcpls_rejected"));

        // A name the program does not register: refused, unregistered.
        let o = ship("tcpls_other", read("reno.bpf.o"), CcProgramPolicy::Any).await;
        assert!(o.applied.is_err(), "{:?}", o.applied);
        assert!(o.echoed);
        assert!(all_unregistered().await);
        assert!(!available().contains("tcpls_reno"));
    })
    .await
    .expect("test timed out");
}
