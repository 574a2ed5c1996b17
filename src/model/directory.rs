//! The identities and rules an administrator manages: users, service users,
//! groups, roles, custom policies and support access. Kept in the store; the
//! guard compiles them with the config's meters into what it decides on.

pub use imbl::OrdMap;

use serde::{Deserialize, Serialize};

use super::permission::{Permission, PermissionSet};
use super::policy::{PolicyDocument, Statement, is_managed};
use super::principal::{Day, PrincipalId};

/// How long a temporary password may be used for its first login.
pub const TEMPORARY_PASSWORD_DAYS: i64 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    #[default]
    Active,
    Inactive,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Active => "ACTIVE",
            Status::Inactive => "INACTIVE",
        })
    }
}

/// When and by whom something was created or last changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Stamp {
    /// Microseconds since the epoch, UTC.
    pub at: i64,
    pub by: String,
}

/// A password as the store keeps it: an argon2 PHC string, never the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordRecord {
    pub hash: String,
    /// A temporary password must be replaced at first login and expires
    /// [`TEMPORARY_PASSWORD_DAYS`] after `issued_at`.
    pub temporary: bool,
    pub issued_at: i64,
}

impl std::fmt::Debug for PasswordRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordRecord")
            .field("temporary", &self.temporary)
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

impl PasswordRecord {
    /// The instant (µs) a temporary password stops working.
    pub fn expires_at(&self) -> Option<i64> {
        self.temporary
            .then(|| self.issued_at + TEMPORARY_PASSWORD_DAYS * 86_400 * 1_000_000)
    }
}

/// A person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    /// Unique id that never changes, even if the name does.
    pub id: String,
    pub email: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    pub status: Status,
    pub end_date: Option<Day>,
    pub created: Stamp,
    pub modified: Stamp,
    pub last_login: Option<i64>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    pub password: Option<PasswordRecord>,
    /// Names of managed or custom policies attached to this user.
    #[serde(default)]
    pub policies: Vec<String>,
    /// The user's own inline policy (`user grant-role` adds to it).
    #[serde(default)]
    pub inline: Vec<Statement>,
    /// The second factor (TOTP), enrolled or active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<SecondFactor>,
    pub version: u64,
}

/// A person's TOTP factor (RFC 6238). The secret lives only in the store:
/// it is shown once at enrolment and never reaches events, errors or `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondFactor {
    /// The shared secret, base32 as authenticator apps take it.
    pub secret: String,
    /// Active once the person gave one right code for it.
    pub confirmed: bool,
    pub enrolled: Stamp,
    /// Single-use recovery codes, kept only as keyed hashes.
    #[serde(default)]
    pub recovery: Vec<String>,
}

impl std::fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecondFactor")
            .field("confirmed", &self.confirmed)
            .field("enrolled", &self.enrolled)
            .field("recovery_left", &self.recovery.len())
            .finish_non_exhaustive()
    }
}

impl User {
    /// The factor the person must give at login, once confirmed.
    pub fn active_factor(&self) -> Option<&SecondFactor> {
        self.mfa.as_ref().filter(|f| f.confirmed)
    }
}

/// An access key of a service user: the secret is kept only as a hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub id: String,
    pub secret_hash: String,
    pub status: Status,
    pub created: i64,
    pub last_used: Option<i64>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// An automated process (SCADA poller, integration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUser {
    pub name: String,
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub status: Status,
    pub end_date: Option<Day>,
    pub created: Stamp,
    pub modified: Stamp,
    pub last_login: Option<i64>,
    #[serde(default)]
    pub keys: Vec<AccessKey>,
    #[serde(default)]
    pub policies: Vec<String>,
    #[serde(default)]
    pub inline: Vec<Statement>,
    pub version: u64,
}

/// A named set of users; its policies apply to every member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub policies: Vec<String>,
    pub created: Stamp,
    pub modified: Stamp,
    pub version: u64,
}

/// A named, reusable set of permissions (a new role has none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: PermissionSet,
    pub created: Stamp,
    pub modified: Stamp,
    pub version: u64,
}

/// A custom permission policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub statements: Vec<Statement>,
    pub created: Stamp,
    pub modified: Stamp,
    pub version: u64,
}

impl Policy {
    pub fn from_document(doc: PolicyDocument, stamp: Stamp) -> Policy {
        Policy {
            name: doc.name,
            description: doc.description,
            statements: doc.statements,
            created: stamp.clone(),
            modified: stamp,
            version: 0,
        }
    }
}

/// The time-bound grant to the vendor's `support` principal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportAccess {
    /// Access ends at 00:00 UTC at the start of this day.
    pub end_date: Day,
    pub policies: Vec<String>,
    pub created: Stamp,
    pub modified: Stamp,
    pub version: u64,
}

/// Everything the store keeps about identities and rules, in memory.
/// Persistent maps: a clone shares everything, and a change to it copies
/// only the path to what it touches, so a change to one user in 100k costs
/// microseconds to make (and the directory before it stays readable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    pub users: OrdMap<String, User>,
    pub service_users: OrdMap<String, ServiceUser>,
    pub groups: OrdMap<String, Group>,
    pub roles: OrdMap<String, Role>,
    pub policies: OrdMap<String, Policy>,
    pub support: Option<SupportAccess>,
}

/// A reference in the directory that points at nothing, or a broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("{owner} refers to policy `{policy}`, which does not exist")]
    UnknownPolicy { owner: String, policy: String },
    #[error("{owner} refers to role `{role}`, which does not exist")]
    UnknownRole { owner: String, role: String },
    #[error("group `{group}` lists user `{user}`, who does not exist")]
    UnknownMember { group: String, user: String },
    #[error("`{0}` is a managed policy: it cannot be created, changed or deleted")]
    ManagedPolicy(String),
    #[error("access key id `{0}` is used twice")]
    DuplicateKeyId(String),
}

impl Directory {
    /// Every reference resolves and managed policies are left alone.
    pub fn validate(&self) -> Result<(), DirectoryError> {
        self.check(None)
    }

    /// As [`Directory::validate`], after a change to `changed` only: each
    /// entity changed is checked, and the whole directory when something
    /// others may name (a user, policy or role) is gone.
    pub fn validate_changed(&self, changed: &[super::Entry]) -> Result<(), DirectoryError> {
        use super::Entry;
        let removed = changed.iter().any(|e| match e {
            Entry::User(n) => !self.users.contains_key(n),
            Entry::Policy(n) => !self.policies.contains_key(n),
            Entry::Role(n) => !self.roles.contains_key(n),
            Entry::Service(_) | Entry::Group(_) | Entry::Support => false,
        });
        if removed {
            return self.check(None);
        }
        self.check(Some(changed))
    }

    fn check(&self, only: Option<&[super::Entry]>) -> Result<(), DirectoryError> {
        use super::Entry;
        // Owners are named only on the error path: a valid directory of
        // 100k users is checked without formatting 100k names.
        let policy_exists = |p: &str| is_managed(p) || self.policies.contains_key(p);
        let check_policies = |owner: &dyn Fn() -> String, list: &[String]| match list
            .iter()
            .find(|p| !policy_exists(p))
        {
            Some(p) => Err(DirectoryError::UnknownPolicy {
                owner: owner(),
                policy: p.clone(),
            }),
            None => Ok(()),
        };
        let check_roles = |owner: &dyn Fn() -> String, sts: &[Statement]| match sts
            .iter()
            .flat_map(|s| s.roles.iter())
            .find(|r| !self.roles.contains_key(*r))
        {
            Some(r) => Err(DirectoryError::UnknownRole {
                owner: owner(),
                role: r.clone(),
            }),
            None => Ok(()),
        };
        let user = |u: &User| {
            check_policies(&|| format!("user `{}`", u.name), &u.policies)?;
            check_roles(&|| format!("user `{}`'s inline policy", u.name), &u.inline)
        };
        let service = |s: &ServiceUser| {
            check_policies(&|| format!("service user `{}`", s.name), &s.policies)?;
            check_roles(
                &|| format!("service user `{}`'s inline policy", s.name),
                &s.inline,
            )
        };
        let group = |g: &Group| {
            check_policies(&|| format!("group `{}`", g.name), &g.policies)?;
            match g.members.iter().find(|m| !self.users.contains_key(*m)) {
                Some(m) => Err(DirectoryError::UnknownMember {
                    group: g.name.clone(),
                    user: m.clone(),
                }),
                None => Ok(()),
            }
        };
        let policy = |p: &Policy| {
            if is_managed(&p.name) {
                return Err(DirectoryError::ManagedPolicy(p.name.clone()));
            }
            check_roles(&|| format!("policy `{}`", p.name), &p.statements)
        };
        let support = |s: &SupportAccess| check_policies(&|| "support access".into(), &s.policies);
        let key_ids = || {
            let mut seen = std::collections::BTreeSet::new();
            for k in self.service_users.values().flat_map(|s| s.keys.iter()) {
                if !seen.insert(k.id.as_str()) {
                    return Err(DirectoryError::DuplicateKeyId(k.id.clone()));
                }
            }
            Ok(())
        };
        let Some(changed) = only else {
            self.users.values().try_for_each(user)?;
            self.service_users.values().try_for_each(service)?;
            key_ids()?;
            self.groups.values().try_for_each(group)?;
            self.policies.values().try_for_each(policy)?;
            return self.support.as_ref().map_or(Ok(()), support);
        };
        for e in changed {
            match e {
                Entry::User(n) => self.users.get(n).map_or(Ok(()), user)?,
                Entry::Service(n) => {
                    self.service_users.get(n).map_or(Ok(()), service)?;
                    key_ids()?;
                }
                Entry::Group(n) => self.groups.get(n).map_or(Ok(()), group)?,
                Entry::Policy(n) => self.policies.get(n).map_or(Ok(()), policy)?,
                Entry::Role(_) => {}
                Entry::Support => self.support.as_ref().map_or(Ok(()), support)?,
            }
        }
        Ok(())
    }

    /// Groups a user belongs to.
    pub fn groups_of<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a Group> + 'a {
        self.groups
            .values()
            .filter(move |g| g.members.iter().any(|m| m == user))
    }

    /// Each user's groups, for a pass over every user: `groups_of` reads
    /// every group's members, which over 100k users is quadratic.
    pub fn memberships(&self) -> Memberships<'_> {
        let mut of: std::collections::HashMap<&str, Vec<&Group>> = std::collections::HashMap::new();
        for g in self.groups.values() {
            for m in &g.members {
                of.entry(m.as_str()).or_default().push(g);
            }
        }
        Memberships(of)
    }

    /// Policy names and inline statements that apply to a principal, with a
    /// label saying where each came from (for reasons and reviews).
    pub fn policy_sources(&self, who: &PrincipalId) -> (Vec<String>, Vec<Statement>) {
        self.policy_sources_in(who, None)
    }

    /// As [`Directory::policy_sources`], with the groups read from
    /// `memberships` when given (passes over every principal).
    pub fn policy_sources_in(
        &self,
        who: &PrincipalId,
        memberships: Option<&Memberships<'_>>,
    ) -> (Vec<String>, Vec<Statement>) {
        match who {
            PrincipalId::User(n) => match self.users.get(n) {
                Some(u) => {
                    let mut names = u.policies.clone();
                    let groups: Vec<&Group> = match memberships {
                        Some(m) => m.of(n).to_vec(),
                        None => self.groups_of(n).collect(),
                    };
                    for g in groups {
                        names.extend(g.policies.iter().cloned());
                    }
                    names.sort();
                    names.dedup();
                    (names, u.inline.clone())
                }
                None => (vec![], vec![]),
            },
            PrincipalId::Service(n) => match self.service_users.get(n) {
                Some(s) => (s.policies.clone(), s.inline.clone()),
                None => (vec![], vec![]),
            },
            PrincipalId::Support => match &self.support {
                Some(s) => (s.policies.clone(), vec![]),
                None => (vec![], vec![]),
            },
            PrincipalId::Local(_) => (vec![super::policy::ADMINISTRATOR.to_string()], vec![]),
        }
    }

    /// Every principal the directory knows (users, service users, support).
    pub fn principals(&self) -> Vec<PrincipalId> {
        let mut all: Vec<PrincipalId> = self
            .users
            .keys()
            .map(|n| PrincipalId::User(n.clone()))
            .collect();
        all.extend(
            self.service_users
                .keys()
                .map(|n| PrincipalId::Service(n.clone())),
        );
        if self.support.is_some() {
            all.push(PrincipalId::Support);
        }
        all
    }
}

/// Which groups each user is in, built once (see [`Directory::memberships`]).
pub struct Memberships<'a>(std::collections::HashMap<&'a str, Vec<&'a Group>>);

impl<'a> Memberships<'a> {
    /// The groups `user` is a member of (none for an unknown name).
    pub fn of(&self, user: &str) -> &[&'a Group] {
        self.0.get(user).map(Vec::as_slice).unwrap_or_default()
    }
}

/// The example roles after IEC 62351-8, seeded into a new store (editable).
pub fn example_roles() -> Vec<(&'static str, &'static str, PermissionSet)> {
    use Permission::*;
    let viewer: PermissionSet = [DataView].into_iter().collect();
    let operator = viewer.union(
        [
            PeakDemandReset,
            TimeSynchronization,
            TerminalAccess,
            FileSystemReadOnlyAccess,
        ]
        .into_iter()
        .collect(),
    );
    let engineer = operator.union(
        [
            CommConfig,
            DssConfig,
            IonModuleConfig,
            TestModeToggle,
            FileSystemReadAndWriteAccess,
            FirmwareManagement,
        ]
        .into_iter()
        .collect(),
    );
    let installer = engineer.union([CertificateManagement, MasterReset].into_iter().collect());
    vec![
        ("Viewer", "Reads measurements", viewer),
        ("Operator", "Runs the meter day to day", operator),
        (
            "Engineer",
            "Configures meters and manages firmware",
            engineer,
        ),
        (
            "Installer",
            "Commissions meters, certificates and master reset",
            installer,
        ),
        (
            "SecAdmin",
            "Manages users and certificates",
            [UserManagement, CertificateManagement]
                .into_iter()
                .collect(),
        ),
        (
            "SecAuditor",
            "Reviews the security log",
            [SecurityLogsAccess].into_iter().collect(),
        ),
    ]
}

/// Constructors with sane defaults; the store fills versions and stamps.
impl User {
    pub fn new(name: &str, email: &str) -> User {
        User {
            name: name.into(),
            id: String::new(),
            email: email.into(),
            first_name: String::new(),
            last_name: String::new(),
            status: Status::Active,
            end_date: None,
            created: Stamp::default(),
            modified: Stamp::default(),
            last_login: None,
            ssh_keys: vec![],
            password: None,
            policies: vec![],
            inline: vec![],
            mfa: None,
            version: 0,
        }
    }
}

impl ServiceUser {
    pub fn new(name: &str) -> ServiceUser {
        ServiceUser {
            name: name.into(),
            id: String::new(),
            description: String::new(),
            status: Status::Active,
            end_date: None,
            created: Stamp::default(),
            modified: Stamp::default(),
            last_login: None,
            keys: vec![],
            policies: vec![],
            inline: vec![],
            version: 0,
        }
    }
}

impl Group {
    pub fn new(name: &str, members: &[&str], policies: &[&str]) -> Group {
        Group {
            name: name.into(),
            members: members.iter().map(|s| s.to_string()).collect(),
            policies: policies.iter().map(|s| s.to_string()).collect(),
            created: Stamp::default(),
            modified: Stamp::default(),
            version: 0,
        }
    }
}

impl Role {
    pub fn new(name: &str, permissions: PermissionSet) -> Role {
        Role {
            name: name.into(),
            description: String::new(),
            permissions,
            created: Stamp::default(),
            modified: Stamp::default(),
            version: 0,
        }
    }
}

impl Policy {
    pub fn new(name: &str, statements: Vec<Statement>) -> Policy {
        Policy {
            name: name.into(),
            description: String::new(),
            statements,
            created: Stamp::default(),
            modified: Stamp::default(),
            version: 0,
        }
    }
}

impl SupportAccess {
    pub fn new(end_date: Day, policies: &[&str]) -> SupportAccess {
        SupportAccess {
            end_date,
            policies: policies.iter().map(|s| s.to_string()).collect(),
            created: Stamp::default(),
            modified: Stamp::default(),
            version: 0,
        }
    }
}
