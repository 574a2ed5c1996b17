//! The guard's compiled view of the directory and the fleet. Each principal
//! carries its own contiguous list of the statements that apply to it
//! (direct, inline and through groups), each with its permissions as a
//! bitset and its meter selectors interned, so a decision reads a few cache
//! lines whatever the size of the fleet or the number of policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use time::OffsetDateTime;

use crate::config::MeterConfig;
use crate::model::{
    ADMINISTRATOR, Day, Directory, Effect, Memberships, MeterSelector, Permission, PermissionSet,
    PrincipalId, Profile, Reach, Statement, Status, glob_match, managed_statements, micros,
};

use super::decision::{Label, Reason};

/// A meter selector with names turned into numbers.
pub(crate) enum Sel {
    All,
    Meter(u32),
    Glob(Box<str>),
    Tag(u32, u32),
    /// Names a meter or tag no configured meter has.
    Never,
}

/// One statement as it applies to one principal: only what the scan reads.
pub(crate) struct PStatement {
    pub covers: PermissionSet,
    pub effect: Effect,
    /// Usable only by a session that proved a second factor.
    pub require_mfa: bool,
    /// Usable only in a session that is being recorded.
    pub require_recording: bool,
    sel_start: u32,
    sel_len: u32,
}

/// Where a statement came from, read only for the one that decides.
pub(crate) struct Origin {
    pub policy: Label,
    /// 1-based statement number within its policy.
    pub number: u32,
    /// For each permission, the index (in the principal's `roles`) of the
    /// role that brought it, or NO_ROLE when named directly or not covered.
    role_for: [u8; 18],
    /// The roles the statement grants, by name (meter-side accounts).
    pub roles: Box<[Arc<str>]>,
}

const NO_ROLE: u8 = u8::MAX;

/// Cold data for reasons: names and which role brought which permission.
pub(crate) struct PolicyInfo {
    pub name: Arc<str>,
    pub statements: Vec<StatementInfo>,
}

pub(crate) struct StatementInfo {
    pub direct: PermissionSet,
    pub roles: Vec<(Arc<str>, PermissionSet)>,
}

/// What must hold before any policy is read.
#[derive(Clone, Debug)]
pub(crate) enum Gate {
    Person {
        status: Status,
        end_date: Option<Day>,
        temporary_expires: Option<i64>,
    },
    Service {
        status: Status,
        end_date: Option<Day>,
    },
    Support {
        end_date: Day,
    },
    Local,
}

pub(crate) struct CompiledPrincipal {
    pub gate: Gate,
    pub administrator: bool,
    pub statements: Vec<PStatement>,
    origins: Vec<Origin>,
    roles: Vec<Label>,
    sels: Vec<Sel>,
}

impl CompiledPrincipal {
    fn empty() -> CompiledPrincipal {
        CompiledPrincipal {
            gate: Gate::Local,
            administrator: false,
            statements: Vec::new(),
            origins: Vec::new(),
            roles: Vec::new(),
            sels: Vec::new(),
        }
    }

    /// The roles that allow statements grant on meter `m` (explicit denies
    /// of permissions do not take a role away; the guard decides those).
    pub fn roles_on(&self, m: MeterRef<'_>) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        for (i, st) in self.statements.iter().enumerate() {
            if st.effect == Effect::Allow && self.selectors(st).iter().any(|s| s.matches(m)) {
                for r in self.origins[i].roles.iter() {
                    if !out.contains(r) {
                        out.push(r.clone());
                    }
                }
            }
        }
        out
    }

    pub fn selectors(&self, st: &PStatement) -> &[Sel] {
        &self.sels[st.sel_start as usize..(st.sel_start + st.sel_len) as usize]
    }

    /// The policy, statement number and role behind statement `i` for
    /// `permission`.
    pub fn origin(&self, i: usize, permission: Permission) -> (Label, usize, Option<Label>) {
        let o = &self.origins[i];
        let role = match o.role_for[permission as usize] {
            NO_ROLE => None,
            r => self.roles.get(r as usize).copied(),
        };
        (o.policy, o.number as usize, role)
    }
}

pub(crate) struct CompiledMeter {
    pub tags: Vec<(u32, u32)>,
    pub profile: u32,
}

/// A meter as a decision sees it.
#[derive(Clone, Copy)]
pub(crate) struct MeterRef<'a> {
    pub id: &'a str,
    pub index: u32,
    pub meter: &'a CompiledMeter,
}

impl Sel {
    pub fn matches(&self, m: MeterRef<'_>) -> bool {
        match self {
            Sel::All => true,
            Sel::Meter(i) => *i == m.index,
            Sel::Glob(g) => glob_match(g.as_bytes(), m.id.as_bytes()),
            Sel::Tag(k, v) => m.meter.tags.iter().any(|(mk, mv)| mk == k && mv == v),
            Sel::Never => false,
        }
    }
}

/// An immutable, shareable compilation. A change to the directory makes a
/// new one that shares every principal the change does not reach
/// ([`Snapshot::update`]); a change to the fleet compiles it whole.
pub(crate) struct Snapshot {
    // FxHash: keys are names set by administrators and the config, so the
    // maps cannot be flooded with chosen collisions from the network.
    pub principals: FxHashMap<PrincipalId, Arc<CompiledPrincipal>>,
    pub meter_index: Arc<FxHashMap<String, u32>>,
    pub meters: Arc<Vec<CompiledMeter>>,
    pub profiles: Arc<Vec<Profile>>,
    /// Meter tag keys and values, numbered.
    symbols: Arc<FxHashMap<String, u32>>,
    /// What a `local:` caller holds: the Administrator policy.
    pub local: CompiledPrincipal,
    /// The role table (a client certificate names one of these).
    pub roles: FxHashMap<String, PermissionSet>,
    /// What each user group's policies give its members (effective access
    /// of a group; decisions read the members' own lists).
    pub groups: FxHashMap<String, Arc<CompiledPrincipal>>,
}

impl Snapshot {
    pub fn meter<'a>(&'a self, id: &'a str) -> Option<MeterRef<'a>> {
        let index = *self.meter_index.get(id)?;
        Some(MeterRef {
            id,
            index,
            meter: &self.meters[index as usize],
        })
    }

    /// Compiles the directory and the fleet whole (a start, a reload).
    pub fn compile(
        dir: &Directory,
        meters: &[MeterConfig],
        profiles: &BTreeMap<String, Profile>,
    ) -> Snapshot {
        let mut symbols: FxHashMap<String, u32> = FxHashMap::default();
        let mut intern = |s: &str| -> u32 {
            let next = symbols.len() as u32;
            *symbols.entry(s.to_string()).or_insert(next)
        };
        let profile_names: Vec<&String> = profiles.keys().collect();
        let mut meter_index = FxHashMap::default();
        let mut compiled_meters = Vec::with_capacity(meters.len());
        for (i, m) in meters.iter().enumerate() {
            meter_index.insert(m.id.clone(), i as u32);
            let tags = m.tags.iter().map(|(k, v)| (intern(k), intern(v))).collect();
            let profile = profile_names
                .iter()
                .position(|n| **n == m.profile)
                .unwrap_or(0) as u32;
            compiled_meters.push(CompiledMeter { tags, profile });
        }
        let mut snapshot = Snapshot {
            principals: FxHashMap::default(),
            meter_index: Arc::new(meter_index),
            meters: Arc::new(compiled_meters),
            profiles: Arc::new(profiles.values().cloned().collect()),
            symbols: Arc::new(symbols),
            local: CompiledPrincipal::empty(),
            roles: FxHashMap::default(),
            groups: FxHashMap::default(),
        };
        let everyone = Reach {
            principals: dir.principals().into_iter().collect(),
            groups: dir.groups.keys().cloned().collect(),
        };
        let memberships = dir.memberships();
        snapshot.recompile(dir, &everyone, Some(&memberships));
        snapshot
    }

    /// The snapshot after a change to the directory: the principals and
    /// groups `reach` names are compiled again from `dir`, the others
    /// shared with this one.
    pub fn update(&self, dir: &Directory, reach: &Reach) -> Snapshot {
        let mut next = Snapshot {
            principals: self.principals.clone(),
            meter_index: self.meter_index.clone(),
            meters: self.meters.clone(),
            profiles: self.profiles.clone(),
            symbols: self.symbols.clone(),
            local: CompiledPrincipal::empty(),
            roles: FxHashMap::default(),
            groups: self.groups.clone(),
        };
        // Many principals (a policy on a big group): their groups from
        // one index, built once.
        let memberships = (reach.principals.len() > 8).then(|| dir.memberships());
        next.recompile(dir, reach, memberships.as_ref());
        next
    }

    /// Compiles the principals and groups `reach` names (removing those
    /// the directory no longer has), the local caller and the role table.
    fn recompile(&mut self, dir: &Directory, reach: &Reach, memberships: Option<&Memberships<'_>>) {
        let mut c = Compiler {
            dir,
            meter_index: &self.meter_index,
            symbols: &self.symbols,
            policies: FxHashMap::default(),
        };
        for id in &reach.principals {
            match c.principal(id, memberships) {
                Some(p) => {
                    self.principals.insert(id.clone(), Arc::new(p));
                }
                None => {
                    self.principals.remove(id);
                }
            }
        }
        for name in &reach.groups {
            match dir.groups.get(name) {
                Some(g) => {
                    let idx = c.attached(&g.policies);
                    let admin = g.policies.iter().any(|n| n == ADMINISTRATOR);
                    let p = c.compile(Gate::Local, admin, &idx);
                    self.groups.insert(name.clone(), Arc::new(p));
                }
                None => {
                    self.groups.remove(name);
                }
            }
        }
        let administrator = c.policy(ADMINISTRATOR);
        self.local = c.compile(
            Gate::Local,
            true,
            &administrator.into_iter().collect::<Vec<_>>(),
        );
        self.roles = dir
            .roles
            .iter()
            .map(|(name, r)| (name.clone(), r.permissions))
            .collect();
    }
}

/// A policy as principals read it: its statements with what each covers
/// (roles resolved), compiled once per update for all who hold it.
struct CompiledPolicy {
    info: PolicyInfo,
    statements: Vec<Statement>,
}

/// Compiles principals from the directory; each policy once.
struct Compiler<'a> {
    dir: &'a Directory,
    meter_index: &'a FxHashMap<String, u32>,
    symbols: &'a FxHashMap<String, u32>,
    policies: FxHashMap<String, Arc<CompiledPolicy>>,
}

impl Compiler<'_> {
    fn sel(&self, s: &MeterSelector) -> Sel {
        match s {
            MeterSelector::All => Sel::All,
            MeterSelector::Id(id) => self
                .meter_index
                .get(id)
                .map(|i| Sel::Meter(*i))
                .unwrap_or(Sel::Never),
            MeterSelector::Glob(g) => Sel::Glob(g.as_str().into()),
            MeterSelector::Tag(k, v) => match (self.symbols.get(k), self.symbols.get(v)) {
                (Some(k), Some(v)) => Sel::Tag(*k, *v),
                _ => Sel::Never,
            },
        }
    }

    fn build(&self, name: &str, statements: Vec<Statement>) -> CompiledPolicy {
        let info = statements
            .iter()
            .map(|st| StatementInfo {
                direct: st.permission_set(),
                roles: st
                    .roles
                    .iter()
                    .map(|r| {
                        (
                            Arc::from(r.as_str()),
                            self.dir
                                .roles
                                .get(r)
                                .map(|x| x.permissions)
                                .unwrap_or_default(),
                        )
                    })
                    .collect(),
            })
            .collect();
        CompiledPolicy {
            info: PolicyInfo {
                name: Arc::from(name),
                statements: info,
            },
            statements,
        }
    }

    /// A managed or custom policy by name, compiled on first use.
    fn policy(&mut self, name: &str) -> Option<Arc<CompiledPolicy>> {
        if let Some(p) = self.policies.get(name) {
            return Some(p.clone());
        }
        let statements = match managed_statements(name) {
            Some(m) => m,
            None => self.dir.policies.get(name)?.statements.clone(),
        };
        let p = Arc::new(self.build(name, statements));
        self.policies.insert(name.to_string(), p.clone());
        Some(p)
    }

    fn attached(&mut self, names: &[String]) -> Vec<Arc<CompiledPolicy>> {
        names.iter().filter_map(|n| self.policy(n)).collect()
    }

    /// One principal of the directory, or None when it has none such.
    fn principal(
        &mut self,
        id: &PrincipalId,
        memberships: Option<&Memberships<'_>>,
    ) -> Option<CompiledPrincipal> {
        use std::borrow::Cow;
        let dir = self.dir;
        let (gate, names, inline): (Gate, Cow<'_, [String]>, &[Statement]) = match id {
            PrincipalId::User(n) => {
                let u = dir.users.get(n)?;
                let gate = Gate::Person {
                    status: u.status,
                    end_date: u.end_date,
                    temporary_expires: u.password.as_ref().and_then(|p| p.expires_at()),
                };
                let (names, _) = dir.policy_sources_in(id, memberships);
                (gate, Cow::Owned(names), &u.inline)
            }
            PrincipalId::Service(n) => {
                let s = dir.service_users.get(n)?;
                let gate = Gate::Service {
                    status: s.status,
                    end_date: s.end_date,
                };
                (gate, Cow::Borrowed(&s.policies[..]), &s.inline)
            }
            PrincipalId::Support => {
                let s = dir.support.as_ref()?;
                let gate = Gate::Support {
                    end_date: s.end_date,
                };
                (gate, Cow::Borrowed(&s.policies[..]), &[])
            }
            PrincipalId::Local(_) => return None,
        };
        let mut idx = self.attached(&names);
        if !inline.is_empty() {
            let label = format!("inline policy of {id}");
            idx.push(Arc::new(self.build(&label, inline.to_vec())));
        }
        let admin = names.iter().any(|n| n == ADMINISTRATOR);
        Some(self.compile(gate, admin, &idx))
    }

    /// The contiguous statement list of one principal.
    fn compile(
        &self,
        gate: Gate,
        administrator: bool,
        idx: &[Arc<CompiledPolicy>],
    ) -> CompiledPrincipal {
        let mut statements = Vec::new();
        let mut origins = Vec::new();
        let mut roles: Vec<Label> = Vec::new();
        let mut sels = Vec::new();
        for policy in idx {
            for (si, st) in policy.statements.iter().enumerate() {
                let info = &policy.info.statements[si];
                let covers = info
                    .roles
                    .iter()
                    .fold(info.direct, |acc, (_, p)| acc.union(*p));
                let sel_start = sels.len() as u32;
                sels.extend(st.meters.iter().map(|s| self.sel(s)));
                statements.push(PStatement {
                    covers,
                    effect: st.effect,
                    require_mfa: st.require_mfa,
                    require_recording: st.require_recording,
                    sel_start,
                    sel_len: st.meters.len() as u32,
                });
                let mut role_for = [NO_ROLE; 18];
                for p in covers.iter().filter(|p| !info.direct.contains(*p)) {
                    if let Some((name, _)) = info.roles.iter().find(|(_, ps)| ps.contains(p)) {
                        let label = Label::new(name);
                        let at = roles.iter().position(|r| *r == label).unwrap_or_else(|| {
                            roles.push(label);
                            roles.len() - 1
                        });
                        role_for[p as usize] = u8::try_from(at).unwrap_or(NO_ROLE);
                    }
                }
                origins.push(Origin {
                    policy: Label::new(&policy.info.name),
                    number: si as u32 + 1,
                    role_for,
                    roles: info.roles.iter().map(|(n, _)| n.clone()).collect(),
                });
            }
        }
        CompiledPrincipal {
            gate,
            administrator,
            statements,
            origins,
            roles,
            sels,
        }
    }
}

impl Gate {
    /// Denies inactive principals, passed end dates, expired temporary
    /// passwords and expired support access, before any policy is read.
    // The Reason is built only on the deny path; boxing it would allocate there.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, now: OffsetDateTime) -> Result<(), Reason> {
        match self {
            Gate::Person {
                status,
                end_date,
                temporary_expires,
            } => {
                if *status == Status::Inactive {
                    return Err(Reason::Inactive);
                }
                if let Some(d) = end_date.filter(|d| d.has_passed(now)) {
                    return Err(Reason::AccessEnded(d));
                }
                if let Some(at) = temporary_expires.filter(|at| micros(now) >= *at) {
                    return Err(Reason::TemporaryPasswordExpired { at });
                }
                Ok(())
            }
            Gate::Service { status, end_date } => {
                if *status == Status::Inactive {
                    return Err(Reason::Inactive);
                }
                if let Some(d) = end_date.filter(|d| d.has_passed(now)) {
                    return Err(Reason::AccessEnded(d));
                }
                Ok(())
            }
            Gate::Support { end_date } if end_date.has_passed(now) => {
                Err(Reason::SupportEnded(*end_date))
            }
            Gate::Support { .. } | Gate::Local => Ok(()),
        }
    }
}
