//! `kiln build --push` uploads the image's layers while the build goes on: each layer the
//! build reports through [`crate::build::Hooks::layer_ready`] (its blob is complete in the
//! store by then) goes to every destination repository in the background, a couple at a
//! time, while later steps run.
//!
//! The push after the build stays the authority: it starts once the build succeeded and
//! these uploads are over, HEADs every blob (what went early is "already there"), uploads
//! what an early upload failed to send, and only then puts the manifest. So the image appears
//! in the registry complete or not at all. A build that fails or is interrupted cancels these
//! uploads and pushes no manifest; the blobs already sent stay in the registry as orphans
//! until its garbage collection removes them (buildah and BuildKit leave them too).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use futures_util::{StreamExt, future::ready, stream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use super::Destination;
use crate::image::Layer;
use crate::progress::{Event, Progress};
use crate::registry::{BlobPushed, StoreBlobs};
use crate::store::Store;

/// Uploads at once: enough to keep the link busy, few enough to leave the build its cores.
const UPLOADS_AT_ONCE: usize = 2;

/// The layers the build reported, and the uploads they start.
pub(super) struct EarlyPush<'a> {
    destinations: &'a [Destination],
    store: &'a Store,
    /// `None` once the build is over: no more layers come.
    queue: Mutex<Option<UnboundedSender<Layer>>>,
    layers: Mutex<Option<UnboundedReceiver<Layer>>>,
    cancel: CancellationToken,
}

impl<'a> EarlyPush<'a> {
    /// `cancel` (also fired by Ctrl-C) abandons the uploads.
    pub(super) fn new(
        destinations: &'a [Destination],
        store: &'a Store,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, rx) = unbounded_channel();
        EarlyPush {
            destinations,
            store,
            queue: Mutex::new(Some(tx)),
            layers: Mutex::new(Some(rx)),
            cancel,
        }
    }

    /// The build's [`crate::build::LayerReady`] hook: queues the layer and returns at once.
    pub(super) fn layer_ready(&self, layer: &Layer) {
        // A cache hit's layer left in the registry: the push after the build mounts it.
        if !self.store.has_blob(&layer.digest) {
            return;
        }
        if let Some(tx) = lock(&self.queue).as_ref() {
            // The uploader is gone only after a cancel: nothing to do then.
            let _ = tx.send(*layer);
        }
    }

    /// Says the build is over: the queued uploads finish when it succeeded, and are
    /// abandoned (requests dropped mid-body) when it failed. Only the first call counts.
    pub(super) fn build_over(&self, succeeded: bool) {
        if lock(&self.queue).take().is_some() && !succeeded {
            self.cancel.cancel();
        }
    }

    /// Ends the uploads as failed when dropped before [`EarlyPush::build_over`] (a build
    /// that panicked), so that [`EarlyPush::run`] never waits for layers that cannot come.
    pub(super) fn over_on_drop(&self) -> impl Drop + '_ {
        struct Over<'e, 'a>(&'e EarlyPush<'a>);
        impl Drop for Over<'_, '_> {
            fn drop(&mut self) {
                self.0.build_over(false);
            }
        }
        Over(self)
    }

    /// Uploads every queued layer until [`EarlyPush::build_over`], on `rt`; returns per
    /// destination how many blobs it uploaded. Bytes events go to `progress` (the blob bars);
    /// a failure is only logged at debug level, as the push after the build redoes it.
    pub(super) fn run(&self, rt: &tokio::runtime::Runtime, progress: &Progress) -> Vec<usize> {
        let Some(layers) = lock(&self.layers).take() else {
            return vec![0; self.destinations.len()];
        };
        let (events, forwarded) = Progress::channel();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| forward(forwarded, progress, &done));
            let uploaded = rt.block_on(async {
                tokio::select! {
                    n = self.upload_all(layers, &events) => n,
                    () = self.cancel.cancelled() => vec![0; self.destinations.len()],
                }
            });
            // The forwarder ends as soon as the last sender is gone: at once after uploads
            // that completed, within its poll interval after a cancel.
            drop(events);
            done.store(true, Ordering::SeqCst);
            uploaded
        })
    }

    async fn upload_all(&self, layers: UnboundedReceiver<Layer>, events: &Progress) -> Vec<usize> {
        let dests = self.destinations;
        let source = StoreBlobs(self.store);
        let mut seen = HashSet::new();
        let mut uploaded = vec![0; dests.len()];
        stream::unfold(
            layers,
            |mut rx| async move { rx.recv().await.map(|l| (l, rx)) },
        )
        .flat_map(|layer| stream::iter((0..dests.len()).map(move |i| (i, layer))))
        // A layer is reported again when a later stage is built FROM its stage.
        .filter(move |(i, layer)| ready(seen.insert((*i, layer.digest))))
        .map(|(i, layer)| {
            let source = &source;
            async move {
                let dest = &dests[i];
                let repo = dest.reference.repository();
                let r = dest
                    .registry
                    .push_blob_mounting(repo, &layer.digest, layer.size, source, None, events)
                    .await;
                (i, layer, r)
            }
        })
        .buffer_unordered(UPLOADS_AT_ONCE)
        .for_each(|(i, layer, r)| {
            match r {
                Ok(BlobPushed::Uploaded) => uploaded[i] += 1,
                Ok(_) => {}
                Err(e) => tracing::debug!(
                    destination = %dests[i].reference.name(),
                    digest = %layer.digest,
                    error = %e,
                    "uploading a layer during the build failed; the push after the build retries it"
                ),
            }
            ready(())
        })
        .await;
        uploaded
    }
}

/// Passes the uploads' blob bars on to the build's display; their warnings (retries) are
/// debug logs, as the push after the build is the one that reports. Stops when every upload
/// is over (`done`), even if a cancelled request still holds a sender.
fn forward(events: std::sync::mpsc::Receiver<Event>, progress: &Progress, done: &AtomicBool) {
    loop {
        match events.recv_timeout(Duration::from_millis(50)) {
            Ok(e @ Event::Bytes { .. }) => progress.send(e),
            Ok(Event::Warning { message }) => {
                tracing::debug!(%message, "during an upload made while building")
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) if !done.load(Ordering::SeqCst) => {}
            Err(_) => return,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
