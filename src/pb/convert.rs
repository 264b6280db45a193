//! Protobuf ⇄ OpenRaft / model conversions for the peer protocol. Encoding never fails;
//! decoding fails only when a message lacks a field the sender must always set.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{CommittedLeaderId, EntryPayload};

use super::{client, peer};
use crate::model::{Command, CommandResult, Member, Record, Student};
use crate::{Entry, LogId, Membership, NodeId, SnapshotMeta, StoredMembership, TypeConfig, Vote};

/// A peer message lacked a required field: the sender is broken or speaks another version.
#[derive(Debug, Clone, thiserror::Error)]
#[error("peer message is missing required field `{0}`")]
pub struct MissingField(pub &'static str);

fn need<T>(v: Option<T>, field: &'static str) -> Result<T, MissingField> {
    v.ok_or(MissingField(field))
}

impl From<Student> for client::Student {
    fn from(s: Student) -> Self {
        client::Student {
            id: s.id,
            name: s.name,
            score: s.score,
            revision: 0,
        }
    }
}

impl From<Record> for client::Student {
    fn from(r: Record) -> Self {
        client::Student {
            revision: r.revision,
            ..r.student.into()
        }
    }
}

impl From<client::Student> for Record {
    fn from(s: client::Student) -> Self {
        Record {
            revision: s.revision,
            student: s.into(),
        }
    }
}

impl From<client::Student> for Student {
    fn from(s: client::Student) -> Self {
        Student {
            id: s.id,
            name: s.name,
            score: s.score,
        }
    }
}

impl From<Vote> for peer::Vote {
    fn from(v: Vote) -> Self {
        peer::Vote {
            leader_id: Some(peer::LeaderId {
                term: v.leader_id.term,
                node_id: v.leader_id.node_id,
            }),
            committed: v.committed,
        }
    }
}

impl TryFrom<peer::Vote> for Vote {
    type Error = MissingField;
    fn try_from(v: peer::Vote) -> Result<Self, MissingField> {
        let l = need(v.leader_id, "vote.leader_id")?;
        let mut vote = Vote::new(l.term, l.node_id);
        if v.committed {
            vote.commit();
        }
        Ok(vote)
    }
}

impl From<LogId> for peer::LogId {
    fn from(id: LogId) -> Self {
        peer::LogId {
            leader_id: Some(peer::LeaderId {
                term: id.leader_id.term,
                node_id: id.leader_id.node_id,
            }),
            index: id.index,
        }
    }
}

impl TryFrom<peer::LogId> for LogId {
    type Error = MissingField;
    fn try_from(id: peer::LogId) -> Result<Self, MissingField> {
        let l = need(id.leader_id, "log_id.leader_id")?;
        Ok(LogId::new(CommittedLeaderId::new(l.term, l.node_id), id.index))
    }
}

/// Encodes an optional log id.
pub fn log_id_to_pb(id: Option<LogId>) -> Option<peer::LogId> {
    id.map(Into::into)
}

/// Decodes an optional log id.
pub fn log_id_from_pb(id: Option<peer::LogId>) -> Result<Option<LogId>, MissingField> {
    id.map(TryInto::try_into).transpose()
}

impl From<Member> for peer::Member {
    fn from(m: Member) -> Self {
        peer::Member {
            name: m.name,
            addr: m.addr,
        }
    }
}

impl From<peer::Member> for Member {
    fn from(m: peer::Member) -> Self {
        Member {
            name: m.name,
            addr: m.addr,
        }
    }
}

impl From<&Membership> for peer::Membership {
    fn from(m: &Membership) -> Self {
        peer::Membership {
            configs: m
                .get_joint_config()
                .iter()
                .map(|c| peer::NodeIdSet {
                    ids: c.iter().copied().collect(),
                })
                .collect(),
            nodes: m.nodes().map(|(id, n)| (*id, n.clone().into())).collect(),
        }
    }
}

impl From<peer::Membership> for Membership {
    fn from(m: peer::Membership) -> Self {
        let configs: Vec<BTreeSet<NodeId>> = m
            .configs
            .into_iter()
            .map(|c| c.ids.into_iter().collect())
            .collect();
        let nodes: BTreeMap<NodeId, Member> = m.nodes.into_iter().map(|(id, n)| (id, n.into())).collect();
        Membership::new(configs, nodes)
    }
}

impl From<&StoredMembership> for peer::StoredMembership {
    fn from(m: &StoredMembership) -> Self {
        peer::StoredMembership {
            log_id: log_id_to_pb(*m.log_id()),
            membership: Some(m.membership().into()),
        }
    }
}

impl TryFrom<peer::StoredMembership> for StoredMembership {
    type Error = MissingField;
    fn try_from(m: peer::StoredMembership) -> Result<Self, MissingField> {
        Ok(StoredMembership::new(
            log_id_from_pb(m.log_id)?,
            need(m.membership, "stored_membership.membership")?.into(),
        ))
    }
}

impl From<Command> for peer::Command {
    fn from(c: Command) -> Self {
        use peer::command::Op;
        let op = match c {
            Command::Create(s) => Op::Create(s.into()),
            Command::Update {
                student,
                expected: None,
            } => Op::Update(student.into()),
            Command::Update {
                student,
                expected: Some(e),
            } => Op::UpdateIf(peer::UpdateIf {
                student: Some(student.into()),
                expected_revision: e,
            }),
            Command::Delete { id, expected: None } => Op::Delete(id),
            Command::Delete {
                id,
                expected: Some(e),
            } => Op::DeleteIf(peer::DeleteIf {
                id,
                expected_revision: e,
            }),
            Command::Batch(cmds) => Op::Batch(peer::CommandBatch {
                commands: cmds.into_iter().map(Into::into).collect(),
            }),
        };
        peer::Command { op: Some(op) }
    }
}

impl TryFrom<peer::Command> for Command {
    type Error = MissingField;
    fn try_from(c: peer::Command) -> Result<Self, MissingField> {
        use peer::command::Op;
        Ok(match need(c.op, "command.op")? {
            Op::Create(s) => Command::Create(s.into()),
            Op::Update(s) => Command::update(s.into()),
            Op::UpdateIf(u) => Command::Update {
                student: need(u.student, "update_if.student")?.into(),
                expected: Some(u.expected_revision),
            },
            Op::Delete(id) => Command::delete(id),
            Op::DeleteIf(d) => Command::Delete {
                id: d.id,
                expected: Some(d.expected_revision),
            },
            Op::Batch(b) => Command::Batch(
                b.commands
                    .into_iter()
                    .map(Command::try_from)
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

impl From<CommandResult> for peer::CommandResult {
    fn from(r: CommandResult) -> Self {
        use peer::command_result::Outcome;
        let outcome = match r {
            CommandResult::Created(s) => Outcome::Created(s.into()),
            CommandResult::Updated(s) => Outcome::Updated(s.into()),
            CommandResult::Deleted(id) => Outcome::Deleted(id),
            CommandResult::NotFound(id) => Outcome::NotFound(id),
            CommandResult::AlreadyExists(id) => Outcome::AlreadyExists(id),
            CommandResult::RevisionMismatch { id, current } => {
                Outcome::RevisionMismatch(peer::RevisionMismatch {
                    id,
                    current_revision: current,
                })
            }
            CommandResult::Batch(rs) => Outcome::Batch(peer::CommandResultBatch {
                results: rs.into_iter().map(Into::into).collect(),
            }),
        };
        peer::CommandResult {
            outcome: Some(outcome),
        }
    }
}

impl TryFrom<peer::CommandResult> for CommandResult {
    type Error = MissingField;
    fn try_from(r: peer::CommandResult) -> Result<Self, MissingField> {
        use peer::command_result::Outcome;
        Ok(match need(r.outcome, "command_result.outcome")? {
            Outcome::Created(s) => CommandResult::Created(s.into()),
            Outcome::Updated(s) => CommandResult::Updated(s.into()),
            Outcome::Deleted(id) => CommandResult::Deleted(id),
            Outcome::NotFound(id) => CommandResult::NotFound(id),
            Outcome::AlreadyExists(id) => CommandResult::AlreadyExists(id),
            Outcome::RevisionMismatch(m) => CommandResult::RevisionMismatch {
                id: m.id,
                current: m.current_revision,
            },
            Outcome::Batch(b) => CommandResult::Batch(
                b.results
                    .into_iter()
                    .map(CommandResult::try_from)
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

impl From<Entry> for peer::Entry {
    fn from(e: Entry) -> Self {
        use peer::entry::Payload;
        let payload = match e.payload {
            EntryPayload::Blank => Payload::Blank(peer::Empty {}),
            EntryPayload::Normal(c) => Payload::Normal(c.into()),
            EntryPayload::Membership(m) => Payload::Membership((&m).into()),
        };
        peer::Entry {
            log_id: Some(e.log_id.into()),
            payload: Some(payload),
        }
    }
}

impl TryFrom<peer::Entry> for Entry {
    type Error = MissingField;
    fn try_from(e: peer::Entry) -> Result<Self, MissingField> {
        use peer::entry::Payload;
        let payload = match need(e.payload, "entry.payload")? {
            Payload::Blank(_) => EntryPayload::<TypeConfig>::Blank,
            Payload::Normal(c) => EntryPayload::Normal(c.try_into()?),
            Payload::Membership(m) => EntryPayload::Membership(m.into()),
        };
        Ok(Entry {
            log_id: need(e.log_id, "entry.log_id")?.try_into()?,
            payload,
        })
    }
}

impl From<&SnapshotMeta> for peer::SnapshotMeta {
    fn from(m: &SnapshotMeta) -> Self {
        peer::SnapshotMeta {
            last_log_id: log_id_to_pb(m.last_log_id),
            last_membership: Some((&m.last_membership).into()),
            snapshot_id: m.snapshot_id.clone(),
        }
    }
}

impl TryFrom<peer::SnapshotMeta> for SnapshotMeta {
    type Error = MissingField;
    fn try_from(m: peer::SnapshotMeta) -> Result<Self, MissingField> {
        Ok(SnapshotMeta {
            last_log_id: log_id_from_pb(m.last_log_id)?,
            last_membership: need(m.last_membership, "snapshot_meta.last_membership")?.try_into()?,
            snapshot_id: m.snapshot_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let log_id = LogId::new(CommittedLeaderId::new(3, 9), 42);
        let nodes = BTreeMap::from([(
            9,
            Member {
                name: "db-0".into(),
                addr: "db-0.db:50052".into(),
            },
        )]);
        let membership = Membership::new(vec![BTreeSet::from([9])], nodes);
        let entries = vec![
            Entry {
                log_id,
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id,
                payload: EntryPayload::Normal(Command::Create(Student {
                    id: 1,
                    name: "Ada".into(),
                    score: 9.5,
                })),
            },
            Entry {
                log_id,
                payload: EntryPayload::Normal(Command::delete(5)),
            },
            Entry {
                log_id,
                payload: EntryPayload::Normal(Command::Batch(vec![
                    Command::delete(7),
                    Command::Delete {
                        id: 8,
                        expected: Some(3),
                    },
                    Command::Batch(vec![
                        Command::update(Student {
                            id: 2,
                            name: "Bo".into(),
                            score: 1.0,
                        }),
                        Command::Update {
                            student: Student {
                                id: 3,
                                name: "Cy".into(),
                                score: 2.0,
                            },
                            expected: Some(0),
                        },
                    ]),
                ])),
            },
            Entry {
                log_id,
                payload: EntryPayload::Membership(membership),
            },
        ];
        for e in entries {
            let back: Entry = peer::Entry::from(e.clone()).try_into().expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{e:?}"));
        }
    }

    #[test]
    fn missing_fields_are_reported_not_panicked() {
        let err = Entry::try_from(peer::Entry::default()).expect_err("must fail");
        assert_eq!(err.0, "entry.payload");
        assert!(Vote::try_from(peer::Vote::default()).is_err());
    }
}
