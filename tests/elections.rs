//! Elections with a pre-vote (src/raft/prevote.rs), built with `--features failpoints`: a
//! follower that stops hearing from its leader for several election timeouts, while the leader
//! is healthy, asks for pre-votes, is refused, and so never raises its term; when it hears from
//! the leader again, the leader stays leader in the same term. Without the pre-vote the follower
//! would stand for election every timeout, and its higher term would depose the leader on the
//! first reply it sent after the fault cleared.
#![cfg(feature = "failpoints")]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn term(n: &Node) -> u64 {
    n.status()["store"]["raft"]["term"].as_u64().expect("term")
}

#[test]
fn a_follower_that_loses_its_leader_for_a_while_does_not_depose_it_when_it_hears_again() {
    let c = Cluster::start(3, &[]);
    let l = c.wait_leader();
    assert_eq!(l.execute(json!(["CREATE TABLE t (v)"])).status, 200);
    let (leader, t0) = (l.id.clone(), term(l));
    let f = c.follower();
    assert_eq!(term(f), t0);

    // The follower hears nothing over the Raft port (every request to it gets 503) until it has
    // been refused twice, and 2 s more; its own calls still go out, so it asks for pre-votes.
    f.failpoint("internode::receive=return");
    let lost = |n: &Node| n.metric_with("raftlite_raft_prevotes_total", &[("result", "lost")]);
    wait_for("the follower to be refused twice, or to stand", Duration::from_secs(30), || {
        (lost(f) >= 2.0 || term(f) > t0).then_some(())
    });
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        // The healthy majority goes on taking writes meanwhile.
        assert_eq!(l.execute(json!(["INSERT INTO t VALUES (1)"])).status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(term(f), t0, "the cut-off follower raised its term");
    f.failpoint("internode::receive=off");

    // It catches up under the same leader and term; nobody stood for election.
    let want = l.rows("SELECT count(*) FROM t");
    f.wait_rows("SELECT count(*) FROM t", want);
    for n in &c.nodes {
        assert_eq!(n.leader_id(), leader, "node {}", n.id);
        assert_eq!(term(n), t0, "node {}", n.id);
    }
    assert_eq!(l.metric_with("raftlite_raft_prevotes_total", &[("result", "won")]), 0.0);
    assert_eq!(l.execute(json!(["INSERT INTO t VALUES (2)"])).status, 200);
}

#[test]
fn when_the_leader_dies_a_survivor_wins_the_pre_vote_and_the_election() {
    let mut c = Cluster::start(3, &[]);
    let l = c.wait_leader().id.clone();
    let t0 = term(c.node(&l));
    c.node_mut(&l).kill();
    let survivors: Vec<&Node> = c.nodes.iter().filter(|n| n.id != l).collect();
    let new = wait_for("a new leader", Duration::from_secs(30), || {
        let id = survivors[0].leader_id();
        (!id.is_empty() && id != l && survivors.iter().all(|n| n.leader_id() == id)).then_some(id)
    });
    let winner = c.node(&new);
    assert!(winner.metric_with("raftlite_raft_prevotes_total", &[("result", "won")]) >= 1.0);
    assert!(term(winner) > t0);
    assert_eq!(winner.execute(json!(["CREATE TABLE after (v)"])).status, 200);
}
