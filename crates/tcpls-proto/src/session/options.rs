//! Transport options over the secure channel (seed 002 §3.1, §4.2): a
//! side asks the peer to apply a TCP option on one connection or all of
//! them (TRANSPORT_OPTION), the peer's runtime applies it or refuses, and
//! its answer (TRANSPORT_OPTION_ACK) tells the asker which.
//!
//! The core only carries and bounds requests: applying an option
//! (`setsockopt`) is the runtime's job, through [`Event::PeerOption`] and
//! [`Session::answer_peer_option`]. What a peer may ask is local policy
//! (`TransportConfig::peer_congestion_controls`, the user timeout bounds).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

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
}

impl PeerOption {
    fn id(&self) -> TransportOptionId {
        match self {
            PeerOption::UserTimeout(_) => TransportOptionId::USER_TIMEOUT,
            PeerOption::CongestionControl(_) => TransportOptionId::CONGESTION_CONTROL,
        }
    }

    fn value(&self) -> Vec<u8> {
        match self {
            PeerOption::UserTimeout(d) => (d.as_millis().min(u32::MAX as u128) as u32)
                .to_be_bytes()
                .to_vec(),
            PeerOption::CongestionControl(name) => name.as_bytes().to_vec(),
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
        }
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
}

impl Options {
    pub fn is_empty(&self) -> bool {
        self.to_send.is_empty() && self.answers.is_empty()
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
        if let PeerOption::CongestionControl(name) = &option {
            if !valid_cc_name(name) {
                return Err(CallError::Usage("not a congestion controller name"));
            }
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
            s.options
                .answers
                .push_back((request, status, reason.to_string()));
            s.events.push_back(Event::PeerOptionRefused {
                conn,
                option,
                reason: reason.to_string(),
            });
        };
        if self.options.theirs.contains(&request) {
            return; // a repeat: its answer is on the way
        }
        if self.options.theirs.len() >= MAX_OUTSTANDING {
            // Over the bound both sides know: a well-behaved peer never
            // gets here. Dropped unanswered, so a flood costs nothing.
            tracing::debug!(request, "transport option request over the bound, dropped");
            return;
        }
        self.options.theirs.insert(request);
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
        };
        self.events.push_back(Event::PeerOption {
            request,
            conn,
            option,
        });
    }

    /// A TRANSPORT_OPTION_ACK: the answer to one of ours (unknown ids,
    /// repeated answers after a re-send, are ignored).
    pub(crate) fn on_transport_option_ack(&mut self, request: u32, status: u8, reason: &[u8]) {
        let Some((conn, option)) = self.options.ours.remove(&request) else {
            return;
        };
        self.options.to_send.retain(|r| *r != request);
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
