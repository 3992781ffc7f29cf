//! The iptables and ip6tables rules that send a device's packets to the
//! queue. The process installs them once it listens on the queue and
//! removes them when it exits, so the rules never outlive the delay line.

use std::process::Command;

use tracing::{debug, warn};

use crate::Error;

/// Which side of the device the packets are taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Hook {
    /// Packets leaving through the device (mangle POSTROUTING, `-o`).
    Egress,
    /// Packets arriving on the device (mangle PREROUTING, `-i`).
    Ingress,
}

/// Which packets, by protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Select {
    All,
    /// ICMP and ICMPv6 only.
    Icmp,
    /// All but ICMP and ICMPv6.
    NonIcmp,
}

/// The rules installed, removed on `remove` (or drop).
pub struct Rules {
    /// One argument list per command (`iptables`, `ip6tables`), without
    /// the `-A`/`-D` and the chain.
    specs: Vec<(&'static str, &'static str, Vec<String>)>,
    installed: bool,
}

impl Rules {
    /// Sends every IPv4 and IPv6 packet of `dev` (in the direction of
    /// `hook`) to queue `queue`. `tag` (an iptables comment) identifies the
    /// rules, so that `testbed/path.sh` can remove leftovers of a killed
    /// process. Rules with the same text are removed first: re-running
    /// replaces rather than stacks.
    ///
    /// `--queue-bypass`: if this process dies without removing the rules,
    /// packets pass undelayed instead of being dropped for want of a
    /// listener (a silently dead path is harder to diagnose than an
    /// undelayed one, which the process's log and `path.sh` report).
    pub fn install(
        hook: Hook,
        select: Select,
        dev: &str,
        queue: u16,
        tag: &str,
    ) -> Result<Rules, Error> {
        let (chain, dir) = match hook {
            Hook::Egress => ("POSTROUTING", "-o"),
            Hook::Ingress => ("PREROUTING", "-i"),
        };
        let spec = |cmd: &'static str, icmp: &str| {
            let proto: &[&str] = match select {
                Select::All => &[],
                Select::Icmp => &["-p", icmp],
                Select::NonIcmp => &["!", "-p", icmp],
            };
            let queue = queue.to_string();
            let args = [dir, dev]
                .iter()
                .chain(proto)
                .chain(&["-m", "comment", "--comment", tag, "-j", "NFQUEUE"])
                .chain(&["--queue-num", &queue, "--queue-bypass"])
                .map(|s| s.to_string())
                .collect();
            (cmd, chain, args)
        };
        let mut rules = Rules {
            specs: vec![spec("iptables", "icmp"), spec("ip6tables", "ipv6-icmp")],
            installed: false,
        };
        for (cmd, chain, args) in &rules.specs {
            // Delete until none is left (an earlier run's, killed).
            while iptables(cmd, "-D", chain, args).is_ok() {}
        }
        rules.installed = true;
        for (cmd, chain, args) in &rules.specs {
            iptables(cmd, "-A", chain, args)?;
        }
        Ok(rules)
    }

    /// Removes the rules; errors are logged (the namespace may be going).
    pub fn remove(&mut self) {
        if !std::mem::take(&mut self.installed) {
            return;
        }
        for (cmd, chain, args) in &self.specs {
            if let Err(e) = iptables(cmd, "-D", chain, args) {
                warn!("removing the {cmd} rule: {e}");
            }
        }
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        self.remove();
    }
}

fn iptables(cmd: &str, op: &str, chain: &str, args: &[String]) -> Result<(), Error> {
    let out = Command::new(cmd)
        .args(["-w", "-t", "mangle", op, chain])
        .args(args)
        .output()
        .map_err(|e| Error::Rule(format!("{cmd}: {e}")))?;
    debug!("{cmd} {op} {chain} {}: {}", args.join(" "), out.status);
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Rule(format!(
            "{cmd} -t mangle {op} {chain} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
