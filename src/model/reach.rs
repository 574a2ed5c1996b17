//! What a change to the directory reaches: the principals and groups whose
//! access it can move, so the guard recompiles and the rules re-check only
//! those (a change to one user in 100k touches one principal, not 100k).

use std::collections::{BTreeSet, HashSet};

use super::{Directory, OrdMap, PrincipalId, Statement};

/// An entity of the directory, by kind and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entry {
    User(String),
    Service(String),
    Group(String),
    Role(String),
    Policy(String),
    Support,
}

/// The principals and groups a change reaches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    pub principals: BTreeSet<PrincipalId>,
    pub groups: BTreeSet<String>,
}

/// The entities that differ between `before` and `after` (added, removed
/// or changed).
pub fn changed_entries(before: &Directory, after: &Directory) -> Vec<Entry> {
    let mut out = Vec::new();
    diff(&before.users, &after.users, Entry::User, &mut out);
    diff(
        &before.service_users,
        &after.service_users,
        Entry::Service,
        &mut out,
    );
    diff(&before.groups, &after.groups, Entry::Group, &mut out);
    diff(&before.roles, &after.roles, Entry::Role, &mut out);
    diff(&before.policies, &after.policies, Entry::Policy, &mut out);
    if before.support != after.support {
        out.push(Entry::Support);
    }
    out
}

fn diff<T: PartialEq + Clone>(
    before: &OrdMap<String, T>,
    after: &OrdMap<String, T>,
    entry: fn(String) -> Entry,
    out: &mut Vec<Entry>,
) {
    // Nodes the two maps share are skipped: a change to one user in 100k
    // visits a path, not 100k users.
    for item in before.diff(after) {
        let name = match item {
            imbl::ordmap::DiffItem::Add(k, _) | imbl::ordmap::DiffItem::Remove(k, _) => k,
            imbl::ordmap::DiffItem::Update { old, new } if old.1 != new.1 => old.0,
            imbl::ordmap::DiffItem::Update { .. } => continue,
        };
        out.push(entry(name.clone()));
    }
}

/// Who `changed` reaches, with the directory as it was and as it is:
/// - a user, service user or support access changed: that principal;
/// - a group changed: the group and its members, before and after;
/// - a policy changed: every principal and group it is attached to,
///   directly or through a group;
/// - a role changed: as every policy whose statements name it, and every
///   principal whose inline statements do.
pub fn reach(before: &Directory, after: &Directory, changed: &[Entry]) -> Reach {
    let mut out = Reach::default();
    let mut policies: HashSet<&str> = HashSet::new();
    let mut roles: HashSet<&str> = HashSet::new();
    let mut groups: HashSet<&str> = HashSet::new();
    for e in changed {
        match e {
            Entry::User(n) => {
                out.principals.insert(PrincipalId::User(n.clone()));
            }
            Entry::Service(n) => {
                out.principals.insert(PrincipalId::Service(n.clone()));
            }
            Entry::Support => {
                out.principals.insert(PrincipalId::Support);
            }
            Entry::Group(n) => {
                groups.insert(n);
            }
            Entry::Role(n) => {
                roles.insert(n);
            }
            Entry::Policy(n) => {
                policies.insert(n);
            }
        }
    }
    let names_role = |sts: &[Statement]| {
        !roles.is_empty()
            && sts
                .iter()
                .any(|s| s.roles.iter().any(|r| roles.contains(r.as_str())))
    };
    for dir in [before, after] {
        for p in dir.policies.values() {
            if names_role(&p.statements) {
                policies.insert(&p.name);
            }
        }
    }
    let attached = |list: &[String]| {
        !policies.is_empty() && list.iter().any(|p| policies.contains(p.as_str()))
    };
    for dir in [before, after] {
        for u in dir.users.values() {
            if attached(&u.policies) || names_role(&u.inline) {
                out.principals.insert(PrincipalId::User(u.name.clone()));
            }
        }
        for s in dir.service_users.values() {
            if attached(&s.policies) || names_role(&s.inline) {
                out.principals.insert(PrincipalId::Service(s.name.clone()));
            }
        }
        if dir.support.as_ref().is_some_and(|s| attached(&s.policies)) {
            out.principals.insert(PrincipalId::Support);
        }
        for g in dir.groups.values() {
            if groups.contains(g.name.as_str()) || attached(&g.policies) {
                out.groups.insert(g.name.clone());
                out.principals
                    .extend(g.members.iter().map(|m| PrincipalId::User(m.clone())));
            }
        }
    }
    // A group deleted is in neither walk's directory when it is gone from
    // both (made and removed in one change): still named.
    out.groups.extend(groups.iter().map(|g| g.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Day, PermissionSet};
    use crate::model::{Group, MeterSelector, Policy, Role, ServiceUser, SupportAccess, User};

    fn world() -> Directory {
        let mut d = Directory::default();
        d.roles
            .insert("Viewer".into(), Role::new("Viewer", PermissionSet::EMPTY));
        d.roles.insert(
            "Operator".into(),
            Role::new("Operator", PermissionSet::EMPTY),
        );
        let all = vec![MeterSelector::All];
        d.policies.insert(
            "view".into(),
            Policy::new("view", vec![Statement::allow_role("Viewer", all.clone())]),
        );
        d.policies.insert(
            "operate".into(),
            Policy::new(
                "operate",
                vec![Statement::allow_role("Operator", all.clone())],
            ),
        );
        for (n, ps) in [
            ("ann", &["view"][..]),
            ("bob", &[]),
            ("cy", &[]),
            ("dee", &[]),
        ] {
            let mut u = User::new(n, "x@example.org");
            u.policies = ps.iter().map(|p| p.to_string()).collect();
            d.users.insert(n.into(), u);
        }
        if let Some(u) = d.users.get_mut("dee") {
            u.inline = vec![Statement::allow_role("Operator", all.clone())];
        }
        d.groups
            .insert("field".into(), Group::new("field", &["bob"], &["operate"]));
        let mut s = ServiceUser::new("scada");
        s.policies = vec!["view".into()];
        d.service_users.insert("scada".into(), s);
        d.support = Some(SupportAccess::new(
            Day::parse("2030-01-01").unwrap_or_else(|_| unreachable!()),
            &["operate"],
        ));
        d
    }

    fn user(n: &str) -> PrincipalId {
        PrincipalId::User(n.into())
    }

    /// (what changes) → (who it reaches, which groups).
    #[test]
    fn a_change_reaches_only_whom_it_can_move() {
        type Edit = fn(&mut Directory);
        let table: Vec<(&str, Edit, Vec<PrincipalId>, Vec<&str>)> = vec![
            (
                "a user's email",
                |d| {
                    d.users
                        .get_mut("cy")
                        .into_iter()
                        .for_each(|u| u.email = "y@example.org".into())
                },
                vec![user("cy")],
                vec![],
            ),
            (
                "a policy edited",
                |d| {
                    d.policies
                        .get_mut("view")
                        .into_iter()
                        .for_each(|p| p.statements.clear())
                },
                vec![user("ann"), PrincipalId::Service("scada".into())],
                vec![],
            ),
            (
                "a group's policy",
                |d| {
                    d.policies
                        .get_mut("operate")
                        .into_iter()
                        .for_each(|p| p.statements.clear())
                },
                vec![user("bob"), PrincipalId::Support],
                vec!["field"],
            ),
            (
                "a member added",
                |d| {
                    d.groups
                        .get_mut("field")
                        .into_iter()
                        .for_each(|g| g.members.push("cy".into()))
                },
                vec![user("bob"), user("cy")],
                vec!["field"],
            ),
            (
                "a group deleted",
                |d| {
                    d.groups.remove("field");
                },
                vec![user("bob")],
                vec!["field"],
            ),
            (
                "a role's permissions",
                |d| {
                    d.roles
                        .get_mut("Operator")
                        .into_iter()
                        .for_each(|r| r.permissions = PermissionSet::all())
                },
                vec![user("bob"), user("dee"), PrincipalId::Support],
                vec!["field"],
            ),
            (
                "support access ended",
                |d| d.support = None,
                vec![PrincipalId::Support],
                vec![],
            ),
        ];
        for (what, edit, principals, groups) in table {
            let before = world();
            let mut after = world();
            edit(&mut after);
            let changed = changed_entries(&before, &after);
            let r = reach(&before, &after, &changed);
            assert_eq!(
                r.principals,
                principals.into_iter().collect::<BTreeSet<_>>(),
                "{what}: principals"
            );
            assert_eq!(
                r.groups,
                groups
                    .into_iter()
                    .map(String::from)
                    .collect::<BTreeSet<_>>(),
                "{what}: groups"
            );
        }
    }

    /// Maps of many nodes, so the diff skips shared ones (imbl 7.0.0 and
    /// 7.0.1 dropped a difference right after a shared run; 7.0.2 fixed it,
    /// hence the exact pin): every single change is found, whichever key.
    #[test]
    fn every_single_change_in_a_large_directory_is_found() {
        let mut d = Directory::default();
        for i in 0..300 {
            let n = format!("u{i:03}");
            d.users.insert(n.clone(), User::new(&n, "x@example.org"));
        }
        for i in 0..200 {
            let n = format!("p{i:03}");
            d.policies.insert(n.clone(), Policy::new(&n, vec![]));
        }
        for i in 0..300 {
            let n = format!("u{i:03}");
            let mut after = d.clone();
            if let Some(u) = after.users.get_mut(&n) {
                u.status = crate::model::Status::Inactive;
            }
            assert_eq!(changed_entries(&d, &after), vec![Entry::User(n.clone())]);
            let mut after = d.clone();
            after.users.remove(&n);
            assert_eq!(changed_entries(&d, &after), vec![Entry::User(n.clone())]);
            assert_eq!(changed_entries(&after, &d), vec![Entry::User(n)]);
        }
        for i in 0..200 {
            let n = format!("p{i:03}");
            let mut after = d.clone();
            if let Some(p) = after.policies.get_mut(&n) {
                p.statements = vec![Statement::allow_role("Viewer", vec![MeterSelector::All])];
            }
            assert_eq!(changed_entries(&d, &after), vec![Entry::Policy(n)]);
        }
        // Two changes far apart in one map: both found.
        let mut after = d.clone();
        for n in ["u000", "u150", "u299"] {
            if let Some(u) = after.users.get_mut(n) {
                u.email = "y@example.org".into();
            }
        }
        assert_eq!(
            changed_entries(&d, &after),
            ["u000", "u150", "u299"]
                .map(|n| Entry::User(n.into()))
                .to_vec()
        );
    }

    #[test]
    fn an_unchanged_directory_has_no_changed_entries() {
        assert!(changed_entries(&world(), &world()).is_empty());
    }
}
