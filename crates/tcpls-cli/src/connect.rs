//! `tcpls connect HOST:PORT`: an interactive session in the manner of
//! `openssl s_client`. It prints what the handshake negotiated (TCPLS or
//! plain TLS, suite, ALPN, resumption, Fast Open), the server's
//! certificate chain and its TCPLS parameters on standard error, then
//! copies standard input to one stream and the stream to standard output.
//! The end of standard input finishes the stream (a half-close); the
//! command ends when the server finishes its side.

use anyhow::{Context, Result};
use openssl::x509::X509;

use crate::client::ClientOpts;
use crate::units::HostPort;

#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// The server, HOST:PORT.
    #[arg(value_parser = crate::units::parse_host_port)]
    pub addr: HostPort,
    /// Server name for SNI and the certificate check (default: the host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// ALPN protocol to offer (repeatable, preferred first).
    #[arg(long)]
    pub alpn: Vec<String>,
    /// Print nothing about the session, only the stream's bytes.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(args: ConnectArgs) -> Result<()> {
    let alpn: Vec<&[u8]> = args.alpn.iter().map(|a| a.as_bytes()).collect();
    let cfg = args
        .client
        .tcpls_config_alpn(tcpls::TransportConfig::default(), &alpn)?;
    let name = args.server_name.clone().unwrap_or_else(|| {
        crate::units::host_of(&args.addr.text)
            .unwrap_or("localhost")
            .to_string()
    });
    let session = args
        .client
        .open_session(&[args.addr.addr], &name, cfg.clone())
        .await?;
    args.client.save_session_cache(&cfg);
    if !args.quiet {
        for line in describe(&session) {
            eprintln!("{line}");
        }
        eprintln!("---");
    }
    let stream = session.open_stream().await?;
    let (mut rx, mut tx) = tokio::io::split(stream);
    let upload = tokio::spawn(async move {
        tokio::io::copy(&mut tokio::io::stdin(), &mut tx).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut tx).await
    });
    // The server's end of the stream ends the command, whatever standard
    // input still does.
    let mut stdout = tokio::io::stdout();
    tokio::io::copy(&mut rx, &mut stdout)
        .await
        .context("reading the stream")?;
    tokio::io::AsyncWriteExt::flush(&mut stdout).await?;
    upload.abort();
    session.close(0, "done");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), session.drained()).await;
    Ok(())
}

/// What the session negotiated and who the server is, a line each.
fn describe(s: &tcpls::Session) -> Vec<String> {
    let mut out = vec![format!(
        "connected to {}{}, {}",
        s.peer_addr().map_or("?".into(), |a| a.to_string()),
        s.server_name()
            .map_or(String::new(), |n| format!(" as {n}")),
        match (s.is_tcpls(), s.fallback_reason()) {
            (true, _) => "TCPLS".to_string(),
            (false, Some(why)) => format!("plain TLS (fell back: {why})"),
            (false, None) => "plain TLS (the server does not speak TCPLS)".to_string(),
        }
    )];
    out.push(format!(
        "cipher suite {}, key exchange {}, {} handshake{}, ALPN {}",
        s.cipher_suite().map_or("?", |c| c.name()),
        s.key_exchange()
            .unwrap_or_else(|| "none (resumed without)".into()),
        s.handshake_kind().map_or("?", tcpls::HandshakeKind::as_str),
        if s.used_fast_open() {
            ", TCP Fast Open"
        } else {
            ""
        },
        s.alpn()
            .map_or("none".into(), |a| String::from_utf8_lossy(&a).into_owned())
    ));
    for (i, der) in s.peer_certificates_der().iter().enumerate() {
        match X509::from_der(der) {
            Ok(c) => out.push(format!(
                "certificate {i}: subject {}; issuer {}; valid {} to {}",
                names(c.subject_name()),
                names(c.issuer_name()),
                c.not_before(),
                c.not_after()
            )),
            Err(e) => out.push(format!("certificate {i}: unreadable ({e})")),
        }
    }
    if let Some(p) = s.peer_params() {
        out.push(format!(
            "server's TCPLS parameters: window {} B per stream, {} B per session, {} streams, {} connections, user timeout {} ms, failover {}",
            p.initial_max_stream_data,
            p.initial_max_data,
            p.max_streams,
            p.max_connections,
            p.user_timeout_ms,
            if p.failover { "on" } else { "off" }
        ));
        out.push(format!(
            "join tokens: {}, connections: {}",
            s.available_tokens(),
            s.connections().len()
        ));
    }
    out
}

fn names(n: &openssl::x509::X509NameRef) -> String {
    let parts: Vec<String> = n
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                String::from_utf8_lossy(e.data().as_slice())
            )
        })
        .collect();
    parts.join(", ")
}
