//! `tcpls demo`: a server and a client on loopback, a verified transfer.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use indicatif::ProgressBar;
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tcpls::{ClientConfig, Server, ServerConfig};

use crate::get::{fetch, Sink};
use crate::units::{gbps, human, parse_bytes};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Total bytes to transfer (K, M, G suffixes).
    #[arg(long, default_value = "256M", value_parser = parse_bytes)]
    pub bytes: u64,
    /// Files fetched in parallel, one stream each.
    #[arg(long, default_value_t = 4)]
    pub streams: u32,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct DemoReport {
    tcpls: bool,
    cipher: Option<String>,
    streams: u32,
    bytes: u64,
    seconds: f64,
    gbps: f64,
    sha256_verified: bool,
}

pub async fn run(args: DemoArgs) -> Result<()> {
    if args.streams == 0 {
        bail!("--streams must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path().canonicalize()?;
    let per = args.bytes / args.streams as u64;
    let mut expected = Vec::new();
    let mut rng = rand::rngs::StdRng::from_entropy();
    for i in 0..args.streams {
        let mut hasher = Sha256::new();
        let mut file = Vec::with_capacity(per as usize);
        let mut block = vec![0u8; 1 << 20];
        while (file.len() as u64) < per {
            let k = (per - file.len() as u64).min(block.len() as u64) as usize;
            rng.fill_bytes(&mut block[..k]);
            file.extend_from_slice(&block[..k]);
        }
        hasher.update(&file);
        std::fs::write(root.join(format!("file{i}.bin")), &file)?;
        expected.push(hex::encode(hasher.finalize()));
    }

    let server_cfg = Arc::new(
        ServerConfig::builder()
            .self_signed(&["localhost"])?
            .build()?,
    );
    // Verification stays on: the client trusts exactly the demo certificate.
    let client_cfg = Arc::new(
        ClientConfig::builder()
            .root_certificates_pem(&server_cfg.certificate_pem)?
            .build()?,
    );
    let server = Server::bind("127.0.0.1:0".parse()?, server_cfg).await?;
    let addr = server.local_addr()?;
    let site = crate::serve::Site {
        root: Some(root.clone()),
        perf_max: None,
        request_timeout: std::time::Duration::from_secs(10),
    };
    tokio::spawn(crate::serve::serve(server, site, None));
    if !args.json {
        eprintln!(
            "demo: server on {addr}, {} files of {}",
            args.streams,
            human(per)
        );
    }

    let session = tcpls::connect(addr, "localhost", client_cfg).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.streams {
        let stream = session.open_stream().await?;
        let bar = if args.json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(per)
        };
        tasks.push(tokio::spawn(async move {
            let r = fetch(
                stream,
                "localhost",
                &format!("/file{i}.bin"),
                true,
                &Sink::Discard,
                &bar,
            )
            .await;
            bar.finish_and_clear();
            r
        }));
    }
    let mut ok = true;
    let mut total = 0;
    for (t, want) in tasks.into_iter().zip(&expected) {
        let got = t.await??;
        total += got.bytes;
        ok &= &got.sha256 == want;
    }
    let secs = start.elapsed().as_secs_f64();
    let report = DemoReport {
        tcpls: session.is_tcpls(),
        cipher: session.cipher_suite().map(|c| c.name().to_string()),
        streams: args.streams,
        bytes: total,
        seconds: secs,
        gbps: gbps(total, secs),
        sha256_verified: ok,
    };
    session.close(0, "demo done");
    // Let the CLOSE frame reach the server before the runtime stops.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), session.drained()).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "demo: {} over {} {} stream(s) ({}) in {:.3} s = {:.2} Gbit/s; SHA-256 {}",
            human(total),
            args.streams,
            if report.tcpls { "TCPLS" } else { "plain TLS" },
            report.cipher.as_deref().unwrap_or("?"),
            secs,
            report.gbps,
            if ok { "verified" } else { "MISMATCH" }
        );
    }
    if !ok || !report.tcpls {
        bail!("demo failed: data mismatch or no TCPLS");
    }
    Ok(())
}
