//! Effective access: what a principal (or a group's policies) may do on
//! which meters, and who may use a permission on a meter. Read from the
//! guard's compiled snapshot with the very evaluation a decision runs, so an
//! answer here can never disagree with a decision.

use rustc_hash::FxHashMap;

use super::*;
use crate::model::Policy;

/// One permission's answer on a set of meters (or, for a global
/// permission, anywhere), for a session that proved a second factor and is
/// being recorded; what a session without them loses is flagged.
#[derive(Clone, Debug)]
pub struct Grant {
    pub permission: Permission,
    /// Allowed (by the statement named) or denied by an explicit deny.
    pub decision: Decision,
    /// For an explicit deny: the allow it takes away, when there is one.
    pub removed_allow: Option<Reason>,
    /// A session without a second factor is denied it.
    pub needs_second_factor: bool,
    /// A session that is not being recorded is denied it.
    pub needs_recording: bool,
}

/// Meters on which every permission is decided alike.
#[derive(Clone, Debug)]
pub struct MeterGroup {
    pub meters: Vec<String>,
    pub grants: Vec<Grant>,
}

/// Everything a principal (or a group) holds, as the guard decides it.
#[derive(Clone, Debug)]
pub struct Effective {
    /// Why every request is denied now (inactive, end date passed…).
    pub blocked: Option<Reason>,
    pub global: Vec<Grant>,
    /// Groups of meters, in the config's meter order; meters on which no
    /// statement allows or denies anything are left out.
    pub meters: Vec<MeterGroup>,
    /// Meters considered (all configured ones, or the one asked about).
    pub considered: usize,
}

/// Whose effective access.
#[derive(Clone, Copy, Debug)]
pub enum Holder<'a> {
    Principal(&'a PrincipalId),
    /// What a user group's policies give its members.
    Group(&'a str),
}

impl Guard {
    /// Effective access of `holder` at `now`, on every meter or on `meter`.
    // The Reason is built only on the error path; boxing it would allocate there.
    #[allow(clippy::result_large_err)]
    pub fn effective(
        &self,
        holder: Holder<'_>,
        meter: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Effective, Reason> {
        let snap = self.snapshot.load();
        // A group is no principal: its policies are read as a member's
        // would be (a person, who gives a second factor).
        let member = PrincipalId::User(String::new());
        let (who, principal) = match holder {
            Holder::Principal(id) => (id, lookup(&snap, id)?),
            Holder::Group(name) => (
                &member,
                snap.groups
                    .get(name)
                    .map(|g| &**g)
                    .ok_or(Reason::UnknownPrincipal)?,
            ),
        };
        let fleet = self.fleet();
        let meters: Vec<&MeterConfig> = match meter {
            Some(id) => vec![
                fleet
                    .0
                    .iter()
                    .find(|m| m.id == id)
                    .ok_or(Reason::UnknownMeter)?,
            ],
            None => fleet.0.iter().collect(),
        };
        let mut out = Effective {
            blocked: principal.gate.check(now).err(),
            global: Vec::new(),
            meters: Vec::new(),
            considered: meters.len(),
        };
        if out.blocked.is_some() {
            return Ok(out);
        }
        let judge = Judge::new(self, &snap, who, principal);
        out.global = Permission::ALL
            .into_iter()
            .filter(|p| p.is_global())
            .filter_map(|p| judge.grant(p, None))
            .collect();
        // Meters on which the same statements apply (and the same support
        // boundary) are decided alike: one evaluation per group.
        let boundary = self.settings.load().support_meters.clone();
        let mut groups: FxHashMap<Vec<u64>, usize> = FxHashMap::default();
        let mut members: Vec<(MeterRef<'_>, Vec<String>)> = Vec::new();
        for m in meters {
            let Some(r) = snap.meter(&m.id) else {
                continue;
            };
            let mut sig = vec![0u64; principal.statements.len() / 64 + 2];
            for (i, st) in principal.statements.iter().enumerate() {
                if principal.selectors(st).iter().any(|s| s.matches(r)) {
                    sig[i / 64] |= 1 << (i % 64);
                }
            }
            if *who == PrincipalId::Support
                && let Some(b) = &boundary
                && b.iter().any(|s| s.matches(&m.id, &m.tags))
            {
                sig[principal.statements.len() / 64 + 1] = 1;
            }
            match groups.get(&sig) {
                Some(&g) => members[g].1.push(m.id.clone()),
                None => {
                    groups.insert(sig, members.len());
                    members.push((r, vec![m.id.clone()]));
                }
            }
        }
        for (r, ids) in members {
            let grants: Vec<Grant> = Permission::ALL
                .into_iter()
                .filter(|p| !p.is_global())
                .filter_map(|p| judge.grant(p, Some(r)))
                .collect();
            if !grants.is_empty() {
                out.meters.push(MeterGroup {
                    meters: ids,
                    grants,
                });
            }
        }
        Ok(out)
    }

    /// Every principal allowed `permission` (on `meter` for a meter
    /// permission) at `now`, with what allows it; by principal id.
    // The Reason is built only on the error path; boxing it would allocate there.
    #[allow(clippy::result_large_err)]
    pub fn who_can(
        &self,
        permission: Permission,
        meter: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<(PrincipalId, Grant)>, Reason> {
        let snap = self.snapshot.load();
        let m = match meter {
            Some(id) => Some(snap.meter(id).ok_or(Reason::UnknownMeter)?),
            None if permission.is_global() => None,
            None => return Err(Reason::UnknownMeter),
        };
        let mut out: Vec<(PrincipalId, Grant)> = snap
            .principals
            .iter()
            .filter(|(_, p)| p.gate.check(now).is_ok())
            .filter_map(|(id, p)| {
                Judge::new(self, &snap, id, p)
                    .grant(permission, m)
                    .filter(|g| g.decision.allowed)
                    .map(|g| (id.clone(), g))
            })
            .collect();
        out.sort_by_key(|(id, _)| id.to_string());
        Ok(out)
    }
}

/// The decision's own evaluation, run as the sessions that matter.
struct Judge<'a> {
    /// A session with a second factor, recorded: the most it can get.
    best: Ctx<'a>,
    without_factor: Ctx<'a>,
    unrecorded: Ctx<'a>,
}

impl<'a> Judge<'a> {
    fn new(
        guard: &'a Guard,
        snap: &'a Snapshot,
        who: &'a PrincipalId,
        principal: &'a CompiledPrincipal,
    ) -> Judge<'a> {
        let ctx = |factor_missing: bool, unrecorded: bool| {
            Ctx {
                guard,
                snap,
                who,
                principal,
                limit: None,
                factor_missing: factor_missing && needs_factor(who),
                mfa: MfaRequired::Never,
                unrecorded,
            }
            .with_mfa_setting()
        };
        Judge {
            best: ctx(false, false),
            without_factor: ctx(true, false),
            unrecorded: ctx(false, true),
        }
    }

    /// Allowed, or taken away by an explicit deny; None when no statement
    /// speaks of it (the default deny) or the meter is outside a boundary.
    fn grant(&self, permission: Permission, meter: Option<MeterRef<'_>>) -> Option<Grant> {
        let decision = self.best.evaluate(permission, meter);
        match decision.reason {
            Reason::Allowed { .. } => Some(Grant {
                permission,
                needs_second_factor: !self.without_factor.evaluate(permission, meter).allowed,
                needs_recording: !self.unrecorded.evaluate(permission, meter).allowed,
                decision,
                removed_allow: None,
            }),
            Reason::Denied { .. } => Some(Grant {
                permission,
                removed_allow: self.best.first_allow(permission, meter),
                decision,
                needs_second_factor: false,
                needs_recording: false,
            }),
            _ => None,
        }
    }
}

impl Ctx<'_> {
    /// The first allow statement that would grant `permission` here, were
    /// no deny in the way.
    fn first_allow(&self, permission: Permission, meter: Option<MeterRef<'_>>) -> Option<Reason> {
        let i = self.principal.statements.iter().position(|st| {
            st.effect == crate::model::Effect::Allow
                && st.covers.contains(permission)
                && (permission.is_global()
                    || meter
                        .is_some_and(|m| self.principal.selectors(st).iter().any(|s| s.matches(m))))
        })?;
        let (policy, statement, role) = self.principal.origin(i, permission);
        Some(Reason::Allowed {
            policy,
            statement,
            role,
        })
    }
}

/// A draft policy compiled as if attached to one principal (`check
/// --with-policy`): nothing is created, nothing is logged.
pub struct Draft {
    pub(super) snapshot: Snapshot,
}

impl Guard {
    /// The principal's part of the directory, with `policy` attached to it
    /// (a policy of the same name is replaced, as an edit would), compiled.
    pub fn draft(&self, who: &PrincipalId, policy: Policy) -> Result<Draft, String> {
        let dir = self.directory();
        let name = policy.name.clone();
        let mut mini = Directory {
            roles: dir.roles.clone(),
            policies: dir.policies.clone(),
            ..Directory::default()
        };
        mini.policies.insert(name.clone(), policy);
        let attach = |list: &mut Vec<String>| {
            if !list.contains(&name) {
                list.push(name.clone());
            }
        };
        match who {
            PrincipalId::User(n) => {
                let mut u = dir.users.get(n).cloned().ok_or(format!("no user `{n}`"))?;
                attach(&mut u.policies);
                for g in dir.groups_of(n) {
                    // Only this member: the others are not in the draft.
                    let mut g = g.clone();
                    g.members = vec![n.clone()];
                    mini.groups.insert(g.name.clone(), g);
                }
                mini.users.insert(n.clone(), u);
            }
            PrincipalId::Service(n) => {
                let mut s = dir
                    .service_users
                    .get(n)
                    .cloned()
                    .ok_or(format!("no service user `{n}`"))?;
                attach(&mut s.policies);
                mini.service_users.insert(n.clone(), s);
            }
            PrincipalId::Support => {
                let mut s = dir
                    .support
                    .clone()
                    .ok_or("support access is not granted".to_string())?;
                attach(&mut s.policies);
                mini.support = Some(s);
            }
            PrincipalId::Local(_) => {
                return Err("a local: caller holds Administrator; a draft changes nothing".into());
            }
        }
        mini.validate().map_err(|e| e.to_string())?;
        let fleet = self.fleet();
        Ok(Draft {
            snapshot: Snapshot::compile(&mini, &fleet.0, &fleet.1),
        })
    }
}
