//! The rules a change to the directory must keep: separation of duties (no
//! principal holds both permissions of a pair) and the last administrator
//! stays.

use std::collections::BTreeSet;

use super::{
    ADMINISTRATOR, Directory, Effect, Memberships, Permission, PermissionSet, PrincipalId, Status,
    managed_statements,
};

/// The permissions a principal can be granted anywhere by its policies,
/// leaving out the managed Administrator policy (the break-glass path is
/// exempt from separation of duties). Denies are not subtracted: a deny does
/// not resolve a conflict, removing the grant does.
pub fn granted_without_administrator(dir: &Directory, who: &PrincipalId) -> PermissionSet {
    granted_in(dir, who, None)
}

fn granted_in(
    dir: &Directory,
    who: &PrincipalId,
    memberships: Option<&Memberships<'_>>,
) -> PermissionSet {
    let (names, inline) = dir.policy_sources_in(who, memberships);
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
    if pairs.is_empty() {
        return BTreeSet::new();
    }
    let memberships = dir.memberships();
    conflicts_of(dir, pairs, dir.principals().iter(), Some(&memberships))
}

/// As [`sod_conflicts`], for `among` only (the principals a change
/// reaches: no one else's grants moved).
pub fn sod_conflicts_among(
    dir: &Directory,
    pairs: &[(Permission, Permission)],
    among: &BTreeSet<PrincipalId>,
) -> BTreeSet<(PrincipalId, Permission, Permission)> {
    if pairs.is_empty() {
        return BTreeSet::new();
    }
    // A few principals read their groups directly; many (a policy on a
    // big group) read them from one index, built once.
    let memberships = (among.len() > 8).then(|| dir.memberships());
    conflicts_of(dir, pairs, among.iter(), memberships.as_ref())
}

fn conflicts_of<'a>(
    dir: &Directory,
    pairs: &[(Permission, Permission)],
    among: impl Iterator<Item = &'a PrincipalId>,
    memberships: Option<&Memberships<'_>>,
) -> BTreeSet<(PrincipalId, Permission, Permission)> {
    let mut out = BTreeSet::new();
    for who in among {
        let set = granted_in(dir, who, memberships);
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
    let memberships = dir.memberships();
    let users = dir
        .users
        .keys()
        .filter(|n| is_administrator(dir, &PrincipalId::User((*n).clone()), Some(&memberships)))
        .count();
    let services = dir
        .service_users
        .values()
        .filter(|s| s.status == Status::Active && s.policies.iter().any(|p| p == ADMINISTRATOR))
        .count();
    users + services
}

/// How many of `among` count in [`administrators`].
pub fn administrators_among(dir: &Directory, among: &BTreeSet<PrincipalId>) -> usize {
    let memberships = (among.len() > 8).then(|| dir.memberships());
    among
        .iter()
        .filter(|p| is_administrator(dir, p, memberships.as_ref()))
        .count()
}

fn is_administrator(
    dir: &Directory,
    who: &PrincipalId,
    memberships: Option<&Memberships<'_>>,
) -> bool {
    let admin = |list: &[String]| list.iter().any(|p| p == ADMINISTRATOR);
    match who {
        PrincipalId::User(n) => dir.users.get(n).is_some_and(|u| {
            u.status == Status::Active
                && (admin(&u.policies)
                    || match memberships {
                        Some(m) => m.of(n).iter().any(|g| admin(&g.policies)),
                        None => dir.groups_of(n).any(|g| admin(&g.policies)),
                    })
        }),
        PrincipalId::Service(n) => dir
            .service_users
            .get(n)
            .is_some_and(|s| s.status == Status::Active && admin(&s.policies)),
        PrincipalId::Support | PrincipalId::Local(_) => false,
    }
}
