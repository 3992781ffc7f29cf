//! One NFQUEUE queue, configured for a delay line at hundreds of Mbit/s.

use std::io;
use std::os::fd::RawFd;

use nfq::{Message, Verdict};

use crate::{sys, Error};

/// What a receive brought.
pub enum Received {
    Packet(Message),
    /// Nothing waiting.
    Empty,
    /// The kernel could not deliver some notifications (socket buffer
    /// full): those packets were dropped, as a full router queue would.
    Overflow,
    /// A verdict named a packet the kernel no longer holds (it flushes a
    /// queue's packets of a device that goes down).
    StaleVerdict,
}

pub struct Queue {
    q: nfq::Queue,
    num: u16,
    fd: RawFd,
}

impl Queue {
    /// Binds queue `num` (in this network namespace) and configures it:
    ///
    /// - metadata only: the packet's bytes are never copied to user space,
    ///   only its id and length; the verdict needs nothing else;
    /// - GSO packets (a TCP sender's bursts of up to 64 KB, which a veth
    ///   passes whole) unsegmented when `whole_gso`: one queue entry, not
    ///   45, which is most of what makes 200 Mbit/s cheap; but a verdict
    ///   then drops a whole burst, so with random loss the kernel cuts
    ///   them into wire-sized packets first (loss per packet, as on a
    ///   link; netem drops whole bursts);
    /// - at most `max_len` packets held (the kernel's default, 1024, is
    ///   below what 30 ms at 200 Mbit/s holds in MTU-sized packets); past
    ///   it, packets are dropped (fail-open off: a full queue loses, like a
    ///   router's, rather than letting packets skip the delay);
    /// - ENOBUFS reported, so that overflows are counted, not silent;
    /// - a receive buffer of `rcvbuf` bytes, for bursts while this process
    ///   waits for a CPU;
    /// - non-blocking: the main loop waits in `ppoll` with a deadline.
    pub fn open(num: u16, max_len: u32, rcvbuf: usize, whole_gso: bool) -> Result<Queue, Error> {
        let step = |what: &'static str| move |source| Error::Queue { what, source };
        let mut q = nfq::Queue::open().map_err(step("opening the netfilter socket"))?;
        let fd = sys::find_netfilter_socket().map_err(step("finding the netfilter socket"))?;
        q.bind(num)
            .map_err(step("binding the queue (is another process bound to it?)"))?;
        q.set_copy_range(num, 0)
            .map_err(step("setting metadata-only copy"))?;
        q.set_recv_gso(num, whole_gso)
            .map_err(step("setting GSO handling"))?;
        q.set_queue_max_len(num, max_len)
            .map_err(step("setting the queue length"))?;
        q.set_fail_open(num, false)
            .map_err(step("turning fail-open off"))?;
        q.set_recv_enobufs(true)
            .map_err(step("asking for ENOBUFS"))?;
        sys::force_rcvbuf(fd, rcvbuf).map_err(step("setting the receive buffer"))?;
        q.set_nonblocking(true);
        Ok(Queue { q, num, fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn recv(&mut self) -> Result<Received, Error> {
        match self.q.recv() {
            Ok(m) => Ok(Received::Packet(m)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Received::Empty),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Received::Overflow),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Received::StaleVerdict),
            Err(source) => Err(Error::Queue {
                what: "receiving",
                source,
            }),
        }
    }

    pub fn verdict(&mut self, mut msg: Message, verdict: Verdict) -> Result<(), Error> {
        msg.set_verdict(verdict);
        self.q.verdict(msg).map_err(|source| Error::Queue {
            what: "sending a verdict",
            source,
        })
    }

    /// Unbinds; the kernel drops whatever is still queued.
    pub fn unbind(mut self) -> Result<(), Error> {
        self.q.unbind(self.num).map_err(|source| Error::Queue {
            what: "unbinding",
            source,
        })
    }

    /// The kernel's drop counters for this queue, from
    /// `/proc/net/netfilter/nfnetlink_queue`: packets dropped because the
    /// queue was full, and because their notification did not fit the
    /// socket's receive buffer.
    pub fn kernel_drops(&self) -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").ok()?;
        text.lines().find_map(|line| {
            let f: Vec<u64> = line
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            // queue peer_portid queue_total copy_mode copy_range
            // queue_dropped user_dropped id_sequence 1
            (f.len() >= 7 && f[0] == u64::from(self.num)).then(|| (f[5], f[6]))
        })
    }
}
