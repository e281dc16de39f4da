//! Unit tests of the agent side's guard: budgets, attribution, strikes and cut-offs.

use super::*;
use crate::agent::conduct::Violation;

fn limits() -> Limits {
    Limits {
        total: 10,
        unauthenticated: 6,
        unauthenticated_per_source: 2,
        per_agent: 2,
        accept_burst: 100,
        accepts_per_second: 100,
        hello_deadline: Duration::from_secs(10),
        strikes: 3,
        strike_window: Duration::from_secs(60),
        cooldown: Duration::from_secs(30),
    }
}

fn socket(id: &str) -> Source {
    Source::Socket(id.to_string())
}

#[test]
fn unauthenticated_connections_are_capped_per_source_and_in_all() {
    let guard = AgentGuard::new(limits());
    let a1 = guard.admit(socket("a")).unwrap();
    let _a2 = guard.admit(socket("a")).unwrap();
    assert_eq!(guard.admit(socket("a")).unwrap_err(), Refused::PerSource(2));
    let _b = [
        guard.admit(socket("b")).unwrap(),
        guard.admit(socket("b")).unwrap(),
    ];
    let _c = [
        guard.admit(socket("c")).unwrap(),
        guard.admit(socket("c")).unwrap(),
    ];
    assert_eq!(
        guard.admit(Source::Shared).unwrap_err(),
        Refused::Unauthenticated(6)
    );
    drop(a1);
    assert_eq!(guard.open(), (5, 5));
    let _a3 = guard.admit(socket("a")).unwrap();
}

#[test]
fn an_authenticated_connection_leaves_the_unauthenticated_budget() {
    let guard = AgentGuard::new(limits());
    let a1 = guard.admit(socket("a")).unwrap();
    let a2 = guard.admit(socket("a")).unwrap();
    a1.state().authenticate("a").unwrap();
    assert!(a1.state().is_authenticated());
    assert_eq!(guard.open(), (2, 1));
    // Room for another unauthenticated one, but an agent holds at most two authenticated.
    let a3 = guard.admit(socket("a")).unwrap();
    a2.state().authenticate("a").unwrap();
    assert_eq!(
        a3.state().authenticate("a").unwrap_err(),
        Refused::PerAgent(2)
    );
    drop((a1, a2, a3));
    assert_eq!(guard.open(), (0, 0));
}

#[test]
fn credentials_must_belong_to_the_socket_they_come_on() {
    let guard = AgentGuard::new(limits());
    let conn = guard.admit(socket("a")).unwrap();
    assert_eq!(
        conn.state().authenticate("b").unwrap_err(),
        Refused::WrongSocket
    );
    let tcp = guard.admit(Source::Address([10, 0, 0, 2].into())).unwrap();
    tcp.state().authenticate("b").unwrap();
    assert_eq!(
        tcp.state().authenticate("c").unwrap_err(),
        Refused::WrongSocket
    );
}

#[test]
fn repeated_violations_cut_a_source_off_and_close_its_connections() {
    let guard = AgentGuard::new(limits());
    let held = guard.admit(socket("a")).unwrap();
    held.state().authenticate("a").unwrap();
    let other = guard.admit(socket("b")).unwrap();
    assert!(!held.state().strike(Violation::ForeignTask));
    assert!(!held.state().strike(Violation::ForeignTask));
    assert!(held.state().strike(Violation::ForeignTask));
    assert!(held.state().is_closed(), "its connection is closed");
    assert!(guard.is_cut_off("a"));
    assert!(matches!(
        guard.admit(socket("a")).unwrap_err(),
        Refused::CutOff(_)
    ));
    // Another agent is untouched.
    assert!(!other.state().is_closed());
    guard.admit(socket("b")).unwrap();
}

#[test]
fn a_flood_is_cut_off_by_its_own_refusals() {
    let guard = AgentGuard::new(Limits {
        accept_burst: 3,
        accepts_per_second: 1,
        ..limits()
    });
    let source = Source::Address([10, 0, 0, 9].into());
    let held: Vec<_> = (0..2)
        .map(|_| guard.admit(source.clone()).unwrap())
        .collect();
    // Past the per-source cap, then past the rate: each refusal is a strike.
    let refusals: Vec<_> = (0..4)
        .map(|_| guard.admit(source.clone()).unwrap_err())
        .collect();
    assert_eq!(refusals[0], Refused::PerSource(2));
    assert!(
        matches!(refusals.last(), Some(Refused::CutOff(_))),
        "{refusals:?}"
    );
    assert!(held.iter().all(|c| c.state().is_closed()));
    // Another address is not affected.
    guard.admit(Source::Address([10, 0, 0, 10].into())).unwrap();
}

#[test]
fn shared_addresses_have_no_per_source_limits() {
    let guard = AgentGuard::new(limits());
    let held: Vec<_> = (0..6)
        .map(|_| guard.admit(Source::Shared).unwrap())
        .collect();
    assert_eq!(guard.open(), (6, 6));
    // And nothing to strike: a violation cannot cut off everyone behind the address.
    assert!(!held[0].state().strike(Violation::BadHello));
}
