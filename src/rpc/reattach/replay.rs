//! The client messages a re-attaching socket may have to send again: those
//! sent to the current owner and not yet known handled, and those the
//! client sent while the socket had no owner. Pure: no I/O, no clock.
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

/// A socket's messages that are not known to be handled by its owner.
#[derive(Debug)]
pub struct Replay {
    bounds: Bounds,
    /// Sent on the current stream, oldest first; `sent[0]` is the stream's
    /// message number `first_sent`.
    sent: VecDeque<Message>,
    first_sent: u64,
    /// Not sent to any owner yet (the socket is detached), oldest first.
    pending: VecDeque<Message>,
    bytes: usize,
}

impl Replay {
    pub fn new(bounds: Bounds) -> Replay {
        Replay {
            bounds,
            sent: VecDeque::new(),
            first_sent: 0,
            pending: VecDeque::new(),
            bytes: 0,
        }
    }

    /// `msg` went to the current owner. Forgets the oldest sent messages
    /// past the bounds.
    pub fn sent(&mut self, msg: Message) {
        self.bytes += msg.len();
        self.sent.push_back(msg);
        while self.len() > self.bounds.frames || self.bytes > self.bounds.bytes {
            let Some(old) = self.sent.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.first_sent += 1;
        }
    }

    /// The client sent `msg` while the socket has no owner.
    pub fn hold(&mut self, msg: Message) -> Result<(), Full> {
        if self.len() + 1 > self.bounds.frames || self.bytes + msg.len() > self.bounds.bytes {
            return Err(Full);
        }
        self.bytes += msg.len();
        self.pending.push_back(msg);
        Ok(())
    }

    /// The owner let the socket go having handled the first `handled`
    /// messages of its stream (`None`: unknown, e.g. it died; then none is
    /// sent again, so none runs twice). The rest wait for the next owner,
    /// before anything held since.
    pub fn detached(&mut self, handled: Option<u64>) {
        let handled = handled.unwrap_or(u64::MAX);
        let skip = handled.saturating_sub(self.first_sent);
        let skip = usize::try_from(skip)
            .unwrap_or(usize::MAX)
            .min(self.sent.len());
        for old in self.sent.drain(..skip) {
            self.bytes -= old.len();
        }
        for msg in self.sent.drain(..).rev() {
            self.pending.push_front(msg);
        }
        self.first_sent = 0;
    }

    /// Messages to send to the new owner, for the log.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Re-attached: the messages to send the new owner first, in order.
    /// The caller records each with [`Replay::sent`] as it sends it.
    pub fn take_pending(&mut self) -> Vec<Message> {
        let out: Vec<Message> = self.pending.drain(..).collect();
        self.bytes -= out.iter().map(Message::len).sum::<usize>();
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

    #[test]
    fn messages_the_old_owner_did_not_handle_go_first_then_those_held() {
        let mut r = replay(10, 1000);
        for s in ["a", "b", "c", "d"] {
            r.sent(m(s));
        }
        r.detached(Some(2));
        r.hold(m("e")).expect("room");
        assert_eq!(r.take_pending(), vec![m("c"), m("d"), m("e")]);
        assert!(r.is_empty());
    }

    #[test]
    fn counts_restart_with_each_owner() {
        let mut r = replay(10, 1000);
        r.sent(m("a"));
        r.sent(m("b"));
        r.detached(Some(1));
        for msg in r.take_pending() {
            r.sent(msg);
        }
        r.sent(m("c"));
        // The second owner handled "b" (its first message) only.
        r.detached(Some(1));
        assert_eq!(r.take_pending(), vec![m("c")]);
    }

    #[test]
    fn an_owner_that_died_has_nothing_sent_again() {
        let mut r = replay(10, 1000);
        r.sent(m("a"));
        r.sent(m("b"));
        r.detached(None);
        r.hold(m("c")).expect("room");
        assert_eq!(r.take_pending(), vec![m("c")]);
    }

    #[test]
    fn sent_messages_past_the_bound_are_taken_as_handled() {
        let mut r = replay(2, 1000);
        for s in ["a", "b", "c"] {
            r.sent(m(s));
        }
        assert_eq!(r.len(), 2);
        // "a" (number 0) was forgotten; 1 handled means "b" was.
        r.detached(Some(2));
        assert_eq!(r.take_pending(), vec![m("c")]);
        r.sent(m("dd"));
        r.detached(Some(0));
        assert_eq!(r.take_pending(), vec![m("dd")]);
    }

    #[test]
    fn holding_is_bounded_in_frames_and_bytes() {
        let mut r = replay(3, 1000);
        r.sent(m("a"));
        r.detached(Some(0));
        r.hold(m("b")).expect("room");
        r.hold(m("c")).expect("room");
        assert_eq!(r.hold(m("d")), Err(Full));

        let mut r = replay(100, 5);
        r.hold(m("abc")).expect("room");
        assert_eq!(r.hold(m("def")), Err(Full));
        r.hold(m("de")).expect("exactly at the bound");
        assert_eq!(r.take_pending(), vec![m("abc"), m("de")]);
        r.hold(m("fghij")).expect("emptied");
    }
}
