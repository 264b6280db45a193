//! OpenRaft storage in memory (storage API v2): the log store ([`LogStore`]: entries, vote,
//! committed index) and the state machine ([`StateMachineStore`]: the records, the last
//! applied log id and membership, snapshots). They are separate so the log can be appended
//! while the state machine applies.

mod log_store;
mod state_machine;

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
}
