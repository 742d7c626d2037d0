//! Byte encodings of the values stored in redb. All numbers are little-endian.
//!
//! Document record, version 2:
//! ```text
//! u8  record version (2)
//! [u8; 16] uuid (big-endian, RFC 4122 byte order)
//! u32 dim, then dim × f32
//! u32 metadata length, then metadata as UTF-8 JSON (an object)
//! u8  has_text (0 | 1), then if 1: u32 length + UTF-8 text
//! u32 crc32c of every byte before it
//! ```
//! Version 1 (schema versions 1 and 2) is the same without the checksum; such records stay
//! readable and are rewritten as version 2 when their document is next written.
//! Change entry: `u8 op (1 = upsert, 2 = delete)`, `u32 internal id`.
//! Payload row: see [`encode_payload_row`].

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::types::{ChangeOp, Document, InternalId};

const RECORD_VERSION: u8 = 2;
/// Records written before the checksum existed.
const RECORD_VERSION_UNCHECKED: u8 = 1;
const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;

/// Encodes a document record.
pub fn encode_document(
    id: Uuid,
    vector: &[f32],
    metadata: &Map<String, Value>,
    text: Option<&str>,
) -> Vec<u8> {
    // serde_json cannot fail on a Map<String, Value>.
    let meta = serde_json::to_vec(metadata).unwrap_or_else(|_| b"{}".to_vec());
    let text_len = text.map_or(0, str::len);
    let mut out =
        Vec::with_capacity(1 + 16 + 4 + vector.len() * 4 + 4 + meta.len() + 1 + 4 + text_len);
    out.push(RECORD_VERSION);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&(vector.len() as u32).to_le_bytes());
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    match text {
        Some(text) => {
            out.push(1);
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        None => out.push(0),
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "record truncated: wanted {n} bytes, {} left",
                self.bytes.len()
            ));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len_prefixed(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// The fields of a document record, not yet decoded.
struct RecordParts<'a> {
    id: Uuid,
    raw_vector: &'a [u8],
    metadata_json: &'a [u8],
    text: Option<&'a str>,
}

/// Splits a document record into its fields, checking its framing.
fn split_record(bytes: &[u8]) -> Result<RecordParts<'_>, String> {
    let body = match bytes.first() {
        Some(&RECORD_VERSION) => {
            let (body, crc) = bytes
                .split_last_chunk::<4>()
                .ok_or("record shorter than its checksum")?;
            if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
                return Err("checksum mismatch".into());
            }
            body
        }
        Some(&RECORD_VERSION_UNCHECKED) => bytes,
        Some(other) => return Err(format!("unknown document record version {other}")),
        None => return Err("empty record".into()),
    };
    let mut r = Reader { bytes: body };
    r.u8()?;
    let id = Uuid::from_slice(r.take(16)?).map_err(|e| e.to_string())?;
    let dim = r.u32()? as usize;
    let raw_vector = r.take(dim.checked_mul(4).ok_or("dimension overflows")?)?;
    let metadata_json = r.len_prefixed()?;
    let text = match r.u8()? {
        0 => None,
        1 => Some(std::str::from_utf8(r.len_prefixed()?).map_err(|e| format!("text: {e}"))?),
        other => return Err(format!("bad text flag {other}")),
    };
    if !r.bytes.is_empty() {
        return Err(format!("{} trailing bytes after record", r.bytes.len()));
    }
    Ok(RecordParts {
        id,
        raw_vector,
        metadata_json,
        text,
    })
}

fn parse_metadata(json: &[u8]) -> Result<Map<String, Value>, String> {
    serde_json::from_slice(json).map_err(|e| format!("metadata: {e}"))
}

/// Decodes a document record, or says what is wrong with it.
pub fn decode_document(bytes: &[u8]) -> Result<Document, String> {
    let parts = split_record(bytes)?;
    Ok(Document {
        id: parts.id,
        vector: parts
            .raw_vector
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        metadata: parse_metadata(parts.metadata_json)?,
        text: parts.text.map(str::to_string),
    })
}

/// Decodes only the id and the metadata of a document record (filters need nothing else).
pub fn decode_metadata(bytes: &[u8]) -> Result<(Uuid, Map<String, Value>), String> {
    let parts = split_record(bytes)?;
    Ok((parts.id, parse_metadata(parts.metadata_json)?))
}

/// Key of a payload-index row: `u16` field number (big-endian), the row key of
/// `crate::payload::keys`, then the `u32` internal id (big-endian), so that a field's rows are
/// contiguous and each row is unique.
pub fn encode_payload_row(field: u16, row_key: &[u8], id: InternalId) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + row_key.len() + 4);
    out.extend_from_slice(&field.to_be_bytes());
    out.extend_from_slice(row_key);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// Splits a payload-index row key into field number, row key and internal id.
pub fn decode_payload_row(bytes: &[u8]) -> Result<(u16, &[u8], InternalId), String> {
    if bytes.len() < 7 {
        return Err(format!("payload row of {} bytes is too short", bytes.len()));
    }
    let (field, rest) = bytes.split_at(2);
    let (row_key, id) = rest.split_at(rest.len() - 4);
    Ok((
        u16::from_be_bytes([field[0], field[1]]),
        row_key,
        u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
    ))
}

/// Encodes a change-log entry.
pub fn encode_change(op: ChangeOp, id: InternalId) -> [u8; 5] {
    let code = match op {
        ChangeOp::Upsert => OP_UPSERT,
        ChangeOp::Delete => OP_DELETE,
    };
    let id = id.to_le_bytes();
    [code, id[0], id[1], id[2], id[3]]
}

/// Decodes a change-log entry.
pub fn decode_change(bytes: &[u8]) -> Result<(ChangeOp, InternalId), String> {
    let &[code, a, b, c, d] = bytes else {
        return Err(format!(
            "change entry has {} bytes, expected 5",
            bytes.len()
        ));
    };
    let op = match code {
        OP_UPSERT => ChangeOp::Upsert,
        OP_DELETE => ChangeOp::Delete,
        other => return Err(format!("unknown change op {other}")),
    };
    Ok((op, u32::from_le_bytes([a, b, c, d])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn document_round_trip() {
        let id = Uuid::now_v7();
        let meta = json!({"a": [1, 2], "b": {"c": "d"}})
            .as_object()
            .unwrap()
            .clone();
        for text in [None, Some(""), Some("héllo")] {
            let bytes = encode_document(id, &[1.5, -0.0, 3e-7], &meta, text);
            let doc = decode_document(&bytes).unwrap();
            assert_eq!(doc.id, id);
            assert_eq!(doc.vector, vec![1.5, -0.0, 3e-7]);
            assert_eq!(doc.metadata, meta);
            assert_eq!(doc.text.as_deref(), text);
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let id = Uuid::now_v7();
        let bytes = encode_document(id, &[1.0; 8], &Map::new(), Some("text"));
        for cut in 0..bytes.len() {
            assert!(
                decode_document(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_document(&longer).is_err());
        let mut wrong_version = bytes;
        wrong_version[0] = 9;
        assert!(decode_document(&wrong_version).is_err());
    }

    #[test]
    fn every_bit_flip_of_a_record_is_detected() {
        let id = Uuid::now_v7();
        let mut meta = Map::new();
        meta.insert("k".into(), Value::from("v"));
        let bytes = encode_document(id, &[1.0, -2.0, 3.5], &meta, Some("some text"));
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_document(&bad).is_err(), "bit {bit} not detected");
        }
    }

    #[test]
    fn unchecked_version_1_records_stay_readable() {
        let id = Uuid::now_v7();
        let meta = Map::new();
        let mut v1 = encode_document(id, &[0.5; 4], &meta, None);
        v1.truncate(v1.len() - 4);
        v1[0] = RECORD_VERSION_UNCHECKED;
        let doc = decode_document(&v1).unwrap();
        assert_eq!((doc.id, doc.vector, doc.text), (id, vec![0.5; 4], None));
    }

    #[test]
    fn payload_rows_round_trip() {
        let key = encode_payload_row(3, &[2, b'x'], 0x0102_0304);
        assert_eq!(
            decode_payload_row(&key).unwrap(),
            (3, &[2, b'x'][..], 0x0102_0304)
        );
        assert!(decode_payload_row(&key[..6]).is_err());
        let id = Uuid::now_v7();
        let meta = json!({"k": 1}).as_object().unwrap().clone();
        let record = encode_document(id, &[1.0, 2.0], &meta, None);
        assert_eq!(decode_metadata(&record).unwrap(), (id, meta));
    }

    #[test]
    fn change_round_trip() {
        for op in [ChangeOp::Upsert, ChangeOp::Delete] {
            assert_eq!(decode_change(&encode_change(op, 77)).unwrap(), (op, 77));
        }
        assert!(decode_change(&[9, 0, 0, 0, 0]).is_err());
        assert!(decode_change(&[1, 0]).is_err());
    }
}
