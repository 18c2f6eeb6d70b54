//! RTMP message types, protocol control / user control payloads and command helpers.
//!
//! Pure data: builds and parses message payloads; chunking lives in `chunk`, decisions in `session`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::amf0::{self, Amf0Value};
use super::chunk::RawMessage;
use super::RtmpError;

pub const SET_CHUNK_SIZE: u8 = 1;
pub const ABORT: u8 = 2;
pub const ACKNOWLEDGEMENT: u8 = 3;
pub const USER_CONTROL: u8 = 4;
pub const WINDOW_ACK_SIZE: u8 = 5;
pub const SET_PEER_BANDWIDTH: u8 = 6;
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;
pub const DATA_AMF3: u8 = 15;
pub const SHARED_OBJECT_AMF3: u8 = 16;
pub const COMMAND_AMF3: u8 = 17;
pub const DATA_AMF0: u8 = 18;
pub const SHARED_OBJECT_AMF0: u8 = 19;
pub const COMMAND_AMF0: u8 = 20;
pub const AGGREGATE: u8 = 22;

/// User control event types.
pub const UC_STREAM_BEGIN: u16 = 0;
pub const UC_STREAM_EOF: u16 = 1;
pub const UC_PING_REQUEST: u16 = 6;
pub const UC_PING_RESPONSE: u16 = 7;

/// Chunk stream ids we send on.
pub const CSID_CONTROL: u32 = 2;
pub const CSID_COMMAND: u32 = 3;
pub const CSID_AUDIO: u32 = 4;
pub const CSID_STREAM: u32 = 5;
pub const CSID_VIDEO: u32 = 6;

pub fn u32_payload(v: u32) -> Bytes {
    Bytes::copy_from_slice(&v.to_be_bytes())
}

pub fn peer_bandwidth_payload(size: u32, limit_type: u8) -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u32(size);
    b.put_u8(limit_type);
    b.freeze()
}

pub fn user_control_payload(event: u16, value: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(6);
    b.put_u16(event);
    b.put_u32(value);
    b.freeze()
}

/// Reads a big-endian u32 from the front of a control message payload.
pub fn read_u32(payload: &[u8], what: &'static str) -> Result<u32, RtmpError> {
    let mut p = payload;
    if p.len() < 4 {
        return Err(RtmpError::MalformedMessage(what));
    }
    Ok(p.get_u32())
}

/// Sub-messages an Aggregate may carry at most (real ones carry a handful; tiny parts
/// would turn one message into hundreds of thousands of events).
pub const MAX_AGGREGATE_PARTS: usize = 1024;

/// Splits an Aggregate message (type 22) into its sub-messages, lazily. Each is an FLV-style
/// tag: type (1), size (3), timestamp (3 + 1 extended high byte), stream id (3), body, then
/// the 4-byte size of the tag. The aggregate's timestamp replaces the first sub-message's;
/// the others keep their offset from it. Sub-messages share the aggregate's chunk stream and
/// message stream id. Each body is copied into its own allocation: a slice would keep the
/// whole aggregate alive for as long as any one part is cached. A truncated part, or more
/// than [`MAX_AGGREGATE_PARTS`], is an error.
pub fn aggregate_parts(m: &RawMessage) -> impl Iterator<Item = Result<RawMessage, RtmpError>> + '_ {
    const HEADER: usize = 11;
    let data = &m.payload;
    let (mut pos, mut count, mut first_ts, mut failed) = (0usize, 0usize, None, false);
    std::iter::from_fn(move || {
        if failed || pos >= data.len() {
            return None;
        }
        let mut bad = |what| {
            failed = true;
            Some(Err(RtmpError::MalformedMessage(what)))
        };
        count += 1;
        if count > MAX_AGGREGATE_PARTS {
            return bad("Aggregate (too many parts)");
        }
        let Some(h) = data.get(pos..pos + HEADER) else { return bad("Aggregate") };
        let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let start = pos + HEADER;
        let Some(end) = start.checked_add(size).filter(|&e| e + 4 <= data.len()) else { return bad("Aggregate") };
        let first = *first_ts.get_or_insert(ts);
        pos = end + 4; // the back pointer is not needed to walk forwards
        Some(Ok(RawMessage {
            csid: m.csid,
            type_id: h[0],
            stream_id: m.stream_id,
            timestamp: m.timestamp.wrapping_add(ts.wrapping_sub(first)),
            payload: Bytes::copy_from_slice(&data[start..end]),
        }))
    })
}

/// A decoded command message: name, transaction id, command object, further arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub transaction_id: f64,
    pub object: Amf0Value,
    pub args: Vec<Amf0Value>,
}

impl Command {
    /// Parses an AMF0 command (type 20) or AMF3 command (type 17, one leading format byte).
    pub fn parse(type_id: u8, payload: &[u8]) -> Result<Command, RtmpError> {
        let mut p = payload;
        if type_id == COMMAND_AMF3 && !p.is_empty() {
            p = &p[1..];
        }
        // one value budget for the whole message
        let mut budget = amf0::MAX_VALUES;
        let budget = &mut budget;
        let name = match amf0::decode_counted(&mut p, budget)? {
            Amf0Value::String(s) | Amf0Value::LongString(s) => s,
            _ => return Err(RtmpError::MalformedMessage("command (name)")),
        };
        let transaction_id =
            if p.is_empty() { 0.0 } else { amf0::decode_counted(&mut p, budget)?.as_number().unwrap_or(0.0) };
        let object = if p.is_empty() { Amf0Value::Null } else { amf0::decode_counted(&mut p, budget)? };
        let args = amf0::decode_all_counted(p, budget)?;
        Ok(Command { name, transaction_id, object, args })
    }

    pub fn arg_str(&self, i: usize) -> Option<&str> {
        self.args.get(i).and_then(Amf0Value::as_str)
    }

    pub fn arg_number(&self, i: usize) -> Option<f64> {
        self.args.get(i).and_then(Amf0Value::as_number)
    }

    /// A boolean argument (some clients send 0/1 numbers instead).
    pub fn arg_bool(&self, i: usize) -> Option<bool> {
        match self.args.get(i)? {
            Amf0Value::Boolean(b) => Some(*b),
            Amf0Value::Number(n) => Some(*n != 0.0),
            _ => None,
        }
    }
}

/// Encodes `name, transaction id, values...` as an AMF0 command payload.
pub fn command_payload(name: &str, transaction_id: f64, values: &[Amf0Value]) -> Bytes {
    let mut out = BytesMut::new();
    amf0::encode(&mut out, &Amf0Value::string(name));
    amf0::encode(&mut out, &Amf0Value::Number(transaction_id));
    for v in values {
        amf0::encode(&mut out, v);
    }
    out.freeze()
}

/// The status object of an onStatus / _error.
pub fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::object([
        ("level", Amf0Value::string(level)),
        ("code", Amf0Value::string(code)),
        ("description", Amf0Value::string(description)),
    ])
}

/// Splits "name?query" into ("name", "query"); query is "" when absent.
pub fn split_query(s: &str) -> (&str, &str) {
    match s.split_once('?') {
        Some((n, q)) => (n, q),
        None => (s, ""),
    }
}

/// For a data message (type 18, or 15 with an optional leading 0x00), returns the
/// `"onMetaData", object` part as an AMF0 payload slice (no copy), if it is metadata.
pub fn metadata_payload(type_id: u8, payload: &Bytes) -> Result<Option<Bytes>, RtmpError> {
    let mut start = 0;
    if type_id == DATA_AMF3 && payload.len() >= 2 && payload[0] == 0x00 && payload[1] == 0x02 {
        start = 1;
    }
    let body = payload.slice(start..);
    let mut p: &[u8] = &body;
    let first = amf0::decode(&mut p)?;
    let rest_off = body.len() - p.len();
    match first.as_str() {
        Some("onMetaData") => Ok(Some(body)),
        Some("@setDataFrame") => {
            let rest = body.slice(rest_off..);
            let mut q: &[u8] = &rest;
            match amf0::decode(&mut q)?.as_str() {
                Some("onMetaData") => Ok(Some(rest)),
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trip_amf0_and_amf3() {
        let p = command_payload("publish", 5.0, &[Amf0Value::Null, Amf0Value::string("x"), Amf0Value::string("live")]);
        let c = Command::parse(COMMAND_AMF0, &p).unwrap();
        assert_eq!(c.name, "publish");
        assert_eq!(c.transaction_id, 5.0);
        assert_eq!(c.object, Amf0Value::Null);
        assert_eq!(c.arg_str(0), Some("x"));
        let mut p3 = vec![0u8];
        p3.extend_from_slice(&p);
        assert_eq!(Command::parse(COMMAND_AMF3, &p3).unwrap(), c);
    }

    #[test]
    fn metadata_is_sliced_from_set_data_frame() {
        let obj = Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(320.0))]);
        let full =
            amf0::encode_all(&[Amf0Value::string("@setDataFrame"), Amf0Value::string("onMetaData"), obj.clone()]);
        let want = amf0::encode_all(&[Amf0Value::string("onMetaData"), obj]);
        assert_eq!(metadata_payload(DATA_AMF0, &full).unwrap().unwrap(), want);
        assert_eq!(metadata_payload(DATA_AMF0, &want).unwrap().unwrap(), want);
        let mut amf3 = vec![0u8];
        amf3.extend_from_slice(&full);
        assert_eq!(metadata_payload(DATA_AMF3, &Bytes::from(amf3)).unwrap().unwrap(), want);
        let other = amf0::encode_all(&[Amf0Value::string("|RtmpSampleAccess"), Amf0Value::Boolean(true)]);
        assert_eq!(metadata_payload(DATA_AMF0, &other).unwrap(), None);
    }

    #[test]
    fn split_query_cases() {
        assert_eq!(split_query("x?a=1&b"), ("x", "a=1&b"));
        assert_eq!(split_query("x"), ("x", ""));
    }
}
