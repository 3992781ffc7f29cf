//! Transport options over the secure channel (seed 002 §3.1, §4.2): a
//! side asks the peer to apply a TCP option on one connection or all of
//! them (TRANSPORT_OPTION), the peer's runtime applies it or refuses, and
//! its answer (TRANSPORT_OPTION_ACK) tells the asker which.
//!
//! The core only carries and bounds requests: applying an option
//! (`setsockopt`, loading a program) is the runtime's job, through
//! [`Event::PeerOption`] and [`Session::answer_peer_option`]. What a peer
//! may ask is local policy (`TransportConfig::peer_congestion_controls`,
//! `peer_cc_programs`, the user timeout bounds).
//!
//! A congestion controller program (a BPF object, seed 002 §4.4) is too
//! large for one frame: its TRANSPORT_OPTION announces its length, SHA-256
//! and name, and TRANSPORT_OPTION_DATA frames of the same request carry its
//! bytes by offset: a byte stream of its own on the control connection.
//! The receiver checks its policy on the announcement, so a refused
//! program costs nothing but its announcement, and reassembles the bytes
//! in any order (the control connection may change mid-transfer, and a
//! record's frames are read from its end).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::assembler::Assembler;
use super::{Event, Session, State};
use crate::error::CallError;
use crate::ids::ConnectionId;
use crate::wire::frame::{Frame, TransportOptionId, MAX_OPTION_LEN};

/// Longest congestion controller name Linux takes (`TCP_CA_NAME_MAX`).
pub const MAX_CC_NAME: usize = 16;

/// Requests either side may have unanswered at once: more of ours are a
/// usage error, more of the peer's are refused.
const MAX_OUTSTANDING: usize = 16;

/// A transport option one side asks the other to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerOption {
    /// TCP User Timeout (`TCP_USER_TIMEOUT`), also the failure detector's
    /// threshold for the connections it applies to.
    UserTimeout(Duration),
    /// A congestion controller by name (`TCP_CONGESTION`), e.g. `bbr`.
    CongestionControl(String),
    /// A congestion controller shipped as a compiled BPF struct_ops object
    /// (`tcp_congestion_ops`) that registers `name`: the receiver loads it
    /// if its policy allows (`TransportConfig::peer_cc_programs`), then
    /// uses it like [`PeerOption::CongestionControl`]. Build one with
    /// [`PeerOption::congestion_program`]. In a refusal event `program`
    /// is empty (a refused program's bytes are not kept).
    CongestionProgram {
        /// The name the object's `tcp_congestion_ops` registers.
        name: String,
        /// SHA-256 of `program`.
        digest: [u8; 32],
        /// The object file's bytes.
        program: Bytes,
    },
}

impl PeerOption {
    /// A congestion controller program: `program` is a BPF object whose
    /// struct_ops `tcp_congestion_ops` registers `name` (see bpf/README.md).
    ///
    /// ```
    /// use tcpls_proto::session::options::PeerOption;
    /// let o = PeerOption::congestion_program("tcpls_reno", vec![0x7f, b'E', b'L', b'F']);
    /// assert!(o.describe().starts_with("congestion_program=tcpls_reno sha256="));
    /// ```
    pub fn congestion_program(name: impl Into<String>, program: impl Into<Bytes>) -> Self {
        let program = program.into();
        PeerOption::CongestionProgram {
            name: name.into(),
            digest: openssl::sha::sha256(&program),
            program,
        }
    }

    fn id(&self) -> TransportOptionId {
        match self {
            PeerOption::UserTimeout(_) => TransportOptionId::USER_TIMEOUT,
            PeerOption::CongestionControl(_) => TransportOptionId::CONGESTION_CONTROL,
            PeerOption::CongestionProgram { .. } => TransportOptionId::CONGESTION_PROGRAM,
        }
    }

    fn value(&self) -> Vec<u8> {
        match self {
            PeerOption::UserTimeout(d) => (d.as_millis().min(u32::MAX as u128) as u32)
                .to_be_bytes()
                .to_vec(),
            PeerOption::CongestionControl(name) => name.as_bytes().to_vec(),
            PeerOption::CongestionProgram {
                name,
                digest,
                program,
            } => {
                let mut v = (program.len() as u32).to_be_bytes().to_vec();
                v.extend_from_slice(digest);
                v.extend_from_slice(name.as_bytes());
                v
            }
        }
    }

    /// Decodes an option from the wire; the status to answer otherwise.
    fn decode(id: TransportOptionId, value: &[u8]) -> Result<Self, (OptionStatus, &'static str)> {
        match id {
            TransportOptionId::USER_TIMEOUT => {
                let ms: [u8; 4] = value.try_into().map_err(|_| {
                    (
                        OptionStatus::BadValue,
                        "a user timeout is a u32 of milliseconds",
                    )
                })?;
                Ok(PeerOption::UserTimeout(Duration::from_millis(
                    u32::from_be_bytes(ms) as u64,
                )))
            }
            TransportOptionId::CONGESTION_CONTROL => {
                let name = std::str::from_utf8(value)
                    .ok()
                    .filter(|n| valid_cc_name(n))
                    .ok_or((OptionStatus::BadValue, "not a congestion controller name"))?;
                Ok(PeerOption::CongestionControl(name.to_string()))
            }
            _ => Err((OptionStatus::Unknown, "unknown transport option")),
        }
    }

    /// The option's name and value, for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            PeerOption::UserTimeout(d) => format!("user_timeout={}ms", d.as_millis()),
            PeerOption::CongestionControl(n) => format!("congestion_control={n}"),
            PeerOption::CongestionProgram { name, digest, .. } => {
                format!("congestion_program={name} sha256={}", hex::encode(digest))
            }
        }
    }
}

/// Which congestion controller programs (BPF objects) a peer may ship to
/// this side (`TransportConfig::peer_cc_programs`).
///
/// ```
/// use tcpls_proto::session::options::CcProgramPolicy;
/// assert_eq!(CcProgramPolicy::parse("none").unwrap(), CcProgramPolicy::Refuse);
/// let digest = "ab".repeat(32);
/// let p = CcProgramPolicy::parse(&digest).unwrap();
/// assert!(p.allows(&[0xab; 32]) && !p.allows(&[0; 32]));
/// assert!(CcProgramPolicy::parse("abc").is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CcProgramPolicy {
    /// Refuse every program (the default).
    #[default]
    Refuse,
    /// Take only objects whose SHA-256 is listed.
    Digests(Vec<[u8; 32]>),
    /// Take any object: the kernel's verifier is then the only check.
    /// For labs.
    Any,
}

impl CcProgramPolicy {
    /// True if a program with this SHA-256 may be loaded.
    pub fn allows(&self, digest: &[u8; 32]) -> bool {
        match self {
            CcProgramPolicy::Refuse => false,
            CcProgramPolicy::Digests(list) => list.contains(digest),
            CcProgramPolicy::Any => true,
        }
    }

    /// `none`, `any`, or SHA-256 digests in hex (as `sha256sum` prints
    /// them), comma-separated.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "none" | "" => return Ok(CcProgramPolicy::Refuse),
            "any" => return Ok(CcProgramPolicy::Any),
            _ => {}
        }
        let digest = |d: &str| -> Result<[u8; 32], String> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(d.trim(), &mut out)
                .map_err(|_| format!("{:?} is not a SHA-256 digest (64 hex digits)", d.trim()))?;
            Ok(out)
        };
        s.split(',')
            .filter(|d| !d.trim().is_empty())
            .map(digest)
            .collect::<Result<_, _>>()
            .map(CcProgramPolicy::Digests)
    }
}

/// A congestion controller name: 1 to 15 ASCII letters, digits, `_` or
/// `-` (Linux's `TCP_CA_NAME_MAX` is 16 with the NUL).
pub fn valid_cc_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < MAX_CC_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why a request was not applied (TRANSPORT_OPTION_ACK's status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionStatus {
    /// Applied (status 0).
    Applied,
    /// Local policy does not allow it (1).
    NotAllowed,
    /// The option is unknown to the receiver (2).
    Unknown,
    /// The value is malformed (3).
    BadValue,
    /// The connection named is not one of the session's (4).
    NoSuchConnection,
    /// Applying it failed, e.g. the kernel has no such controller (5).
    Failed,
    /// Too many requests unanswered (6).
    Busy,
}

impl OptionStatus {
    fn to_u8(self) -> u8 {
        match self {
            OptionStatus::Applied => 0,
            OptionStatus::NotAllowed => 1,
            OptionStatus::Unknown => 2,
            OptionStatus::BadValue => 3,
            OptionStatus::NoSuchConnection => 4,
            OptionStatus::Failed => 5,
            OptionStatus::Busy => 6,
        }
    }

    fn from_u8(b: u8) -> Self {
        match b {
            0 => OptionStatus::Applied,
            1 => OptionStatus::NotAllowed,
            2 => OptionStatus::Unknown,
            3 => OptionStatus::BadValue,
            4 => OptionStatus::NoSuchConnection,
            6 => OptionStatus::Busy,
            _ => OptionStatus::Failed,
        }
    }
}

/// The answer to one of our requests: applied, or why not.
pub type OptionAnswer = Result<(), (OptionStatus, String)>;

/// What the session keeps of option requests, both ways.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// Our next request id.
    next: u32,
    /// Ours, sent or to send, not yet answered: kept to re-send after a
    /// connection failure (the answer may have been lost with it).
    pub ours: BTreeMap<u32, (Option<ConnectionId>, PeerOption)>,
    /// Ours to put in a record.
    pub to_send: VecDeque<u32>,
    /// The peer's requests not answered on the wire yet (with the runtime,
    /// or their answer queued): at most [`MAX_OUTSTANDING`], so what a
    /// peer's requests cost is bounded; a repeat of one (re-sent after a
    /// failure) is not counted twice.
    pub theirs: std::collections::BTreeSet<u32>,
    /// Answers to put in a record: (request, status, reason).
    pub answers: VecDeque<(u32, OptionStatus, String)>,
    /// The user timeout the peer asked for and the runtime applied, per
    /// connection (`None`: all of them).
    pub user_timeout: BTreeMap<Option<ConnectionId>, Duration>,
    /// Our programs' bytes to send: (request, next offset).
    chunks: VecDeque<(u32, u32)>,
    /// The peer's program being received (one at a time).
    incoming: Option<Incoming>,
    /// The peer's program requests finished or refused lately: their
    /// late or repeated frames are ignored.
    finished: VecDeque<u32>,
}

/// Program requests whose late frames are recognised and ignored.
const FINISHED_KEPT: usize = 8;

/// A peer's congestion controller program being reassembled. Its data
/// may arrive before its announcement (`header`).
#[derive(Debug)]
struct Incoming {
    request: u32,
    header: Option<ProgramHeader>,
    asm: Assembler,
}

/// What a program's TRANSPORT_OPTION announces.
#[derive(Debug)]
struct ProgramHeader {
    conn: Option<ConnectionId>,
    name: String,
    digest: [u8; 32],
    len: u32,
}

impl ProgramHeader {
    fn decode(conn: Option<ConnectionId>, value: &[u8]) -> Option<Self> {
        let len = u32::from_be_bytes(value.get(..4)?.try_into().ok()?);
        let digest = value.get(4..36)?.try_into().ok()?;
        let name = std::str::from_utf8(&value[36..]).ok()?;
        valid_cc_name(name).then(|| ProgramHeader {
            conn,
            name: name.to_string(),
            digest,
            len,
        })
    }

    /// The option as reported while its bytes are not (all) here.
    fn option(&self) -> PeerOption {
        PeerOption::CongestionProgram {
            name: self.name.clone(),
            digest: self.digest,
            program: Bytes::new(),
        }
    }
}

impl Options {
    pub fn is_empty(&self) -> bool {
        self.to_send.is_empty() && self.answers.is_empty() && self.chunks.is_empty()
    }

    /// Remembers that the peer's program `request` is over.
    fn finish(&mut self, request: u32) {
        if self.incoming.as_ref().is_some_and(|i| i.request == request) {
            self.incoming = None;
        }
        if self.finished.len() >= FINISHED_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back(request);
    }

    /// Writes requests and answers while `ctl` stays under `limit`.
    pub fn write_frames(&mut self, ctl: &mut Vec<u8>, limit: usize) {
        while ctl.len() + 16 + MAX_OPTION_LEN < limit {
            if let Some((request, status, reason)) = self.answers.pop_front() {
                self.theirs.remove(&request);
                let reason = reason.as_bytes();
                Frame::TransportOptionAck {
                    request,
                    status: status.to_u8(),
                    reason: &reason[..reason.len().min(MAX_OPTION_LEN)],
                }
                .encode(ctl);
            } else if let Some(request) = self.to_send.pop_front() {
                if let Some((conn, option)) = self.ours.get(&request) {
                    Frame::TransportOption {
                        request,
                        conn: *conn,
                        option: option.id(),
                        value: &option.value(),
                    }
                    .encode(ctl);
                    if let PeerOption::CongestionProgram { .. } = option {
                        // The bytes follow, from the start (again, after a
                        // failure: those in flight may be lost).
                        self.chunks.retain(|(r, _)| *r != request);
                        self.chunks.push_back((request, 0));
                    }
                }
            } else if let Some((request, offset)) = self.chunks.pop_front() {
                let Some((_, PeerOption::CongestionProgram { program, .. })) =
                    self.ours.get(&request)
                else {
                    continue;
                };
                // The loop's condition leaves more than MAX_OPTION_LEN.
                let start = offset as usize;
                let end = program.len().min(start + (limit - ctl.len() - 11));
                Frame::TransportOptionData {
                    request,
                    offset,
                    data: &program[start..end],
                }
                .encode(ctl);
                if end < program.len() {
                    self.chunks.push_front((request, end as u32));
                }
            } else {
                break;
            }
        }
    }

    /// After a connection failure: unanswered requests go again.
    pub fn resend(&mut self) {
        for id in self.ours.keys() {
            if !self.to_send.contains(id) {
                self.to_send.push_back(*id);
            }
        }
    }
}

impl Session {
    /// Asks the peer to apply `option` on connection `conn` (`None`: all of
    /// the session's connections, including later ones). Returns the
    /// request's id; the answer comes as [`Event::PeerOptionAnswered`].
    pub fn set_peer_option(
        &mut self,
        conn: Option<ConnectionId>,
        option: PeerOption,
    ) -> Result<u32, CallError> {
        if !matches!(self.state, State::Tcpls(_)) {
            return Err(CallError::Usage("transport options need a TCPLS session"));
        }
        match &option {
            PeerOption::CongestionControl(name) | PeerOption::CongestionProgram { name, .. }
                if !valid_cc_name(name) =>
            {
                return Err(CallError::Usage("not a congestion controller name"));
            }
            PeerOption::CongestionProgram { program, .. }
                if program.is_empty() || program.len() > u32::MAX as usize =>
            {
                return Err(CallError::Usage("a program is 1 byte to 4 GiB"));
            }
            _ => {}
        }
        if conn.is_some_and(|c| !self.paths.conns.contains_key(&c)) {
            return Err(CallError::Usage("no such connection"));
        }
        let o = &mut self.options;
        if o.ours.len() >= MAX_OUTSTANDING {
            return Err(CallError::Usage(
                "too many transport option requests unanswered",
            ));
        }
        let id = o.next;
        o.next = o.next.wrapping_add(1);
        o.ours.insert(id, (conn, option));
        o.to_send.push_back(id);
        Ok(id)
    }

    /// The runtime's answer to the peer's request `request`
    /// ([`Event::PeerOption`]): queued for the peer. An applied user
    /// timeout also becomes the failure threshold of the connections it
    /// concerns ([`Self::user_timeout_of`]).
    pub fn answer_peer_option(
        &mut self,
        request: u32,
        conn: Option<ConnectionId>,
        option: &PeerOption,
        answer: OptionAnswer,
    ) {
        let o = &mut self.options;
        match answer {
            Ok(()) => {
                if let PeerOption::UserTimeout(d) = option {
                    if conn.is_none() {
                        o.user_timeout.clear();
                    }
                    o.user_timeout.insert(conn, *d);
                }
                o.answers
                    .push_back((request, OptionStatus::Applied, String::new()));
            }
            Err((status, reason)) => o.answers.push_back((request, status, reason)),
        }
    }

    /// Memory held by a peer's congestion controller program being
    /// received (bounded by about twice `TransportConfig::max_cc_program`).
    pub fn peer_program_held(&self) -> usize {
        self.options.incoming.as_ref().map_or(0, |i| i.asm.held())
    }

    /// True while a request of the peer is not answered yet: being
    /// received (a program's bytes), with the runtime, or its answer not
    /// yet written.
    pub fn peer_options_pending(&self) -> bool {
        !self.options.theirs.is_empty()
    }

    /// The user timeout of connection `conn`: what the peer asked for it
    /// (or for all connections) and the runtime applied, else the
    /// session's ([`Self::user_timeout`]).
    pub fn user_timeout_of(&self, conn: ConnectionId) -> Option<Duration> {
        let o = &self.options.user_timeout;
        o.get(&Some(conn))
            .or_else(|| o.get(&None))
            .copied()
            .or_else(|| self.user_timeout())
    }

    /// A TRANSPORT_OPTION from the peer: bounded, checked, then handed to
    /// the runtime (or answered at once when it cannot be applied).
    pub(crate) fn on_transport_option(
        &mut self,
        request: u32,
        conn: Option<ConnectionId>,
        id: TransportOptionId,
        value: &[u8],
    ) {
        let refuse = |s: &mut Session, status, reason: &str, option: Option<PeerOption>| {
            s.refuse_option(request, conn, status, reason, option)
        };
        if self.options.theirs.contains(&request) || self.options.finished.contains(&request) {
            return; // a repeat: its answer is on the way or sent
        }
        if self.options.theirs.len() >= MAX_OUTSTANDING {
            // Over the bound both sides know: a well-behaved peer never
            // gets here. Dropped unanswered, so a flood costs nothing.
            tracing::debug!(request, "transport option request over the bound, dropped");
            return;
        }
        self.options.theirs.insert(request);
        if id == TransportOptionId::CONGESTION_PROGRAM {
            return self.on_program_header(request, conn, value);
        }
        let option = match PeerOption::decode(id, value) {
            Ok(o) => o,
            Err((status, reason)) => return refuse(self, status, reason, None),
        };
        if conn.is_some_and(|c| !self.paths.conns.contains_key(&c)) {
            let reason = "no such connection";
            return refuse(self, OptionStatus::NoSuchConnection, reason, Some(option));
        }
        let option = match option {
            PeerOption::UserTimeout(d) => PeerOption::UserTimeout(d.clamp(
                self.cfg.min_peer_user_timeout,
                self.cfg.max_peer_user_timeout,
            )),
            PeerOption::CongestionControl(name) => {
                if !self.cfg.peer_congestion_controls.contains(&name) {
                    let reason = format!(
                        "{name} is not among the allowed congestion controllers ({})",
                        self.cfg.peer_congestion_controls.join(", ")
                    );
                    let option = Some(PeerOption::CongestionControl(name));
                    return refuse(self, OptionStatus::NotAllowed, &reason, option);
                }
                PeerOption::CongestionControl(name)
            }
            other => other,
        };
        self.events.push_back(Event::PeerOption {
            request,
            conn,
            option,
        });
    }

    /// Answers the peer's `request` with a refusal, and tells the
    /// application.
    fn refuse_option(
        &mut self,
        request: u32,
        conn: Option<ConnectionId>,
        status: OptionStatus,
        reason: &str,
        option: Option<PeerOption>,
    ) {
        self.options
            .answers
            .push_back((request, status, reason.to_string()));
        self.events.push_back(Event::PeerOptionRefused {
            conn,
            option,
            reason: reason.to_string(),
        });
    }

    /// The announcement of a congestion controller program: checked
    /// against local policy before any of its bytes are kept.
    fn on_program_header(&mut self, request: u32, conn: Option<ConnectionId>, value: &[u8]) {
        let Some(h) = ProgramHeader::decode(conn, value) else {
            self.options.finish(request);
            let reason = "a program's value is its length, SHA-256 and name";
            return self.refuse_option(request, conn, OptionStatus::BadValue, reason, None);
        };
        let refusal = if !self.cfg.peer_cc_programs.allows(&h.digest) {
            let reason = match self.cfg.peer_cc_programs {
                CcProgramPolicy::Refuse => "congestion controller programs are not accepted here",
                _ => "its SHA-256 is not among the programs accepted here",
            };
            Some((OptionStatus::NotAllowed, reason.to_string()))
        } else if h.len == 0 || h.len as usize > self.cfg.max_cc_program {
            let reason = format!(
                "a program of {} bytes is over the limit of {}",
                h.len, self.cfg.max_cc_program
            );
            Some((OptionStatus::NotAllowed, reason))
        } else if conn.is_some_and(|c| !self.paths.conns.contains_key(&c)) {
            Some((OptionStatus::NoSuchConnection, "no such connection".into()))
        } else if self
            .options
            .incoming
            .as_ref()
            .is_some_and(|i| i.request != request && i.header.is_some())
        {
            Some((
                OptionStatus::Busy,
                "another program is being received".into(),
            ))
        } else {
            None
        };
        if let Some((status, reason)) = refusal {
            self.options.finish(request);
            return self.refuse_option(request, conn, status, &reason, Some(h.option()));
        }
        let o = &mut self.options;
        match &mut o.incoming {
            Some(i) if i.request == request => i.header = Some(h),
            // Data of another request without its announcement: dropped.
            _ => {
                o.incoming = Some(Incoming {
                    request,
                    header: Some(h),
                    asm: Assembler::default(),
                })
            }
        }
        self.check_program();
    }

    /// TRANSPORT_OPTION_DATA: bytes of the peer's program `request`.
    pub(crate) fn on_transport_option_data(&mut self, request: u32, offset: u32, data: &[u8]) {
        if self.cfg.peer_cc_programs == CcProgramPolicy::Refuse
            || self.options.finished.contains(&request)
        {
            return;
        }
        let max = self.cfg.max_cc_program;
        let o = &mut self.options;
        let incoming = match &mut o.incoming {
            Some(i) if i.request == request => i,
            // The program being received goes on; this is a stray.
            Some(i) if i.header.is_some() => return,
            // Data before its announcement (another connection, or the
            // frames of one record read from its end).
            _ => o.incoming.insert(Incoming {
                request,
                header: None,
                asm: Assembler::default(),
            }),
        };
        let limit = incoming.header.as_ref().map_or(max, |h| h.len as usize);
        let end = offset as usize + data.len();
        // Tiny pieces cost more than their bytes (Assembler::held): at most
        // twice the program's size in all.
        let too_much = end > limit || incoming.asm.held() > 2 * limit;
        if too_much {
            let Some(h) = &incoming.header else {
                // Not announced yet: dropped, and its announcement (if it
                // comes) is judged on its own.
                o.incoming = None;
                return;
            };
            let (conn, option) = (h.conn, h.option());
            self.options.finish(request);
            let reason = "program data past its announced length, or in too many pieces";
            return self.refuse_option(request, conn, OptionStatus::BadValue, reason, Some(option));
        }
        incoming
            .asm
            .insert(offset as u64, Bytes::copy_from_slice(data));
        self.check_program();
    }

    /// Hands the peer's program to the runtime once all its bytes are here
    /// and match its digest.
    fn check_program(&mut self) {
        let Some(i) = &self.options.incoming else {
            return;
        };
        let Some(h) = &i.header else {
            return;
        };
        if i.asm.contiguous_end() < h.len as u64 {
            return;
        }
        let request = i.request;
        let Some(Incoming {
            header: Some(h),
            mut asm,
            ..
        }) = self.options.incoming.take()
        else {
            return;
        };
        self.options.finish(request);
        let mut program = Vec::with_capacity(h.len as usize);
        while let Some(piece) = asm.read(usize::MAX) {
            program.extend_from_slice(&piece);
        }
        if openssl::sha::sha256(&program) != h.digest {
            let reason = "the program's SHA-256 differs from the one announced";
            return self.refuse_option(
                request,
                h.conn,
                OptionStatus::BadValue,
                reason,
                Some(h.option()),
            );
        }
        self.events.push_back(Event::PeerOption {
            request,
            conn: h.conn,
            option: PeerOption::CongestionProgram {
                name: h.name,
                digest: h.digest,
                program: program.into(),
            },
        });
    }

    /// A TRANSPORT_OPTION_ACK: the answer to one of ours (unknown ids,
    /// repeated answers after a re-send, are ignored).
    pub(crate) fn on_transport_option_ack(&mut self, request: u32, status: u8, reason: &[u8]) {
        let Some((conn, option)) = self.options.ours.remove(&request) else {
            return;
        };
        self.options.to_send.retain(|r| *r != request);
        // A refusal can come before all of a program is out.
        self.options.chunks.retain(|(r, _)| *r != request);
        let answer = match OptionStatus::from_u8(status) {
            OptionStatus::Applied => Ok(()),
            s => Err((s, String::from_utf8_lossy(reason).into_owned())),
        };
        self.events.push_back(Event::PeerOptionAnswered {
            request,
            conn,
            option,
            answer,
        });
    }
}
