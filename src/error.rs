//! Failures and the exit codes they map to.
//!
//! Every command returns `Result<_, Failure>`: an error chain for the user
//! plus the class of failure, which decides the exit status. The classes are
//! documented in the README; scripts rely on them, so never renumber.

use std::fmt;

/// What kind of failure ended the command; each has a fixed exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A bug or an unexpected environment problem.
    Internal,
    /// Bad arguments or a target that cannot be understood.
    Usage,
    /// The plan was refused: no backup reaches the target, WAL is missing, ...
    PlanRefused,
    /// Writing the data directory failed; nothing was left behind.
    Staging,
    /// PostgreSQL did not reach the target, or failed while replaying.
    Recovery,
    /// `pitr verify` found damaged or missing files.
    VerifyFailed,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// `pitr backup`: pg_basebackup failed; nothing was left behind.
    Backup,
    /// `pitr backup`: the backup is in place but its WAL did not reach the
    /// archive in time.
    WalNotArchived,
    /// `pitr init --pgdata`: the cluster does not archive into the repository.
    NotArchiving,
    /// `pitr drill`: a step of the drill failed (its report says which).
    DrillFailed,
    /// `pitr extract`: the dump or the load failed (the load is one
    /// transaction: the live cluster is unchanged).
    Transfer,
}

impl FailureKind {
    pub fn exit_code(self) -> u8 {
        match self {
            FailureKind::Internal => 1,
            FailureKind::Usage => 2,
            FailureKind::PlanRefused => 3,
            FailureKind::Staging => 4,
            FailureKind::Recovery => 5,
            FailureKind::Backup => 6,
            FailureKind::WalNotArchived => 7,
            FailureKind::NotArchiving => 8,
            FailureKind::VerifyFailed => 9,
            FailureKind::DrillFailed => 10,
            FailureKind::Transfer => 11,
            FailureKind::Interrupted => 130,
        }
    }
}

/// An error chain with its class and, when we know one, what to do next.
pub struct Failure {
    pub kind: FailureKind,
    pub error: anyhow::Error,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(kind: FailureKind, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            kind,
            error: error.into(),
            hint: None,
        }
    }

    pub fn msg(kind: FailureKind, message: impl fmt::Display) -> Failure {
        Failure::new(kind, anyhow::anyhow!("{message}"))
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:#}", self.kind, self.error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

/// Attaches a failure class to any error.
pub trait OrFail<T> {
    fn or_fail(self, kind: FailureKind) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> OrFail<T> for Result<T, E> {
    fn or_fail(self, kind: FailureKind) -> Result<T, Failure> {
        self.map_err(|error| Failure::new(kind, error))
    }
}
