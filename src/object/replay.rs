//! Frames that outlive their node: what an object sends its sockets is
//! numbered and kept in its storage, so that a socket whose owner died
//! gets, from the new owner, the frames the old one released but its edge
//! never received.
//!
//! Every frame an event sends to a registered socket gets a sequence
//! number, per object, increasing across owners (a new owner resumes after
//! the highest kept one). The frames are kept in the same Raft entry as
//! the event's writes (so a frame is kept exactly when it may be released),
//! in a ring of `slots` slots per object: the newest frames, one record per
//! message however many sockets it went to (a chat broadcast is one
//! record). The edge remembers the highest number it passed to each client
//! and names it when it re-attaches the socket; the new owner re-sends the
//! kept frames after it, and the edge drops any number it has passed on
//! already (so a frame reaches a client at most once, in order).
//!
//! Pure: no I/O. The executor keeps records through its write layer; the
//! runtime reads them back at re-attach.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::outbox::Output;
use super::socket::{Message, ServerFrame, SocketId, StableId};

/// The kept frames of one event stop at this many bytes (the first is
/// always kept): a handler that sends megabytes in one event does not make
/// a Raft entry of that size. Frames past it keep only their number (so no
/// successor numbers a frame again); their messages are lost to a re-send,
/// like frames pushed out of the ring.
pub(crate) const MAX_KEPT_BYTES_PER_EVENT: usize = 1 << 20;

/// One kept frame: its number, the sockets it went to, and the message.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Kept {
    seq: u64,
    sockets: Vec<StableId>,
    binary: bool,
    data: Bytes,
    /// Numbered but over its event's byte budget: the message is not kept.
    dropped: bool,
}

impl Kept {
    fn message(&self) -> Option<Message> {
        if self.dropped {
            None
        } else if self.binary {
            Some(Message::Binary(self.data.clone()))
        } else {
            String::from_utf8(self.data.to_vec())
                .ok()
                .map(Message::Text)
        }
    }

    fn encode(&self) -> Bytes {
        // Plain integers and byte strings always serialize.
        postcard::to_stdvec(self)
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

fn decode(bytes: &[u8]) -> Option<Kept> {
    postcard::from_bytes(bytes).ok()
}

/// Numbers an object's frames and makes the records to keep. One per
/// executor; `slots == 0` keeps nothing and leaves frames unnumbered (0).
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    slots: u16,
    /// The number the next frame gets.
    next: u64,
}

impl Sequencer {
    /// Resumes after the highest of `kept` (the object's kept records, as
    /// stored): every frame numbered before, by any owner, is lower.
    pub fn resume(slots: u16, kept: &[Vec<u8>]) -> Sequencer {
        let highest = kept.iter().filter_map(|b| decode(b)).map(|k| k.seq).max();
        Sequencer {
            slots,
            next: highest.unwrap_or(0) + 1,
        }
    }

    /// Numbers the messages among `outputs` sent to registered sockets
    /// (`stable` finds a socket's registration id) and returns the records
    /// to keep, by ring slot. Consecutive sends of the same message to
    /// different sockets share a number and a record.
    pub fn stamp(
        &mut self,
        outputs: &mut [Output],
        stable: impl Fn(SocketId) -> Option<StableId>,
    ) -> Vec<(u16, Bytes)> {
        if self.slots == 0 {
            return Vec::new();
        }
        let mut records: Vec<Kept> = Vec::new();
        let mut open: Option<(Kept, Message)> = None;
        let mut bytes = 0usize;
        for out in outputs.iter_mut() {
            let Output::Frame {
                socket,
                frame: ServerFrame::Message { message, seq },
            } = out
            else {
                continue;
            };
            let Some(id) = stable(*socket) else {
                continue;
            };
            match &mut open {
                Some((kept, last)) if last == message && !kept.sockets.contains(&id) => {
                    kept.sockets.push(id);
                    *seq = kept.seq;
                }
                _ => {
                    if let Some((done, _)) = open.take() {
                        records.push(done);
                    }
                    let (binary, data) = match message {
                        Message::Text(t) => (false, Bytes::copy_from_slice(t.as_bytes())),
                        Message::Binary(b) => (true, b.clone()),
                    };
                    *seq = self.next;
                    self.next += 1;
                    let kept = Kept {
                        seq: *seq,
                        sockets: vec![id],
                        binary,
                        data,
                        dropped: false,
                    };
                    open = Some((kept, message.clone()));
                }
            }
        }
        records.extend(open.map(|(kept, _)| kept));
        let mut out = Vec::with_capacity(records.len());
        for mut kept in records {
            if !out.is_empty() && bytes + kept.data.len() > MAX_KEPT_BYTES_PER_EVENT {
                // Over the budget: its number is kept, its message not (a
                // successor must never number a frame again).
                kept.data = Bytes::new();
                kept.dropped = true;
            }
            bytes += kept.data.len();
            let slot = (kept.seq % u64::from(self.slots)) as u16;
            out.push((slot, kept.encode()));
        }
        out
    }
}

/// What to re-send to socket `stable`: the kept frames numbered after
/// `after` (the highest its edge passed on) and before `before` (the
/// lowest already waiting in its channel, if any), in order. Also whether
/// some of them may be missing (pushed out of the ring, or never kept).
pub(crate) fn pick(
    kept: &[Vec<u8>],
    stable: StableId,
    after: u64,
    before: Option<u64>,
) -> (Vec<ServerFrame>, bool) {
    let mut all: Vec<Kept> = kept.iter().filter_map(|b| decode(b)).collect();
    all.sort_by_key(|k| k.seq);
    let before = before.unwrap_or(u64::MAX);
    // The ring holds every number from its oldest on, unless an event
    // kept fewer than it numbered.
    let first_wanted = after.saturating_add(1);
    let oldest = all.first().map_or(u64::MAX, |k| k.seq);
    let mut missing = !all.is_empty() && oldest > first_wanted && first_wanted < before;
    let mut frames = Vec::new();
    let mut expected = oldest;
    for k in &all {
        missing |= k.seq != expected && k.seq > first_wanted && k.seq < before;
        expected = k.seq + 1;
        if k.seq <= after || k.seq >= before || !k.sockets.contains(&stable) {
            continue;
        }
        match k.message() {
            Some(message) => frames.push(ServerFrame::Message {
                message,
                seq: k.seq,
            }),
            None => missing = true,
        }
    }
    (frames, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(socket: SocketId, text: &str) -> Output {
        Output::Frame {
            socket,
            frame: ServerFrame::message(Message::Text(text.into())),
        }
    }

    fn seqs(outputs: &[Output]) -> Vec<u64> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Frame {
                    frame: ServerFrame::Message { seq, .. },
                    ..
                } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    /// Sockets 1..=3 are registered as 101..=103; socket 9 is not.
    fn stable(id: SocketId) -> Option<StableId> {
        (1..=3).contains(&id).then_some(100 + u128::from(id))
    }

    #[test]
    fn a_broadcast_is_one_record_and_one_number() {
        let mut seq = Sequencer::resume(8, &[]);
        let mut outputs = vec![send(1, "hi"), send(2, "hi"), send(3, "hi"), send(9, "hi")];
        let kept = seq.stamp(&mut outputs, stable);
        assert_eq!(seqs(&outputs), vec![1, 1, 1, 0], "unregistered: unnumbered");
        assert_eq!(kept.len(), 1);
        let (frames, missing) = pick(&[kept[0].1.to_vec()], 102, 0, None);
        assert!(!missing);
        assert_eq!(
            frames,
            vec![ServerFrame::Message {
                message: Message::Text("hi".into()),
                seq: 1
            }]
        );
    }

    #[test]
    fn the_same_message_twice_to_one_socket_gets_two_numbers() {
        let mut seq = Sequencer::resume(8, &[]);
        let mut outputs = vec![send(1, "a"), send(1, "a"), send(2, "b"), send(1, "a")];
        let kept = seq.stamp(&mut outputs, stable);
        assert_eq!(seqs(&outputs), vec![1, 2, 3, 4]);
        assert_eq!(kept.len(), 4);
    }

    #[test]
    fn a_new_owner_resumes_after_the_highest_kept_number() {
        let mut first = Sequencer::resume(4, &[]);
        let mut ring = std::collections::BTreeMap::new();
        for i in 0..6 {
            let mut outputs = vec![send(1, &format!("m{i}"))];
            ring.extend(first.stamp(&mut outputs, stable));
        }
        let stored: Vec<Vec<u8>> = ring.values().map(|b| b.to_vec()).collect();
        let mut second = Sequencer::resume(4, &stored);
        let mut outputs = vec![send(1, "after")];
        second.stamp(&mut outputs, stable);
        assert_eq!(seqs(&outputs), vec![7]);
    }

    #[test]
    fn pick_resends_what_the_edge_missed_in_order_and_no_more() {
        let mut seq = Sequencer::resume(16, &[]);
        let mut ring = std::collections::BTreeMap::new();
        for i in 1..=6 {
            let to = if i % 2 == 0 { 1 } else { 2 };
            let mut outputs = vec![send(to, &format!("m{i}"))];
            ring.extend(seq.stamp(&mut outputs, stable));
        }
        let stored: Vec<Vec<u8>> = ring.values().map(|b| b.to_vec()).collect();
        let numbers = |after, before| {
            let (frames, missing) = pick(&stored, 101, after, before);
            assert!(!missing);
            frames
                .into_iter()
                .filter_map(|f| match f {
                    ServerFrame::Message { seq, .. } => Some(seq),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(numbers(0, None), vec![2, 4, 6]);
        assert_eq!(numbers(2, None), vec![4, 6]);
        assert_eq!(numbers(2, Some(6)), vec![4], "6 waits in its channel");
        assert!(numbers(6, None).is_empty());
    }

    #[test]
    fn pick_says_when_the_ring_has_lost_frames_the_edge_missed() {
        let mut seq = Sequencer::resume(2, &[]);
        let mut ring = std::collections::BTreeMap::new();
        for i in 1..=5 {
            let mut outputs = vec![send(1, &format!("m{i}"))];
            ring.extend(seq.stamp(&mut outputs, stable));
        }
        let stored: Vec<Vec<u8>> = ring.values().map(|b| b.to_vec()).collect();
        let (frames, missing) = pick(&stored, 101, 1, None);
        assert!(missing, "2 and 3 were pushed out of the ring");
        assert_eq!(frames.len(), 2);
        let (_, missing) = pick(&stored, 101, 3, None);
        assert!(!missing);
    }

    #[test]
    fn an_event_keeps_at_most_its_byte_budget() {
        let mut seq = Sequencer::resume(64, &[]);
        let big = "x".repeat(MAX_KEPT_BYTES_PER_EVENT / 2 + 1);
        let mut outputs = vec![send(1, &big), send(1, &big), send(1, "small")];
        let kept = seq.stamp(&mut outputs, stable);
        assert_eq!(seqs(&outputs), vec![1, 2, 3], "all numbered");
        assert_eq!(kept.len(), 3, "every number is kept");
        let stored: Vec<Vec<u8>> = kept.iter().map(|(_, b)| b.to_vec()).collect();
        let (frames, missing) = pick(&stored, 101, 0, None);
        assert_eq!(frames.len(), 2, "the second big one is over the budget");
        assert!(missing);
        let mut next = Sequencer::resume(64, &stored);
        let mut outputs = vec![send(1, "after")];
        next.stamp(&mut outputs, stable);
        assert_eq!(seqs(&outputs), vec![4], "no number is given twice");
    }

    #[test]
    fn off_keeps_nothing_and_numbers_nothing() {
        let mut seq = Sequencer::default();
        let mut outputs = vec![send(1, "a")];
        assert!(seq.stamp(&mut outputs, stable).is_empty());
        assert_eq!(seqs(&outputs), vec![0]);
    }

    #[test]
    fn undecodable_records_are_skipped() {
        let (frames, _) = pick(&[vec![0xff, 0xff]], 1, 0, None);
        assert!(frames.is_empty());
        let s = Sequencer::resume(4, &[vec![0xff]]);
        assert_eq!(s.next, 1);
    }
}
