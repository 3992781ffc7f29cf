//! Which destinations `tunnel server` connects SOCKS5 streams to. Nothing
//! but `--to` without `--allow`: an open proxy is never the default.
//!
//! A rule is `HOST[:PORT]`: HOST is `*`, an address, a network
//! (`10.0.0.0/8`, `[fd00::/8]`), a name (`example.com`) or a name suffix
//! (`*.example.com`); PORT is a number or `*` (the default). `any` allows
//! everything (labs only).

use std::net::IpAddr;

/// One `--allow` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    host: Host,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Any,
    Net(IpAddr, u8),
    Name(String),
    /// `*.example.com`: the part after `*`, with its dot.
    Suffix(String),
}

/// The `--allow` rules of a tunnel server.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    rules: Vec<Rule>,
}

/// Parses one `--allow` rule.
pub fn parse_rule(s: &str) -> Result<String, String> {
    parse(s).map(|_| s.to_string())
}

fn parse(s: &str) -> Result<Rule, String> {
    let s = s.trim();
    if s == "any" {
        return Ok(Rule {
            host: Host::Any,
            port: None,
        });
    }
    // "[v6 or v6/len]:port", "[...]", "host:port" or "host".
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing ']'"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{s:?}: expected ':PORT' after ']'"))?,
            ),
        };
        (h, port)
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').unwrap_or((s, ""));
        (h, Some(p))
    } else {
        (s, None)
    };
    let port = match port {
        None | Some("*") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("{s:?}: bad port {p:?}"))?,
        ),
    };
    let host = if host == "*" {
        Host::Any
    } else if let Some((ip, len)) = host.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| format!("{s:?}: bad network"))?;
        let len: u8 = len.parse().map_err(|_| format!("{s:?}: bad prefix"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Host::Net(ip, len)
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        Host::Net(ip, if ip.is_ipv4() { 32 } else { 128 })
    } else if let Some(suffix) = host.strip_prefix("*.") {
        if !super::header::valid_name(suffix) {
            return Err(format!("{s:?}: bad name"));
        }
        Host::Suffix(format!(".{}", suffix.to_ascii_lowercase()))
    } else if super::header::valid_name(host) {
        Host::Name(host.to_ascii_lowercase())
    } else {
        return Err(format!("{s:?}: not an address, network or host name"));
    };
    Ok(Rule { host, port })
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip.to_canonical(), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl AllowList {
    /// The rules, each already checked by [`parse_rule`].
    pub fn new(rules: &[String]) -> Result<Self, String> {
        Ok(Self {
            rules: rules.iter().map(|r| parse(r)).collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn port_ok(rule: &Rule, port: u16) -> bool {
        rule.port.is_none_or(|p| p == port)
    }

    /// True when a rule allows connecting to `ip` on `port`.
    pub fn permits_addr(&self, ip: IpAddr, port: u16) -> bool {
        self.rules.iter().any(|r| {
            Self::port_ok(r, port)
                && match &r.host {
                    Host::Any => true,
                    Host::Net(n, len) => in_net(ip, *n, *len),
                    Host::Name(_) | Host::Suffix(_) => false,
                }
        })
    }

    /// True when a rule allows the name itself (whatever it resolves to).
    pub fn permits_name(&self, name: &str, port: u16) -> bool {
        let name = name.to_ascii_lowercase();
        self.rules.iter().any(|r| {
            Self::port_ok(r, port)
                && match &r.host {
                    Host::Any => true,
                    Host::Name(n) => *n == name,
                    Host::Suffix(s) => name.ends_with(s.as_str()),
                    Host::Net(..) => false,
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(rules: &[&str]) -> AllowList {
        AllowList::new(&rules.iter().map(|r| r.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn rules_match_addresses_networks_names_and_ports() {
        let l = list(&[
            "10.0.0.0/8:80",
            "[fd00::/8]",
            "192.0.2.7:*",
            "example.com:443",
            "*.example.org",
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(l.permits_addr(ip("10.9.8.7"), 80));
        assert!(!l.permits_addr(ip("10.9.8.7"), 81));
        assert!(!l.permits_addr(ip("11.0.0.1"), 80));
        assert!(l.permits_addr(ip("::ffff:10.0.0.1"), 80), "v4-mapped");
        assert!(l.permits_addr(ip("fd12::1"), 22));
        assert!(l.permits_addr(ip("192.0.2.7"), 1));
        assert!(!l.permits_addr(ip("127.0.0.1"), 80));
        assert!(l.permits_name("Example.COM", 443));
        assert!(!l.permits_name("example.com", 80));
        assert!(!l.permits_name("evil-example.com", 443));
        assert!(l.permits_name("www.example.org", 8080));
        assert!(
            !l.permits_name("example.org", 8080),
            "a suffix rule needs a label before it"
        );
        assert!(
            !AllowList::default().permits_addr(ip("10.0.0.1"), 80),
            "nothing by default"
        );
        assert!(list(&["any"]).permits_name("anything", 1));
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "[fd00::",
            "host:port",
            "a..b",
            "[::1]x",
            "*.",
            "",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad:?}");
        }
    }
}
