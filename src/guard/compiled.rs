//! The guard's compiled view of the directory and the fleet: for each
//! principal the gate checks and the policies that apply, each statement
//! with its permissions as a bitset, so a decision touches only what it needs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use time::OffsetDateTime;

use crate::config::MeterConfig;
use crate::model::{
    ADMINISTRATOR, Day, Directory, Effect, MeterSelector, PermissionSet, PrincipalId, Profile,
    Statement, Status, managed_statements, micros,
};

use super::decision::Reason;

pub(crate) struct CompiledStatement {
    pub effect: Effect,
    /// Everything the statement covers: its permissions and its roles'.
    pub covers: PermissionSet,
    pub direct: PermissionSet,
    pub roles: Vec<(Arc<str>, PermissionSet)>,
    pub meters: Vec<MeterSelector>,
}

pub(crate) struct CompiledPolicy {
    pub name: Arc<str>,
    pub statements: Vec<CompiledStatement>,
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
    pub policies: Vec<u32>,
    pub administrator: bool,
}

pub(crate) struct CompiledMeter {
    pub tags: BTreeMap<String, String>,
    pub profile: u32,
}

/// An immutable, shareable compilation; replaced whole on every change.
pub(crate) struct Snapshot {
    pub principals: HashMap<PrincipalId, CompiledPrincipal>,
    pub policies: Vec<CompiledPolicy>,
    pub meters: HashMap<String, CompiledMeter>,
    pub profiles: Vec<Profile>,
    /// Index of the managed Administrator policy (local callers use it).
    pub administrator: u32,
}

impl Snapshot {
    pub fn compile(
        dir: &Directory,
        meters: &[MeterConfig],
        profiles: &BTreeMap<String, Profile>,
    ) -> Snapshot {
        let mut policies: Vec<CompiledPolicy> = Vec::new();
        let mut by_name: HashMap<String, u32> = HashMap::new();
        let compile_statements = |sts: &[Statement]| -> Vec<CompiledStatement> {
            sts.iter()
                .map(|st| {
                    let direct = st.permission_set();
                    let roles: Vec<(Arc<str>, PermissionSet)> = st
                        .roles
                        .iter()
                        .map(|r| {
                            (
                                Arc::from(r.as_str()),
                                dir.roles.get(r).map(|x| x.permissions).unwrap_or_default(),
                            )
                        })
                        .collect();
                    let covers = roles.iter().fold(direct, |acc, (_, p)| acc.union(*p));
                    CompiledStatement {
                        effect: st.effect,
                        covers,
                        direct,
                        roles,
                        meters: st.meters.clone(),
                    }
                })
                .collect()
        };
        let add = |name: String, sts: &[Statement], policies: &mut Vec<CompiledPolicy>| -> u32 {
            let idx = policies.len() as u32;
            policies.push(CompiledPolicy {
                name: Arc::from(name.as_str()),
                statements: compile_statements(sts),
            });
            idx
        };
        for managed in [ADMINISTRATOR, crate::model::READ_ONLY] {
            let sts = managed_statements(managed).unwrap_or_default();
            let idx = add(managed.to_string(), &sts, &mut policies);
            by_name.insert(managed.to_string(), idx);
        }
        for p in dir.policies.values() {
            let idx = add(p.name.clone(), &p.statements, &mut policies);
            by_name.insert(p.name.clone(), idx);
        }
        let administrator = by_name.get(ADMINISTRATOR).copied().unwrap_or(0);
        let resolve = |names: &[String]| -> Vec<u32> {
            names
                .iter()
                .filter_map(|n| by_name.get(n).copied())
                .collect()
        };

        let mut principals = HashMap::new();
        for u in dir.users.values() {
            let mut names = u.policies.clone();
            for g in dir.groups_of(&u.name) {
                names.extend(g.policies.iter().cloned());
            }
            names.sort();
            names.dedup();
            let mut idx = resolve(&names);
            if !u.inline.is_empty() {
                idx.push(add(
                    format!("inline policy of user:{}", u.name),
                    &u.inline,
                    &mut policies,
                ));
            }
            let temporary_expires = u.password.as_ref().and_then(|p| p.expires_at());
            principals.insert(
                PrincipalId::User(u.name.clone()),
                CompiledPrincipal {
                    gate: Gate::Person {
                        status: u.status,
                        end_date: u.end_date,
                        temporary_expires,
                    },
                    administrator: names.iter().any(|n| n == ADMINISTRATOR),
                    policies: idx,
                },
            );
        }
        for s in dir.service_users.values() {
            let mut idx = resolve(&s.policies);
            if !s.inline.is_empty() {
                idx.push(add(
                    format!("inline policy of svc:{}", s.name),
                    &s.inline,
                    &mut policies,
                ));
            }
            principals.insert(
                PrincipalId::Service(s.name.clone()),
                CompiledPrincipal {
                    gate: Gate::Service {
                        status: s.status,
                        end_date: s.end_date,
                    },
                    administrator: s.policies.iter().any(|n| n == ADMINISTRATOR),
                    policies: idx,
                },
            );
        }
        if let Some(s) = &dir.support {
            principals.insert(
                PrincipalId::Support,
                CompiledPrincipal {
                    gate: Gate::Support {
                        end_date: s.end_date,
                    },
                    administrator: s.policies.iter().any(|n| n == ADMINISTRATOR),
                    policies: resolve(&s.policies),
                },
            );
        }

        let profile_names: Vec<&String> = profiles.keys().collect();
        let compiled_meters = meters
            .iter()
            .map(|m| {
                let profile = profile_names
                    .iter()
                    .position(|n| **n == m.profile)
                    .unwrap_or(0) as u32;
                (
                    m.id.clone(),
                    CompiledMeter {
                        tags: m.tags.clone(),
                        profile,
                    },
                )
            })
            .collect();
        Snapshot {
            principals,
            policies,
            meters: compiled_meters,
            profiles: profiles.values().cloned().collect(),
            administrator,
        }
    }
}

impl Gate {
    /// Denies inactive principals, passed end dates, expired temporary
    /// passwords and expired support access, before any policy is read.
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
