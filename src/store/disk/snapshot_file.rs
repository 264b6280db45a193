//! Snapshot files: `ORMSNAP1`, a frame with the header, a frame with the encoded state;
//! written to a temporary file, synced, and renamed over the old one.

use std::fs;
use std::io;
use std::path::Path;

use prost::Message;

use super::frame::{FRAME_HEADER, Read, frame, read_frame};
use super::{DiskError, io_err, write_atomically};
use crate::SnapshotMeta;
use crate::pb::{peer, storage};

const SNAPSHOT_MAGIC: &[u8; 8] = b"ORMSNAP1";

/// A snapshot file's content: the meta and the encoded records.
pub fn encode_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>, DiskError> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    let mut out = snapshot_prefix(meta, data.len(), &crc)?;
    out.extend_from_slice(data);
    Ok(out)
}

/// Everything in a snapshot file before the encoded records: magic, header frame, and the
/// records frame's length and checksum, given the records' length and a hasher fed with
/// exactly their bytes. Lets a backup be streamed without holding the records' encoding.
/// Refuses records over 4 GiB rather than writing a wrong length (the frame's is 32 bits).
pub fn snapshot_prefix(
    meta: &SnapshotMeta,
    data_len: usize,
    data_crc: &crc32fast::Hasher,
) -> Result<Vec<u8>, DiskError> {
    let len = u32::try_from(data_len).map_err(|_| DiskError::TooLarge {
        what: "the snapshot's records",
        bytes: data_len as u64,
    })?;
    let header = storage::SnapshotFileHeader {
        meta: Some(peer::SnapshotMeta::from(meta)),
    }
    .encode_to_vec();
    let mut out = Vec::with_capacity(SNAPSHOT_MAGIC.len() + 2 * FRAME_HEADER + header.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    frame(&header, &mut out)?;
    let len = len.to_le_bytes();
    // The same checksum `frame` computes, crc32(len ‖ data), from the data's hasher.
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.combine(data_crc);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    Ok(out)
}

/// Checks and splits a snapshot file's content; `path` names it in errors.
pub fn decode_snapshot(path: &Path, bytes: &[u8]) -> Result<(SnapshotMeta, Vec<u8>), DiskError> {
    let corrupt = |offset: usize, problem: &str| DiskError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        problem: problem.to_owned(),
    };
    if bytes.len() < SNAPSHOT_MAGIC.len() || &bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(corrupt(0, "not an openraft-memory snapshot (bad magic)"));
    }
    let mut at = SNAPSHOT_MAGIC.len();
    let mut next = |what: &str| -> Result<&[u8], DiskError> {
        match read_frame(&bytes[at..]) {
            Read::Frame(p) => {
                let start = at;
                at += FRAME_HEADER + p.len();
                Ok(&bytes[start + FRAME_HEADER..at])
            }
            Read::Short => Err(corrupt(at, &format!("the {what} is cut short"))),
            Read::BadCrc => Err(corrupt(at, &format!("the {what} fails its checksum"))),
        }
    };
    let header = next("header")?;
    let header = storage::SnapshotFileHeader::decode(header)
        .map_err(|e| corrupt(SNAPSHOT_MAGIC.len(), &format!("undecodable header: {e}")))?;
    let meta = header
        .meta
        .ok_or_else(|| corrupt(SNAPSHOT_MAGIC.len(), "the header has no meta"))
        .and_then(|m| SnapshotMeta::try_from(m).map_err(|e| corrupt(SNAPSHOT_MAGIC.len(), &e.to_string())))?;
    let data = next("record data")?.to_vec();
    Ok((meta, data))
}

/// Writes the current snapshot atomically.
pub fn write_snapshot(path: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<(), DiskError> {
    write_atomically(path, &encode_snapshot(meta, data)?)
}

/// Reads the current snapshot, if there is one.
pub fn read_snapshot(path: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>, DiskError> {
    match fs::read(path) {
        Ok(bytes) => decode_snapshot(path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_over_four_gib_are_refused_not_written_with_a_wrong_length() {
        let too_big = u32::MAX as usize + 1;
        let e = snapshot_prefix(&SnapshotMeta::default(), too_big, &crc32fast::Hasher::new())
            .expect_err("refused");
        assert!(
            matches!(e, DiskError::TooLarge { bytes, .. } if bytes == too_big as u64),
            "{e}"
        );
        assert!(
            snapshot_prefix(
                &SnapshotMeta::default(),
                u32::MAX as usize,
                &crc32fast::Hasher::new()
            )
            .is_ok()
        );
    }

    #[test]
    fn snapshot_files_round_trip_and_damage_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snapshot");
        assert!(read_snapshot(&path).expect("none yet").is_none());
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "s-1".into(),
        };
        write_snapshot(&path, &meta, b"records").expect("write");
        let (back, data) = read_snapshot(&path).expect("read").expect("some");
        assert_eq!(
            (back.snapshot_id.as_str(), data.as_slice()),
            ("s-1", &b"records"[..])
        );
        let mut bytes = fs::read(&path).expect("read");
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        fs::write(&path, &bytes).expect("write");
        let e = read_snapshot(&path).expect_err("damaged").to_string();
        assert!(e.contains("snapshot") && e.contains("checksum"), "{e}");
        bytes.truncate(n - 3);
        fs::write(&path, &bytes).expect("write");
        let e = read_snapshot(&path).expect_err("short").to_string();
        assert!(e.contains("cut short"), "{e}");
    }
}
