use super::*;

fn info(id: NodeId, draining: bool) -> pb::NodeInfo {
    pb::NodeInfo {
        id,
        addr: format!("10.0.0.{id}:8789"),
        draining,
    }
}

/// Node `me`'s report of shard 0 (and the metadata group, led by 1).
fn report(me: NodeId, shard0: pb::ReplicaStatus) -> pb::NodeStatus {
    let meta = pb::ReplicaStatus {
        shard: None,
        role: if me == 1 { "leader" } else { "follower" }.into(),
        leader: Some(1),
        term: 2,
        last_log_index: 10,
        commit_index: 10,
        apply_index: 10,
        voters: vec![1, 2, 3],
        learners: vec![],
        quorum_acked: me == 1,
        members: if me == 1 {
            vec![
                pb::MemberProgress {
                    node: 2,
                    matched_index: Some(10),
                },
                pb::MemberProgress {
                    node: 3,
                    matched_index: Some(10),
                },
            ]
        } else {
            vec![]
        },
    };
    pb::NodeStatus {
        id: me,
        addr: format!("10.0.0.{me}:8789"),
        version: "0.1.0".into(),
        shards: 1,
        replication: 3,
        nodes: vec![info(1, false), info(2, false), info(3, false)],
        replicas: vec![meta, shard0],
        format_version: 1,
    }
}

fn replica(role: &str, term: u64, acked: bool, members: &[(NodeId, u64)]) -> pb::ReplicaStatus {
    pb::ReplicaStatus {
        shard: Some(0),
        role: role.into(),
        leader: Some(2),
        term,
        last_log_index: 500,
        commit_index: 500,
        apply_index: 499,
        voters: vec![1, 2, 3],
        learners: vec![],
        quorum_acked: acked,
        members: members
            .iter()
            .map(|(node, m)| pb::MemberProgress {
                node: *node,
                matched_index: Some(*m),
            })
            .collect(),
    }
}

fn healthy() -> Vec<(pb::NodeInfo, Result<pb::NodeStatus, String>)> {
    vec![
        (
            info(1, false),
            Ok(report(1, replica("follower", 3, false, &[]))),
        ),
        (
            info(2, false),
            Ok(report(2, replica("leader", 3, true, &[(1, 500), (3, 450)]))),
        ),
        (
            info(3, false),
            Ok(report(3, replica("follower", 3, false, &[]))),
        ),
    ]
}

#[test]
fn a_healthy_cluster_has_no_warnings() {
    let answers = healthy();
    let first = answers[0].1.clone().expect("report");
    let s = summarize(&first, answers);
    assert_eq!(s.warnings, Vec::<String>::new());
    assert_eq!(s.metadata.leader, Some(1));
    assert_eq!(s.groups.len(), 1);
    let g = &s.groups[0];
    assert_eq!(
        (g.leader, g.term, g.commit_index, g.apply_index),
        (Some(2), 3, 500, 499)
    );
    assert_eq!(g.lag, 50);
    assert_eq!(
        g.replicas.iter().map(|r| r.lag).collect::<Vec<_>>(),
        vec![Some(0), Some(0), Some(50)]
    );
    assert_eq!(
        s.nodes.iter().map(|n| n.leads).collect::<Vec<_>>(),
        vec![0, 1, 0]
    );
    let table = s.table();
    assert!(table.contains("no warnings"), "{table}");
    let json = serde_json::to_value(&s).expect("serializes");
    assert_eq!(json["groups"][0]["leader"], 2);
}

#[test]
fn a_shard_without_a_quorum_is_a_warning() {
    // Node 2 is cut off: Raft still says leader, no quorum acknowledges it;
    // node 3 does not answer.
    let mut answers = healthy();
    answers[1].1 = Ok(report(
        2,
        replica("leader", 3, false, &[(1, 500), (3, 500)]),
    ));
    answers[2].1 = Err("no answer".into());
    let first = answers[0].1.clone().expect("report");
    let s = summarize(&first, answers);
    let w = s.warnings.join("\n");
    assert!(w.contains("node 3 (10.0.0.3:8789) does not answer"), "{w}");
    assert!(
        w.contains("node 2 leads shard 0 in term 3 without a quorum"),
        "{w}"
    );
    assert!(
        w.contains("shard 0 has no leader backed by a quorum"),
        "{w}"
    );
    assert_eq!(s.groups[0].leader, None);
    assert!(!s.nodes[2].reachable);
    assert!(s.table().contains("WARNINGS"));
}

#[test]
fn a_node_behind_and_a_draining_node_are_shown() {
    let mut answers = healthy();
    answers[1].1 = Ok(report(2, replica("leader", 3, true, &[(1, 500), (3, 100)])));
    answers[2].0 = info(3, true);
    let first = answers[0].1.clone().expect("report");
    let s = summarize(&first, answers);
    assert_eq!(s.draining, vec![3]);
    assert!(
        s.warnings
            .iter()
            .any(|w| w == "node 3 is 400 entries behind on shard 0"),
        "{:?}",
        s.warnings
    );
    assert!(s.table().contains("draining: 3"));
}

#[test]
fn mismatched_settings_and_versions_are_warnings() {
    let mut answers = healthy();
    if let Ok(r) = &mut answers[2].1 {
        r.replication = 5;
        r.version = "0.2.0".into();
    }
    let first = answers[0].1.clone().expect("report");
    let w = summarize(&first, answers).warnings.join("\n");
    assert!(
        w.contains("node 3 runs with 1 shards and replication 5"),
        "{w}"
    );
    assert!(w.contains("different versions: 0.1.0, 0.2.0"), "{w}");
}
