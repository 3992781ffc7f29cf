//! `tcpls-netem`: one-way delay and random loss on one network device, for
//! kernels without the netem qdisc (this testbed's has no netem, no ifb,
//! and cannot load modules). `testbed/path.sh` starts it; see
//! `docs/testbed.md`.
//!
//! iptables sends the device's packets (IPv4 and IPv6, in one direction)
//! to an NFQUEUE queue; this process learns only each packet's id, holds
//! the id for the delay and then lets the packet go on (an ACCEPT
//! verdict), in arrival order. The packet itself never leaves the kernel.
//! Loss is a DROP verdict with the given probability, given after the
//! packet was queued, so that a local TCP sender sees a loss on the wire,
//! not a failed send (which an iptables DROP on its own output is, and
//! which TCP simply retries).

mod line;
mod queue;
mod rules;
mod spec;
mod sys;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nfq::Verdict;
use rand::Rng;
use tracing::{debug, error, info, warn};

use line::DelayLine;
use queue::{Queue, Received};
use rules::{Hook, Rules, Select};

/// Delays (and randomly drops) one device's packets, in order.
#[derive(Parser, Debug)]
#[command(name = "tcpls-netem", version, about)]
struct Args {
    /// The device whose packets are delayed.
    #[arg(long)]
    dev: String,
    /// Which of its packets: leaving (egress) or arriving (ingress).
    #[arg(long, value_enum, default_value = "egress")]
    hook: Hook,
    /// Which of them, by protocol.
    #[arg(long, value_enum, default_value = "all")]
    select: Select,
    /// One-way delay added to every packet: 30ms, 1.5ms, 200us; 0 for none.
    #[arg(long, default_value = "0")]
    delay: String,
    /// Random loss, in percent: 0.2% (or 0.2); 0 for none.
    #[arg(long, default_value = "0")]
    loss: String,
    /// The NFQUEUE queue number [default: twice the device's interface
    /// index, plus one for egress: unique within the namespace, so that
    /// several devices and both directions of one never collide].
    #[arg(long)]
    queue: Option<u16>,
    /// Most packets held at once; more are dropped. 30 ms at 200 Mbit/s is
    /// 500 packets of 1500 bytes (fewer: most are 64 KB GSO bursts).
    #[arg(long, default_value_t = 65536)]
    max_queue: u32,
    /// Receive buffer of the queue's socket, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    rcvbuf: usize,
    /// Exit when this process's network namespace no longer has this name
    /// (`ip netns del NAME`): otherwise this process would keep the
    /// deleted namespace, its devices and their veth peers alive.
    #[arg(long)]
    netns: Option<String>,
    /// Written (with this process's id) once the rules are in place;
    /// removed at exit.
    #[arg(long)]
    pidfile: Option<PathBuf>,
    /// Log to this file (appending) rather than to stderr. Removed at exit
    /// when this process exits because its namespace or device is gone
    /// (nobody is left to read it), kept when it is stopped by a signal.
    #[arg(long)]
    log: Option<PathBuf>,
    /// The iptables comment on the rules [default: tcpls-netem:DEV].
    #[arg(long)]
    tag: Option<String>,
    /// Run with this SCHED_FIFO real-time priority (1-99; 0: ordinary
    /// scheduling). On a busy machine an ordinary process can wait
    /// milliseconds for a CPU after its timer fires, which is the whole
    /// accuracy budget; a real-time one preempts the busy work at once. It
    /// sleeps between packets, so it cannot starve the machine (and the
    /// kernel caps real-time tasks at 95% of a CPU regardless).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=99))]
    rt_priority: u8,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Spec(String),
    #[error("device {0}: not found in this network namespace")]
    Device(String),
    #[error("{what}: {source}")]
    Queue {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("iptables: {0}")]
    Rule(String),
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Receives handled before the due packets are released again: a long
/// burst must not hold up departures.
const BATCH: usize = 64;
/// How often the namespace and the device are checked for removal.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// What happened to the packets, reported at exit.
#[derive(Default, Debug)]
struct Stats {
    packets: u64,
    lost: u64,
    overflows: u64,
    stale_verdicts: u64,
    most_held: usize,
    /// Release lateness (release instant minus due instant): below 0.1,
    /// 0.5, 1 and 2 ms, and beyond.
    late: [u64; 5],
    latest: Duration,
}

impl Stats {
    fn released(&mut self, late: Duration) {
        let bucket = [100, 500, 1000, 2000]
            .iter()
            .position(|&us| late < Duration::from_micros(us))
            .unwrap_or(4);
        self.late[bucket] += 1;
        self.latest = self.latest.max(late);
    }
}

/// The pidfile, removed when dropped.
struct Pidfile(PathBuf);

impl Pidfile {
    /// Written to a temporary name and renamed, so that a reader waiting
    /// for it never sees it empty.
    fn create(path: PathBuf) -> Result<Pidfile, Error> {
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{}", std::process::id())?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| Error::Sys {
            what: "writing the pidfile",
            source,
        })?;
        Ok(Pidfile(path))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    if let Some(path) = &args.log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        match file {
            Ok(f) => fmt
                .with_writer(std::sync::Mutex::new(f))
                .with_ansi(false)
                .init(),
            Err(e) => {
                eprintln!("tcpls-netem: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    } else {
        fmt.with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match run(&args) {
        Ok(Exit::Signal) => ExitCode::SUCCESS,
        Ok(Exit::Gone) => {
            if let Some(path) = &args.log {
                let _ = std::fs::remove_file(path);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            eprintln!("tcpls-netem: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the main loop ended.
enum Exit {
    /// Asked to (SIGTERM, SIGINT, SIGHUP).
    Signal,
    /// The namespace was deleted or the device removed.
    Gone,
}

fn run(args: &Args) -> Result<Exit, Error> {
    let delay = spec::parse_delay(&args.delay)?;
    let loss = spec::parse_loss(&args.loss)?;
    // Before anything else: the signals must be blocked before they come.
    let signals = sys::Signals::new().map_err(|source| Error::Sys {
        what: "signalfd",
        source,
    })?;
    sys::tight_timer_slack();
    if args.rt_priority > 0 {
        sys::realtime(args.rt_priority).map_err(|source| Error::Sys {
            what: "setting SCHED_FIFO",
            source,
        })?;
    }
    let ifindex = sys::ifindex(&args.dev).ok_or_else(|| Error::Device(args.dev.clone()))?;
    let num = match args.queue {
        Some(n) => n,
        None => u16::try_from(2 * u64::from(ifindex) + u64::from(args.hook == Hook::Egress))
            .map_err(|_| {
                Error::Spec(format!(
                    "interface index {ifindex} of {} is too large for a queue number; pass --queue",
                    args.dev
                ))
            })?,
    };
    let mut queue = Queue::open(num, args.max_queue, args.rcvbuf, loss == 0.0)?;
    let tag = args
        .tag
        .clone()
        .unwrap_or_else(|| format!("tcpls-netem:{}", args.dev));
    let mut rules = Rules::install(args.hook, args.select, &args.dev, num, &tag)?;
    let pidfile = args.pidfile.clone().map(Pidfile::create).transpose()?;
    info!(
        "{} {:?} {:?}: delay {delay:?}, loss {:.3}%, queue {num}",
        args.dev,
        args.hook,
        args.select,
        loss * 100.0
    );

    let mut line = DelayLine::new(delay);
    let mut stats = Stats::default();
    let mut rng = rand::thread_rng();
    let mut next_watch = Instant::now() + WATCH_EVERY;
    let mut next_report = Instant::now() + Duration::from_secs(10);
    let (exit, reason) = loop {
        let mut received = 0;
        while received < BATCH {
            match queue.recv()? {
                Received::Packet(msg) => {
                    received += 1;
                    let now = Instant::now();
                    stats.packets += 1;
                    if loss > 0.0 && rng.gen_bool(loss) {
                        stats.lost += 1;
                        queue.verdict(msg, Verdict::Drop)?;
                    } else if delay.is_zero() {
                        queue.verdict(msg, Verdict::Accept)?;
                    } else {
                        line.push(now, msg);
                        stats.most_held = stats.most_held.max(line.len());
                    }
                }
                Received::Empty => break,
                Received::Overflow => {
                    if stats.overflows == 0 {
                        warn!("receive buffer overflowed: the kernel dropped packets");
                    }
                    stats.overflows += 1;
                }
                Received::StaleVerdict => stats.stale_verdicts += 1,
            }
        }
        let now = Instant::now();
        while let Some((msg, late)) = line.pop_due(now) {
            stats.released(late);
            queue.verdict(msg, Verdict::Accept)?;
        }
        if now >= next_watch {
            next_watch = now + WATCH_EVERY;
            if let Some(reason) = gone(args, ifindex) {
                break (Exit::Gone, reason);
            }
            if now >= next_report {
                next_report = now + Duration::from_secs(10);
                debug!("{stats:?}, holding {}", line.len());
            }
        }
        if received == BATCH {
            continue;
        }
        let until = line
            .next_due()
            .map_or(next_watch, |due| due.min(next_watch));
        let timeout = until.saturating_duration_since(Instant::now());
        let ready = sys::wait_readable([queue.fd(), signals.as_raw_fd()], Some(timeout)).map_err(
            |source| Error::Sys {
                what: "ppoll",
                source,
            },
        )?;
        if ready[1] {
            if let Some(sig) = signals.take() {
                break (Exit::Signal, format!("signal {sig}"));
            }
        }
    };

    // No new packets once the rules are gone; those already queued (read
    // or not) leave now, in order, rather than being dropped by the kernel
    // when the queue is unbound.
    rules.remove();
    loop {
        match queue.recv()? {
            Received::Packet(msg) => line.push(Instant::now(), msg),
            Received::Empty => break,
            Received::Overflow | Received::StaleVerdict => {}
        }
    }
    for msg in line.drain() {
        queue.verdict(msg, Verdict::Accept)?;
    }
    let (full, unread) = queue.kernel_drops().unwrap_or_default();
    queue.unbind()?;
    drop(pidfile);
    info!(
        "exit ({reason}): {} packets, {} lost (random), {} dropped by the kernel \
         (queue full {full}, receive buffer {unread}), at most {} held; released late by \
         <0.1 ms {}, <0.5 ms {}, <1 ms {}, <2 ms {}, more {}; latest {:?}",
        stats.packets,
        stats.lost,
        full + unread,
        stats.most_held,
        stats.late[0],
        stats.late[1],
        stats.late[2],
        stats.late[3],
        stats.late[4],
        stats.latest,
    );
    Ok(exit)
}

/// Why this process should stop on its own, if it should: its namespace
/// was deleted, or its device removed (then the rules match nothing, and
/// the device's index may be reused).
fn gone(args: &Args, ifindex: u32) -> Option<String> {
    if let Some(ns) = &args.netns {
        if !sys::in_named_netns(ns) {
            return Some(format!("network namespace {ns} deleted"));
        }
    }
    if sys::ifindex(&args.dev) != Some(ifindex) {
        return Some(format!("device {} removed", args.dev));
    }
    None
}
