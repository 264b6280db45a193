//! The domain: a student record, the commands that change records, what a command did, the
//! cluster member descriptor, and input validation. Validation runs once, at the API edge,
//! before anything is proposed to Raft; the state machine trusts what is in the log.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 256;
/// The most one validated command takes encoded: a name of `MAX_NAME_CHARS` characters of
/// up to 4 UTF-8 bytes each, plus the id, the score and protobuf framing.
pub const MAX_COMMAND_BYTES: usize = 4 * MAX_NAME_CHARS + 64;
/// Highest accepted score.
pub const MAX_SCORE: f32 = 100.0;

/// A student record: the value this store replicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Student {
    /// Primary key, at least 1.
    #[schema(minimum = 1, example = 1)]
    pub id: i64,
    /// Display name, 1–256 characters, stored trimmed.
    #[schema(example = "Ada")]
    pub name: String,
    /// A finite score between 0 and 100.
    #[schema(minimum = 0, maximum = 100, example = 91.5)]
    pub score: f32,
}

/// A stored record: the student and its revision, the log index of the entry that last
/// changed it. Revisions only grow, so a client that read revision `r` can ask a write to
/// apply only if nothing changed the record since (`If-Match`, `expected_revision`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    /// The record's fields.
    #[serde(flatten)]
    pub student: Student,
    /// The log index that last created or replaced it (0: restored from a backup taken
    /// before revisions existed).
    #[schema(example = 42)]
    pub revision: u64,
}

/// A change to the store: the payload of a normal Raft log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Insert a record whose id must not exist yet.
    Create(Student),
    /// Replace the name and score of an existing record.
    Update {
        /// The new value.
        student: Student,
        /// Apply only if the record's revision is this one.
        expected: Option<u64>,
    },
    /// Remove a record.
    Delete {
        /// The record's id.
        id: i64,
        /// Apply only if the record's revision is this one.
        expected: Option<u64>,
    },
    /// Several commands proposed together as one log entry, applied in order. Concurrent
    /// client writes are batched this way so that many requests cost one Raft append, one
    /// replication message and one apply.
    Batch(Vec<Command>),
}

/// What applying a [`Command`] did. "Not found" and "already exists" are outcomes, not
/// errors: every replica reaches the same one deterministically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    /// The record was inserted.
    Created(Record),
    /// The record was replaced; this is the new value.
    Updated(Record),
    /// The record with this id was removed.
    Deleted(i64),
    /// No record has this id.
    NotFound(i64),
    /// A record with this id exists already.
    AlreadyExists(i64),
    /// The command expected another revision: nothing changed.
    RevisionMismatch {
        /// The record's id.
        id: i64,
        /// Its revision now; `None` when there is no such record.
        current: Option<u64>,
    },
    /// The outcomes of a [`Command::Batch`], in the batch's order.
    Batch(Vec<CommandResult>),
}

/// A cluster member as Raft membership stores it: a stable name and the peer address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name (`<something>-<ordinal>`); survives restarts while the Raft id does not.
    pub name: String,
    /// `host:port` of the peer gRPC port, a DNS name where there is one.
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// Why a request was refused before it reached Raft.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// The id is zero or negative.
    #[error("`id` must be at least 1, got {0}")]
    Id(i64),
    /// The name is empty after trimming.
    #[error("`name` must not be empty")]
    EmptyName,
    /// The name is longer than [`MAX_NAME_CHARS`].
    #[error("`name` must be at most {MAX_NAME_CHARS} characters, got {0}")]
    NameTooLong(usize),
    /// The score is NaN or infinite.
    #[error("`score` must be a finite number")]
    ScoreNotFinite,
    /// The score is outside 0–100.
    #[error("`score` must be between 0 and {MAX_SCORE}, got {0}")]
    ScoreOutOfRange(f32),
    /// The name has leading or trailing white space (a client edge stores it trimmed).
    #[error("`name` must be trimmed")]
    NameUntrimmed,
    /// A batch holds more commands than a node proposes together, or another batch.
    #[error("a batch must hold 1 to {max} plain commands, got {got}")]
    Batch {
        /// The most a batch may hold (`raft.max_batch_writes`).
        max: usize,
        /// What it held (or, for a nested batch, its position).
        got: usize,
    },
}

impl Command {
    /// The record id a single command writes (`None` for a batch).
    pub fn id(&self) -> Option<i64> {
        match self {
            Command::Create(s) | Command::Update { student: s, .. } => Some(s.id),
            Command::Delete { id, .. } => Some(*id),
            Command::Batch(_) => None,
        }
    }

    /// An unconditional update.
    pub fn update(student: Student) -> Command {
        Command::Update {
            student,
            expected: None,
        }
    }

    /// An unconditional delete.
    pub fn delete(id: i64) -> Command {
        Command::Delete { id, expected: None }
    }

    /// Checks a command that arrived from elsewhere (a forwarded write) as the client edges
    /// check theirs: every record valid and stored as validation would store it, and a batch
    /// no larger than `max_batch` and flat. The state machine applies whatever is committed,
    /// so this is the last place to refuse.
    pub fn validate(&self, max_batch: usize) -> Result<(), ValidationError> {
        let record = |s: &Student| {
            let valid = Student::validated(s.id, &s.name, s.score)?;
            if valid.name != s.name {
                // Untrimmed: what a client edge would have stored differs from what came.
                return Err(ValidationError::NameUntrimmed);
            }
            Ok(())
        };
        match self {
            Command::Create(s) | Command::Update { student: s, .. } => record(s),
            Command::Delete { id, .. } => validate_id(*id).map(|_| ()),
            Command::Batch(cmds) => {
                if cmds.is_empty() || cmds.len() > max_batch {
                    return Err(ValidationError::Batch {
                        max: max_batch,
                        got: cmds.len(),
                    });
                }
                cmds.iter().try_for_each(|c| match c {
                    Command::Batch(_) => Err(ValidationError::Batch {
                        max: max_batch,
                        got: cmds.len(),
                    }),
                    plain => plain.validate(max_batch),
                })
            }
        }
    }
}

/// Checks an id.
pub fn validate_id(id: i64) -> Result<i64, ValidationError> {
    if id < 1 {
        return Err(ValidationError::Id(id));
    }
    Ok(id)
}

impl Student {
    /// Validates the fields and returns the record as it will be stored (name trimmed).
    pub fn validated(id: i64, name: &str, score: f32) -> Result<Student, ValidationError> {
        let id = validate_id(id)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(ValidationError::EmptyName);
        }
        let chars = name.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(ValidationError::NameTooLong(chars));
        }
        if !score.is_finite() {
            return Err(ValidationError::ScoreNotFinite);
        }
        if !(0.0..=MAX_SCORE).contains(&score) {
            return Err(ValidationError::ScoreOutOfRange(score));
        }
        Ok(Student {
            id,
            name: name.to_owned(),
            score,
        })
    }
}

/// The ordinal of a StatefulSet-style name: the number after the last `-`.
pub fn ordinal_of(name: &str) -> Option<u32> {
    let (_, tail) = name.rsplit_once('-')?;
    if tail.is_empty() || !tail.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    tail.parse().ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn forwarded_commands_are_checked_like_client_ones() {
        let ok = Student::validated(1, "Ada", 50.0).expect("valid");
        assert!(Command::Create(ok.clone()).validate(4).is_ok());
        let bad = |s: Student| Command::update(s).validate(4).expect_err("refused");
        let mut nan = ok.clone();
        nan.score = f32::NAN;
        assert_eq!(bad(nan), ValidationError::ScoreNotFinite);
        let mut padded = ok.clone();
        padded.name = " Ada ".into();
        assert_eq!(bad(padded), ValidationError::NameUntrimmed);
        let mut zero = ok.clone();
        zero.id = 0;
        assert_eq!(bad(zero), ValidationError::Id(0));
        assert!(Command::delete(-1).validate(4).is_err());
        let batch = |n: usize| Command::Batch(vec![Command::delete(1); n]);
        assert!(batch(4).validate(4).is_ok());
        assert_eq!(
            batch(5).validate(4),
            Err(ValidationError::Batch { max: 4, got: 5 })
        );
        assert!(batch(0).validate(4).is_err(), "an empty batch");
        let nested = Command::Batch(vec![Command::delete(1), batch(1)]);
        assert!(nested.validate(4).is_err(), "a batch inside a batch");
        let hidden = Command::Batch(vec![Command::delete(1), Command::delete(0)]);
        assert_eq!(hidden.validate(4), Err(ValidationError::Id(0)));
    }

    use super::*;

    #[test]
    fn accepts_and_trims_a_valid_record() {
        let s = Student::validated(7, "  Ada  ", 91.5).expect("valid");
        assert_eq!(s.name, "Ada");
        assert_eq!(s.id, 7);
    }

    #[test]
    fn rejects_each_bad_field() {
        assert_eq!(Student::validated(0, "a", 1.0), Err(ValidationError::Id(0)));
        assert_eq!(Student::validated(-3, "a", 1.0), Err(ValidationError::Id(-3)));
        assert_eq!(Student::validated(1, "   ", 1.0), Err(ValidationError::EmptyName));
        let long = "é".repeat(257);
        assert_eq!(
            Student::validated(1, &long, 1.0),
            Err(ValidationError::NameTooLong(257))
        );
        assert!(Student::validated(1, &"é".repeat(256), 1.0).is_ok());
        assert_eq!(
            Student::validated(1, "a", f32::NAN),
            Err(ValidationError::ScoreNotFinite)
        );
        assert_eq!(
            Student::validated(1, "a", f32::INFINITY),
            Err(ValidationError::ScoreNotFinite)
        );
        assert_eq!(
            Student::validated(1, "a", 100.5),
            Err(ValidationError::ScoreOutOfRange(100.5))
        );
        assert_eq!(
            Student::validated(1, "a", -0.1),
            Err(ValidationError::ScoreOutOfRange(-0.1))
        );
        assert!(Student::validated(1, "a", 0.0).is_ok());
        assert!(Student::validated(1, "a", 100.0).is_ok());
    }

    #[test]
    fn ordinal_is_the_trailing_number() {
        assert_eq!(ordinal_of("db-0"), Some(0));
        assert_eq!(ordinal_of("my-db-12"), Some(12));
        assert_eq!(ordinal_of("db"), None);
        assert_eq!(ordinal_of("db-"), None);
        assert_eq!(ordinal_of("db-x1"), None);
    }
}
