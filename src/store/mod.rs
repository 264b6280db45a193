//! OpenRaft storage (storage API v2): the log store ([`LogStore`]: entries, vote,
//! committed index) and the state machine ([`StateMachineStore`]: the records, the last
//! applied log id and membership, snapshots). They are separate so the log can be appended
//! while the state machine applies.
//!
//! Both live in memory. In disk mode ([`disk`]) the log store also journals every change
//! to `DIR/raft-log` (acknowledging appends only once synced) and the state machine writes
//! every snapshot to `DIR/snapshot`; a restart reloads the snapshot and the journal, and
//! OpenRaft re-applies the committed entries after the snapshot. `backup` is the backup
//! file format, which is the snapshot file's.

mod backup;
pub mod disk;
mod log_store;
mod state_machine;
pub mod watch;

pub use backup::{Backup, check_snapshot_data, read_backup};
pub use log_store::LogStore;
pub use state_machine::{StateMachineData, StateMachineStore};

#[cfg(test)]
mod conformance {
    use openraft::testing::{StoreBuilder, Suite};

    use super::{LogStore, StateMachineStore};
    use crate::{StorageError, TypeConfig};

    struct MemBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for MemBuilder {
        async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
            Ok(((), LogStore::default(), StateMachineStore::default()))
        }
    }

    /// OpenRaft's own storage conformance suite, run against our in-memory storage.
    #[test]
    fn openraft_storage_suite() -> Result<(), Box<StorageError>> {
        Suite::test_all(MemBuilder).map_err(Box::new)
    }

    /// Disk mode in a fresh directory; the directory lives as long as the store (the guard).
    struct DiskBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for DiskBuilder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
            let io = |e: &dyn std::error::Error| {
                StorageError::from(openraft::StorageIOError::read(&std::io::Error::other(
                    e.to_string(),
                )))
            };
            let dir = tempfile::tempdir().map_err(|e| io(&e))?;
            let log = LogStore::open(&dir.path().join("raft-log"), ()).map_err(|e| io(&e))?;
            let sm = StateMachineStore::open(dir.path().join("snapshot")).map_err(|e| io(&e))?;
            Ok((dir, log, sm))
        }
    }

    /// The same suite against disk mode's journal and snapshot files.
    #[test]
    fn openraft_storage_suite_on_disk() -> Result<(), Box<StorageError>> {
        Suite::test_all(DiskBuilder).map_err(Box::new)
    }
}
