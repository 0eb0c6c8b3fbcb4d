//! Fan-out: one thread hands every committed batch to every watcher.
//!
//! Watchers are entries in a table here, not tasks: a batch costs one
//! prefix check per event and one non-blocking send per interested watcher,
//! and the events of a batch are shared, not copied. A watcher whose buffer
//! is full is closed with [`Error::WatchTooSlow`] and resumes from its last
//! revision; nothing here ever waits for a watcher, and the writer never
//! waits for this thread (past [`BATCHES_IN_FLIGHT_MAX`] queued batches it
//! drops them and every watcher resumes from the file instead).
//!
//! A new watcher first replays history from the file (a task of its own);
//! batches committed meanwhile wait in its queue here and are delivered,
//! less what the replay covered, once the replay reports where it stopped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use super::Batch;
use crate::watch::{Mailbox, Offer};
use crate::{Error, Event, Events, Revision, WatchMessage, WatchOptions};

/// Batches queued for this thread at most before the writer drops them.
pub(super) const BATCHES_IN_FLIGHT_MAX: usize = 4096;
/// Batches held for a watcher while it replays history, at most.
const REPLAY_QUEUE_BATCHES_MAX: usize = 4096;
/// Batches delivered together at most.
const COALESCE_BATCHES_MAX: usize = 256;
/// The pause between passes over the watchers, per watcher, and at most.
const PACE_PER_WATCHER: Duration = Duration::from_micros(10);
const PACE_MAX: Duration = Duration::from_millis(10);
/// How often closed watchers are swept and periodic progress is sent.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

pub(super) type WatcherId = u64;

pub(super) enum Signal {
    Batch(Arc<Batch>),
    Register {
        id: WatcherId,
        prefix: String,
        after: Revision,
        options: WatchOptions,
        mailbox: Arc<Mailbox>,
    },
    /// The watcher's replay delivered everything up to `target`.
    Replayed {
        id: WatcherId,
        target: Revision,
    },
    Cancel {
        id: WatcherId,
    },
    Progress {
        id: WatcherId,
    },
}

/// The writer's and the watches' way in.
#[derive(Clone)]
pub(super) struct FanOutHandle {
    signals: std_mpsc::Sender<Signal>,
    in_flight: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl FanOutHandle {
    /// Hands a committed batch over; never blocks.
    pub(super) fn publish(&self, batch: Arc<Batch>) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= BATCHES_IN_FLIGHT_MAX {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            // Set before any later batch is sent, so the fan-out sees it
            // before it delivers anything past the gap.
            self.dropped.store(true, Ordering::Release);
            return;
        }
        if self.signals.send(Signal::Batch(batch)).is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(super) fn signal(&self, signal: Signal) {
        // A stopped fan-out has ended every watch already.
        let _ = self.signals.send(signal);
    }
}

struct Watcher {
    prefix: String,
    mailbox: Arc<Mailbox>,
    /// Every change for this watcher up to here has been queued to it.
    delivered: Revision,
    replay: Option<Replay>,
    progress_interval: Option<Duration>,
    last_sent: Instant,
    progress_wanted: bool,
}

struct Replay {
    queue: VecDeque<Arc<Batch>>,
    overflowed: bool,
}

enum Delivery {
    Sent,
    Closed,
}

impl Watcher {
    fn send(&mut self, message: WatchMessage) -> Delivery {
        match self.mailbox.offer(message) {
            Offer::Queued => {
                self.last_sent = Instant::now();
                Delivery::Sent
            }
            Offer::Full => {
                self.mailbox.end(Error::WatchTooSlow {
                    last_revision: self.delivered,
                });
                Delivery::Closed
            }
            Offer::Gone => Delivery::Closed,
        }
    }

    /// Queues the changes of `batches` (in revision order) that are for
    /// this watcher and not yet delivered, as one message.
    fn deliver(&mut self, batches: &[Arc<Batch>]) -> Delivery {
        let Some(last) = batches.last().filter(|b| b.revision > self.delivered) else {
            return Delivery::Sent;
        };
        let last = last.revision;
        let mut events = Events::default();
        for batch in batches.iter().filter(|b| b.revision > self.delivered) {
            let wanted =
                |e: &Event| e.revision() > self.delivered && e.kv.key.starts_with(&self.prefix);
            if batch.events.iter().all(wanted) {
                events.push_shared(batch.events.clone());
            } else {
                events.push_owned(batch.events.iter().filter(|e| wanted(e)).cloned().collect());
            }
        }
        if !events.is_empty()
            && let Delivery::Closed = self.send(WatchMessage::Events(events))
        {
            return Delivery::Closed;
        }
        self.delivered = last;
        if self.progress_wanted {
            self.progress_wanted = false;
            return self.send(WatchMessage::Progress(self.delivered));
        }
        Delivery::Sent
    }
}

pub(super) struct FanOut {
    signals: std_mpsc::Receiver<Signal>,
    in_flight: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
    watchers: HashMap<WatcherId, Watcher>,
    /// How many watchers exist, for the limit `watch` enforces.
    count: Arc<AtomicUsize>,
    /// The last revision handed to watchers.
    dispatched: Revision,
    /// A signal read while gathering batches, handled next.
    lookahead: Option<Signal>,
    /// No pass over the watchers starts before this.
    pace_until: Instant,
}

impl FanOut {
    pub(super) fn new(revision: Revision, count: Arc<AtomicUsize>) -> (Self, FanOutHandle) {
        let (signals_tx, signals) = std_mpsc::channel();
        let handle = FanOutHandle {
            signals: signals_tx,
            in_flight: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicBool::new(false)),
        };
        let fan_out = Self {
            signals,
            in_flight: handle.in_flight.clone(),
            dropped: handle.dropped.clone(),
            watchers: HashMap::new(),
            count,
            dispatched: revision,
            lookahead: None,
            pace_until: Instant::now(),
        };
        (fan_out, handle)
    }

    /// Serves until every handle is gone, then ends every watch with
    /// [`Error::Closed`].
    pub(super) fn run(mut self) {
        let mut last_sweep = Instant::now();
        loop {
            let next = match self.lookahead.take() {
                Some(signal) => Ok(signal),
                None => self.signals.recv_timeout(SWEEP_INTERVAL),
            };
            match next {
                Ok(signal) => self.handle(signal),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if last_sweep.elapsed() >= SWEEP_INTERVAL {
                self.sweep();
                last_sweep = Instant::now();
            }
        }
        for (_, watcher) in self.watchers.drain() {
            watcher.mailbox.end(Error::Closed);
        }
        self.count.store(0, Ordering::Release);
    }

    fn handle(&mut self, signal: Signal) {
        if self.dropped.swap(false, Ordering::AcqRel) {
            self.lost_batches();
        }
        match signal {
            Signal::Batch(batch) => {
                // Pace the passes by the number of watchers: each pass
                // wakes every interested consumer, and consumers share the
                // runtime with the writers. Gathering commits for a while
                // (at most PACE_MAX, with thousands of watchers; micro-
                // seconds with a few) turns many wake-ups into one.
                let now = Instant::now();
                if self.pace_until > now {
                    std::thread::sleep(self.pace_until - now);
                }
                let pace = (PACE_PER_WATCHER * self.watchers.len() as u32).min(PACE_MAX);
                self.pace_until = Instant::now() + pace;
                // Take every batch already queued behind this one: under
                // load, each watcher gets one message for many commits.
                let mut batches = vec![batch];
                while batches.len() < COALESCE_BATCHES_MAX {
                    match self.signals.try_recv() {
                        Ok(Signal::Batch(batch)) => batches.push(batch),
                        Ok(other) => {
                            self.lookahead = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                self.in_flight.fetch_sub(batches.len(), Ordering::AcqRel);
                self.dispatched = batches.last().map_or(self.dispatched, |b| b.revision);
                self.watchers
                    .retain(|_, watcher| match &mut watcher.replay {
                        Some(replay) => {
                            if replay.queue.len() + batches.len() <= REPLAY_QUEUE_BATCHES_MAX {
                                replay.queue.extend(batches.iter().cloned());
                            } else {
                                replay.overflowed = true;
                                replay.queue.clear();
                            }
                            true
                        }
                        None => matches!(watcher.deliver(&batches), Delivery::Sent),
                    });
                self.count.store(self.watchers.len(), Ordering::Release);
            }
            Signal::Register {
                id,
                prefix,
                after,
                options,
                mailbox,
            } => {
                self.watchers.insert(
                    id,
                    Watcher {
                        prefix,
                        mailbox,
                        delivered: after,
                        replay: Some(Replay {
                            queue: VecDeque::new(),
                            overflowed: false,
                        }),
                        progress_interval: options.progress_interval,
                        last_sent: Instant::now(),
                        progress_wanted: false,
                    },
                );
            }
            Signal::Replayed { id, target } => {
                let Some(watcher) = self.watchers.get_mut(&id) else {
                    return;
                };
                let replay = watcher.replay.take().expect("a watcher replays once");
                watcher.delivered = watcher.delivered.max(target);
                let keep = if replay.overflowed {
                    watcher.mailbox.end(Error::WatchTooSlow {
                        last_revision: watcher.delivered,
                    });
                    false
                } else {
                    // Batches the replay covered are skipped by revision.
                    let queued: Vec<Arc<Batch>> = replay.queue.into_iter().collect();
                    let caught_up = matches!(watcher.deliver(&queued), Delivery::Sent);
                    caught_up
                        && (!std::mem::take(&mut watcher.progress_wanted)
                            || matches!(
                                watcher.send(WatchMessage::Progress(watcher.delivered)),
                                Delivery::Sent
                            ))
                };
                if !keep {
                    self.remove(id);
                }
            }
            Signal::Cancel { id } => self.remove(id),
            Signal::Progress { id } => {
                let dispatched = self.dispatched;
                if let Some(watcher) = self.watchers.get_mut(&id) {
                    if watcher.replay.is_some() {
                        watcher.progress_wanted = true;
                    } else {
                        watcher.delivered = watcher.delivered.max(dispatched);
                        if let Delivery::Closed =
                            watcher.send(WatchMessage::Progress(watcher.delivered))
                        {
                            self.remove(id);
                        }
                    }
                }
            }
        }
    }

    fn remove(&mut self, id: WatcherId) {
        self.watchers.remove(&id);
        self.count.store(self.watchers.len(), Ordering::Release);
    }

    /// The writer dropped batches: no watcher can be fed without a gap, so
    /// each resumes from the file.
    fn lost_batches(&mut self) {
        tracing::warn!(
            watchers = self.watchers.len(),
            "watch fan-out fell behind; watchers resume from the store"
        );
        self.watchers
            .retain(|_, watcher| match &mut watcher.replay {
                Some(replay) => {
                    replay.overflowed = true;
                    replay.queue.clear();
                    true
                }
                None => {
                    watcher.mailbox.end(Error::WatchTooSlow {
                        last_revision: watcher.delivered,
                    });
                    false
                }
            });
        self.count.store(self.watchers.len(), Ordering::Release);
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let dispatched = self.dispatched;
        self.watchers.retain(|_, watcher| {
            if watcher.mailbox.consumer_gone() {
                return false;
            }
            let due = watcher
                .progress_interval
                .is_some_and(|interval| now.duration_since(watcher.last_sent) >= interval);
            if due && watcher.replay.is_none() {
                watcher.delivered = watcher.delivered.max(dispatched);
                return matches!(
                    watcher.send(WatchMessage::Progress(watcher.delivered)),
                    Delivery::Sent
                );
            }
            true
        });
        self.count.store(self.watchers.len(), Ordering::Release);
    }
}
