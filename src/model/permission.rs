//! The meter permissions of the product documents plus Data View, and a small
//! bitset of them so the guard can evaluate statements without allocating.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One permission, written as in the product documents ("Peak Demand Reset").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Permission {
    DataView = 0,
    PeakDemandReset,
    MasterReset,
    TimeSynchronization,
    TestModeToggle,
    CommConfig,
    DssConfig,
    IonModuleConfig,
    TerminalAccess,
    FileSystemReadOnlyAccess,
    FileSystemReadAndWriteAccess,
    FirmwareManagement,
    CertificateManagement,
    SecurityLogsAccess,
    UserManagement,
    PasswordSelfManagement,
    FrontPanelConfig,
    FrontPanelRestart,
}

impl Permission {
    pub const ALL: [Permission; 18] = [
        Permission::DataView,
        Permission::PeakDemandReset,
        Permission::MasterReset,
        Permission::TimeSynchronization,
        Permission::TestModeToggle,
        Permission::CommConfig,
        Permission::DssConfig,
        Permission::IonModuleConfig,
        Permission::TerminalAccess,
        Permission::FileSystemReadOnlyAccess,
        Permission::FileSystemReadAndWriteAccess,
        Permission::FirmwareManagement,
        Permission::CertificateManagement,
        Permission::SecurityLogsAccess,
        Permission::UserManagement,
        Permission::PasswordSelfManagement,
        Permission::FrontPanelConfig,
        Permission::FrontPanelRestart,
    ];

    /// The name as the product documents write it.
    pub fn name(self) -> &'static str {
        match self {
            Permission::DataView => "Data View",
            Permission::PeakDemandReset => "Peak Demand Reset",
            Permission::MasterReset => "Master Reset",
            Permission::TimeSynchronization => "Time Synchronization",
            Permission::TestModeToggle => "Test Mode Toggle",
            Permission::CommConfig => "Comm Config",
            Permission::DssConfig => "DSS Config",
            Permission::IonModuleConfig => "ION Module Config",
            Permission::TerminalAccess => "Terminal Access",
            Permission::FileSystemReadOnlyAccess => "File System Read-Only Access",
            Permission::FileSystemReadAndWriteAccess => "File System Read and Write Access",
            Permission::FirmwareManagement => "Firmware Management",
            Permission::CertificateManagement => "Certificate Management",
            Permission::SecurityLogsAccess => "Security Logs Access",
            Permission::UserManagement => "User Management",
            Permission::PasswordSelfManagement => "Password Self-Management",
            Permission::FrontPanelConfig => "Front Panel Config",
            Permission::FrontPanelRestart => "Front Panel Restart",
        }
    }

    /// The kebab form (`peak-demand-reset`), also accepted on input.
    pub fn kebab(self) -> String {
        self.name().to_ascii_lowercase().replace(' ', "-")
    }

    /// Parses the documented name or its kebab form, case-insensitively.
    pub fn parse(text: &str) -> Result<Permission, UnknownPermission> {
        let wanted = text.trim().to_ascii_lowercase().replace(' ', "-");
        Permission::ALL
            .into_iter()
            .find(|p| p.kebab() == wanted)
            .ok_or_else(|| UnknownPermission(text.to_string()))
    }

    /// Front-panel permissions are carried in roles for completeness; the
    /// gateway cannot enforce what is done with a finger on the meter.
    pub fn enforceable_at_gateway(self) -> bool {
        !matches!(
            self,
            Permission::FrontPanelConfig | Permission::FrontPanelRestart
        )
    }

    /// What `[mfa] required = "for-privileged"` guards with a second factor:
    /// what resets or reprograms a meter, opens its console or its
    /// certificates, or decides who may do any of it.
    pub fn is_privileged(self) -> bool {
        matches!(
            self,
            Permission::MasterReset
                | Permission::CommConfig
                | Permission::TerminalAccess
                | Permission::FileSystemReadAndWriteAccess
                | Permission::FirmwareManagement
                | Permission::CertificateManagement
                | Permission::UserManagement
        )
    }

    /// Permissions that are not about any one meter: statements grant or deny
    /// them whatever their meter selectors say.
    pub fn is_global(self) -> bool {
        matches!(
            self,
            Permission::SecurityLogsAccess
                | Permission::UserManagement
                | Permission::PasswordSelfManagement
        )
    }

    fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the permissions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission `{0}` (expected one of: {list})", list = Permission::ALL.map(|p| p.name()).join(", "))]
pub struct UnknownPermission(pub String);

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Permission::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A set of permissions as a bitset: cheap to copy, union and test.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PermissionSet(u32);

impl PermissionSet {
    pub const EMPTY: PermissionSet = PermissionSet(0);

    pub fn all() -> PermissionSet {
        Permission::ALL.into_iter().collect()
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
    }

    pub fn remove(&mut self, p: Permission) {
        self.0 &= !p.bit();
    }

    pub fn union(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = PermissionSet::EMPTY;
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|p| p.name()))
            .finish()
    }
}

impl Serialize for PermissionSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PermissionSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Permission>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kebab_forms_parse_case_insensitively() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.name()), Ok(p));
            assert_eq!(Permission::parse(&p.kebab()), Ok(p));
            assert_eq!(Permission::parse(&p.name().to_uppercase()), Ok(p));
        }
        assert_eq!(
            Permission::parse("peak-demand-reset"),
            Ok(Permission::PeakDemandReset)
        );
        assert!(Permission::parse("Reset Everything").is_err());
    }

    #[test]
    fn set_operations() {
        let mut s = PermissionSet::EMPTY;
        s.insert(Permission::MasterReset);
        assert!(s.contains(Permission::MasterReset));
        assert!(!s.contains(Permission::DataView));
        s.remove(Permission::MasterReset);
        assert!(s.is_empty());
        assert_eq!(PermissionSet::all().iter().count(), 18);
    }
}
