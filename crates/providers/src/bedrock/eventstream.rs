//! Incremental decoding of the AWS binary event-stream framing (`application/vnd.amazon.eventstream`).
//!
//! Bytes arrive in arbitrary chunks: a message may span reads and one read may hold
//! several messages. [`FrameDecoder`] buffers them and hands out whole [`Frame`]s,
//! with both CRCs checked by `aws-smithy-eventstream` before anything is trusted.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::{Bytes, BytesMut};

/// What a frame carries, from its `:message-type` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// `:message-type=event`, with its `:event-type`.
    Event(String),
    /// `:message-type=exception`, with its `:exception-type`.
    Exception(String),
    /// `:message-type=error`, with `:error-code` and `:error-message`.
    Error {
        /// `:error-code`.
        code: String,
        /// `:error-message`.
        message: String,
    },
}

/// One decoded message: its kind and JSON payload bytes.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) kind: FrameKind,
    pub(crate) payload: Bytes,
}

/// A frame that failed its CRC or length checks, or lacks its type headers.
#[derive(Debug, thiserror::Error)]
#[error("malformed event-stream frame: {0}")]
pub(crate) struct FrameError(pub(crate) String);

/// Buffers bytes and yields complete frames.
#[derive(Debug, Default)]
pub(crate) struct FrameDecoder {
    buf: BytesMut,
    inner: MessageFrameDecoder,
}

impl FrameDecoder {
    /// Appends bytes received from the network.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, or `None` if more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError`] on a bad CRC, impossible lengths or missing type headers; the
    /// stream cannot be resynchronised after that.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match self.inner.decode_frame(&mut self.buf) {
            Ok(DecodedFrame::Incomplete) => Ok(None),
            Ok(DecodedFrame::Complete(msg)) => classify(msg).map(Some),
            Err(e) => Err(FrameError(e.to_string())),
        }
    }

    /// Whether bytes of an unfinished frame are buffered (true at EOF means truncation).
    pub(crate) fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

fn header_str<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.headers().iter().find(|h| h.name().as_str() == name).and_then(|h| match h.value() {
        HeaderValue::String(s) => Some(s.as_str()),
        _ => None,
    })
}

fn classify(msg: Message) -> Result<Frame, FrameError> {
    let need = |name: &str| {
        header_str(&msg, name).map(str::to_owned).ok_or_else(|| FrameError(format!("missing header {name}")))
    };
    let kind = match header_str(&msg, ":message-type") {
        Some("event") => FrameKind::Event(need(":event-type")?),
        Some("exception") => FrameKind::Exception(need(":exception-type")?),
        Some("error") => FrameKind::Error {
            code: need(":error-code")?,
            message: header_str(&msg, ":error-message").unwrap_or("").to_owned(),
        },
        Some(other) => return Err(FrameError(format!("unknown :message-type {other:?}"))),
        None => return Err(FrameError("missing header :message-type".into())),
    };
    Ok(Frame { kind, payload: msg.payload().clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the protocol fact sheet (section 3.2).
    const VECTOR: &str = "0000009400000057b4ab9aee0b3a6576656e742d74797065070011636f6e74656e74426c6f636b\
44656c74610d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d\
3a6d6573736167652d747970650700056576656e747b22636f6e74656e74426c6f636b496e6465\
78223a302c2264656c7461223a7b2274657874223a224869227d7d1f944657";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn decodes_the_reference_vector_byte_by_byte() {
        let bytes = unhex(VECTOR);
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        let mut d = FrameDecoder::default();
        let mut frames = Vec::new();
        for b in &twice {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().expect("valid") {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert!(!d.has_partial());
        assert_eq!(frames[0].kind, FrameKind::Event("contentBlockDelta".into()));
        assert_eq!(&frames[1].payload[..], br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#);
    }

    #[test]
    fn rejects_corrupted_crc() {
        for pos in [9, 100, 147] {
            let mut bytes = unhex(VECTOR);
            bytes[pos] ^= 0x01;
            let mut d = FrameDecoder::default();
            d.push(&bytes);
            assert!(d.next_frame().is_err(), "flip at {pos} must fail");
        }
    }

    #[test]
    fn truncated_frame_is_partial() {
        let bytes = unhex(VECTOR);
        let mut d = FrameDecoder::default();
        d.push(&bytes[..100]);
        assert!(d.next_frame().expect("incomplete ok").is_none());
        assert!(d.has_partial());
    }
}
