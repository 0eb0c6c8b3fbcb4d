//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), which
//! kubectl 1.32+ sends for `create configmap|secret|namespace` and a few
//! other commands, and Go clients configured for protobuf send for every
//! built-in kind, decoded into the JSON the rest of the server handles.
//!
//! The envelope is the 4 bytes `k8s\0` and a `runtime.Unknown` message
//! (typeMeta, raw, contentEncoding, contentType); `raw` is the object. Each
//! kind is decoded through a table of its fields, generated from upstream's
//! `generated.proto` and `types.go` by `scripts/gen-protobuf-tables` into
//! `protobuf_tables.rs`. The JSON is what Go's encoder writes for the
//! object the Go client had: see `Kind` for which empty values it omits.
//! Decoding is strict: a field number not in the table (one newer than the
//! tables) answers 415 rather than being dropped, and so do kinds without a
//! table.

use base64::Engine;
use serde_json::{Map, Value, json};

#[path = "protobuf_tables.rs"]
mod tables;

const MAGIC: &[u8] = b"k8s\0";

/// How deep messages may nest, as serde_json's limit for JSON bodies: the
/// decoder recurses, and CRD schemas nest without bound.
const DEPTH_MAX: usize = 128;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    #[error("invalid protobuf body: {0}")]
    Malformed(String),
    #[error("protobuf bodies of kind {0} are not supported yet; send JSON")]
    UnsupportedKind(String),
    #[error("protobuf field {0} is not supported yet; send JSON")]
    UnsupportedField(String),
}

fn malformed(what: &str) -> ProtobufError {
    ProtobufError::Malformed(what.to_string())
}

/// How one field is turned into JSON.
///
/// A field is written only when it is on the wire. Go clients put every
/// non-pointer field there, empty or not, so what is absent is a nil
/// pointer, slice or map, which Go's encoder omits too. Of what is on the
/// wire, a non-pointer field whose JSON tag says `omitempty` is omitted when
/// zero, as Go does; scalars therefore come in pairs (`String` and
/// `OptString`, `Flag` and `Bool`, `Int64` and `OptInt`), the first for
/// those fields, the second for pointers and fields without `omitempty`.
#[derive(Clone, Copy)]
enum Kind {
    /// A plain string with `omitempty`: "" is omitted.
    String,
    /// A `*string`, or a string without `omitempty`: "" is kept.
    OptString,
    /// A `*bool`, or a bool without `omitempty`: false is kept.
    Bool,
    /// A plain bool with `omitempty`: false is omitted.
    Flag,
    /// A plain int32 or int64 with `omitempty`: zero is omitted. Both are
    /// varints on the wire, a negative int32 sign-extended to 64 bits.
    Int64,
    /// A pointer integer, or one without `omitempty`: zero is kept.
    OptInt,
    /// A `*float64` (wire type fixed64): zero is kept.
    Double,
    /// A `[]byte` with `omitempty`, as base64: empty is omitted.
    Bytes,
    /// A `*intstr.IntOrString`: {type, intVal, strVal}, written when set.
    IntOrString,
    /// A plain `intstr.IntOrString`: the zero int is omitted.
    PlainIntOrString,
    /// A `resource.Quantity`, as its string.
    Quantity,
    /// A `metav1.Time`, to the second; the zero time is omitted.
    Time,
    /// A `metav1.MicroTime`, to the microsecond; the zero time is omitted.
    MicroTime,
    /// A message whose `raw` bytes (field 1) are JSON, embedded parsed:
    /// `runtime.RawExtension`, `metav1.FieldsV1`, apiextensions' `JSON`.
    RawJson,
    /// A message {items = 1} standing for a Go `[]string` (`ExtraValue`,
    /// `AttestationValue`): the list.
    StringList,
    Message(&'static [Field]),
    /// An embedded struct whose fields JSON writes in the parent's.
    Inline(&'static [Field]),
    /// apiextensions' `JSONSchemaPropsOrArray`, `...OrBool` and
    /// `...OrStringArray`, whose table this is: one of a list, a schema or
    /// a bool, as their `MarshalJSON` picks.
    SchemaOr(&'static [Field]),
    StringMap,
    BytesMap,
    /// `map<string, Quantity>`.
    QuantityMap,
    /// Any other `map<string, V>`: the table of its entry message, whose
    /// key is field 1 and value field 2.
    Map(&'static [Field]),
    RepeatedString,
    /// Repeated int32 or int64, packed or not.
    RepeatedInt,
    RepeatedMessage(&'static [Field]),
    /// `[]JSON` (a CRD schema's `enum`): see `RawJson`.
    RepeatedRawJson,
}

impl Kind {
    /// The table of a map's entry message; none for other kinds.
    fn entry_table(self) -> Option<&'static [Field]> {
        match self {
            Kind::StringMap => Some(STRING_ENTRY),
            Kind::BytesMap => Some(BYTES_ENTRY),
            Kind::QuantityMap => Some(QUANTITY_ENTRY),
            Kind::Map(entry) => Some(entry),
            _ => None,
        }
    }

    fn is_repeated(self) -> bool {
        matches!(
            self,
            Kind::RepeatedString
                | Kind::RepeatedInt
                | Kind::RepeatedMessage(_)
                | Kind::RepeatedRawJson
        )
    }

    /// What Go writes for a map value missing from its entry: its zero.
    fn zero(self) -> Value {
        match self {
            Kind::String | Kind::OptString | Kind::Bytes => json!(""),
            Kind::Bool | Kind::Flag => json!(false),
            Kind::Int64 | Kind::OptInt | Kind::Double => json!(0),
            Kind::Quantity => json!("0"),
            Kind::Message(_) | Kind::Inline(_) => json!({}),
            _ => Value::Null,
        }
    }
}

struct Field {
    number: u64,
    name: &'static str,
    kind: Kind,
}

const fn field(number: u64, name: &'static str, kind: Kind) -> Field {
    Field { number, name, kind }
}

// Go writes every entry of a map, empty values too: one omitted as empty
// comes back as its kind's zero in `map_entry`.
const STRING_ENTRY: &[Field] = &[
    field(1, "key", Kind::OptString),
    field(2, "value", Kind::OptString),
];

const BYTES_ENTRY: &[Field] = &[
    field(1, "key", Kind::OptString),
    field(2, "value", Kind::Bytes),
];

const QUANTITY_ENTRY: &[Field] = &[
    field(1, "key", Kind::OptString),
    field(2, "value", Kind::Quantity),
];

// The messages behind the special kinds.
const INT_OR_STRING: &[Field] = &[
    field(1, "type", Kind::Int64),
    field(2, "intVal", Kind::Int64),
    field(3, "strVal", Kind::String),
];

const QUANTITY: &[Field] = &[field(1, "string", Kind::String)];

const STRING_LIST: &[Field] = &[field(1, "items", Kind::RepeatedString)];

/// The table of a top-level kind, e.g. ("apps/v1", "Deployment").
fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    tables::KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, fields)| *fields)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    /// No field has wire type fixed32 (float32 or fixed32): read, unused.
    Fixed32,
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .bytes
                .split_first()
                .ok_or_else(|| malformed("truncated varint"))?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if n > self.bytes.len() {
            return Err(malformed("a field runs past the end of the message"));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    /// The next field: its number and value, or `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, ProtobufError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let bytes: [u8; 8] = self
                    .take(8)?
                    .try_into()
                    .map_err(|_| malformed("a fixed64 field is not 8 bytes"))?;
                Wire::Fixed64(u64::from_le_bytes(bytes))
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| malformed("length too large"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            other => return Err(malformed(&format!("unsupported wire type {other}"))),
        };
        Ok(Some((tag >> 3, value)))
    }
}

fn text(bytes: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string field is not UTF-8"))
}

fn base64(bytes: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn wrong_wire_type(field: &Field) -> ProtobufError {
    malformed(&format!("field {} has the wrong wire type", field.name))
}

/// A float64 as Go's encoder writes it: whole numbers without a fraction.
fn double(value: f64) -> Result<Value, ProtobufError> {
    if !value.is_finite() {
        return Err(malformed("a float field is not a finite number"));
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        Ok(json!(value as i64))
    } else {
        Ok(json!(value))
    }
}

/// Seconds and nanoseconds of a `Time` or `MicroTime`; none for Go's zero
/// time, which Go clients send as an empty message.
fn time(bytes: &[u8]) -> Result<Option<(i64, i64)>, ProtobufError> {
    /// Go's zero time, 0001-01-01T00:00:00Z, in Unix seconds.
    const YEAR_ONE: i64 = -62_135_596_800;
    /// The years RFC 3339 can write, 0000 to 9999, as Go's encoder checks.
    const WRITABLE: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut reader = Reader { bytes };
    while let Some((number, value)) = reader.next()? {
        match (number, value) {
            (1, Wire::Varint(v)) => seconds = v as i64,
            (2, Wire::Varint(v)) => nanos = v as i64,
            _ => {}
        }
    }
    // Go's time.Unix carries nanoseconds beyond a second into the seconds.
    let seconds = seconds.saturating_add(nanos.div_euclid(1_000_000_000));
    let nanos = nanos.rem_euclid(1_000_000_000);
    if bytes.is_empty() || (seconds == YEAR_ONE && nanos == 0) {
        return Ok(None);
    }
    if !WRITABLE.contains(&seconds) {
        return Err(malformed("a time is outside the years 0000 to 9999"));
    }
    Ok(Some((seconds, nanos)))
}

/// `2006-01-02T15:04:05.000000Z`, Go's RFC3339Micro in UTC.
fn micro_time(seconds: i64, nanos: i64) -> String {
    let whole = tug_api::format::timestamp(seconds);
    let whole = whole.strip_suffix('Z').unwrap_or(&whole);
    format!("{whole}.{:06}Z", nanos / 1000)
}

fn int_or_string(bytes: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let parts = message(bytes, INT_OR_STRING, depth)?;
    Ok(if parts["type"] == 1 {
        parts.get("strVal").cloned().unwrap_or(json!(""))
    } else {
        parts.get("intVal").cloned().unwrap_or(json!(0))
    })
}

/// The JSON in the `raw` bytes (field 1) of a `RawJson` message; none when
/// empty, which Go writes as null.
fn raw_json(field: &Field, bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
    /// The tag that starts self-described CBOR, which Go clients may send.
    const CBOR: &[u8] = &[0xd9, 0xd9, 0xf7];
    let mut raw: &[u8] = &[];
    let mut reader = Reader { bytes };
    while let Some((number, value)) = reader.next()? {
        if let (1, Wire::Bytes(b)) = (number, value) {
            raw = b;
        }
    }
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.starts_with(CBOR) {
        return Err(ProtobufError::UnsupportedField(format!(
            "{} (CBOR)",
            field.name
        )));
    }
    serde_json::from_slice(raw)
        .map(Some)
        .map_err(|err| malformed(&format!("field {} is not JSON: {err}", field.name)))
}

/// A `JSONSchemaPropsOr...` as its Go `MarshalJSON` writes it: a non-empty
/// list if there is one, else the schema, else OrBool's bool; none for an
/// empty OrArray or OrStringArray, which Go writes as null.
fn schema_or(mut parts: Value, fields: &[Field]) -> Option<Value> {
    // Lists are only made for their first element, so present is non-empty.
    for name in ["jSONSchemas", "property", "schema"] {
        if let Some(value) = parts.get_mut(name) {
            return Some(value.take());
        }
    }
    let allows = fields.iter().any(|f| f.name == "allows");
    allows.then(|| json!(parts["allows"].as_bool().unwrap_or(false)))
}

/// A field with a single value: its JSON, or none when omitted.
fn single(field: &Field, wire: Wire<'_>, depth: usize) -> Result<Option<Value>, ProtobufError> {
    Ok(match (field.kind, wire) {
        (Kind::String, Wire::Bytes([])) => None,
        (Kind::String | Kind::OptString, Wire::Bytes(b)) => Some(json!(text(b)?)),
        (Kind::Flag, Wire::Varint(0)) => None,
        (Kind::Bool | Kind::Flag, Wire::Varint(v)) => Some(json!(v != 0)),
        (Kind::Int64, Wire::Varint(0)) => None,
        (Kind::Int64 | Kind::OptInt, Wire::Varint(v)) => Some(json!(v as i64)),
        (Kind::Double, Wire::Fixed64(bits)) => Some(double(f64::from_bits(bits))?),
        (Kind::Bytes, Wire::Bytes([])) => None,
        (Kind::Bytes, Wire::Bytes(b)) => Some(base64(b)),
        (Kind::IntOrString, Wire::Bytes(b)) => Some(int_or_string(b, depth)?),
        (Kind::PlainIntOrString, Wire::Bytes(b)) => {
            Some(int_or_string(b, depth)?).filter(|value| *value != json!(0))
        }
        (Kind::Quantity, Wire::Bytes(b)) => {
            let quantity = message(b, QUANTITY, depth)?;
            Some(quantity.get("string").cloned().unwrap_or(json!("0")))
        }
        (Kind::Time, Wire::Bytes(b)) => {
            time(b)?.map(|(seconds, _)| json!(tug_api::format::timestamp(seconds)))
        }
        (Kind::MicroTime, Wire::Bytes(b)) => {
            time(b)?.map(|(seconds, nanos)| json!(micro_time(seconds, nanos)))
        }
        (Kind::RawJson, Wire::Bytes(b)) => raw_json(field, b)?,
        (Kind::StringList, Wire::Bytes(b)) => {
            let mut list = message(b, STRING_LIST, depth)?;
            Some(list.get_mut("items").map_or_else(|| json!([]), Value::take))
        }
        (Kind::Message(inner), Wire::Bytes(b)) => Some(message(b, inner, depth)?),
        (Kind::SchemaOr(inner), Wire::Bytes(b)) => schema_or(message(b, inner, depth)?, inner),
        _ => return Err(wrong_wire_type(field)),
    })
}

/// Adds one element (or, for packed integers, several) to a list.
fn repeated(
    field: &Field,
    wire: Wire<'_>,
    list: &mut Vec<Value>,
    depth: usize,
) -> Result<(), ProtobufError> {
    match (field.kind, wire) {
        (Kind::RepeatedString, Wire::Bytes(b)) => list.push(json!(text(b)?)),
        (Kind::RepeatedInt, Wire::Varint(v)) => list.push(json!(v as i64)),
        (Kind::RepeatedInt, Wire::Bytes(packed)) => {
            let mut reader = Reader { bytes: packed };
            while !reader.bytes.is_empty() {
                list.push(json!(reader.varint()? as i64));
            }
        }
        (Kind::RepeatedMessage(inner), Wire::Bytes(b)) => list.push(message(b, inner, depth)?),
        (Kind::RepeatedRawJson, Wire::Bytes(b)) => {
            list.push(raw_json(field, b)?.unwrap_or(Value::Null));
        }
        _ => return Err(wrong_wire_type(field)),
    }
    Ok(())
}

/// One entry of a map: its key and value, the value's zero if missing.
fn map_entry(
    field: &Field,
    entry: &'static [Field],
    wire: Wire<'_>,
    depth: usize,
) -> Result<(String, Value), ProtobufError> {
    let Wire::Bytes(b) = wire else {
        return Err(wrong_wire_type(field));
    };
    let mut pair = message(b, entry, depth)?;
    let key = match pair.get("key") {
        Some(Value::String(key)) => key.clone(),
        _ => String::new(),
    };
    let value = match pair.get_mut("value") {
        Some(value) => value.take(),
        None => entry
            .iter()
            .find(|f| f.number == 2)
            .map_or(Value::Null, |f| f.kind.zero()),
    };
    Ok((key, value))
}

/// Decodes a message through its table; `depth` is how much deeper
/// messages may still nest.
fn message(bytes: &[u8], fields: &'static [Field], depth: usize) -> Result<Value, ProtobufError> {
    let depth = depth
        .checked_sub(1)
        .ok_or_else(|| malformed("messages nested too deep"))?;
    let mut object = Map::new();
    let mut reader = Reader { bytes };
    while let Some((number, wire)) = reader.next()? {
        let Some(field) = fields.iter().find(|f| f.number == number) else {
            return Err(ProtobufError::UnsupportedField(format!("number {number}")));
        };
        if let Some(entry) = field.kind.entry_table() {
            let (key, value) = map_entry(field, entry, wire, depth)?;
            let Value::Object(map) = object.entry(field.name).or_insert_with(|| json!({})) else {
                return Err(malformed(&format!(
                    "field {} clashes with an inline field",
                    field.name
                )));
            };
            map.insert(key, value);
        } else if field.kind.is_repeated() {
            let Value::Array(list) = object.entry(field.name).or_insert_with(|| json!([])) else {
                return Err(malformed(&format!(
                    "field {} clashes with an inline field",
                    field.name
                )));
            };
            repeated(field, wire, list, depth)?;
        } else if let Kind::Inline(inner) = field.kind {
            let Wire::Bytes(b) = wire else {
                return Err(wrong_wire_type(field));
            };
            if let Value::Object(inner) = message(b, inner, depth)? {
                object.extend(inner);
            }
        } else if let Some(value) = single(field, wire, depth)? {
            object.insert(field.name.into(), value);
        }
    }
    Ok(Value::Object(object))
}

/// Decodes a protobuf request body into the object's JSON, with its
/// apiVersion and kind from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("the body does not start with the k8s protobuf prefix"))?;
    let mut reader = Reader { bytes: envelope };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    while let Some((number, value)) = reader.next()? {
        match (number, value) {
            (1, Wire::Bytes(type_meta)) => {
                let mut meta = Reader { bytes: type_meta };
                while let Some((number, value)) = meta.next()? {
                    match (number, value) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = Some(b),
            (3, Wire::Bytes(encoding)) if !encoding.is_empty() => {
                return Err(malformed("content encodings are not supported"));
            }
            _ => {}
        }
    }
    let fields = schema(&api_version, &kind)
        .ok_or_else(|| ProtobufError::UnsupportedKind(format!("{api_version}/{kind}")))?;
    let mut object = message(raw.unwrap_or_default(), fields, DEPTH_MAX)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(1, key.as_bytes(), &mut out);
        bytes_field(2, value, &mut out);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut body = MAGIC.to_vec();
        bytes_field(1, &type_meta, &mut body);
        bytes_field(2, raw, &mut body);
        bytes_field(4, b"application/vnd.kubernetes.protobuf", &mut body);
        body
    }

    /// A protobuf message built field by field, as a Go client writes it.
    #[derive(Default)]
    struct Proto(Vec<u8>);

    impl Proto {
        fn int(mut self, number: u64, value: i64) -> Self {
            varint(number << 3, &mut self.0);
            varint(value as u64, &mut self.0);
            self
        }

        fn double(mut self, number: u64, value: f64) -> Self {
            varint(number << 3 | 1, &mut self.0);
            self.0.extend_from_slice(&value.to_bits().to_le_bytes());
            self
        }

        fn bytes(mut self, number: u64, bytes: &[u8]) -> Self {
            bytes_field(number, bytes, &mut self.0);
            self
        }

        fn text(self, number: u64, text: &str) -> Self {
            self.bytes(number, text.as_bytes())
        }

        fn nested(self, number: u64, inner: Proto) -> Self {
            self.bytes(number, &inner.0)
        }
    }

    fn quantity(text: &str) -> Proto {
        Proto::default().text(1, text)
    }

    fn int_or_string_int(value: i64) -> Proto {
        Proto::default().int(1, 0).int(2, value)
    }

    fn int_or_string_str(text: &str) -> Proto {
        Proto::default().int(1, 1).text(3, text)
    }

    /// apiextensions' `JSON` and `runtime.RawExtension`: {raw = 1}.
    fn embedded(json: &str) -> Proto {
        Proto::default().text(1, json)
    }

    fn named(name: &str) -> Proto {
        Proto::default().text(1, name)
    }

    fn decoded(api_version: &str, kind: &str, raw: Proto) -> Value {
        decode(&envelope(api_version, kind, &raw.0)).unwrap()
    }

    #[test]
    fn a_configmap_as_kubectl_sends_it_decodes_to_its_json() {
        let mut meta = Vec::new();
        bytes_field(1, b"app", &mut meta);
        bytes_field(2, b"", &mut meta);
        varint(7 << 3, &mut meta);
        varint(0, &mut meta);
        bytes_field(3, b"default", &mut meta);
        bytes_field(11, &entry("team", b"blue"), &mut meta);
        bytes_field(14, b"example.com/hold", &mut meta);
        let mut created = Vec::new();
        varint(1 << 3, &mut created);
        varint(1_795_459_074, &mut created);
        bytes_field(8, &created, &mut meta);
        let mut raw = Vec::new();
        bytes_field(1, &meta, &mut raw);
        bytes_field(2, &entry("a", b"1"), &mut raw);
        bytes_field(2, &entry("b", b"two"), &mut raw);
        bytes_field(3, &entry("bin", &[0, 255]), &mut raw);
        varint(4 << 3, &mut raw);
        varint(1, &mut raw);
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", &raw)).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "app",
                    "namespace": "default",
                    "labels": {"team": "blue"},
                    "finalizers": ["example.com/hold"],
                    "creationTimestamp": "2026-11-23T18:37:54Z",
                },
                "data": {"a": "1", "b": "two"},
                "binaryData": {"bin": "AP8="},
                "immutable": true,
            })
        );
    }

    #[test]
    fn secret_data_is_base64_and_namespaces_keep_their_finalizers() {
        let mut meta = Vec::new();
        bytes_field(1, b"s", &mut meta);
        let mut raw = Vec::new();
        bytes_field(1, &meta, &mut raw);
        bytes_field(2, &entry("password", b"hunter2"), &mut raw);
        bytes_field(3, b"Opaque", &mut raw);
        let secret = decode(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
        assert_eq!(secret["type"], "Opaque");

        let mut spec = Vec::new();
        bytes_field(1, b"kubernetes", &mut spec);
        let mut raw = Vec::new();
        bytes_field(2, &spec, &mut raw);
        assert_eq!(
            decode(&envelope("v1", "Namespace", &raw)).unwrap()["spec"],
            json!({"finalizers": ["kubernetes"]})
        );
    }

    #[test]
    fn fields_it_cannot_decode_are_refused_not_dropped() {
        let mut raw = Vec::new();
        bytes_field(99, b"a field this table does not know", &mut raw);
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", &raw)),
            Err(ProtobufError::UnsupportedField("number 99".into()))
        );
        // Embedded JSON in a form tug cannot read (CBOR): refused too.
        let revision = Proto::default()
            .nested(1, named("r1"))
            .nested(2, Proto::default().bytes(1, &[0xd9, 0xd9, 0xf7, 0xa0]));
        assert_eq!(
            decode(&envelope("apps/v1", "ControllerRevision", &revision.0)),
            Err(ProtobufError::UnsupportedField("data (CBOR)".into()))
        );
    }

    #[test]
    fn a_deployment_as_kubectl_create_deployment_sends_it() {
        let mut labels = Vec::new();
        bytes_field(1, &entry("app", b"web"), &mut labels);
        let mut meta = Vec::new();
        bytes_field(1, b"web", &mut meta);
        bytes_field(11, &entry("app", b"web"), &mut meta);
        let mut container = Vec::new();
        bytes_field(1, b"busybox", &mut container);
        bytes_field(2, b"busybox:1.36", &mut container);
        bytes_field(3, b"httpd", &mut container);
        bytes_field(3, b"-f", &mut container);
        bytes_field(8, b"", &mut container);
        varint(16 << 3, &mut container);
        varint(0, &mut container);
        let mut pod_spec = Vec::new();
        bytes_field(2, &container, &mut pod_spec);
        varint(11 << 3, &mut pod_spec);
        varint(0, &mut pod_spec);
        let mut template_meta = Vec::new();
        bytes_field(11, &entry("app", b"web"), &mut template_meta);
        let mut template = Vec::new();
        bytes_field(1, &template_meta, &mut template);
        bytes_field(2, &pod_spec, &mut template);
        let mut quantity = Vec::new();
        bytes_field(1, b"25%", &mut quantity);
        let mut int_or_string = Vec::new();
        varint(1 << 3, &mut int_or_string);
        varint(1, &mut int_or_string);
        bytes_field(3, b"25%", &mut int_or_string);
        let mut rolling = Vec::new();
        bytes_field(2, &int_or_string, &mut rolling);
        let mut strategy = Vec::new();
        bytes_field(2, &rolling, &mut strategy);
        let mut spec = Vec::new();
        varint(1 << 3, &mut spec);
        varint(0, &mut spec);
        bytes_field(2, &labels, &mut spec);
        bytes_field(3, &template, &mut spec);
        bytes_field(4, &strategy, &mut spec);
        let mut raw = Vec::new();
        bytes_field(1, &meta, &mut raw);
        bytes_field(2, &spec, &mut raw);
        bytes_field(3, b"", &mut raw);
        let deployment = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(
            deployment["spec"],
            json!({
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "busybox", "image": "busybox:1.36", "command": ["httpd", "-f"], "resources": {}}]},
                },
                "strategy": {"rollingUpdate": {"maxSurge": "25%"}},
            })
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert!(matches!(decode(b"{}"), Err(ProtobufError::Malformed(_))));
        assert!(matches!(
            decode(b"k8s\0\x0a\xff"),
            Err(ProtobufError::Malformed(_))
        ));
        assert_eq!(
            decode(&envelope(
                "flowcontrol.apiserver.k8s.io/v1",
                "FlowSchema",
                b""
            )),
            Err(ProtobufError::UnsupportedKind(
                "flowcontrol.apiserver.k8s.io/v1/FlowSchema".into()
            ))
        );
        // A truncated object inside a valid envelope.
        let mut raw = Vec::new();
        varint(1 << 3 | 2, &mut raw);
        varint(50, &mut raw);
        assert!(matches!(
            decode(&envelope("v1", "ConfigMap", &raw)),
            Err(ProtobufError::Malformed(_))
        ));
        // A schema nested deeper than the decoder recurses.
        let mut schema = Proto::default().text(5, "object");
        for _ in 0..DEPTH_MAX {
            schema = Proto::default().nested(28, schema);
        }
        let version = Proto::default()
            .text(1, "v1")
            .nested(4, Proto::default().nested(1, schema));
        let crd = Proto::default().nested(2, Proto::default().nested(7, version));
        assert_eq!(
            decode(&envelope(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                &crd.0
            )),
            Err(ProtobufError::Malformed("messages nested too deep".into()))
        );
    }

    #[test]
    fn every_kind_served_has_a_table() {
        for resource in tug_api::registry::RESOURCES {
            let own = std::iter::once("");
            let subresources = resource.subresources.iter().copied();
            // Streams carry no object.
            let encoded = subresources.filter(|s| !tug_api::registry::Resource::streaming(s));
            for subresource in own.chain(encoded) {
                let (group, version, kind) = resource.subresource_kind(subresource);
                let api_version = if group.is_empty() {
                    version.to_string()
                } else {
                    format!("{group}/{version}")
                };
                assert!(
                    schema(&api_version, kind).is_some(),
                    "no protobuf table for {api_version} {kind}"
                );
            }
        }
    }

    #[test]
    fn a_pod_with_probes_volumes_affinity_and_security_context() {
        let config_volume = Proto::default().text(1, "config").nested(
            2,
            Proto::default().nested(
                19,
                Proto::default()
                    .nested(1, named("web-config"))
                    .nested(2, Proto::default().text(1, "app.conf").text(2, "app.conf"))
                    .int(3, 0o644),
            ),
        );
        let empty_dir = Proto::default().text(1, "").nested(2, quantity("1Gi"));
        let scratch_volume = Proto::default()
            .text(1, "scratch")
            .nested(2, Proto::default().nested(2, empty_dir));
        let http_get = Proto::default()
            .text(1, "/healthz")
            .nested(2, int_or_string_int(8080))
            .text(4, "HTTP");
        let liveness = Proto::default()
            .nested(1, Proto::default().nested(2, http_get))
            .int(2, 5)
            .int(3, 0);
        let exec = Proto::default().text(1, "cat").text(1, "/tmp/ready");
        let readiness = Proto::default()
            .nested(1, Proto::default().nested(1, exec))
            .int(4, 10);
        let tcp_socket = Proto::default().nested(1, int_or_string_str("http"));
        let startup = Proto::default()
            .nested(1, Proto::default().nested(3, tcp_socket))
            .int(6, 30);
        let capabilities = Proto::default().text(1, "NET_BIND_SERVICE").text(2, "ALL");
        let container_security = Proto::default()
            .nested(1, capabilities)
            .int(2, 0)
            .int(5, 1)
            .int(7, 0);
        let mount = Proto::default()
            .text(1, "config")
            .int(2, 1)
            .text(3, "/etc/app");
        let container = Proto::default()
            .text(1, "web")
            .text(2, "nginx:1.27")
            .nested(9, mount)
            .nested(10, liveness)
            .nested(11, readiness)
            .nested(22, startup)
            .nested(15, container_security);
        // supplementalGroups: packed, as proto3 writers send them, then not.
        let pod_security = Proto::default()
            .int(2, 1000)
            .int(6, 0)
            .bytes(4, &[1, 2])
            .int(4, 3)
            .int(5, 2000)
            .nested(10, Proto::default().text(1, "RuntimeDefault"));
        let requirement = Proto::default()
            .text(1, "kubernetes.io/os")
            .text(2, "In")
            .text(3, "linux");
        let term = Proto::default().nested(1, requirement);
        let node_affinity = Proto::default().nested(1, Proto::default().nested(1, term));
        let selector = Proto::default().bytes(1, &entry("app", b"web"));
        let pod_term = Proto::default()
            .nested(1, selector)
            .text(3, "kubernetes.io/hostname");
        let weighted = Proto::default().int(1, 100).nested(2, pod_term);
        let anti_affinity = Proto::default().nested(2, weighted);
        let affinity = Proto::default()
            .nested(1, node_affinity)
            .nested(3, anti_affinity);
        let spec = Proto::default()
            .nested(1, config_volume)
            .nested(1, scratch_volume)
            .nested(2, container)
            .nested(14, pod_security)
            .nested(18, affinity);
        let raw = Proto::default().nested(1, named("web")).nested(2, spec);
        let pod = decoded("v1", "Pod", raw);
        assert_eq!(pod["metadata"], json!({"name": "web"}));
        assert_eq!(
            pod["spec"],
            json!({
                "volumes": [
                    {
                        "name": "config",
                        "configMap": {
                            "name": "web-config",
                            "items": [{"key": "app.conf", "path": "app.conf"}],
                            "defaultMode": 420,
                        },
                    },
                    {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
                ],
                "containers": [{
                    "name": "web",
                    "image": "nginx:1.27",
                    "volumeMounts": [{"name": "config", "readOnly": true, "mountPath": "/etc/app"}],
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                        "initialDelaySeconds": 5,
                    },
                    "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 10},
                    "startupProbe": {"tcpSocket": {"port": "http"}, "failureThreshold": 30},
                    "securityContext": {
                        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                        "privileged": false,
                        "runAsNonRoot": true,
                        "allowPrivilegeEscalation": false,
                    },
                }],
                "securityContext": {
                    "runAsUser": 1000,
                    "runAsGroup": 0,
                    "supplementalGroups": [1, 2, 3],
                    "fsGroup": 2000,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{
                                "matchExpressions": [
                                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                                ],
                            }],
                        },
                    },
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": {"matchLabels": {"app": "web"}},
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }],
                    },
                },
            })
        );
    }

    #[test]
    fn zeros_are_kept_or_omitted_as_go_writes_them() {
        // hostPort is a plain int with omitempty: 0 is omitted.
        // containerPort is a plain int without omitempty: 0 is kept.
        let port = Proto::default().int(2, 0).int(3, 0);
        // stdin and image: plain, with omitempty.
        let container = Proto::default()
            .text(1, "c")
            .text(2, "")
            .nested(6, port)
            .int(16, 0);
        let spec = Proto::default()
            // terminationGracePeriodSeconds is a *int64: 0 is kept.
            .int(4, 0)
            .nested(2, container)
            // hostNetwork: a plain bool with omitempty; nodeName: a string.
            .int(11, 0)
            .text(10, "")
            // enableServiceLinks is a *bool: false is kept.
            .int(30, 0);
        let pod = decoded("v1", "Pod", Proto::default().nested(2, spec));
        assert_eq!(
            pod["spec"],
            json!({
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "ports": [{"containerPort": 0}]}],
                "enableServiceLinks": false,
            })
        );
    }

    #[test]
    fn a_statefulset_with_volume_claim_templates() {
        let mount = Proto::default()
            .text(1, "data")
            .text(3, "/var/lib/postgresql");
        let container = Proto::default()
            .text(1, "db")
            .text(2, "postgres:17")
            .nested(9, mount);
        let template = Proto::default()
            .nested(1, Proto::default().bytes(11, &entry("app", b"db")))
            .nested(2, Proto::default().nested(2, container));
        let resources = Proto::default().bytes(2, &entry("storage", &quantity("10Gi").0));
        let claim_spec = Proto::default()
            .text(1, "ReadWriteOnce")
            .nested(2, resources)
            // storageClassName is a *string: "" (no class) is kept.
            .text(5, "");
        let claim = Proto::default()
            .nested(1, named("data"))
            .nested(2, claim_spec);
        let spec = Proto::default()
            .int(1, 3)
            .nested(2, Proto::default().bytes(1, &entry("app", b"db")))
            .nested(3, template)
            .nested(4, claim)
            .text(5, "db")
            .text(6, "")
            .nested(7, Proto::default().text(1, "RollingUpdate"))
            .int(9, 0);
        let raw = Proto::default()
            .nested(1, named("db"))
            .nested(2, spec)
            .nested(3, Proto::default());
        let statefulset = decoded("apps/v1", "StatefulSet", raw);
        assert_eq!(
            statefulset["spec"],
            json!({
                "replicas": 3,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{
                        "name": "db",
                        "image": "postgres:17",
                        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}],
                    }]},
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "10Gi"}},
                        "storageClassName": "",
                    },
                }],
                "serviceName": "db",
                "updateStrategy": {"type": "RollingUpdate"},
            })
        );
        // Status is decoded too; the server decides what of it to keep.
        assert_eq!(statefulset["status"], json!({}));
    }

    #[test]
    fn a_crd_with_a_nested_schema() {
        fn schema_type(name: &str) -> Proto {
            Proto::default().text(5, name)
        }
        fn property(name: &str, schema: Proto) -> Vec<u8> {
            entry(name, &schema.0)
        }
        let size = schema_type("integer")
            .nested(8, embedded("3"))
            .double(9, 10.5)
            .double(11, 1.0);
        // items: a JSONSchemaPropsOrArray holding one schema.
        let tag = schema_type("string")
            .nested(20, embedded("\"a\""))
            .nested(20, embedded("\"b\""));
        let tags = schema_type("array").nested(24, Proto::default().nested(1, tag));
        // additionalProperties: a JSONSchemaPropsOrBool, schema or bool.
        let labels = schema_type("object").nested(
            30,
            Proto::default().int(1, 1).nested(2, schema_type("string")),
        );
        let extra = schema_type("object")
            .nested(30, Proto::default().int(1, 0))
            .int(38, 0);
        let spec_schema = schema_type("object")
            .text(23, "size")
            .bytes(29, &property("size", size))
            .bytes(29, &property("tags", tags))
            .bytes(29, &property("labels", labels))
            .bytes(29, &property("extra", extra));
        let root = schema_type("object").bytes(29, &property("spec", spec_schema));
        let version = Proto::default()
            .text(1, "v1")
            .int(2, 1)
            .int(3, 1)
            .nested(4, Proto::default().nested(1, root))
            .nested(5, Proto::default().nested(1, Proto::default()));
        let names = Proto::default()
            .text(1, "widgets")
            .text(2, "widget")
            .text(4, "Widget")
            .text(5, "WidgetList");
        let spec = Proto::default()
            .text(1, "example.com")
            .nested(3, names)
            .text(4, "Namespaced")
            .nested(7, version);
        let raw = Proto::default()
            .nested(1, named("widgets.example.com"))
            .nested(2, spec);
        let crd = decoded("apiextensions.k8s.io/v1", "CustomResourceDefinition", raw);
        assert_eq!(
            crd["spec"],
            json!({
                "group": "example.com",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1",
                    "served": true,
                    "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "integer", "default": 3, "maximum": 10.5, "minimum": 1},
                                "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "extra": {
                                    "type": "object",
                                    "additionalProperties": false,
                                    "x-kubernetes-preserve-unknown-fields": false,
                                },
                            },
                        }},
                    }},
                    "subresources": {"status": {}},
                }],
            })
        );
    }

    #[test]
    fn special_messages_take_their_json_form() {
        // MicroTime, to the microsecond; an empty (zero) one is omitted.
        let renewed = Proto::default().int(1, 1_795_459_074).int(2, 123_456_789);
        let lease_spec = Proto::default()
            .text(1, "a")
            .int(2, 15)
            .nested(3, Proto::default())
            .nested(4, renewed);
        let lease = decoded(
            "coordination.k8s.io/v1",
            "Lease",
            Proto::default().nested(2, lease_spec),
        );
        assert_eq!(
            lease["spec"],
            json!({"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2026-11-23T18:37:54.123456Z"})
        );

        // ExtraValue, a []string in Go, is a list.
        let scopes = Proto::default().text(1, "read").text(1, "write");
        let review_spec = Proto::default()
            .nested(1, Proto::default().text(2, "get").text(5, "pods"))
            .text(3, "jane")
            .bytes(5, &entry("scopes", &scopes.0));
        let review = decoded(
            "authorization.k8s.io/v1",
            "SubjectAccessReview",
            Proto::default().nested(2, review_spec),
        );
        assert_eq!(
            review["spec"],
            json!({
                "resourceAttributes": {"verb": "get", "resource": "pods"},
                "user": "jane",
                "extra": {"scopes": ["read", "write"]},
            })
        );

        // RawExtension and FieldsV1 hold JSON, embedded as such.
        let managed = Proto::default()
            .text(1, "kubectl")
            .text(2, "Update")
            .text(3, "apps/v1")
            .nested(4, Proto::default().int(1, 1_795_459_074))
            .text(6, "FieldsV1")
            .nested(7, embedded(r#"{"f:data":{}}"#));
        let revision = Proto::default()
            .nested(1, named("r1").nested(17, managed))
            .nested(2, embedded(r#"{"spec":{"x":1}}"#))
            .int(3, 2);
        let revision = decoded("apps/v1", "ControllerRevision", revision);
        assert_eq!(revision["data"], json!({"spec": {"x": 1}}));
        assert_eq!(revision["revision"], 2);
        assert_eq!(
            revision["metadata"]["managedFields"],
            json!([{
                "manager": "kubectl",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "time": "2026-11-23T18:37:54Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {}},
            }])
        );
    }
}
