//! The guard's second-factor rule as a table: (who, what, where, with a
//! factor or not, `[mfa] required`) → expected decision. Statements that
//! say `require_mfa = true` and the gateway's setting both ask it of
//! people; machines (service users) and `local:` callers are never asked.

mod common;

use common::*;
use metergate::config::MfaRequired;
use metergate::guard::{Action, AdminOp, Reason};
use metergate::model::*;
use metergate::store::Entity;

fn cast(mode: MfaRequired) -> Fixture {
    let f = Fixture::with_config(|c| c.mfa.required = mode);
    let mut reset = statement(Effect::Allow, &[Permission::MasterReset], &[], &["meter-1"]);
    reset.require_mfa = true;
    let resetters = Policy::new(
        "resetters",
        vec![
            statement(Effect::Allow, &[Permission::DataView], &[], &["*"]),
            reset,
        ],
    );
    // A second allow of the same permission without the requirement: the
    // one that needs nothing decides.
    let plain = Policy::new(
        "plain-reset",
        vec![statement(
            Effect::Allow,
            &[Permission::MasterReset],
            &[],
            &["meter-1"],
        )],
    );
    let mut svc = ServiceUser::new("scada");
    svc.policies = vec!["resetters".into()];
    f.add(vec![
        Entity::Policy(resetters),
        Entity::Policy(plain),
        Entity::User(user("rita", &["resetters"])),
        Entity::User(user("paul", &["resetters", "plain-reset"])),
        Entity::User(user("alice", &[ADMINISTRATOR])),
        Entity::ServiceUser(svc),
    ]);
    f
}

fn master_reset() -> Action {
    write("meter-1", 6, 5000, &[1115])
}

#[test]
fn who_needs_a_second_factor_for_what() {
    use MfaRequired::*;
    let terminal = || Action::Terminal {
        meter: "meter-1".into(),
    };
    let change = || Action::Admin {
        op: AdminOp::Change,
        target: "user add x".into(),
    };
    let svc = PrincipalId::Service("scada".into());
    let local = PrincipalId::Local("root".into());
    // (setting, who, action, session has a factor) -> (allowed, reason shows)
    let table: Vec<(MfaRequired, PrincipalId, Action, bool, bool, &str)> = vec![
        (
            Never,
            uid("rita"),
            master_reset(),
            false,
            false,
            "needs a second factor: policy `resetters` statement 2",
        ),
        (
            Never,
            uid("rita"),
            master_reset(),
            true,
            true,
            "allowed by policy `resetters` statement 2",
        ),
        (
            Never,
            uid("rita"),
            read("meter-1", 3000, 2),
            false,
            true,
            "allowed",
        ),
        (
            Never,
            uid("paul"),
            master_reset(),
            false,
            true,
            "allowed by policy `plain-reset`",
        ),
        (
            Never,
            svc.clone(),
            master_reset(),
            false,
            true,
            "allowed by policy `resetters` statement 2",
        ),
        (
            Never,
            uid("alice"),
            terminal(),
            false,
            true,
            "Administrator",
        ),
        (
            ForPrivileged,
            uid("alice"),
            terminal(),
            false,
            false,
            "the gateway's [mfa] setting requires one",
        ),
        (
            ForPrivileged,
            uid("alice"),
            terminal(),
            true,
            true,
            "Administrator",
        ),
        (
            ForPrivileged,
            uid("alice"),
            change(),
            false,
            false,
            "needs a second factor",
        ),
        (
            ForPrivileged,
            uid("alice"),
            read("meter-1", 3000, 2),
            false,
            true,
            "Administrator",
        ),
        (
            ForPrivileged,
            local.clone(),
            change(),
            false,
            true,
            "Administrator",
        ),
        (
            ForPrivileged,
            uid("paul"),
            master_reset(),
            false,
            false,
            "[mfa] setting",
        ),
        (
            Always,
            uid("rita"),
            read("meter-1", 3000, 2),
            false,
            false,
            "needs a second factor",
        ),
        (
            Always,
            uid("rita"),
            read("meter-1", 3000, 2),
            true,
            true,
            "allowed",
        ),
        (
            Always,
            svc.clone(),
            read("meter-1", 3000, 2),
            false,
            true,
            "allowed",
        ),
        // Being let in needs no factor: a person may log in to enrol one.
        (
            Always,
            uid("rita"),
            Action::Login,
            false,
            true,
            "principal is active",
        ),
        // What nobody allows stays denied for its own reason.
        (
            Always,
            uid("rita"),
            terminal(),
            true,
            false,
            "no statement allows",
        ),
        (
            Always,
            uid("rita"),
            terminal(),
            false,
            false,
            "no statement allows",
        ),
    ];
    for (mode, who, action, factor, allowed, shows) in table {
        let f = cast(mode);
        let mut r = req(&who, action.clone());
        r.second_factor = factor;
        let d = f.guard.decide(&r, NOW);
        assert_eq!(
            d.allowed, allowed,
            "{mode:?} {who} {action} factor={factor}: {d}"
        );
        assert!(
            d.to_string().contains(shows),
            "{mode:?} {who} {action} factor={factor}: {d}"
        );
        if !allowed && shows.contains("second factor") {
            assert!(matches!(d.reason, Reason::NeedsSecondFactor { .. }), "{d}");
        }
    }
}

#[test]
fn a_statement_that_requires_a_factor_must_allow() {
    let text = "name = \"x\"\n[[statement]]\neffect = \"deny\"\npermissions = [\"Master Reset\"]\nmeters = [\"*\"]\nrequire_mfa = true\n";
    let e = PolicyDocument::parse("x.toml", text).unwrap_err();
    assert!(
        e.to_string()
            .contains("`require_mfa` is for allow statements"),
        "{e}"
    );
}

#[test]
fn no_one_confers_what_they_hold_only_with_a_factor_they_did_not_give() {
    use metergate::guard::Conferral;
    let f = cast(MfaRequired::Never);
    let grant = [statement(
        Effect::Allow,
        &[Permission::MasterReset],
        &[],
        &["meter-1"],
    )];
    // (who, session has a factor) -> may confer Master Reset on meter-1?
    for (who, factor, allowed) in [
        ("rita", false, false),
        ("rita", true, true),
        ("paul", false, true),
    ] {
        let d = f
            .guard
            .decide_conferral(&uid(who), &Conferral::Statements(&grant), factor, NOW);
        assert_eq!(d.allowed, allowed, "{who} factor={factor}: {d}");
    }
}
