//! Node-level liveness: every node pings each of its peers every heartbeat
//! period, one call per peer pair whatever the number of shards, and the
//! answer names the shards the peer leads and has quiesced. That stands in
//! for the heartbeats of every quiesced shard (`quiet.rs`): a follower runs
//! its election timer again as soon as its leader's node stops answering.
//!
//! [`Liveness`] keeps what the pings said; [`probe`] is the task that sends
//! them and sets each follower's openraft timer ([`quiet::follower_ticks`]).
//! The leader side of each shard reads the same state in `pulse.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{BasicNode, ServerState};
use tokio_util::sync::CancellationToken;

use super::network::Transport;
use super::quiet::{self, PeerState};
use super::shard::ShardHandle;
use super::types::NodeId;
use crate::id::ShardId;

/// A peer's answer to a ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pong {
    /// The shards it leads and has quiesced, as a bitmap ([`has`]).
    Quiesced(Vec<u8>),
    /// It answered, but does not know pings (an older build): alive, and
    /// never quiesced.
    Unsupported,
}

/// Whether `bits` has `shard`: bit `s % 8` of byte `s / 8` for shard `s`.
pub fn has(bits: &[u8], shard: ShardId) -> bool {
    bits.get(usize::from(shard / 8))
        .is_some_and(|b| b & (1 << (shard % 8)) != 0)
}

/// The shards this node announces quiesced, kept as each changes (a ping's
/// answer copies it instead of looking at every shard).
#[derive(Debug)]
pub struct Announced {
    words: Vec<AtomicU64>,
}

impl Announced {
    /// For shards `0..shards`.
    pub fn new(shards: u16) -> Announced {
        Announced {
            words: (0..usize::from(shards).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    pub fn set(&self, shard: ShardId, announced: bool) {
        if let Some(word) = self.words.get(usize::from(shard / 64)) {
            let bit = 1u64 << (shard % 64);
            if announced {
                word.fetch_or(bit, Ordering::AcqRel);
            } else {
                word.fetch_and(!bit, Ordering::AcqRel);
            }
        }
    }

    /// As bytes, in the layout [`has`] reads.
    pub fn bitmap(&self) -> Vec<u8> {
        self.words
            .iter()
            .flat_map(|w| w.load(Ordering::Acquire).to_le_bytes())
            .collect()
    }
}

/// A peer as this node's pings see it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// Not answered yet, and not for long enough to suspect it.
    Unknown,
    /// Its last answer, within the suspicion window.
    Alive(Pong),
    Suspect,
}

#[derive(Debug)]
struct View {
    /// The last answer, and when.
    answered: Option<(Instant, Pong)>,
    /// When this node first tried the peer.
    since: Instant,
}

/// What this node knows of its peers' liveness, and when they last pinged it.
pub struct Liveness {
    suspect_after: Duration,
    views: Mutex<HashMap<NodeId, View>>,
    heard: Mutex<HashMap<NodeId, Instant>>,
}

impl Liveness {
    /// A peer that has not answered for `suspect_after` is suspected.
    pub fn new(suspect_after: Duration) -> Liveness {
        Liveness {
            suspect_after,
            views: Mutex::default(),
            heard: Mutex::default(),
        }
    }

    fn views(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, View>> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn heard(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Instant>> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome of one ping of `peer` sent at `now`.
    pub fn record(&self, peer: NodeId, pong: Option<Pong>, now: Instant) {
        let mut views = self.views();
        let view = views.entry(peer).or_insert(View {
            answered: None,
            since: now,
        });
        if let Some(pong) = pong {
            view.answered = Some((now, pong));
        }
    }

    /// What this node's pings say of `view`'s peer at `now`.
    fn seen(&self, view: &View, now: Instant) -> Seen {
        match &view.answered {
            Some((at, pong)) if now.saturating_duration_since(*at) < self.suspect_after => {
                Seen::Alive(pong.clone())
            }
            Some(_) => Seen::Suspect,
            None if now.saturating_duration_since(view.since) < self.suspect_after => Seen::Unknown,
            None => Seen::Suspect,
        }
    }

    /// `peer` as seen at `now`, for `shard`.
    pub(crate) fn state(&self, peer: NodeId, shard: ShardId, now: Instant) -> PeerState {
        let views = self.views();
        let Some(view) = views.get(&peer) else {
            return PeerState::Unknown;
        };
        match self.seen(view, now) {
            Seen::Alive(pong) => PeerState::Alive {
                quiesced: matches!(pong, Pong::Quiesced(bits) if has(&bits, shard)),
            },
            Seen::Unknown => PeerState::Unknown,
            Seen::Suspect => PeerState::Suspect,
        }
    }

    /// Every peer as seen at `now`, by id. Compared between rounds: the
    /// followers' timers are set again only when it changed.
    fn summary(&self, now: Instant) -> Vec<(NodeId, Seen)> {
        let views = self.views();
        let mut summary: Vec<(NodeId, Seen)> = views
            .iter()
            .map(|(id, view)| (*id, self.seen(view, now)))
            .collect();
        summary.sort_unstable_by_key(|(id, _)| *id);
        summary
    }

    /// Whether every one of `peers` answers pings in this protocol at `now`.
    pub fn ready(&self, peers: impl IntoIterator<Item = NodeId>, now: Instant) -> bool {
        let views = self.views();
        peers.into_iter().all(|p| {
            views
                .get(&p)
                .is_some_and(|v| matches!(self.seen(v, now), Seen::Alive(Pong::Quiesced(_))))
        })
    }

    /// `peer` pinged this node at `now`.
    pub fn pinged_by(&self, peer: NodeId, now: Instant) {
        self.heard().insert(peer, now);
    }

    /// Whether every one of `peers` pinged this node after `since`.
    pub fn heard_since(&self, peers: impl IntoIterator<Item = NodeId>, since: Instant) -> bool {
        let heard = self.heard();
        peers
            .into_iter()
            .all(|p| heard.get(&p).is_some_and(|at| *at > since))
    }
}

/// How many ping rounds go by between looks at every group's membership and
/// leader (peers and timers are otherwise updated on a change of answers).
const REFRESH: u64 = 10;

/// Pings every peer of `groups` and `others` every `every` until `stop`,
/// and after each round sets the election timer of each of `groups` (the
/// object shards, which may quiesce) that this node follows.
pub(crate) async fn probe<T: Transport>(
    me: NodeId,
    liveness: Arc<Liveness>,
    groups: Vec<ShardHandle>,
    others: Vec<ShardHandle>,
    transport: Arc<T>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    let mut peers = BTreeMap::new();
    for round in 0u64.. {
        // The timers, from what is known (at start: no leader heard from
        // yet, so followers wait for the first answers), again whenever a
        // peer's answers change, and every REFRESH rounds for leaderships
        // that moved meanwhile.
        let now = Instant::now();
        let summary = liveness.summary(now);
        if round % REFRESH == 0 || last.as_ref() != Some(&summary) {
            reconcile(me, &liveness, &groups, now);
            last = Some(summary);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if round % REFRESH == 0 {
            peers = peers_of(me, groups.iter().chain(&others));
        }
        let pings = peers.iter().map(|(id, node)| {
            let transport = transport.clone();
            async move {
                let sent = Instant::now();
                let pong = tokio::time::timeout(every, transport.ping(me, *id, node, every))
                    .await
                    .ok()
                    .and_then(Result::ok);
                (*id, pong, sent)
            }
        });
        let answers = tokio::select! {
            _ = stop.cancelled() => return,
            answers = futures_util::future::join_all(pings) => answers,
        };
        for (id, pong, sent) in answers {
            liveness.record(id, pong, sent);
        }
    }
}

/// Every node that is a member (voter or learner) of any of `groups`,
/// other than `me`.
fn peers_of<'a>(
    me: NodeId,
    groups: impl Iterator<Item = &'a ShardHandle>,
) -> BTreeMap<NodeId, BasicNode> {
    let mut peers = BTreeMap::new();
    for g in groups {
        let m = g.raft().server_metrics();
        let m = m.borrow();
        for (id, node) in m.membership_config.membership().nodes() {
            if *id != me {
                peers.entry(*id).or_insert_with(|| node.clone());
            }
        }
    }
    peers
}

/// Sets each followed group's election timer ([`quiet::follower_ticks`]).
/// A group this node leads is its pulse's to set.
fn reconcile(me: NodeId, liveness: &Liveness, groups: &[ShardHandle], now: Instant) {
    for g in groups {
        let (leading, alone, leader) = {
            let m = g.raft().server_metrics();
            let m = m.borrow();
            (
                m.state == ServerState::Leader,
                m.membership_config.membership().voter_ids().count() <= 1,
                m.current_leader,
            )
        };
        if leading {
            continue;
        }
        let ticks = quiet::follower_ticks(me, alone, leader, |p| liveness.state(p, g.id(), now));
        g.raft().runtime_config().tick(ticks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bitmap of `shards`, as [`has`] reads it.
    fn bitmap(shards: impl IntoIterator<Item = ShardId>) -> Vec<u8> {
        let mut bits = Vec::new();
        for s in shards {
            let (byte, bit) = (usize::from(s / 8), s % 8);
            if bits.len() <= byte {
                bits.resize(byte + 1, 0);
            }
            bits[byte] |= 1 << bit;
        }
        bits
    }

    #[test]
    fn bitmaps_name_exactly_their_shards() {
        let bits = bitmap([0, 9, 1023]);
        assert_eq!(bits.len(), 128);
        for s in 0..1100 {
            assert_eq!(has(&bits, s), [0, 9, 1023].contains(&s), "shard {s}");
        }
        assert!(!has(&[], 0));
    }

    #[test]
    fn announced_shards_make_the_same_bitmap() {
        let a = Announced::new(1024);
        for s in [0, 9, 64, 1023] {
            a.set(s, true);
        }
        a.set(64, false);
        assert_eq!(a.bitmap(), bitmap([0, 9, 1023]));
        // Out of range: ignored.
        a.set(4096, true);
        assert_eq!(a.bitmap(), bitmap([0, 9, 1023]));
    }

    #[test]
    fn a_peer_is_unknown_then_alive_then_suspect() {
        let l = Liveness::new(Duration::from_millis(600));
        let t0 = Instant::now();
        assert_eq!(l.state(2, 0, t0), PeerState::Unknown);
        l.record(2, None, t0);
        assert_eq!(
            l.state(2, 0, t0 + Duration::from_millis(500)),
            PeerState::Unknown
        );
        assert_eq!(
            l.state(2, 0, t0 + Duration::from_millis(600)),
            PeerState::Suspect
        );
        let t1 = t0 + Duration::from_millis(700);
        l.record(2, Some(Pong::Quiesced(bitmap([3]))), t1);
        assert_eq!(l.state(2, 3, t1), PeerState::Alive { quiesced: true });
        assert_eq!(l.state(2, 4, t1), PeerState::Alive { quiesced: false });
        // Failed pings keep the last answer until the window runs out.
        l.record(2, None, t1 + Duration::from_millis(100));
        assert_eq!(
            l.state(2, 3, t1 + Duration::from_millis(599)),
            PeerState::Alive { quiesced: true }
        );
        assert_eq!(
            l.state(2, 3, t1 + Duration::from_millis(600)),
            PeerState::Suspect
        );
    }

    #[test]
    fn only_peers_that_speak_the_protocol_are_ready() {
        let l = Liveness::new(Duration::from_millis(600));
        let t0 = Instant::now();
        l.record(2, Some(Pong::Quiesced(Vec::new())), t0);
        l.record(3, Some(Pong::Unsupported), t0);
        assert!(l.ready([2], t0));
        assert!(!l.ready([2, 3], t0));
        assert!(!l.ready([2, 4], t0));
        assert!(!l.ready([2], t0 + Duration::from_millis(600)));
        // An older peer is alive but never quiesced.
        assert_eq!(l.state(3, 0, t0), PeerState::Alive { quiesced: false });
    }

    #[test]
    fn heard_since_needs_every_peer_after_the_announcement() {
        let l = Liveness::new(Duration::from_millis(600));
        let t0 = Instant::now();
        l.pinged_by(2, t0);
        assert!(!l.heard_since([2], t0));
        l.pinged_by(2, t0 + Duration::from_millis(1));
        assert!(l.heard_since([2], t0));
        assert!(!l.heard_since([2, 3], t0));
    }
}
