//! Deciding how a shard's Raft group moves towards its placement.
//!
//! Pure: given the group's current voters and learners and the replicas the
//! ring wants, say the one next step. The shard leader's reconciler carries
//! the step out and asks again, so every change is small and safe:
//! new replicas join as learners and catch up before they vote, and a voter
//! leaves only in the same membership change that makes its replacements
//! voters (never dropping below the replicas it keeps).
//!
//! A draining node simply is not in `desired` (the ring is built from
//! active nodes only), so it leaves each group like any moved replica:
//! its replacement catches up as a learner first, and it loses its vote in
//! the same change that gives the replacement one.

use std::collections::BTreeSet;

use crate::ring::NodeId;

/// The next thing to do to a shard group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Membership already matches the placement.
    Done,
    /// Add this node as a learner and wait until it has caught up.
    AddLearner(NodeId),
    /// Make exactly these nodes the voters (joint consensus in openraft).
    SetVoters(BTreeSet<NodeId>),
    /// Add this node as a learner that only follows (no waiting for it to
    /// catch up: it never gets a vote from this).
    Follow(NodeId),
    /// Drop these learners that the placement no longer wants.
    RemoveLearners(BTreeSet<NodeId>),
}

/// The next step from (`voters`, `learners`) towards `desired` voters.
/// `alive` are the nodes currently in the membership directory; a desired
/// node that is not alive is skipped until it is. Nodes in `keep` that do
/// not vote are (made, and stay) learners: the metadata group keeps every
/// directory member as one, so that each node, draining ones included,
/// follows the directory. Any other learner the placement does not want is
/// removed.
pub fn next_step(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    desired: &[NodeId],
    alive: &BTreeSet<NodeId>,
    keep: &BTreeSet<NodeId>,
) -> Step {
    let desired: BTreeSet<NodeId> = desired
        .iter()
        .copied()
        .filter(|n| alive.contains(n))
        .collect();
    if desired.is_empty() {
        return Step::Done;
    }
    // Catch up every wanted node before it gets a vote.
    if let Some(n) = desired
        .iter()
        .find(|n| !voters.contains(n) && !learners.contains(n))
    {
        return Step::AddLearner(*n);
    }
    if *voters != desired {
        return Step::SetVoters(desired);
    }
    if let Some(n) = keep
        .iter()
        .find(|n| alive.contains(n) && !voters.contains(n) && !learners.contains(n))
    {
        return Step::Follow(*n);
    }
    let stale: BTreeSet<NodeId> = learners
        .iter()
        .filter(|l| !desired.contains(l) && !keep.contains(l))
        .copied()
        .collect();
    if !stale.is_empty() {
        return Step::RemoveLearners(stale);
    }
    Step::Done
}

/// Whether a leader that is draining (`me`) should hold `step` back until
/// another voter has taken its leadership: a change that votes the leader
/// itself out makes it step down with no successor chosen, and the group
/// has no leader until an election timeout or longer. Held, an active
/// voter takes the leadership over (the control loop's take-over), and its
/// own next step removes this node as a follower, costing no request.
pub fn waits_for_successor(step: &Step, me: NodeId) -> bool {
    matches!(step, Step::SetVoters(voters) if !voters.contains(&me))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn growing_from_one_voter_adds_learners_then_voters() {
        let alive = set(&[1, 2, 3]);
        let desired = [2, 1, 3];
        assert_eq!(
            next_step(&set(&[1]), &set(&[]), &desired, &alive, &set(&[])),
            Step::AddLearner(2)
        );
        assert_eq!(
            next_step(&set(&[1]), &set(&[2]), &desired, &alive, &set(&[])),
            Step::AddLearner(3)
        );
        assert_eq!(
            next_step(&set(&[1]), &set(&[2, 3]), &desired, &alive, &set(&[])),
            Step::SetVoters(set(&[1, 2, 3]))
        );
        assert_eq!(
            next_step(&set(&[1, 2, 3]), &set(&[]), &desired, &alive, &set(&[])),
            Step::Done
        );
    }

    #[test]
    fn moving_a_replica_replaces_it_in_one_change() {
        let alive = set(&[1, 2, 3, 4]);
        let desired = [1, 2, 4];
        assert_eq!(
            next_step(&set(&[1, 2, 3]), &set(&[]), &desired, &alive, &set(&[])),
            Step::AddLearner(4)
        );
        assert_eq!(
            next_step(&set(&[1, 2, 3]), &set(&[4]), &desired, &alive, &set(&[])),
            Step::SetVoters(set(&[1, 2, 4]))
        );
    }

    #[test]
    fn dead_nodes_are_not_added_and_stale_learners_go() {
        let alive = set(&[1, 2]);
        assert_eq!(
            next_step(&set(&[1, 2]), &set(&[]), &[1, 2, 3], &alive, &set(&[])),
            Step::Done
        );
        assert_eq!(
            next_step(&set(&[1, 2]), &set(&[5]), &[1, 2], &alive, &set(&[])),
            Step::RemoveLearners(set(&[5]))
        );
        assert_eq!(
            next_step(&set(&[1]), &set(&[]), &[], &alive, &set(&[])),
            Step::Done
        );
    }

    #[test]
    fn draining_voter_is_replaced_before_it_loses_its_vote() {
        // Node 3 drains: the ring (active nodes 1, 2, 4) no longer wants it.
        let alive = set(&[1, 2, 3, 4]);
        let desired = [2, 4, 1];
        let voters = set(&[1, 2, 3]);
        assert_eq!(
            next_step(&voters, &set(&[]), &desired, &alive, &set(&[])),
            Step::AddLearner(4)
        );
        // The replacement votes in the same change that drops node 3.
        assert_eq!(
            next_step(&voters, &set(&[4]), &desired, &alive, &set(&[])),
            Step::SetVoters(set(&[1, 2, 4]))
        );
    }

    #[test]
    fn kept_nodes_missing_from_the_group_follow_it() {
        // Node 4 was admitted (or dropped by a race with its admission).
        let alive = set(&[1, 2, 3, 4]);
        assert_eq!(
            next_step(&set(&[1, 2, 3]), &set(&[]), &[1, 2, 3], &alive, &alive),
            Step::Follow(4)
        );
    }

    #[test]
    fn kept_learners_stay() {
        // The metadata group: voters 1, 2, 3; node 4 follows as a learner.
        let alive = set(&[1, 2, 3, 4]);
        assert_eq!(
            next_step(&set(&[1, 2, 3]), &set(&[4]), &[1, 2, 3], &alive, &alive),
            Step::Done
        );
        // Once node 4 is forgotten, it goes.
        let alive = set(&[1, 2, 3]);
        assert_eq!(
            next_step(&set(&[1, 2, 3]), &set(&[4]), &[1, 2, 3], &alive, &alive),
            Step::RemoveLearners(set(&[4]))
        );
    }

    #[test]
    fn a_draining_leader_holds_only_the_change_that_votes_it_out() {
        let me = 2;
        let without_me: BTreeSet<NodeId> = [1, 3, 4].into();
        let with_me: BTreeSet<NodeId> = [1, 2, 3].into();
        assert!(waits_for_successor(&Step::SetVoters(without_me), me));
        assert!(!waits_for_successor(&Step::SetVoters(with_me), me));
        assert!(!waits_for_successor(&Step::AddLearner(4), me));
        assert!(!waits_for_successor(&Step::Follow(4), me));
        assert!(!waits_for_successor(&Step::RemoveLearners([4].into()), me));
        assert!(!waits_for_successor(&Step::Done, me));
    }
}
