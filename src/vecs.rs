//! TEXMEX vector files: `.fvecs` (per record: `i32` dim, then dim × `f32`) and `.ivecs`
//! (`i32` count, then that many `i32`), little-endian.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// Largest record dimension accepted (guards allocations against garbage headers).
const MAX_RECORD_DIM: usize = 1 << 20;

/// Reads one record's body as 4-byte little-endian words; `Ok(None)` at a clean end of input.
/// When `expected_dim` is given, a record of another dimension is an error before its body is
/// read.
fn read_record(input: &mut impl Read, expected_dim: Option<usize>) -> Result<Option<Vec<[u8; 4]>>> {
    let mut head = [0u8; 4];
    match read_full(input, &mut head)? {
        0 => return Ok(None),
        4 => {}
        n => {
            return Err(Error::InvalidArgument(format!(
                "truncated record: {n} of 4 header bytes"
            )))
        }
    }
    let dim = i32::from_le_bytes(head);
    let valid = usize::try_from(dim)
        .ok()
        .filter(|&d| d > 0 && d <= MAX_RECORD_DIM);
    let dim = match (valid, expected_dim) {
        (Some(d), Some(expected)) if d != expected => {
            return Err(Error::DimensionMismatch { expected, got: d })
        }
        (Some(d), _) => d,
        (None, _) => {
            return Err(Error::InvalidArgument(format!(
                "bad record dimension {dim}"
            )))
        }
    };
    let mut body = vec![0u8; dim * 4];
    if read_full(input, &mut body)? != body.len() {
        return Err(Error::InvalidArgument("truncated record body".into()));
    }
    Ok(Some(
        body.chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect(),
    ))
}

/// Reads one `.fvecs` record of dimension `dim`; `Ok(None)` at a clean end of input.
pub fn read_fvecs_record(input: &mut impl Read, dim: usize) -> Result<Option<Vec<f32>>> {
    Ok(read_record(input, Some(dim))?
        .map(|words| words.into_iter().map(f32::from_le_bytes).collect()))
}

/// Number of records of a `.fvecs` file of `dim`-dimensional vectors, judged by its size
/// (`None` if the size is not a whole number of records).
pub fn fvecs_count(path: &Path, dim: usize) -> Option<usize> {
    let len = std::fs::metadata(path).ok()?.len();
    let record = 4 + 4 * dim as u64;
    (len % record == 0).then(|| (len / record) as usize)
}

/// Reads a whole `.fvecs` file; every record must have the first record's dimension.
pub fn read_fvecs_file(path: &Path) -> Result<Vec<Vec<f32>>> {
    read_file(path, f32::from_le_bytes)
}

/// Reads a whole `.ivecs` file; every record must have the first record's length.
pub fn read_ivecs_file(path: &Path) -> Result<Vec<Vec<i32>>> {
    read_file(path, i32::from_le_bytes)
}

fn read_file<T>(path: &Path, convert: fn([u8; 4]) -> T) -> Result<Vec<Vec<T>>> {
    let named = |e: Error| Error::InvalidArgument(format!("{}: {e}", path.display()));
    let mut input = BufReader::new(File::open(path).map_err(|e| named(e.into()))?);
    let mut records = Vec::new();
    let mut dim = None;
    while let Some(words) = read_record(&mut input, dim).map_err(named)? {
        dim = Some(words.len());
        records.push(words.into_iter().map(convert).collect());
    }
    Ok(records)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(values: &[f32]) -> Vec<u8> {
        let mut out = (values.len() as i32).to_le_bytes().to_vec();
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    #[test]
    fn reads_records_and_rejects_damage() {
        let mut bytes = record(&[1.0, 2.0]);
        bytes.extend(record(&[3.0, 4.0]));
        let mut input = bytes.as_slice();
        assert_eq!(
            read_fvecs_record(&mut input, 2).unwrap(),
            Some(vec![1.0, 2.0])
        );
        assert_eq!(
            read_fvecs_record(&mut input, 2).unwrap(),
            Some(vec![3.0, 4.0])
        );
        assert_eq!(read_fvecs_record(&mut input, 2).unwrap(), None);
        for cut in 1..bytes.len() {
            let mut input = &bytes[..cut];
            let first = read_fvecs_record(&mut input, 2);
            let second = first
                .as_ref()
                .ok()
                .and_then(|_| read_fvecs_record(&mut input, 2).err());
            assert!(first.is_err() || second.is_some() || cut == 12, "cut {cut}");
        }
        assert!(matches!(
            read_fvecs_record(&mut record(&[1.0]).as_slice(), 2),
            Err(Error::DimensionMismatch { .. })
        ));
        let absurd = [0xff, 0xff, 0xff, 0x7f];
        assert!(read_fvecs_record(&mut absurd.as_slice(), 2).is_err());
        assert!(read_record(&mut absurd.as_slice(), None).is_err());
    }
}
