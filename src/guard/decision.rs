//! The guard's answer: Allow or Deny, with the reason that decided it.

use std::fmt;

use crate::model::{Day, Permission, PermissionSet, rfc3339};

/// A short name kept inline (policy and role names are at most 64 bytes;
/// inline-policy labels a little more), so building a reason touches no
/// shared memory and no reference count.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Label {
    len: u8,
    buf: [u8; 95],
}

impl Label {
    pub fn new(text: &str) -> Label {
        let mut end = text.len().min(95);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0u8; 95];
        buf[..end].copy_from_slice(&text.as_bytes()[..end]);
        Label {
            len: end as u8,
            buf,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Why the guard decided as it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// An allow statement decided (and no deny applied).
    Allowed {
        policy: Label,
        statement: usize,
        role: Option<Label>,
    },
    /// An explicit deny decided; it beats every allow.
    Denied {
        policy: Label,
        statement: usize,
        role: Option<Label>,
    },
    /// Default deny.
    NoStatementAllows,
    /// The principal may come in (login); no permission involved.
    PrincipalActive,
    UnknownPrincipal,
    Inactive,
    AccessEnded(Day),
    TemporaryPasswordExpired {
        at: i64,
    },
    SupportNotGranted,
    SupportEnded(Day),
    OutsideSupportBoundary,
    UnknownMeter,
    /// The profile does not let Data View read this range with this function.
    NotReadable {
        function: u8,
        start: u16,
        count: u16,
    },
    /// No allowlist entry of the profile covers this register write.
    NotInAllowlist {
        function: u8,
        address: u16,
        value: Option<u16>,
    },
    /// FC 8 and the like: never forwarded.
    Privileged(&'static str),
    /// Service users need the Administrator policy for API calls; some
    /// operations need it for anyone.
    AdministratorRequired(&'static str),
    /// An admin change would confer a permission the caller does not hold
    /// (on that meter, or anywhere for a global permission).
    ConfersUnheld {
        permission: Permission,
        meter: Option<Label>,
    },
    /// A peak demand reset inside the configured interval.
    PeakDemandLockout {
        next_allowed: i64,
    },
    /// The shared directory was last reached longer ago than
    /// `directory.max_stale`: people's new logins wait for it.
    DirectoryStale {
        last_contact: i64,
    },
    /// The Peak Demand Reset slot is shared by the gateways and the shared
    /// directory cannot be reached to reserve it.
    SharedSlotUnavailable,
    /// A plain Modbus client entry without `allow_writes`.
    ReadOnlyClient,
    /// The security log could not make the event durable (fail-closed).
    AuditUnavailable,
    /// A client certificate without the role extension authorizes as no
    /// role: every request is denied.
    NoCertificateRole,
    /// The certificate's role is not in the role table.
    UnknownCertificateRole {
        role: Label,
    },
    /// The owner's policies allow it, but the certificate's role does not
    /// include the permission (a certificate never grants more than either).
    OutsideCertificateRole {
        role: Label,
    },
    /// Allowed only to a session that proved a second factor: by the
    /// statement's `require_mfa` (policy, statement) or by `[mfa] required`.
    NeedsSecondFactor {
        statement: Option<(Label, usize)>,
    },
    /// Allowed only in a session that is being recorded: the statement's
    /// `require_recording` (policy, statement).
    NeedsRecording {
        policy: Label,
        statement: usize,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = |role: &Option<Label>| {
            role.as_ref()
                .map(|r| format!(" via role {r}"))
                .unwrap_or_default()
        };
        match self {
            Reason::Allowed {
                policy,
                statement,
                role,
            } => {
                write!(
                    f,
                    "allowed by policy `{policy}` statement {statement}{}",
                    via(role)
                )
            }
            Reason::Denied {
                policy,
                statement,
                role,
            } => {
                write!(
                    f,
                    "denied by policy `{policy}` statement {statement}{} (an explicit deny beats every allow)",
                    via(role)
                )
            }
            Reason::NoStatementAllows => f.write_str("no statement allows it"),
            Reason::PrincipalActive => f.write_str("principal is active"),
            Reason::UnknownPrincipal => f.write_str("unknown principal"),
            Reason::Inactive => f.write_str("principal is inactive"),
            Reason::AccessEnded(d) => write!(f, "access ended at {d} 00:00 UTC"),
            Reason::TemporaryPasswordExpired { at } => {
                write!(f, "temporary password expired at {}", rfc3339(*at))
            }
            Reason::SupportNotGranted => f.write_str("support access is not granted"),
            Reason::SupportEnded(d) => write!(f, "support access ended at {d} 00:00 UTC"),
            Reason::OutsideSupportBoundary => {
                f.write_str("meter is outside the config's support.meters boundary")
            }
            Reason::UnknownMeter => f.write_str("no such meter"),
            Reason::NotReadable {
                function,
                start,
                count,
            } => write!(
                f,
                "the meter's profile does not let Data View read registers {start}..{} with FC {function}",
                *start as u32 + *count as u32
            ),
            Reason::NotInAllowlist {
                function,
                address,
                value,
            } => match value {
                Some(v) => write!(
                    f,
                    "no allowlist entry of the meter's profile allows FC {function} writing {v} to register {address}"
                ),
                None => write!(
                    f,
                    "no allowlist entry of the meter's profile allows FC {function} writing any value to register {address}"
                ),
            },
            Reason::Privileged(what) => write!(f, "{what} is privileged and never forwarded"),
            Reason::AdministratorRequired(why) => write!(f, "{why} needs the Administrator policy"),
            Reason::ConfersUnheld {
                permission,
                meter: Some(m),
            } => write!(
                f,
                "the change would confer {permission} on {m}, which you do not hold there: no one grants what they do not hold"
            ),
            Reason::ConfersUnheld {
                permission,
                meter: None,
            } => write!(
                f,
                "the change would confer {permission}, which you do not hold: no one grants what they do not hold"
            ),
            Reason::PeakDemandLockout { next_allowed } => {
                write!(
                    f,
                    "peak demand was reset recently; the next reset is allowed at {}",
                    rfc3339(*next_allowed)
                )
            }
            Reason::DirectoryStale { last_contact } => write!(
                f,
                "the shared directory was last reached at {}, longer ago than directory.max_stale: people's new logins are refused until it is reached (a leaver removed elsewhere must not get in); open sessions, service users and the local console go on",
                rfc3339(*last_contact)
            ),
            Reason::SharedSlotUnavailable => f.write_str(
                "the peak demand interval is shared by the gateways and the directory cannot be reached to keep it: resets are refused until it can",
            ),
            Reason::ReadOnlyClient => {
                f.write_str("plain Modbus clients from this address are read-only (no allow_writes in the config)")
            }
            Reason::AuditUnavailable => {
                f.write_str("the security log cannot record it (audit.on_failure = fail-closed)")
            }
            Reason::NoCertificateRole => {
                f.write_str("the client certificate carries no role, so every request is denied")
            }
            Reason::UnknownCertificateRole { role } => {
                write!(f, "the client certificate's role `{role}` is not in the role table")
            }
            Reason::OutsideCertificateRole { role } => write!(
                f,
                "the client certificate's role `{role}` does not include this permission"
            ),
            Reason::NeedsSecondFactor {
                statement: Some((policy, n)),
            } => write!(
                f,
                "needs a second factor: policy `{policy}` statement {n} requires one (step up with `mfa`)"
            ),
            Reason::NeedsSecondFactor { statement: None } => f.write_str(
                "needs a second factor: the gateway's [mfa] setting requires one for this permission (step up with `mfa`)",
            ),
            Reason::NeedsRecording { policy, statement } => write!(
                f,
                "needs a recorded session: policy `{policy}` statement {statement} requires recording, and this session is not being recorded"
            ),
        }
    }
}

/// Allow or Deny, the permission it was about, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The permission the reason speaks of (the one used, or the one missing).
    pub permission: Option<Permission>,
    /// Every permission an allowed action used (an FC 16 may span entries).
    pub used: PermissionSet,
    pub reason: Reason,
    /// Seq of the event that recorded the decision, once logged.
    pub event: Option<u64>,
}

impl Decision {
    pub fn allow(permission: Option<Permission>, reason: Reason) -> Decision {
        let used = permission.into_iter().collect();
        Decision {
            allowed: true,
            permission,
            used,
            reason,
            event: None,
        }
    }

    pub fn deny(permission: Option<Permission>, reason: Reason) -> Decision {
        Decision {
            allowed: false,
            permission,
            used: PermissionSet::EMPTY,
            reason,
            event: None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.allowed { "ALLOW" } else { "DENY" })?;
        if let Some(p) = self.permission {
            write!(f, " {p}")?;
        }
        write!(f, ": {}", self.reason)
    }
}
