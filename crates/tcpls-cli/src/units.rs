//! Human-friendly byte counts and rates.

use std::time::Duration;

use anyhow::{bail, Result};

/// Parses `4G`, `100M`, `64K`, `1234` (binary multiples).
pub fn parse_bytes(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => bail!("unknown unit in {s:?} (use K, M, G or T)"),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("not a byte count: {s:?}"))?;
    if !n.is_finite() || n < 0.0 {
        bail!("not a byte count: {s:?}");
    }
    Ok((n * mult as f64) as u64)
}

/// Gbit/s for `bytes` in `secs`.
pub fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs.max(1e-9) / 1e9
}

/// `1.5 GiB`-style rendering.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Parses `250ms`, `2s`, `1.5s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        return Err(format!("{s:?}: use a unit, e.g. 500ms, 2s, 10m or 1h"));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("not a positive duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

#[cfg(test)]
mod tests {

    #[test]
    fn host_port_arguments_resolve_and_keep_their_name() {
        let h = super::parse_host_port("localhost:4443").unwrap();
        assert!(h.addr.ip().is_loopback() && h.addr.port() == 4443);
        assert_eq!(h.name(), Some("localhost"));
        let a = super::parse_host_port("127.0.0.1:1").unwrap();
        assert_eq!(a.name(), None);
        assert_eq!(super::parse_host_port("[::1]:2").unwrap().name(), None);
        assert!(super::parse_host_port("no-port").is_err());
    }
    use super::*;

    #[test]
    fn byte_units() {
        assert_eq!(parse_bytes("4G").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("100M").unwrap(), 100 << 20);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert_eq!(parse_bytes("77").unwrap(), 77);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert!(parse_bytes("3Q").is_err());
        assert!(parse_bytes("x").is_err());
    }

    #[test]
    fn duration_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}

/// A `HOST:PORT` argument resolved to its first address, remembering the
/// host (for certificate names and messages).
#[derive(Clone, Debug)]
pub struct HostPort {
    /// What was given.
    pub text: String,
    /// The first address it resolves to.
    pub addr: std::net::SocketAddr,
}

impl HostPort {
    /// The host when it is a name rather than an address.
    pub fn name(&self) -> Option<&str> {
        let host = host_of(&self.text)?;
        host.parse::<std::net::IpAddr>().is_err().then_some(host)
    }
}

/// The host part of `HOST:PORT` (`[v6]:PORT` without its brackets).
pub fn host_of(host_port: &str) -> Option<&str> {
    let host = host_port.rsplit_once(':')?.0;
    Some(host.trim_start_matches('[').trim_end_matches(']'))
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.text)
    }
}

/// Parses and resolves `HOST:PORT` (`[v6]:PORT` for IPv6 addresses).
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    use std::net::ToSocketAddrs;
    let addr = s
        .to_socket_addrs()
        .map_err(|e| format!("{s}: {e} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("{s} resolves to no address"))?;
    Ok(HostPort {
        text: s.to_string(),
        addr,
    })
}
