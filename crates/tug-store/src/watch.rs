//! The watch handle both backends return, and the mailbox behind it.
//!
//! A mailbox coalesces: changes queued while the consumer is busy join the
//! message already waiting, so a consumer wakes once for many commits, not
//! once per commit, and a producer never waits for a consumer unless it
//! chooses to ([`Mailbox::send`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::{Error, Result, WatchMessage};

/// Shared event chunks a watch holds for a consumer that is not reading, at
/// most. A watcher whose mailbox is full when the next change comes is
/// closed with [`crate::Error::WatchTooSlow`].
const MAILBOX_CHUNKS_MAX: usize = 4096;
/// Producers that wait for room ([`Mailbox::send`]) wait down to this.
const MAILBOX_CHUNKS_LOW: usize = MAILBOX_CHUNKS_MAX / 2;

#[derive(Default)]
pub(crate) struct Mailbox {
    state: Mutex<State>,
    readable: Notify,
    writable: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<WatchMessage>,
    chunks: usize,
    /// Why the watch ended; yielded after everything queued before it.
    ended: Option<Error>,
    finished: bool,
    consumer_gone: bool,
}

pub(crate) enum Offer {
    Queued,
    Full,
    Gone,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message without waiting.
    pub(crate) fn offer(&self, message: WatchMessage) -> Offer {
        let mut state = self.lock();
        if state.consumer_gone || state.finished || state.ended.is_some() {
            return Offer::Gone;
        }
        let added = match &message {
            WatchMessage::Events(events) => events.chunk_count(),
            WatchMessage::Progress(_) => 0,
        };
        if state.chunks + added > MAILBOX_CHUNKS_MAX {
            return Offer::Full;
        }
        state.chunks += added;
        // A consumer with messages waiting has been woken already.
        let wake = state.queue.is_empty();
        match (state.queue.back_mut(), message) {
            (Some(WatchMessage::Events(waiting)), WatchMessage::Events(more)) => {
                waiting.append(more)
            }
            (Some(WatchMessage::Progress(waiting)), WatchMessage::Progress(more)) => {
                *waiting = (*waiting).max(more);
            }
            (_, message) => state.queue.push_back(message),
        }
        drop(state);
        if wake {
            self.readable.notify_one();
        }
        Offer::Queued
    }

    /// Queues a message, waiting while the mailbox is more than half full.
    /// Fails once the consumer is gone or the watch has ended.
    pub(crate) async fn send(&self, message: WatchMessage) -> Result<(), ()> {
        loop {
            let writable = self.writable.notified();
            {
                let state = self.lock();
                if state.consumer_gone || state.finished || state.ended.is_some() {
                    return Err(());
                }
                if state.chunks <= MAILBOX_CHUNKS_LOW {
                    break;
                }
            }
            writable.await;
        }
        match self.offer(message) {
            Offer::Queued => Ok(()),
            Offer::Full | Offer::Gone => Err(()),
        }
    }

    /// Ends the watch with `err` (the first reason given wins).
    pub(crate) fn end(&self, err: Error) {
        let mut state = self.lock();
        if state.ended.is_none() && !state.finished {
            state.ended = Some(err);
        }
        drop(state);
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    pub(crate) fn consumer_gone(&self) -> bool {
        self.lock().consumer_gone
    }
}

/// A running watch. Dropping it stops the watch.
pub struct Watch {
    mailbox: Arc<Mailbox>,
    request_progress: Box<dyn Fn() + Send + Sync>,
    _on_drop: Option<Box<dyn Send + Sync>>,
}

impl Watch {
    /// `request_progress` is called for [`Watch::request_progress`];
    /// `on_drop` is dropped with the watch.
    pub(crate) fn new(
        mailbox: Arc<Mailbox>,
        request_progress: Box<dyn Fn() + Send + Sync>,
        on_drop: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Self {
            mailbox,
            request_progress,
            _on_drop: on_drop,
        }
    }

    /// The next message, or `None` once the watch has ended. A watch that
    /// ends on an error yields that error last.
    ///
    /// Cancel safe: dropping the future loses no message.
    pub async fn next(&mut self) -> Option<Result<WatchMessage>> {
        loop {
            let readable = self.mailbox.readable.notified();
            {
                let mut state = self.mailbox.lock();
                if let Some(message) = state.queue.pop_front() {
                    if let WatchMessage::Events(events) = &message {
                        state.chunks -= events.chunk_count();
                    }
                    if state.chunks <= MAILBOX_CHUNKS_LOW {
                        self.mailbox.writable.notify_waiters();
                    }
                    return Some(Ok(message));
                }
                if let Some(err) = state.ended.take() {
                    state.finished = true;
                    return Some(Err(err));
                }
                if state.finished {
                    return None;
                }
            }
            readable.await;
        }
    }

    /// Asks for a [`WatchMessage::Progress`] soon: a revision up to which
    /// every change has been delivered. Requests made while one is pending
    /// may be merged.
    pub fn request_progress(&self) {
        (self.request_progress)();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.mailbox.lock().consumer_gone = true;
        self.mailbox.writable.notify_waiters();
    }
}
