//! Frame decoder: arbitrary record plaintext through `FrameIter`.
//!
//! Checks, besides "never panics":
//! - every decoded frame re-encodes to exactly `encoded_len()` bytes and
//!   decodes back to itself (a CLOSE or TRANSPORT_OPTION_ACK reason is cut
//!   to `MAX_REASON_LEN` by the encoder, so only that prefix must survive);
//! - the iterator yields nothing after its first error;
//! - when the whole input decodes, re-encoding the frames in record order
//!   reproduces the input byte for byte (the encoding is canonical).

use tcpls_proto::wire::frame::MAX_REASON_LEN;
use tcpls_proto::wire::{Frame, FrameIter};

fn check_round_trip(frame: &Frame<'_>) {
    let mut out = Vec::new();
    frame.encode(&mut out);
    assert_eq!(
        out.len(),
        frame.encoded_len(),
        "encoded_len disagrees with encode for {frame:?}"
    );

    let mut again = FrameIter::new(&out);
    let decoded = again
        .next()
        .expect("an encoded frame yields a frame")
        .unwrap_or_else(|e| panic!("re-encoded {frame:?} does not decode: {e}"));
    assert!(again.next().is_none(), "one frame encodes to one frame");
    match (frame, &decoded) {
        (
            Frame::Close { code, reason },
            Frame::Close {
                code: code2,
                reason: reason2,
            },
        ) => {
            assert_eq!(code, code2);
            assert_eq!(&reason[..reason.len().min(MAX_REASON_LEN)], *reason2);
        }
        (
            Frame::TransportOptionAck {
                request,
                status,
                reason,
            },
            Frame::TransportOptionAck {
                request: request2,
                status: status2,
                reason: reason2,
            },
        ) => {
            assert_eq!((request, status), (request2, status2));
            assert_eq!(&reason[..reason.len().min(MAX_REASON_LEN)], *reason2);
        }
        _ => assert_eq!(frame, &decoded),
    }
}

/// The target: see the module documentation.
pub fn frames(data: &[u8]) {
    let mut frames = Vec::new();
    let mut all_ok = true;
    let mut canonical = true;
    let mut it = FrameIter::new(data);
    while let Some(item) = it.next() {
        match item {
            Ok(frame) => {
                check_round_trip(&frame);
                if let Frame::Close { reason, .. } | Frame::TransportOptionAck { reason, .. } =
                    &frame
                {
                    canonical &= reason.len() <= MAX_REASON_LEN;
                }
                frames.push(frame);
            }
            Err(_) => {
                all_ok = false;
                assert!(it.next().is_none(), "FrameIter continued after an error");
                break;
            }
        }
    }

    if all_ok && canonical {
        // Frames come out last-first; encoding them first-first rebuilds the record.
        let mut rebuilt = Vec::with_capacity(data.len());
        for f in frames.iter().rev() {
            f.encode(&mut rebuilt);
        }
        assert_eq!(rebuilt, data, "decode/encode is not the identity");
    }
}
