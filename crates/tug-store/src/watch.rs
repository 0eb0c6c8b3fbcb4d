//! The watch handle both backends return.

use tokio::sync::mpsc;
use tokio_util::sync::DropGuard;

use crate::{Result, WatchMessage};

/// Messages a watch may hold for a consumer that is not reading. The backend
/// stops feeding a watch whose buffer stays full (see [`crate::Error::WatchTooSlow`]).
pub(crate) const WATCH_BUFFER_MESSAGES: usize = 256;

/// A running watch. Dropping it stops the watch.
pub struct Watch {
    messages: mpsc::Receiver<Result<WatchMessage>>,
    progress_requests: mpsc::Sender<()>,
    _stop: DropGuard,
}

/// The backend's side of a [`Watch`].
pub(crate) struct WatchFeed {
    pub(crate) messages: mpsc::Sender<Result<WatchMessage>>,
    pub(crate) progress_requests: mpsc::Receiver<()>,
    pub(crate) stop: tokio_util::sync::CancellationToken,
}

pub(crate) fn channel() -> (Watch, WatchFeed) {
    let (messages_tx, messages_rx) = mpsc::channel(WATCH_BUFFER_MESSAGES);
    let (progress_tx, progress_rx) = mpsc::channel(1);
    let stop = tokio_util::sync::CancellationToken::new();
    let watch = Watch {
        messages: messages_rx,
        progress_requests: progress_tx,
        _stop: stop.clone().drop_guard(),
    };
    let feed = WatchFeed {
        messages: messages_tx,
        progress_requests: progress_rx,
        stop,
    };
    (watch, feed)
}

impl Watch {
    /// The next message, or `None` once the watch has ended. A watch that
    /// ends on an error yields that error last.
    ///
    /// Cancel safe: dropping the future loses no message.
    pub async fn next(&mut self) -> Option<Result<WatchMessage>> {
        self.messages.recv().await
    }

    /// Asks for a [`WatchMessage::Progress`] as soon as the watch has
    /// delivered everything up to the store's current revision. Requests
    /// made while one is pending are merged.
    pub fn request_progress(&self) {
        let _ = self.progress_requests.try_send(());
    }
}
