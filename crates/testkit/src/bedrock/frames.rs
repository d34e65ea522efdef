//! Encoding of AWS event-stream frames for the Bedrock fake.
//!
//! Uses `aws-smithy-eventstream`'s writer, so the prelude and message CRCs are
//! right by construction; [`corrupt_crc`] breaks one on purpose for fault tests.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;

fn encode(headers: Vec<(&'static str, String)>, payload: Vec<u8>) -> Bytes {
    let mut msg = Message::new(payload);
    for (name, value) in headers {
        msg = msg.add_header(Header::new(name, HeaderValue::String(value.into())));
    }
    let mut out = Vec::new();
    write_message_to(&msg, &mut out).expect("a fake's frame headers are always valid");
    Bytes::from(out)
}

/// Pads a JSON object payload with a `"p"` field of `pad` letters, as the service does.
fn padded(mut payload: serde_json::Value, pad: usize) -> Vec<u8> {
    if pad > 0
        && let Some(obj) = payload.as_object_mut()
    {
        let letters: String = (0..pad).map(|i| char::from(b'a' + u8::try_from(i % 26).expect("i % 26 < 26"))).collect();
        obj.insert("p".into(), serde_json::Value::String(letters));
    }
    serde_json::to_vec(&payload).expect("JSON values serialise")
}

/// An `:message-type=event` frame for `event_type` with a JSON payload.
pub fn event_frame(event_type: &str, payload: serde_json::Value, pad: usize) -> Bytes {
    encode(
        vec![
            (":event-type", event_type.to_owned()),
            (":content-type", "application/json".to_owned()),
            (":message-type", "event".to_owned()),
        ],
        padded(payload, pad),
    )
}

/// An `:message-type=exception` frame (e.g. `throttlingException`) with `{"message":…}`.
pub fn exception_frame(exception_type: &str, message: &str) -> Bytes {
    encode(
        vec![
            (":exception-type", exception_type.to_owned()),
            (":content-type", "application/json".to_owned()),
            (":message-type", "exception".to_owned()),
        ],
        padded(serde_json::json!({ "message": message }), 0),
    )
}

/// Flips a bit of the message CRC, so a correct decoder must reject the frame.
pub fn corrupt_crc(frame: &Bytes) -> Bytes {
    let mut v = frame.to_vec();
    if let Some(last) = v.last_mut() {
        *last ^= 0x01;
    }
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::read_message_from;

    #[test]
    fn frames_round_trip_and_match_the_reference_vector() {
        // Same headers and payload as the fact sheet's vector (section 3.2), no padding.
        let f =
            event_frame("contentBlockDelta", serde_json::json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}), 0);
        assert_eq!(f.len(), 148);
        assert_eq!(&f[8..12], &[0xb4, 0xab, 0x9a, 0xee]);
        assert_eq!(&f[144..], &[0x1f, 0x94, 0x46, 0x57]);
        let msg = read_message_from(&mut f.clone()).expect("decodes");
        assert_eq!(msg.headers().len(), 3);
        let padded = event_frame("messageStop", serde_json::json!({"stopReason": "end_turn"}), 7);
        let msg = read_message_from(&mut padded.clone()).expect("decodes");
        let v: serde_json::Value = serde_json::from_slice(msg.payload()).expect("json");
        assert_eq!(v["p"], "abcdefg");
        assert!(read_message_from(&mut corrupt_crc(&padded)).is_err());
    }
}
