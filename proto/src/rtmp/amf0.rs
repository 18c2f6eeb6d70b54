//! AMF0 values: decoding with a nesting limit and encoding.
//!
//! Covers every AMF0 type RTMP peers send in commands and metadata. References (0x07) and
//! AMF3 switches inside AMF0 are not followed: references decode as `Undefined`, the
//! AVM+ marker is an error. Decoding never recurses deeper than [`MAX_DEPTH`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::RtmpError;

/// Maximum nesting of objects/arrays accepted by the decoder.
pub const MAX_DEPTH: usize = 64;
/// Most values (of any kind, nested ones included) decoded from one message. Real commands
/// and metadata carry tens; the cap keeps a message of 1-byte values (each decoding to a
/// 32-byte [`Amf0Value`]) from turning megabytes of input into hundreds of megabytes.
pub const MAX_VALUES: usize = 16_384;
/// Elements reserved up front for a strict array at most; it grows as elements decode.
const MAX_RESERVE: usize = 64;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const REFERENCE: u8 = 0x07;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;
const UNSUPPORTED: u8 = 0x0D;
const XML_DOCUMENT: u8 = 0x0F;
const TYPED_OBJECT: u8 = 0x10;

/// One AMF0 value. Object-like values keep their properties in wire order.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    /// Milliseconds since the epoch and the (unused) time-zone field.
    Date {
        millis: f64,
        tz: i16,
    },
    LongString(String),
    /// The object-end marker, only meaningful as a top-level value in odd streams.
    ObjectEnd,
}

impl Amf0Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) | Amf0Value::LongString(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// Properties of an object or ECMA array.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => Some(p),
            _ => None,
        }
    }

    /// Looks up a property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Convenience constructor for an object.
    pub fn object<I, K>(props: I) -> Amf0Value
    where
        I: IntoIterator<Item = (K, Amf0Value)>,
        K: Into<String>,
    {
        Amf0Value::Object(props.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn string(s: impl Into<String>) -> Amf0Value {
        Amf0Value::String(s.into())
    }
}

/// Decodes one value from the front of `buf`, advancing it, with a budget of
/// [`MAX_VALUES`] values.
pub fn decode(buf: &mut &[u8]) -> Result<Amf0Value, RtmpError> {
    let mut budget = MAX_VALUES;
    decode_counted(buf, &mut budget)
}

/// Decodes one value from the front of `buf`, advancing it; every value decoded (nested
/// ones too) takes one from `budget`, and running out is an error. Decoding the values of
/// one message against one budget bounds what the whole message can decode to.
pub fn decode_counted(buf: &mut &[u8], budget: &mut usize) -> Result<Amf0Value, RtmpError> {
    Decoder { budget }.value(buf, 0)
}

/// Decodes all values in `buf` (against one budget of [`MAX_VALUES`]).
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf0Value>, RtmpError> {
    let mut budget = MAX_VALUES;
    decode_all_counted(buf, &mut budget)
}

/// Decodes all values in `buf` against `budget` (see [`decode_counted`]).
pub fn decode_all_counted(mut buf: &[u8], budget: &mut usize) -> Result<Vec<Amf0Value>, RtmpError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(decode_counted(&mut buf, budget)?);
    }
    Ok(out)
}

fn need(buf: &[u8], n: usize) -> Result<(), RtmpError> {
    if buf.len() < n {
        Err(RtmpError::AmfTruncated)
    } else {
        Ok(())
    }
}

fn read_u8(buf: &mut &[u8]) -> Result<u8, RtmpError> {
    need(buf, 1)?;
    Ok(buf.get_u8())
}

fn read_utf8(buf: &mut &[u8], len: usize) -> Result<String, RtmpError> {
    need(buf, len)?;
    let (s, rest) = buf.split_at(len);
    *buf = rest;
    String::from_utf8(s.to_vec()).map_err(|_| RtmpError::AmfInvalidUtf8)
}

fn read_short_string(buf: &mut &[u8]) -> Result<String, RtmpError> {
    need(buf, 2)?;
    let len = buf.get_u16() as usize;
    read_utf8(buf, len)
}

fn read_long_string(buf: &mut &[u8]) -> Result<String, RtmpError> {
    need(buf, 4)?;
    let len = buf.get_u32() as usize;
    read_utf8(buf, len)
}

struct Decoder<'a> {
    budget: &'a mut usize,
}

impl Decoder<'_> {
    /// Reads `key, value` pairs until the empty key + object-end marker (or, leniently, the end of input).
    fn read_properties(&mut self, buf: &mut &[u8], depth: usize) -> Result<Vec<(String, Amf0Value)>, RtmpError> {
        let mut props = Vec::new();
        loop {
            if buf.is_empty() {
                // Some encoders omit the terminator of the last ECMA array; tolerate it.
                return Ok(props);
            }
            let key = read_short_string(buf)?;
            if key.is_empty() && buf.first() == Some(&OBJECT_END) {
                buf.advance(1);
                return Ok(props);
            }
            let value = self.value(buf, depth + 1)?;
            props.push((key, value));
        }
    }

    fn value(&mut self, buf: &mut &[u8], depth: usize) -> Result<Amf0Value, RtmpError> {
        if depth > MAX_DEPTH {
            return Err(RtmpError::AmfTooDeep(MAX_DEPTH));
        }
        let Some(left) = self.budget.checked_sub(1) else {
            return Err(RtmpError::AmfTooManyValues(MAX_VALUES));
        };
        *self.budget = left;
        let marker = read_u8(buf)?;
        Ok(match marker {
            NUMBER => {
                need(buf, 8)?;
                Amf0Value::Number(buf.get_f64())
            }
            BOOLEAN => Amf0Value::Boolean(read_u8(buf)? != 0),
            STRING => Amf0Value::String(read_short_string(buf)?),
            OBJECT => Amf0Value::Object(self.read_properties(buf, depth)?),
            NULL => Amf0Value::Null,
            UNDEFINED | UNSUPPORTED => Amf0Value::Undefined,
            REFERENCE => {
                need(buf, 2)?;
                buf.advance(2);
                Amf0Value::Undefined
            }
            ECMA_ARRAY => {
                need(buf, 4)?;
                let _count = buf.get_u32(); // advisory only; the terminator ends the array
                Amf0Value::EcmaArray(self.read_properties(buf, depth)?)
            }
            OBJECT_END => Amf0Value::ObjectEnd,
            STRICT_ARRAY => {
                need(buf, 4)?;
                let count = buf.get_u32();
                // Every element takes at least one byte of input and one value of the budget.
                if count as usize > buf.len() {
                    return Err(RtmpError::AmfArrayTooLong(count));
                }
                if count as usize > *self.budget {
                    return Err(RtmpError::AmfTooManyValues(MAX_VALUES));
                }
                // reserve little: nested arrays each declaring a huge count must not reserve
                // address space for elements the input never brings
                let mut items = Vec::with_capacity((count as usize).min(MAX_RESERVE));
                for _ in 0..count {
                    items.push(self.value(buf, depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            DATE => {
                need(buf, 10)?;
                let millis = buf.get_f64();
                let tz = buf.get_i16();
                Amf0Value::Date { millis, tz }
            }
            LONG_STRING | XML_DOCUMENT => Amf0Value::LongString(read_long_string(buf)?),
            TYPED_OBJECT => {
                let _class = read_short_string(buf)?;
                Amf0Value::Object(self.read_properties(buf, depth)?)
            }
            other => return Err(RtmpError::AmfUnknownMarker(other)),
        })
    }
}

fn write_short_str(out: &mut BytesMut, s: &str) {
    // Keys and short strings are limited to u16 lengths; longer keys are truncated at a char boundary.
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

fn write_properties(out: &mut BytesMut, props: &[(String, Amf0Value)]) {
    for (k, v) in props {
        write_short_str(out, k);
        encode(out, v);
    }
    out.put_u16(0);
    out.put_u8(OBJECT_END);
}

/// Appends the encoding of `value` to `out`.
pub fn encode(out: &mut BytesMut, value: &Amf0Value) {
    match value {
        Amf0Value::Number(n) => {
            out.put_u8(NUMBER);
            out.put_f64(*n);
        }
        Amf0Value::Boolean(b) => {
            out.put_u8(BOOLEAN);
            out.put_u8(*b as u8);
        }
        Amf0Value::String(s) | Amf0Value::LongString(s) => {
            if s.len() <= u16::MAX as usize && matches!(value, Amf0Value::String(_)) {
                out.put_u8(STRING);
                out.put_u16(s.len() as u16);
            } else {
                out.put_u8(LONG_STRING);
                out.put_u32(s.len().min(u32::MAX as usize) as u32);
            }
            out.put_slice(s.as_bytes());
        }
        Amf0Value::Object(props) => {
            out.put_u8(OBJECT);
            write_properties(out, props);
        }
        Amf0Value::Null => out.put_u8(NULL),
        Amf0Value::Undefined => out.put_u8(UNDEFINED),
        Amf0Value::EcmaArray(props) => {
            out.put_u8(ECMA_ARRAY);
            out.put_u32(props.len() as u32);
            write_properties(out, props);
        }
        Amf0Value::StrictArray(items) => {
            out.put_u8(STRICT_ARRAY);
            out.put_u32(items.len() as u32);
            for item in items {
                encode(out, item);
            }
        }
        Amf0Value::Date { millis, tz } => {
            out.put_u8(DATE);
            out.put_f64(*millis);
            out.put_i16(*tz);
        }
        Amf0Value::ObjectEnd => out.put_u8(OBJECT_END),
    }
}

/// Encodes a sequence of values into a new buffer.
pub fn encode_all(values: &[Amf0Value]) -> Bytes {
    let mut out = BytesMut::new();
    for v in values {
        encode(&mut out, v);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Amf0Value) {
        let bytes = encode_all(std::slice::from_ref(&v));
        let mut slice = &bytes[..];
        let back = decode(&mut slice).unwrap();
        assert!(slice.is_empty(), "trailing bytes for {v:?}");
        assert_eq!(back, v);
    }

    #[test]
    fn round_trips_every_type() {
        round_trip(Amf0Value::Number(1.5));
        round_trip(Amf0Value::Number(-0.0));
        round_trip(Amf0Value::Boolean(true));
        round_trip(Amf0Value::Boolean(false));
        round_trip(Amf0Value::string("héllo"));
        round_trip(Amf0Value::string(""));
        round_trip(Amf0Value::LongString("x".repeat(70_000)));
        round_trip(Amf0Value::Null);
        round_trip(Amf0Value::Undefined);
        round_trip(Amf0Value::ObjectEnd);
        round_trip(Amf0Value::Date { millis: 1.7e12, tz: -60 });
        round_trip(Amf0Value::object([
            ("app", Amf0Value::string("live")),
            ("n", Amf0Value::Number(3.0)),
            ("nested", Amf0Value::object([("x", Amf0Value::Null)])),
        ]));
        round_trip(Amf0Value::EcmaArray(vec![
            ("duration".into(), Amf0Value::Number(0.0)),
            ("encoder".into(), Amf0Value::string("Lavf")),
        ]));
        round_trip(Amf0Value::StrictArray(vec![Amf0Value::Number(1.0), Amf0Value::string("a")]));
        round_trip(Amf0Value::StrictArray(vec![]));
    }

    #[test]
    fn a_strict_array_of_a_million_nulls_is_refused() {
        let mut input = vec![STRICT_ARRAY];
        input.extend_from_slice(&1_000_000u32.to_be_bytes());
        input.extend(std::iter::repeat_n(NULL, 1_000_000));
        assert_eq!(decode(&mut &input[..]), Err(RtmpError::AmfTooManyValues(MAX_VALUES)));
        // declared small but values spread over many arrays: the per-message budget holds
        let mut many = Vec::new();
        for _ in 0..100 {
            many.push(STRICT_ARRAY);
            many.extend_from_slice(&1000u32.to_be_bytes());
            many.extend(std::iter::repeat_n(NULL, 1000));
        }
        assert_eq!(decode_all(&many), Err(RtmpError::AmfTooManyValues(MAX_VALUES)));
        // what fits the budget still decodes
        let mut ok = vec![STRICT_ARRAY];
        ok.extend_from_slice(&1000u32.to_be_bytes());
        ok.extend(std::iter::repeat_n(NULL, 1000));
        assert!(matches!(decode(&mut &ok[..]), Ok(Amf0Value::StrictArray(v)) if v.len() == 1000));
    }

    #[test]
    fn nested_strict_arrays_reserve_only_what_the_input_fills() {
        // 64 levels, each declaring as many elements as the rest of the input could hold:
        // the old decoder reserved count × 32 bytes at every level (gigabytes of address
        // space from one message); now each level reserves at most MAX_RESERVE
        let levels = MAX_DEPTH;
        let mut input = Vec::new();
        let tail = 8 * 1024 * 1024 - 5 * levels;
        for i in 0..levels {
            input.push(STRICT_ARRAY);
            let count = (tail + 5 * (levels - i - 1)).min(MAX_VALUES) as u32;
            input.extend_from_slice(&count.to_be_bytes());
        }
        input.extend(std::iter::repeat_n(NULL, tail));
        let mut budget = MAX_VALUES;
        let r = decode_counted(&mut &input[..], &mut budget);
        assert!(matches!(r, Err(RtmpError::AmfTooManyValues(_)) | Err(RtmpError::AmfArrayTooLong(_))), "{r:?}");
    }

    #[test]
    fn long_short_string_becomes_long_string() {
        let s = "y".repeat(70_000);
        let bytes = encode_all(&[Amf0Value::String(s.clone())]);
        assert_eq!(bytes[0], LONG_STRING);
        assert_eq!(decode_all(&bytes).unwrap(), vec![Amf0Value::LongString(s)]);
    }

    #[test]
    fn reference_decodes_as_undefined() {
        assert_eq!(decode_all(&[REFERENCE, 0, 1]).unwrap(), vec![Amf0Value::Undefined]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let depth = 100_000;
        let mut buf = Vec::new();
        for _ in 0..depth {
            buf.push(STRICT_ARRAY);
            buf.extend_from_slice(&1u32.to_be_bytes());
        }
        buf.push(NULL);
        assert_eq!(decode_all(&buf), Err(RtmpError::AmfTooDeep(MAX_DEPTH)));

        let mut buf = Vec::new();
        for _ in 0..depth {
            buf.push(OBJECT);
            buf.extend_from_slice(&[0, 1, b'a']);
        }
        assert_eq!(decode_all(&buf), Err(RtmpError::AmfTooDeep(MAX_DEPTH)));
    }

    #[test]
    fn truncated_and_garbage_inputs_are_errors() {
        assert_eq!(decode_all(&[NUMBER, 0, 0]), Err(RtmpError::AmfTruncated));
        assert_eq!(decode_all(&[STRING, 0, 5, b'a']), Err(RtmpError::AmfTruncated));
        assert_eq!(decode_all(&[0x11]), Err(RtmpError::AmfUnknownMarker(0x11)));
        assert_eq!(decode_all(&[STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF]), Err(RtmpError::AmfArrayTooLong(u32::MAX)));
        assert_eq!(decode_all(&[STRING, 0, 1, 0xFF]), Err(RtmpError::AmfInvalidUtf8));
    }

    #[test]
    fn unterminated_ecma_array_is_tolerated() {
        let mut buf = vec![ECMA_ARRAY, 0, 0, 0, 1, 0, 1, b'a'];
        buf.push(BOOLEAN);
        buf.push(1);
        assert_eq!(decode_all(&buf).unwrap(), vec![Amf0Value::EcmaArray(vec![("a".into(), Amf0Value::Boolean(true))])]);
    }
}
