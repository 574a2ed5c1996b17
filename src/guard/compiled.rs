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
    ADMINISTRATOR, Day, Directory, Effect, MeterSelector, Permission, PermissionSet, PrincipalId,
    Profile, Statement, Status, glob_match, managed_statements, micros,
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

/// An immutable, shareable compilation; replaced whole on every change.
pub(crate) struct Snapshot {
    // FxHash: keys are names set by administrators and the config, so the
    // maps cannot be flooded with chosen collisions from the network.
    pub principals: FxHashMap<PrincipalId, CompiledPrincipal>,
    pub meter_index: FxHashMap<String, u32>,
    pub meters: Vec<CompiledMeter>,
    pub profiles: Vec<Profile>,
    /// What a `local:` caller holds: the Administrator policy.
    pub local: CompiledPrincipal,
    /// The role table (a client certificate names one of these).
    pub roles: FxHashMap<String, PermissionSet>,
    /// What each user group's policies give its members (effective access
    /// of a group; decisions read the members' own lists).
    pub groups: FxHashMap<String, CompiledPrincipal>,
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

    pub fn compile(
        dir: &Directory,
        meters: &[MeterConfig],
        profiles: &BTreeMap<String, Profile>,
    ) -> Snapshot {
        let mut symbols: FxHashMap<String, u32> = FxHashMap::default();
        let intern = |s: &str, symbols: &mut FxHashMap<String, u32>| -> u32 {
            let next = symbols.len() as u32;
            *symbols.entry(s.to_string()).or_insert(next)
        };
        let profile_names: Vec<&String> = profiles.keys().collect();
        let mut meter_index = FxHashMap::default();
        let mut compiled_meters = Vec::with_capacity(meters.len());
        for (i, m) in meters.iter().enumerate() {
            meter_index.insert(m.id.clone(), i as u32);
            let tags = m
                .tags
                .iter()
                .map(|(k, v)| (intern(k, &mut symbols), intern(v, &mut symbols)))
                .collect();
            let profile = profile_names
                .iter()
                .position(|n| **n == m.profile)
                .unwrap_or(0) as u32;
            compiled_meters.push(CompiledMeter { tags, profile });
        }
        let sel = |s: &MeterSelector| -> Sel {
            match s {
                MeterSelector::All => Sel::All,
                MeterSelector::Id(id) => meter_index
                    .get(id)
                    .map(|i| Sel::Meter(*i))
                    .unwrap_or(Sel::Never),
                MeterSelector::Glob(g) => Sel::Glob(g.as_str().into()),
                MeterSelector::Tag(k, v) => match (symbols.get(k), symbols.get(v)) {
                    (Some(k), Some(v)) => Sel::Tag(*k, *v),
                    _ => Sel::Never,
                },
            }
        };

        // Every policy (managed, custom, inline) once, with its statements.
        let mut policies: Vec<PolicyInfo> = Vec::new();
        let mut sources: Vec<Vec<Statement>> = Vec::new();
        let mut by_name: FxHashMap<String, u32> = FxHashMap::default();
        let add = |name: String,
                   sts: Vec<Statement>,
                   policies: &mut Vec<PolicyInfo>,
                   sources: &mut Vec<Vec<Statement>>|
         -> u32 {
            let info = sts
                .iter()
                .map(|st| StatementInfo {
                    direct: st.permission_set(),
                    roles: st
                        .roles
                        .iter()
                        .map(|r| {
                            (
                                Arc::from(r.as_str()),
                                dir.roles.get(r).map(|x| x.permissions).unwrap_or_default(),
                            )
                        })
                        .collect(),
                })
                .collect();
            policies.push(PolicyInfo {
                name: Arc::from(name.as_str()),
                statements: info,
            });
            sources.push(sts);
            (policies.len() - 1) as u32
        };
        for managed in [ADMINISTRATOR, crate::model::READ_ONLY] {
            let idx = add(
                managed.to_string(),
                managed_statements(managed).unwrap_or_default(),
                &mut policies,
                &mut sources,
            );
            by_name.insert(managed.to_string(), idx);
        }
        for p in dir.policies.values() {
            let idx = add(
                p.name.clone(),
                p.statements.clone(),
                &mut policies,
                &mut sources,
            );
            by_name.insert(p.name.clone(), idx);
        }

        let principal = |gate: Gate,
                         administrator: bool,
                         idx: &[u32],
                         policies: &[PolicyInfo],
                         sources: &[Vec<Statement>]|
         -> CompiledPrincipal {
            let mut statements = Vec::new();
            let mut origins = Vec::new();
            let mut roles: Vec<Label> = Vec::new();
            let mut sels = Vec::new();
            for &pi in idx {
                for (si, st) in sources[pi as usize].iter().enumerate() {
                    let info = &policies[pi as usize].statements[si];
                    let covers = info
                        .roles
                        .iter()
                        .fold(info.direct, |acc, (_, p)| acc.union(*p));
                    let sel_start = sels.len() as u32;
                    sels.extend(st.meters.iter().map(&sel));
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
                        policy: Label::new(&policies[pi as usize].name),
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
        };

        let mut principals = FxHashMap::default();
        let mut inline_of = Vec::new();
        for u in dir.users.values() {
            let mut names = u.policies.clone();
            for g in dir.groups_of(&u.name) {
                names.extend(g.policies.iter().cloned());
            }
            names.sort();
            names.dedup();
            let mut idx: Vec<u32> = names
                .iter()
                .filter_map(|n| by_name.get(n).copied())
                .collect();
            if !u.inline.is_empty() {
                idx.push(add(
                    format!("inline policy of user:{}", u.name),
                    u.inline.clone(),
                    &mut policies,
                    &mut sources,
                ));
            }
            let temporary_expires = u.password.as_ref().and_then(|p| p.expires_at());
            let gate = Gate::Person {
                status: u.status,
                end_date: u.end_date,
                temporary_expires,
            };
            inline_of.push((
                PrincipalId::User(u.name.clone()),
                gate,
                names.iter().any(|n| n == ADMINISTRATOR),
                idx,
            ));
        }
        for s in dir.service_users.values() {
            let mut idx: Vec<u32> = s
                .policies
                .iter()
                .filter_map(|n| by_name.get(n).copied())
                .collect();
            if !s.inline.is_empty() {
                idx.push(add(
                    format!("inline policy of svc:{}", s.name),
                    s.inline.clone(),
                    &mut policies,
                    &mut sources,
                ));
            }
            let gate = Gate::Service {
                status: s.status,
                end_date: s.end_date,
            };
            inline_of.push((
                PrincipalId::Service(s.name.clone()),
                gate,
                s.policies.iter().any(|n| n == ADMINISTRATOR),
                idx,
            ));
        }
        if let Some(s) = &dir.support {
            let idx: Vec<u32> = s
                .policies
                .iter()
                .filter_map(|n| by_name.get(n).copied())
                .collect();
            let admin = s.policies.iter().any(|n| n == ADMINISTRATOR);
            inline_of.push((
                PrincipalId::Support,
                Gate::Support {
                    end_date: s.end_date,
                },
                admin,
                idx,
            ));
        }
        for (id, gate, admin, idx) in inline_of {
            principals.insert(id, principal(gate, admin, &idx, &policies, &sources));
        }
        let groups = dir
            .groups
            .values()
            .map(|g| {
                let idx: Vec<u32> = g
                    .policies
                    .iter()
                    .filter_map(|n| by_name.get(n).copied())
                    .collect();
                let admin = g.policies.iter().any(|n| n == ADMINISTRATOR);
                (
                    g.name.clone(),
                    principal(Gate::Local, admin, &idx, &policies, &sources),
                )
            })
            .collect();
        let administrator = by_name.get(ADMINISTRATOR).copied().unwrap_or(0);
        let local = principal(Gate::Local, true, &[administrator], &policies, &sources);
        Snapshot {
            principals,
            meter_index,
            meters: compiled_meters,
            profiles: profiles.values().cloned().collect(),
            local,
            roles: dir
                .roles
                .iter()
                .map(|(name, r)| (name.clone(), r.permissions))
                .collect(),
            groups,
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
