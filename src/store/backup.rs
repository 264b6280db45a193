//! The backup format (a snapshot file: `GET /cluster/snapshot` writes one, `--restore`
//! reads one) and the encoding of the records inside every snapshot.

use prost::Message;

use super::disk::{self, DiskError};
use super::state_machine::{StateMachineData, Students};
use crate::SnapshotMeta;
use crate::model::Record;
use crate::pb::peer;

/// The meta a backup of `data` carries.
pub(super) fn backup_meta(data: &StateMachineData) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: data.last_applied,
        last_membership: data.last_membership.clone(),
        snapshot_id: "backup".into(),
    }
}

/// A backup being written out: see [`super::StateMachineStore::backup`].
pub struct Backup {
    /// Bytes before the records: magic, header frame, the records frame's header.
    pub(super) prefix: Vec<u8>,
    /// The records as of the copy.
    pub(super) students: Students,
    /// Total length in bytes.
    pub len: u64,
    /// The CRC-32 of all of its bytes, known before they are produced (object names carry it).
    pub crc32: u32,
    /// The log index the backup reflects.
    pub index: u64,
}

impl Backup {
    /// How many records the backup holds.
    pub fn records(&self) -> usize {
        self.students.len()
    }

    /// The backup's bytes, in pieces of about `chunk` bytes (one record may overshoot).
    pub fn chunks(self, chunk: usize) -> impl Iterator<Item = Vec<u8>> + Send {
        let mut records = self.students.into_iter().map(|(_, s)| s).peekable();
        std::iter::once(self.prefix).chain(std::iter::from_fn(move || {
            records.peek()?;
            let mut out = Vec::with_capacity(chunk + 64);
            while out.len() < chunk
                && let Some(s) = records.next()
            {
                encode_record(&s, &mut out);
            }
            Some(out)
        }))
    }
}

/// Appends one record as it appears inside an encoded `StateSnapshot` (field 1, repeated):
/// the message's encoding is these pieces back to back.
pub(super) fn encode_record(r: &Record, out: &mut Vec<u8>) {
    prost::encoding::message::encode(1, &crate::pb::client::Student::from(r.clone()), out);
}

pub(super) fn encode_students(students: &Students) -> Vec<u8> {
    let msg = peer::StateSnapshot {
        students: students.values().cloned().map(Into::into).collect(),
    };
    msg.encode_to_vec()
}

pub(super) fn decode_students(bytes: &[u8]) -> Result<Students, prost::DecodeError> {
    let msg = peer::StateSnapshot::decode(bytes)?;
    Ok(msg
        .students
        .into_iter()
        .map(|s| (s.id, Record::from(s)))
        .collect())
}

/// Checks that snapshot data received from a peer decodes, so a damaged one is refused
/// instead of failing inside OpenRaft's install (a storage error there stops the node).
pub fn check_snapshot_data(bytes: &[u8]) -> Result<usize, prost::DecodeError> {
    decode_students(bytes).map(|students| students.len())
}

/// Reads and checks a backup (a snapshot file from `GET /cluster/snapshot`): its records in
/// id order, with the revisions they had.
pub fn read_backup(path: &std::path::Path) -> Result<Vec<Record>, DiskError> {
    let (_, bytes) = disk::read_snapshot(path)?.ok_or_else(|| DiskError::Io {
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let students = decode_students(&bytes).map_err(|e| DiskError::Corrupt {
        path: path.to_owned(),
        offset: 0,
        problem: format!("undecodable records: {e}"),
    })?;
    Ok(students.into_iter().map(|(_, s)| s).collect())
}
