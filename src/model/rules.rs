//! The rules a change to the directory must keep: separation of duties (no
//! principal holds both permissions of a pair) and the last administrator
//! stays.

use std::collections::BTreeSet;

use super::{
    ADMINISTRATOR, Directory, Effect, Permission, PermissionSet, PrincipalId, Status,
    managed_statements,
};

/// The permissions a principal can be granted anywhere by its policies,
/// leaving out the managed Administrator policy (the break-glass path is
/// exempt from separation of duties). Denies are not subtracted: a deny does
/// not resolve a conflict, removing the grant does.
pub fn granted_without_administrator(dir: &Directory, who: &PrincipalId) -> PermissionSet {
    let (names, inline) = dir.policy_sources(who);
    let mut statements = inline;
    for n in names.iter().filter(|n| *n != ADMINISTRATOR) {
        if let Some(m) = managed_statements(n) {
            statements.extend(m);
        } else if let Some(p) = dir.policies.get(n) {
            statements.extend(p.statements.iter().cloned());
        }
    }
    let mut set = PermissionSet::EMPTY;
    for st in statements.iter().filter(|s| s.effect == Effect::Allow) {
        set = set.union(st.permission_set());
        for r in &st.roles {
            if let Some(role) = dir.roles.get(r) {
                set = set.union(role.permissions);
            }
        }
    }
    set
}

/// Every (principal, first, second) that holds both permissions of a pair.
pub fn sod_conflicts(
    dir: &Directory,
    pairs: &[(Permission, Permission)],
) -> BTreeSet<(PrincipalId, Permission, Permission)> {
    let mut out = BTreeSet::new();
    if pairs.is_empty() {
        return out;
    }
    for who in dir.principals() {
        let set = granted_without_administrator(dir, &who);
        for &(a, b) in pairs {
            if set.contains(a) && set.contains(b) {
                out.insert((who.clone(), a, b));
            }
        }
    }
    out
}

/// Active users and service users holding the managed Administrator policy,
/// directly or through a group (support is time-bound and not counted).
pub fn administrators(dir: &Directory) -> usize {
    let users = dir
        .users
        .values()
        .filter(|u| u.status == Status::Active)
        .filter(|u| {
            dir.policy_sources(&PrincipalId::User(u.name.clone()))
                .0
                .iter()
                .any(|p| p == ADMINISTRATOR)
        })
        .count();
    let services = dir
        .service_users
        .values()
        .filter(|s| s.status == Status::Active && s.policies.iter().any(|p| p == ADMINISTRATOR))
        .count();
    users + services
}
