//! Wire formats: every byte layout TCPLS puts on the wire, with encoders and
//! checked decoders. Nothing here keeps state; `docs/protocol.md` is the
//! prose reference for the same layouts.

pub mod codec;
pub mod extension;
pub mod frame;
pub(crate) mod hello;
pub mod join;
pub mod record;

pub use codec::{Codec, Reader, RevReader, Take};
pub use extension::{JoinExtension, TcplsExtension, TransportParams};
pub use frame::{Frame, FrameIter, FrameType};
pub use record::{ContentType, RecordHeader};
