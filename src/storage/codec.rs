//! Byte encodings of the values stored in redb. All numbers are little-endian.
//!
//! Document record, version 1:
//! ```text
//! u8  record version (1)
//! [u8; 16] uuid (big-endian, RFC 4122 byte order)
//! u32 dim, then dim × f32
//! u32 metadata length, then metadata as UTF-8 JSON (an object)
//! u8  has_text (0 | 1), then if 1: u32 length + UTF-8 text
//! ```
//! Change entry: `u8 op (1 = upsert, 2 = delete)`, `u32 internal id`.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::types::{ChangeOp, Document, InternalId};

const RECORD_VERSION: u8 = 1;
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

/// Decodes a document record, or says what is wrong with it.
pub fn decode_document(bytes: &[u8]) -> Result<Document, String> {
    let mut r = Reader { bytes };
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(format!("unknown document record version {version}"));
    }
    let id = Uuid::from_slice(r.take(16)?).map_err(|e| e.to_string())?;
    let dim = r.u32()? as usize;
    let raw = r.take(dim.checked_mul(4).ok_or("dimension overflows")?)?;
    let vector = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let metadata: Map<String, Value> =
        serde_json::from_slice(r.len_prefixed()?).map_err(|e| format!("metadata: {e}"))?;
    let text = match r.u8()? {
        0 => None,
        1 => Some(
            std::str::from_utf8(r.len_prefixed()?)
                .map_err(|e| format!("text: {e}"))?
                .to_string(),
        ),
        other => return Err(format!("bad text flag {other}")),
    };
    if !r.bytes.is_empty() {
        return Err(format!("{} trailing bytes after record", r.bytes.len()));
    }
    Ok(Document {
        id,
        vector,
        metadata,
        text,
    })
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
    fn change_round_trip() {
        for op in [ChangeOp::Upsert, ChangeOp::Delete] {
            assert_eq!(decode_change(&encode_change(op, 77)).unwrap(), (op, 77));
        }
        assert!(decode_change(&[9, 0, 0, 0, 0]).is_err());
        assert!(decode_change(&[1, 0]).is_err());
    }
}
