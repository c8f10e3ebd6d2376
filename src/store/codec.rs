//! The one place that encodes what is persisted or sent between nodes: bincode 1.3.3 with
//! fixed-width integers, behind a version byte, with a size limit on decode so a corrupt record or
//! a hostile peer cannot make us allocate whatever size it claims.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Version of the envelope format. Bump when the encoding of persisted types changes.
pub const FORMAT_VERSION: u8 = 1;

/// Largest value we ever decode (a log entry holds at most one request body).
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unsupported format version {0} (this build reads {FORMAT_VERSION})")]
    Version(u8),
    #[error("decode: {0}")]
    Decode(String),
    #[error("encode: {0}")]
    Encode(String),
}

fn opts() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_little_endian().with_limit(MAX_DECODE_BYTES)
}

/// Encode a value behind the version byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    // Sized first: a large value (a snapshot chunk) is then written once, without the copies
    // of a growing buffer.
    let size = opts().serialized_size(value).map_err(|e| CodecError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(1 + size as usize);
    out.push(FORMAT_VERSION);
    opts().serialize_into(&mut out, value).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decode a value written by [`encode`], refusing other versions and oversized claims.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version(version));
    }
    opts().deserialize(body).map_err(|e| CodecError::Decode(e.to_string()))
}

/// Decode a value written by [`encode`] from the start of `r`, leaving `r` just after it (for a
/// caller that reads what follows itself).
pub fn decode_from<T: DeserializeOwned, R: std::io::Read>(r: &mut R) -> Result<T, CodecError> {
    let mut version = [0u8; 1];
    r.read_exact(&mut version).map_err(|_| CodecError::Empty)?;
    if version[0] != FORMAT_VERSION {
        return Err(CodecError::Version(version[0]));
    }
    opts().deserialize_from(r).map_err(|e| CodecError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::command::{Command, ExecOptions, Param, Statement, Value};

    #[test]
    fn round_trip_and_golden_bytes() {
        let cmd = Command::Execute {
            stmts: vec![Statement {
                sql: "INSERT INTO t VALUES(?)".into(),
                params: vec![Param::Positional(Value::Integer(i64::MAX))],
                returning: false,
            }],
            opts: ExecOptions::default(),
            seed: 7,
        };
        let bytes = encode(&cmd).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        // Variant 0 (Execute) as a fixed-width u32: the format is stable across builds.
        assert_eq!(&bytes[1..5], &[0, 0, 0, 0]);
        let back: Command = decode(&bytes).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn rejects_garbage_without_allocating() {
        assert!(matches!(decode::<Command>(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode::<Command>(&[9, 0]), Err(CodecError::Version(9))));
        // A string length prefix of 2^63 must fail, not allocate.
        let mut evil = vec![FORMAT_VERSION, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        evil.extend_from_slice(&(1u64 << 63).to_le_bytes());
        assert!(decode::<Command>(&evil).is_err());
    }
}

/// Property tests: whatever arrives on the inter-node port, decoding answers with a value or an
/// error, never a panic or an allocation of what the bytes claim; what is encoded decodes back.
#[cfg(test)]
mod props {
    use super::*;
    use crate::raft::{Entry, TypeConfig};
    use crate::store::command::{Command, ExecOptions, Statement};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_value_or_an_error(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Command>(&bytes);
            let _ = decode::<Entry>(&bytes);
            let _ = decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&bytes);
            let _ = decode::<openraft::raft::InstallSnapshotRequest<TypeConfig>>(&bytes);
            let _ = decode::<crate::cluster::ClusterReply>(&bytes);
            // The same bytes behind the right version byte reach the decoder proper.
            bytes.insert(0, FORMAT_VERSION);
            let _ = decode::<Command>(&bytes);
            let _ = decode::<Entry>(&bytes);
            let _ = decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&bytes);
        }

        #[test]
        fn commands_round_trip(sqls in proptest::collection::vec(".{0,40}", 0..8), seed in any::<u64>(), tx in any::<bool>()) {
            let stmts: Vec<Statement> = sqls.into_iter().map(Statement::new).collect();
            let cmd = Command::Execute { stmts, opts: ExecOptions { transaction: tx, ..Default::default() }, seed };
            let back: Command = decode(&encode(&cmd).unwrap()).unwrap();
            prop_assert_eq!(back, cmd);
        }
    }
}
