//! Actions: what a front door asks the guard, in the product's words. Doors
//! translate their protocol requests into these; no protocol type gets here.

use std::fmt;

use crate::model::{FileOp, PrincipalId};

/// The values a register write carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteValues {
    /// The values written, one per register (coils as 0/1).
    Known(Vec<u16>),
    /// A write whose effect the gateway cannot see (FC 22 mask write): it is
    /// treated as writing every value, so only entries with no value
    /// constraint allow it.
    Any { count: u16 },
}

impl WriteValues {
    pub fn len(&self) -> usize {
        match self {
            WriteValues::Known(v) => v.len(),
            WriteValues::Any { count } => *count as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn value(&self, i: usize) -> Option<u16> {
        match self {
            WriteValues::Known(v) => v.get(i).copied(),
            WriteValues::Any { .. } => None,
        }
    }
}

/// An administrative operation, by the permission class it needs
/// (DESIGN §3's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdminOp {
    /// Any change to users, service users, keys, groups, roles, policies,
    /// support access; session kill; unlock: User Management.
    Change,
    /// list/show, session list, review, check: User Management or Security
    /// Logs Access.
    View,
    /// Re-issuing a temporary password: Administrator only.
    ResendPassword,
    /// Changing another person's email, where their temporary passwords
    /// are mailed: Administrator only, as re-issuing one is.
    MailAddress,
    /// Moving the directory out or in (`directory export|import`): every
    /// hash goes out, everyone's access is replaced: Administrator only.
    DirectoryTransfer,
    /// Changing one's own password: Password Self-Management.
    OwnPassword,
    /// Editing one's own names: nothing beyond being allowed in.
    OwnProfile,
}

/// What a principal wants to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Being let in at all (status, end dates, temporary password, support).
    Login,
    /// A read of registers (FC 1, 2, 3, 4) or device identification (43/14,
    /// as function 43 with an empty range).
    ReadRegisters {
        meter: String,
        function: u8,
        start: u16,
        count: u16,
    },
    /// A write; FC 23 also carries its read part in `read`.
    WriteRegisters {
        meter: String,
        function: u8,
        start: u16,
        values: WriteValues,
        read: Option<(u16, u16)>,
    },
    /// FC 8: privileged (sub 01 restarts communications, 04 forces
    /// listen-only); never allowed through the gateway.
    Diagnostics { meter: String, sub_function: u16 },
    /// A file operation under the meter's tree (`path` relative to it).
    File {
        meter: String,
        op: FileOp,
        path: String,
    },
    /// A console session on the meter.
    Terminal { meter: String },
    /// An admin command.
    Admin { op: AdminOp, target: String },
    /// Reading, exporting or verifying the security log.
    ReadAudit { what: String },
}

impl Action {
    /// The meter the action is about, if any.
    pub fn meter(&self) -> Option<&str> {
        match self {
            Action::ReadRegisters { meter, .. }
            | Action::WriteRegisters { meter, .. }
            | Action::Diagnostics { meter, .. }
            | Action::File { meter, .. }
            | Action::Terminal { meter } => Some(meter),
            _ => None,
        }
    }

    /// Reads are counted, not logged (unless the config asks); everything
    /// else is logged before it is allowed to happen.
    pub fn is_read(&self) -> bool {
        match self {
            Action::ReadRegisters { .. } => true,
            Action::File { op, .. } => op.is_read(),
            _ => false,
        }
    }

    /// Short stable word for events.
    pub fn word(&self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::ReadRegisters { .. } => "read-registers",
            Action::WriteRegisters { .. } => "write-registers",
            Action::Diagnostics { .. } => "diagnostics",
            Action::File { .. } => "file",
            Action::Terminal { .. } => "terminal",
            Action::Admin { .. } => "admin",
            Action::ReadAudit { .. } => "read-audit",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Login => f.write_str("login"),
            Action::ReadRegisters {
                function,
                start,
                count,
                ..
            } => {
                write!(
                    f,
                    "read FC {function} registers {start}..{}",
                    *start as u32 + *count as u32
                )
            }
            Action::WriteRegisters {
                function,
                start,
                values,
                read,
                ..
            } => {
                write!(
                    f,
                    "write FC {function} registers {start}..{}",
                    *start as u32 + values.len() as u32
                )?;
                match values {
                    WriteValues::Known(v) if v.len() <= 8 => write!(f, " values {v:?}")?,
                    WriteValues::Known(_) => {}
                    WriteValues::Any { .. } => f.write_str(" (mask: any value)")?,
                }
                if let Some((s, c)) = read {
                    write!(f, " and read {s}..{}", *s as u32 + *c as u32)?;
                }
                Ok(())
            }
            Action::Diagnostics { sub_function, .. } => {
                write!(f, "diagnostics sub-function {sub_function}")
            }
            Action::File { op, path, .. } => write!(f, "{op:?} {path}"),
            Action::Terminal { .. } => f.write_str("console session"),
            Action::Admin { target, .. } => f.write_str(target),
            Action::ReadAudit { what } => write!(f, "audit {what}"),
        }
    }
}

/// A question for the guard: who, from where, through which door, what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub principal: PrincipalId,
    pub source: Option<String>,
    pub door: &'static str,
    pub action: Action,
    /// The identity allows reads only: a plain Modbus client entry without
    /// `allow_writes` (a source address is spoofable and collapsed by NAT).
    pub read_only: bool,
    /// The client certificate the request came with (Modbus/TCP Security):
    /// its role bounds what the owner's policies allow.
    pub certificate: Option<std::sync::Arc<CertificateClaim>>,
    /// The session proved a second factor (at login or by stepping up).
    pub second_factor: bool,
    /// What the request leads to is being recorded (session recording):
    /// statements with `require_recording` allow only then.
    pub recorded: bool,
}

/// What a verified client certificate says, in the product's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateClaim {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// The subject distinguished name as text.
    pub subject: String,
    /// The role from the certificate's role extension, if any.
    pub role: Option<String>,
}
