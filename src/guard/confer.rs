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
    /// A credential for another principal (an SSH key, an access key): its
    /// holder acts as that principal, so it confers all that principal holds.
    CredentialsOf(&'a PrincipalId),
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
        let d = self.decide_conferral(&req.principal, &what, now);
        if !d.allowed {
            let mut d = d;
            let ev = super::decision_event(req, &d);
            d.event = self.record(ev).await;
            return d;
        }
        d
    }

    /// The decision itself, without an event.
    pub fn decide_conferral(
        &self,
        who: &PrincipalId,
        what: &Conferral<'_>,
        now: OffsetDateTime,
    ) -> Decision {
        let dir = self.store.directory();
        let administrator = dir.policy_sources(who).0.iter().any(|p| p == ADMINISTRATOR);
        let statements: Vec<Statement> = match what {
            Conferral::CredentialsOf(target) => {
                let (names, inline) = dir.policy_sources(target);
                if names.iter().any(|n| n == ADMINISTRATOR) && !administrator {
                    return Decision::deny(
                        None,
                        Reason::AdministratorRequired(
                            "a credential for a holder of the Administrator policy",
                        ),
                    );
                }
                names
                    .iter()
                    .flat_map(|n| {
                        managed_statements(n).unwrap_or_else(|| {
                            dir.policies
                                .get(n)
                                .map(|p| p.statements.clone())
                                .unwrap_or_default()
                        })
                    })
                    .chain(inline)
                    .collect()
            }
            Conferral::Policy(name) if *name == ADMINISTRATOR => {
                if administrator {
                    return Decision::allow(None, Reason::PrincipalActive);
                }
                return Decision::deny(
                    None,
                    Reason::AdministratorRequired("conferring the managed Administrator policy"),
                );
            }
            Conferral::Policy(name) => match managed_statements(name) {
                Some(s) => s,
                None => dir
                    .policies
                    .get(*name)
                    .map(|p| p.statements.clone())
                    .unwrap_or_default(),
            },
            Conferral::Statements(s) => s.to_vec(),
            Conferral::RolePermissions { role, added } => {
                // Every allow statement anywhere that grants the role.
                let mut found: Vec<Statement> = dir
                    .policies
                    .values()
                    .flat_map(|p| p.statements.iter())
                    .chain(dir.users.values().flat_map(|u| u.inline.iter()))
                    .chain(dir.service_users.values().flat_map(|s| s.inline.iter()))
                    .filter(|s| s.effect == Effect::Allow && s.roles.iter().any(|r| r == role))
                    .cloned()
                    .collect();
                for s in &mut found {
                    s.roles.clear();
                    s.permissions = added.iter().collect();
                }
                found
            }
        };
        // Administrator holders hold everything (DESIGN §2).
        if administrator {
            return Decision::allow(None, Reason::PrincipalActive);
        }
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
                    if !self.decide_permission(who, p, None, now).allowed {
                        return lacking(p, None);
                    }
                    continue;
                }
                for m in fleet
                    .0
                    .iter()
                    .filter(|m| s.meters.iter().any(|sel| sel.matches(&m.id, &m.tags)))
                {
                    if !self.decide_permission(who, p, Some(&m.id), now).allowed {
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
