//! Unit tests of the state machine: outcomes, revisions, watch changes, snapshots.

use super::*;
use crate::model::Student;
use crate::store::read_backup;

fn student(id: i64) -> Student {
    Student {
        id,
        name: format!("s{id}"),
        score: 50.0,
    }
}

impl StateMachineData {
    /// One command, its changes discarded.
    fn apply(&mut self, cmd: Command, revision: u64) -> CommandResult {
        self.apply_command(cmd, revision, &mut Vec::new())
    }
}

fn record(id: i64, revision: u64) -> Record {
    Record {
        student: student(id),
        revision,
    }
}

#[test]
fn commands_have_deterministic_outcomes() {
    let mut d = StateMachineData::default();
    assert_eq!(
        d.apply(Command::Create(student(1)), 3),
        CommandResult::Created(record(1, 3))
    );
    assert_eq!(
        d.apply(Command::Create(student(1)), 4),
        CommandResult::AlreadyExists(1)
    );
    assert_eq!(d.students[&1].revision, 3, "a refused create leaves the revision");
    assert_eq!(
        d.apply(Command::update(student(2)), 5),
        CommandResult::NotFound(2)
    );
    assert_eq!(
        d.apply(Command::update(student(1)), 6),
        CommandResult::Updated(record(1, 6))
    );
    assert_eq!(d.apply(Command::delete(1), 7), CommandResult::Deleted(1));
    assert_eq!(d.apply(Command::delete(1), 8), CommandResult::NotFound(1));
}

#[test]
fn conditional_writes_apply_only_at_the_expected_revision() {
    let mut d = StateMachineData::default();
    d.apply(Command::Create(student(1)), 10);
    let update_if = |expected| Command::Update {
        student: Student {
            score: 99.0,
            ..student(1)
        },
        expected: Some(expected),
    };
    assert_eq!(
        d.apply(update_if(9), 11),
        CommandResult::RevisionMismatch {
            id: 1,
            current: Some(10)
        }
    );
    assert_eq!(d.students[&1], record(1, 10), "a mismatch changes nothing");
    let CommandResult::Updated(r) = d.apply(update_if(10), 12) else {
        panic!("the expected revision applies");
    };
    assert_eq!((r.revision, r.student.score), (12, 99.0));
    // The same condition again is stale now: a lost update cannot happen.
    assert!(matches!(
        d.apply(update_if(10), 13),
        CommandResult::RevisionMismatch {
            current: Some(12),
            ..
        }
    ));
    let delete_if = |expected| Command::Delete {
        id: 1,
        expected: Some(expected),
    };
    assert!(matches!(
        d.apply(delete_if(10), 14),
        CommandResult::RevisionMismatch {
            current: Some(12),
            ..
        }
    ));
    assert_eq!(d.apply(delete_if(12), 15), CommandResult::Deleted(1));
    // No record: no revision can match, and it says so rather than "not found".
    assert_eq!(
        d.apply(delete_if(12), 16),
        CommandResult::RevisionMismatch { id: 1, current: None }
    );
    assert_eq!(
        d.apply(update_if(12), 17),
        CommandResult::RevisionMismatch { id: 1, current: None }
    );
}

#[test]
fn a_batch_applies_in_order_with_one_outcome_each() {
    let mut d = StateMachineData::default();
    let batch = Command::Batch(vec![
        Command::Create(student(1)),
        Command::Create(student(1)),
        Command::Update {
            student: student(1),
            expected: Some(20),
        },
        Command::delete(1),
        Command::Batch(vec![Command::delete(1)]),
    ]);
    assert_eq!(
        d.apply(batch, 20),
        CommandResult::Batch(vec![
            CommandResult::Created(record(1, 20)),
            CommandResult::AlreadyExists(1),
            // Commands of one entry share its revision: the create's is 20 too.
            CommandResult::Updated(record(1, 20)),
            CommandResult::Deleted(1),
            CommandResult::Batch(vec![CommandResult::NotFound(1)]),
        ])
    );
    assert!(d.students.is_empty());
}

#[test]
fn snapshot_encoding_round_trips() {
    let students: Students = (1..=100).map(|i| (i, record(i, i as u64 * 3))).collect();
    let back = decode_students(&encode_students(&students)).expect("decodes");
    assert_eq!(back, students);
}

/// The streamed backup is byte for byte the snapshot file of the same state, whatever
/// the chunk size, and reads back as the records it was taken from.
#[test]
fn a_streamed_backup_is_the_snapshot_file_of_its_state() {
    for n in [0, 1, 2_500] {
        let sm = StateMachineStore::default();
        let students: Students = (1..=n)
            .map(|i| {
                (
                    i,
                    Record {
                        student: Student {
                            id: i,
                            name: format!("é{i}"),
                            score: i as f32 / 7.0,
                        },
                        revision: i as u64,
                    },
                )
            })
            .collect();
        sm.write().students = students.clone();
        let whole = disk::encode_snapshot(&backup_meta(&sm.read()), &encode_students(&students))
            .expect("small enough");
        for chunk in [1, 100, 64 << 10] {
            let backup = sm.backup().expect("small enough");
            assert_eq!((backup.records(), backup.len), (n as usize, whole.len() as u64));
            // Writes after the copy do not reach it.
            sm.write().students.insert(-1, record(-1, 1));
            let streamed: Vec<u8> = backup.chunks(chunk).flatten().collect();
            sm.write().students.remove(&-1);
            assert!(streamed == whole, "{n} records, chunks of {chunk}: bytes differ");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("backup");
        std::fs::write(
            &path,
            sm.backup()
                .expect("small enough")
                .chunks(1000)
                .flatten()
                .collect::<Vec<u8>>(),
        )
        .expect("write");
        let back = read_backup(&path).expect("reads back");
        assert_eq!(back, students.values().cloned().collect::<Vec<_>>());
    }
}

#[test]
fn list_pages_in_id_order() {
    let sm = StateMachineStore::default();
    sm.write().students = (1..=5).map(|i| (i * 10, record(i * 10, 1))).collect();
    let (page, more, _) = sm.list(None, 2);
    assert_eq!(
        page.iter().map(|r| r.student.id).collect::<Vec<_>>(),
        vec![10, 20]
    );
    assert!(more);
    let (page, more, _) = sm.list(Some(20), 10);
    assert_eq!(
        page.iter().map(|r| r.student.id).collect::<Vec<_>>(),
        vec![30, 40, 50]
    );
    assert!(!more);
}

/// Only what changed a record is a change: refused writes are not, a delete carries the
/// record as it was, and a batch's changes come out in its order.
#[test]
fn changes_are_what_the_commands_did() {
    let mut d = StateMachineData::default();
    let mut changes = Vec::new();
    let batch = Command::Batch(vec![
        Command::Create(student(1)),
        Command::Create(student(1)),
        Command::Update {
            student: student(1),
            expected: Some(3),
        },
        Command::Update {
            student: student(1),
            expected: Some(20),
        },
        Command::update(student(2)),
        Command::delete(1),
        Command::delete(1),
    ]);
    d.apply_command(batch, 20, &mut changes);
    assert_eq!(
        changes,
        vec![
            Change::Put(record(1, 20)),
            Change::Put(record(1, 20)),
            Change::Delete(record(1, 20)),
        ]
    );
}

/// Applying through OpenRaft's trait publishes each entry's changes under its revision,
/// skips entries that changed nothing, and an installed snapshot starts the history over.
#[tokio::test]
async fn apply_publishes_changes_and_a_snapshot_resets_them() {
    use crate::store::watch::WatchEvent;
    use openraft::{CommittedLeaderId, Entry as RaftEntry};
    let mut sm = StateMachineStore::default();
    let entry = |index: u64, payload| RaftEntry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload,
    };
    let mut w = sm
        .watch_hub()
        .watch(1, None, std::time::Duration::from_secs(60))
        .expect("watch");
    sm.apply(vec![
        entry(1, EntryPayload::Blank),
        entry(2, EntryPayload::Normal(Command::Create(student(7)))),
        entry(3, EntryPayload::Normal(Command::Create(student(7)))),
        entry(4, EntryPayload::Normal(Command::delete(7))),
    ])
    .await
    .expect("applies");
    let mut seen = Vec::new();
    loop {
        match w.next().await.expect("watching") {
            WatchEvent::Changes(c) => seen.push((c.revision, c.changes.clone())),
            WatchEvent::Progress(rev) => {
                assert_eq!(rev, 4);
                break;
            }
        }
    }
    assert_eq!(
        seen,
        vec![
            (2, vec![Change::Put(record(7, 2))]),
            (4, vec![Change::Delete(record(7, 2))]),
        ]
    );
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 50)),
        last_membership: StoredMembership::default(),
        snapshot_id: "s".into(),
    };
    let bytes = encode_students(&Students::default());
    sm.install_snapshot(&meta, Box::new(Cursor::new(bytes)))
        .await
        .expect("installs");
    assert_eq!(sm.watch_hub().bounds(), (51, 50));
}
