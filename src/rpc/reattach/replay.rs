//! The client messages a re-attaching socket may have to send again: those
//! sent to the current owner and not yet known handled, and those the
//! client sent while the socket had no owner. Pure: no I/O, no clock.
//!
//! Messages are numbered for the socket's life; a new owner that knows
//! the last number its object handled gets only later ones.
//!
//! Bounded in frames and bytes. While attached, the oldest sent messages
//! are forgotten past the bound (an owner that has not handled that many
//! is far behind; they are taken as handled). While detached, a message
//! over the bound is refused: the socket is then closed (1013).

use std::collections::VecDeque;

use crate::object::Message;

/// Bounds of a [`Replay`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Most messages held.
    pub frames: usize,
    /// Most bytes of messages held.
    pub bytes: usize,
}

/// More messages than the bounds allow arrived while detached.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// A socket's messages that are not known to be handled by its owner,
/// each with its number on the socket (from 1, for the socket's life):
/// a new owner that knows the last number its object handled (stored with
/// the socket's registration) gets only later ones.
#[derive(Debug)]
pub struct Replay {
    bounds: Bounds,
    /// Sent on the current stream, oldest first; `sent[0]` is the stream's
    /// message number `first_sent`.
    sent: VecDeque<(u64, Message)>,
    first_sent: u64,
    /// Not sent to the current owner, oldest first: not handled by the
    /// last one (`unsure`: not known either way, it died), or sent by the
    /// client while the socket had no owner.
    pending: VecDeque<Held>,
    bytes: usize,
    /// The number the client's next message gets.
    next: u64,
}

#[derive(Debug)]
struct Held {
    number: u64,
    msg: Message,
    unsure: bool,
}

impl Replay {
    pub fn new(bounds: Bounds) -> Replay {
        Replay {
            bounds,
            sent: VecDeque::new(),
            first_sent: 0,
            pending: VecDeque::new(),
            bytes: 0,
            next: 1,
        }
    }

    /// Numbers a new message from the client.
    pub fn number(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        n
    }

    /// Message `number` went to the current owner. Forgets the oldest sent
    /// messages past the bounds.
    pub fn sent(&mut self, number: u64, msg: Message) {
        self.bytes += msg.len();
        self.sent.push_back((number, msg));
        while self.len() > self.bounds.frames || self.bytes > self.bounds.bytes {
            let Some((_, old)) = self.sent.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.first_sent += 1;
        }
    }

    /// The client sent `msg` while the socket has no owner: numbered and
    /// held.
    pub fn hold(&mut self, msg: Message) -> Result<(), Full> {
        if self.len() + 1 > self.bounds.frames || self.bytes + msg.len() > self.bounds.bytes {
            return Err(Full);
        }
        self.bytes += msg.len();
        let number = self.number();
        self.pending.push_back(Held {
            number,
            msg,
            unsure: false,
        });
        Ok(())
    }

    /// The owner let the socket go having handled the first `handled`
    /// messages of its stream (`None`: unknown, e.g. it died). The rest
    /// wait for the next owner, before anything held since.
    pub fn detached(&mut self, handled: Option<u64>) {
        let skip = handled.map_or(0, |h| h.saturating_sub(self.first_sent));
        let skip = usize::try_from(skip)
            .unwrap_or(usize::MAX)
            .min(self.sent.len());
        for (_, old) in self.sent.drain(..skip) {
            self.bytes -= old.len();
        }
        for (number, msg) in self.sent.drain(..).rev() {
            self.pending.push_front(Held {
                number,
                msg,
                unsure: handled.is_none(),
            });
        }
        self.first_sent = 0;
    }

    /// Re-attached to an owner that knows the number of the last message
    /// its object handled (`durable`): only later ones are sent again. An
    /// owner that does not know (`None`) gets the messages its
    /// predecessor was known not to have handled, and none it may have
    /// (so none runs twice).
    pub fn attached(&mut self, durable: Option<u64>) {
        let before = self.pending.len();
        let mut dropped = 0;
        self.pending.retain(|h| {
            let keep = match durable {
                Some(k) => h.number > k,
                None => !h.unsure,
            };
            if !keep {
                dropped += h.msg.len();
            }
            keep
        });
        debug_assert!(self.pending.len() <= before);
        self.bytes -= dropped;
    }

    /// Messages to send to the new owner, for the log.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Re-attached: the messages to send the new owner first, in order,
    /// with their numbers. The caller records each with [`Replay::sent`]
    /// as it sends it.
    pub fn take_pending(&mut self) -> Vec<(u64, Message)> {
        let out: Vec<(u64, Message)> = self.pending.drain(..).map(|h| (h.number, h.msg)).collect();
        self.bytes -= out.iter().map(|(_, m)| m.len()).sum::<usize>();
        out
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.sent.len() + self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Message {
        Message::Text(s.to_owned())
    }

    fn replay(frames: usize, bytes: usize) -> Replay {
        Replay::new(Bounds { frames, bytes })
    }

    /// Sends `msgs` as the client's next messages; returns their numbers.
    fn send(r: &mut Replay, msgs: &[&str]) -> Vec<u64> {
        msgs.iter()
            .map(|s| {
                let n = r.number();
                r.sent(n, m(s));
                n
            })
            .collect()
    }

    fn texts(pending: Vec<(u64, Message)>) -> Vec<Message> {
        pending.into_iter().map(|(_, msg)| msg).collect()
    }

    #[test]
    fn messages_the_old_owner_did_not_handle_go_first_then_those_held() {
        let mut r = replay(10, 1000);
        assert_eq!(send(&mut r, &["a", "b", "c", "d"]), vec![1, 2, 3, 4]);
        r.detached(Some(2));
        r.hold(m("e")).expect("room");
        r.attached(None);
        assert_eq!(
            r.take_pending(),
            vec![(3, m("c")), (4, m("d")), (5, m("e"))]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn counts_restart_with_each_owner_and_numbers_do_not() {
        let mut r = replay(10, 1000);
        send(&mut r, &["a", "b"]);
        r.detached(Some(1));
        r.attached(None);
        for (n, msg) in r.take_pending() {
            r.sent(n, msg);
        }
        send(&mut r, &["c"]);
        // The second owner handled "b" (its first message) only.
        r.detached(Some(1));
        r.attached(None);
        assert_eq!(r.take_pending(), vec![(3, m("c"))]);
    }

    #[test]
    fn an_owner_that_died_has_nothing_sent_again_unless_the_next_knows() {
        let mut r = replay(10, 1000);
        send(&mut r, &["a", "b"]);
        r.detached(None);
        r.hold(m("c")).expect("room");
        r.attached(None);
        assert_eq!(texts(r.take_pending()), vec![m("c")]);

        let mut r = replay(10, 1000);
        send(&mut r, &["a", "b"]);
        r.detached(None);
        r.hold(m("c")).expect("room");
        // The next owner's storage says "a" (1) was handled.
        r.attached(Some(1));
        assert_eq!(r.take_pending(), vec![(2, m("b")), (3, m("c"))]);
        assert!(r.is_empty());
    }

    #[test]
    fn what_the_next_owner_knows_handled_is_not_sent_again() {
        let mut r = replay(10, 1000);
        send(&mut r, &["a", "b", "c"]);
        // The old owner said one, but "b" committed after it let go.
        r.detached(Some(1));
        r.attached(Some(2));
        assert_eq!(r.take_pending(), vec![(3, m("c"))]);
    }

    #[test]
    fn sent_messages_past_the_bound_are_taken_as_handled() {
        let mut r = replay(2, 1000);
        send(&mut r, &["a", "b", "c"]);
        assert_eq!(r.len(), 2);
        // "a" (stream number 0) was forgotten; 2 handled means "b" was.
        r.detached(Some(2));
        r.attached(None);
        assert_eq!(texts(r.take_pending()), vec![m("c")]);
        send(&mut r, &["dd"]);
        r.detached(Some(0));
        r.attached(None);
        assert_eq!(texts(r.take_pending()), vec![m("dd")]);
    }

    #[test]
    fn holding_is_bounded_in_frames_and_bytes() {
        let mut r = replay(3, 1000);
        send(&mut r, &["a"]);
        r.detached(Some(0));
        r.hold(m("b")).expect("room");
        r.hold(m("c")).expect("room");
        assert_eq!(r.hold(m("d")), Err(Full));

        let mut r = replay(100, 5);
        r.hold(m("abc")).expect("room");
        assert_eq!(r.hold(m("def")), Err(Full));
        r.hold(m("de")).expect("exactly at the bound");
        r.attached(Some(0));
        assert_eq!(texts(r.take_pending()), vec![m("abc"), m("de")]);
        r.hold(m("fghij")).expect("emptied");
    }

    #[test]
    fn dropping_known_handled_messages_frees_their_bytes() {
        let mut r = replay(100, 5);
        send(&mut r, &["abc"]);
        r.detached(None);
        r.attached(Some(1));
        assert!(r.is_empty());
        r.hold(m("fghij")).expect("room again");
    }
}
