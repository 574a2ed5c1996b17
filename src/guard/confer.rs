//! No one grants what they do not hold (DESIGN §7): a change that confers
//! permissions is allowed only if the caller holds every one of them on the
//! meters concerned, and the managed Administrator policy is conferred only
//! by an Administrator. The refusal names the first permission lacking.

use time::OffsetDateTime;

use super::{Decision, Guard, Label, Reason, Request};
use crate::model::{
    ADMINISTRATOR, Effect, Permission, PermissionSet, PrincipalId, Statement, managed_statements,
};

/// What an admin change would confer.
pub enum Conferral<'a> {
    /// Attaching a policy (to a user, service user, group or support), or
    /// adding a member to a group that has it.
    Policy(&'a str),
    /// Allow statements added to someone (`user grant-role`).
    Statements(&'a [Statement]),
    /// Permissions added to a role: conferred wherever the role is granted.
    RolePermissions { role: &'a str, added: PermissionSet },
    /// A credential for another principal (an SSH key, an access key), or
    /// its access brought back (activation, a later or no end date, support
    /// extended): it then acts with all that principal holds.
    CredentialsOf(&'a PrincipalId),
    /// Statements taken away from someone (a policy detached, a group left
    /// or deleted): removing a deny confers what it withheld.
    Lifting(Vec<Statement>),
    /// Permissions removed from a role: wherever a deny names the role, it
    /// no longer withholds them.
    RoleNarrowed {
        role: &'a str,
        removed: PermissionSet,
    },
}

impl Guard {
    /// May `req.principal` confer `what`? The decision is logged when it
    /// refuses (an allowed conferral is part of the change's own event).
    pub async fn authorize_conferral(
        &self,
        req: &Request,
        what: Conferral<'_>,
        now: OffsetDateTime,
    ) -> Decision {
        let d = self.decide_conferral(&req.principal, &what, req.second_factor, now);
        if !d.allowed {
            let mut d = d;
            let ev = super::decision_event(req, &d);
            d.event = self.record(ev).await;
            return d;
        }
        d
    }

    /// The decision itself, without an event. `second_factor`: whether the
    /// caller's session proved one (what needs it is held only then).
    pub fn decide_conferral(
        &self,
        who: &PrincipalId,
        what: &Conferral<'_>,
        second_factor: bool,
        now: OffsetDateTime,
    ) -> Decision {
        // The gateway's own console is the break-glass Administrator.
        if matches!(who, PrincipalId::Local(_)) {
            return Decision::allow(None, Reason::PrincipalActive);
        }
        let dir = self.store.directory();
        // Administrator conferred needs Administrator held without bounds:
        // support's is bounded by its meters and its end, so it never
        // confers it. Holding it is not enough either: every permission it
        // confers is checked below, so a deny the holder is under counts.
        let holds_administrator = *who != PrincipalId::Support
            && dir.policy_sources(who).0.iter().any(|p| p == ADMINISTRATOR);
        let needs_administrator =
            |why: &'static str| Decision::deny(None, Reason::AdministratorRequired(why));
        let policy_statements = |name: &str| -> Vec<Statement> {
            managed_statements(name).unwrap_or_else(|| {
                dir.policies
                    .get(name)
                    .map(|p| p.statements.clone())
                    .unwrap_or_default()
            })
        };
        let granting_role = |role: &str, effect: Effect| -> Vec<Statement> {
            dir.policies
                .values()
                .flat_map(|p| p.statements.iter())
                .chain(dir.users.values().flat_map(|u| u.inline.iter()))
                .chain(dir.service_users.values().flat_map(|s| s.inline.iter()))
                .filter(|s| s.effect == effect && s.roles.iter().any(|r| r == role))
                .cloned()
                .collect()
        };
        let only = |mut found: Vec<Statement>, perms: PermissionSet| {
            for s in &mut found {
                s.effect = Effect::Allow;
                s.roles.clear();
                s.permissions = perms.iter().collect();
            }
            found
        };
        // What the change confers, as allow statements.
        let statements: Vec<Statement> = match what {
            Conferral::Policy(name) if *name == ADMINISTRATOR => {
                if !holds_administrator {
                    return needs_administrator("conferring the managed Administrator policy");
                }
                policy_statements(name)
            }
            Conferral::Policy(name) => policy_statements(name),
            Conferral::Statements(s) => s.to_vec(),
            Conferral::RolePermissions { role, added } => {
                only(granting_role(role, Effect::Allow), *added)
            }
            Conferral::CredentialsOf(target) => {
                let (names, inline) = dir.policy_sources(target);
                if names.iter().any(|n| n == ADMINISTRATOR) && !holds_administrator {
                    return needs_administrator(
                        "a credential or access for a holder of the Administrator policy",
                    );
                }
                names
                    .iter()
                    .flat_map(|n| policy_statements(n))
                    .chain(inline)
                    .filter(|s| s.effect == Effect::Allow)
                    .collect()
            }
            Conferral::Lifting(taken) => taken
                .iter()
                .filter(|s| s.effect == Effect::Deny)
                .cloned()
                .map(|mut s| {
                    s.effect = Effect::Allow;
                    s
                })
                .collect(),
            Conferral::RoleNarrowed { role, removed } => {
                only(granting_role(role, Effect::Deny), *removed)
            }
        };
        let fleet = self.fleet();
        for s in statements.iter().filter(|s| s.effect == Effect::Allow) {
            let mut perms: PermissionSet = s.permission_set();
            for r in &s.roles {
                if let Some(role) = dir.roles.get(r) {
                    perms = perms.union(role.permissions);
                }
            }
            for p in perms.iter() {
                if p.is_global() {
                    if !self
                        .decide_permission(who, p, None, second_factor, now)
                        .allowed
                    {
                        return lacking(p, None);
                    }
                    continue;
                }
                for m in fleet
                    .0
                    .iter()
                    .filter(|m| s.meters.iter().any(|sel| sel.matches(&m.id, &m.tags)))
                {
                    if !self
                        .decide_permission(who, p, Some(&m.id), second_factor, now)
                        .allowed
                    {
                        return lacking(p, Some(&m.id));
                    }
                }
            }
        }
        Decision::allow(None, Reason::PrincipalActive)
    }
}

fn lacking(permission: Permission, meter: Option<&str>) -> Decision {
    Decision::deny(
        Some(permission),
        Reason::ConfersUnheld {
            permission,
            meter: meter.map(Label::new),
        },
    )
}
