//! The store: versions, atomic changes, references, and secrets kept only as
//! hashes.

mod common;

use common::*;
use metergate::model::*;
use metergate::store::{Entity, Expect, Kind, Op, Store, StoreError, secrets};

fn local() -> PrincipalId {
    PrincipalId::Local("test".into())
}

#[test]
fn an_update_against_a_stale_version_is_refused() {
    let f = Fixture::new();
    f.add(vec![Entity::User(user("alice", &[READ_ONLY]))]);
    let v1 = f.guard.store().directory().users["alice"].clone();
    assert_eq!(v1.version, 1);
    let mut first = v1.clone();
    first.first_name = "Alice".into();
    f.guard
        .change(
            vec![Op::Put(Entity::User(first), Expect::Version(1))],
            &local(),
            NOW,
        )
        .unwrap();
    // A second editor who read version 1 loses, with a clear message.
    let mut second = v1.clone();
    second.last_name = "Liddell".into();
    let err = f
        .guard
        .change(
            vec![Op::Put(Entity::User(second), Expect::Version(1))],
            &local(),
            NOW,
        )
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::StaleVersion {
            kind: "user",
            name: "alice".into(),
            expected: 1,
            actual: 2
        }
    );
    assert!(err.to_string().contains("changed by someone else"));
    let now = f.guard.store().directory().users["alice"].clone();
    assert_eq!(
        (now.first_name.as_str(), now.last_name.as_str(), now.version),
        ("Alice", "", 2)
    );
    assert_eq!(now.modified.by, "local:test");
    // Deleting needs the current version too; creating twice is refused.
    let err = f
        .guard
        .change(
            vec![Op::Delete(Kind::User, "alice".into(), 1)],
            &local(),
            NOW,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::StaleVersion { .. }), "{err}");
    let err = f
        .guard
        .change(
            vec![Op::Put(Entity::User(user("alice", &[])), Expect::New)],
            &local(),
            NOW,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Exists { .. }), "{err}");
    f.guard
        .change(
            vec![Op::Delete(Kind::User, "alice".into(), 2)],
            &local(),
            NOW,
        )
        .unwrap();
    assert!(!f.guard.store().directory().users.contains_key("alice"));
}

#[test]
fn a_failure_mid_change_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let roles_before = store.directory().roles.len();
        store.inject_failure_after(2);
        let ops = vec![
            Op::Put(
                Entity::Policy(Policy::new(
                    "p1",
                    vec![statement(
                        Effect::Allow,
                        &[Permission::DataView],
                        &[],
                        &["*"],
                    )],
                )),
                Expect::New,
            ),
            Op::Put(Entity::User(user("bob", &["p1"])), Expect::New),
            Op::Put(
                Entity::Group(Group::new("crew", &["bob"], &[])),
                Expect::New,
            ),
        ];
        let err = store
            .apply(ops.clone(), "local:test", NOW, &[])
            .unwrap_err();
        assert_eq!(err, StoreError::Injected(2));
        let d = store.directory();
        assert!(d.users.is_empty() && d.policies.is_empty() && d.groups.is_empty());
        assert_eq!(d.roles.len(), roles_before);
        // The same change without the fault goes through whole.
        store.apply(ops, "local:test", NOW, &[]).unwrap();
        store.inject_failure_after(0);
        let err = store
            .apply(
                vec![Op::Put(Entity::User(user("carol", &[])), Expect::New)],
                "local:test",
                NOW,
                &[],
            )
            .unwrap_err();
        assert_eq!(err, StoreError::Injected(0));
    }
    // On disk, after reopening: the whole second change, nothing of the others.
    let store = Store::open(dir.path()).unwrap();
    let d = store.directory();
    assert!(
        d.users.contains_key("bob")
            && d.groups.contains_key("crew")
            && d.policies.contains_key("p1")
    );
    assert!(!d.users.contains_key("carol"));
}

#[test]
fn references_must_resolve_and_managed_policies_stay_put() {
    let f = Fixture::new();
    let local = local();
    for (ops, needle) in [
        (
            vec![Op::Put(Entity::User(user("a", &["nope"])), Expect::New)],
            "policy `nope`, which does not exist",
        ),
        (
            vec![Op::Put(
                Entity::User(user_with_role("a", "Wizard", "*")),
                Expect::New,
            )],
            "role `Wizard`, which does not exist",
        ),
        (
            vec![Op::Put(
                Entity::Group(Group::new("g", &["ghost"], &[])),
                Expect::New,
            )],
            "user `ghost`, who does not exist",
        ),
        (
            vec![Op::Put(
                Entity::Policy(Policy::new(ADMINISTRATOR, vec![])),
                Expect::New,
            )],
            "managed policy",
        ),
    ] {
        let err = f.guard.change(ops, &local, NOW).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    // A role still in use cannot be deleted out from under its holders.
    f.add(vec![Entity::User(user_with_role("olga", "Operator", "*"))]);
    let v = f.guard.store().directory().roles["Operator"].version;
    let err = f
        .guard
        .change(
            vec![Op::Delete(Kind::Role, "Operator".into(), v)],
            &local,
            NOW,
        )
        .unwrap_err();
    assert!(err.to_string().contains("role `Operator`"), "{err}");
}

#[test]
fn example_roles_are_seeded_into_a_new_store() {
    let f = Fixture::new();
    let roles = &f.guard.store().directory().roles;
    for r in [
        "Viewer",
        "Operator",
        "Engineer",
        "Installer",
        "SecAdmin",
        "SecAuditor",
    ] {
        assert!(roles.contains_key(r), "{r}");
    }
    assert!(
        roles["Installer"]
            .permissions
            .contains(Permission::MasterReset)
    );
    assert!(
        !roles["Engineer"]
            .permissions
            .contains(Permission::MasterReset)
    );
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

#[test]
fn secrets_never_appear_in_the_sled_files_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let password = secrets::generate_password().unwrap();
    let key_secret = secrets::generate_key_secret().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut u = user("alice", &[READ_ONLY]);
        u.password = Some(PasswordRecord {
            hash: secrets::hash_now(&password).unwrap(),
            temporary: true,
            issued_at: micros(NOW),
        });
        let mut s = ServiceUser::new("scada-1");
        s.keys.push(AccessKey {
            id: secrets::generate_key_id().unwrap(),
            secret_hash: secrets::hash_now(&key_secret).unwrap(),
            status: Status::Active,
            created: micros(NOW),
            last_used: None,
        });
        store
            .apply(
                vec![
                    Op::Put(Entity::User(u), Expect::New),
                    Op::Put(Entity::ServiceUser(s), Expect::New),
                ],
                "local:t",
                NOW,
                &[],
            )
            .unwrap();
        store.flush().unwrap();
    }
    let bytes = all_bytes(dir.path());
    assert!(bytes.len() > 1000, "the store wrote something");
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(find(b"$argon2id$"), "the hashes are there");
    assert!(
        !find(password.expose().as_bytes()),
        "temporary password found in clear"
    );
    assert!(
        !find(key_secret.expose().as_bytes()),
        "access key secret found in clear"
    );
    // And the hashes check out after a reopen.
    let store = Store::open(dir.path()).unwrap();
    let d = store.directory();
    assert!(secrets::verify_now(
        &password,
        &d.users["alice"].password.as_ref().unwrap().hash
    ));
    assert!(secrets::verify_now(
        &key_secret,
        &d.service_users["scada-1"].keys[0].secret_hash
    ));
}

#[test]
fn the_state_dir_is_private_and_the_signing_key_is_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _store = Store::open(&state).unwrap();
    let key = metergate::store::signing::load_or_create(&state).unwrap();
    let again = metergate::store::signing::load_or_create(&state).unwrap();
    assert_eq!(
        metergate::store::signing::public_hex(&key),
        metergate::store::signing::public_hex(&again)
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(
        mode(&state.join(metergate::store::signing::SIGNING_KEY_FILE)),
        0o600
    );
}

#[test]
fn a_second_process_cannot_open_a_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metergate"))
        .args(["audit", "verify", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

/// The last administrator holds only through a group: every change that
/// would take it away is refused, whichever entity it touches; with a
/// second administrator the same changes pass.
#[test]
fn the_last_administrator_through_a_group_stays_one() {
    type Edit = fn(&Directory) -> Op;
    let table: Vec<(&str, Edit)> = vec![
        ("the group detaches Administrator", |d| {
            let mut g = d.groups["admins"].clone();
            g.policies.clear();
            Op::Put(Entity::Group(g.clone()), Expect::Version(g.version))
        }),
        ("the member leaves", |d| {
            let mut g = d.groups["admins"].clone();
            g.members.clear();
            Op::Put(Entity::Group(g.clone()), Expect::Version(g.version))
        }),
        ("the group is deleted", |d| {
            Op::Delete(Kind::Group, "admins".into(), d.groups["admins"].version)
        }),
        ("the member is deactivated", |d| {
            let mut u = d.users["ada"].clone();
            u.status = Status::Inactive;
            Op::Put(Entity::User(u.clone()), Expect::Version(u.version))
        }),
    ];
    for second_admin in [false, true] {
        for (what, edit) in &table {
            let f = Fixture::new();
            let mut entities = vec![
                Entity::User(user("ada", &[])),
                Entity::Group(Group::new("admins", &["ada"], &[ADMINISTRATOR])),
            ];
            if second_admin {
                entities.push(Entity::ServiceUser({
                    let mut s = ServiceUser::new("ops");
                    s.policies = vec![ADMINISTRATOR.into()];
                    s
                }));
            }
            f.add(entities);
            let op = edit(&f.guard.store().directory());
            let r = f.guard.change(vec![op], &local(), NOW);
            if second_admin {
                assert!(r.is_ok(), "{what}, with another administrator: {r:?}");
            } else {
                assert!(
                    matches!(r, Err(StoreError::LastAdministrator)),
                    "{what}: {r:?}"
                );
            }
        }
    }
}
