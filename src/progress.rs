//! Progress events: how every stage below `cli` reports what it is doing.
//!
//! Library code never prints. It sends [`Event`]s to a [`Progress`] sink; the CLI renders them
//! (a TTY display, plain lines for CI logs, or JSON for tools). A sink that drops everything
//! is [`Progress::none`], for tests and library users who do not care.
//!
//! The channel is bounded ([`QUEUED_EVENTS`]): when the renderer falls behind, senders wait
//! for it instead of queueing without end. A step printing a flood of output is slowed to the
//! speed of the display, never made to cost memory (and the step's reader clips long floods,
//! see `sandbox::output`). So the receiver must be read while the work runs, from another
//! thread, as the CLI's renderer does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// Set once by the CLI on Ctrl-C or SIGTERM, never cleared: the process is ending.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Records that the user asked kiln to stop (the CLI's signal handler calls it). Long loops
/// that have no cancel handle of their own (planning, the context walk, the steps of a stage)
/// check [`interrupted`] and return their own "interrupted" error, so every stage unwinds
/// and removes what it made.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether [`interrupt`] was called: stop at the next safe point.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// A reader that fails once [`interrupt`] was called, so hashing or copying one large file
/// stops promptly too. (Not `ErrorKind::Interrupted`: `io::copy` retries that.)
pub struct StopOnInterrupt<R>(pub R);

impl<R: std::io::Read> std::io::Read for StopOnInterrupt<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if interrupted() {
            return Err(std::io::Error::other("interrupted (Ctrl-C or SIGTERM)"));
        }
        self.0.read(buf)
    }
}

/// One thing worth telling the user about.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A build step started (`id` is stable for the step for the whole build).
    StepStarted { id: String, name: String },
    /// A line of output from a running step (RUN stdout/stderr).
    StepOutput { id: String, line: String },
    /// A step finished; `cached` when it was served from the cache.
    StepDone {
        id: String,
        cached: bool,
        millis: u64,
    },
    /// A cache miss, with the reason in words.
    CacheMiss { id: String, reason: String },
    /// Bytes moved for a blob (pull, push, layer writing).
    Bytes {
        id: String,
        done: u64,
        total: Option<u64>,
    },
    /// A non-fatal warning (lint findings, fallbacks taken).
    Warning { message: String },
    /// A plain informational line.
    Info { message: String },
}

/// Events waiting for the renderer at most. An output line is at most 64 KiB, so the queue
/// holds at most a few MiB in the worst case and a few KiB in the usual one.
pub const QUEUED_EVENTS: usize = 256;

/// A cheap, clonable sink for [`Event`]s.
#[derive(Clone, Debug)]
pub struct Progress {
    tx: Option<mpsc::SyncSender<Event>>,
}

impl Progress {
    /// A sink that drops every event.
    pub fn none() -> Progress {
        Progress { tx: None }
    }

    /// A sink and the receiver the renderer reads from (on another thread: a sender waits
    /// when [`QUEUED_EVENTS`] are queued).
    pub fn channel() -> (Progress, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::sync_channel(QUEUED_EVENTS);
        (Progress { tx: Some(tx) }, rx)
    }

    /// Sends an event, waiting while the queue is full; a renderer that has gone away is not
    /// an error for the sender.
    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.send(Event::Warning {
            message: message.into(),
        });
    }

    pub fn info(&self, message: impl Into<String>) {
        self.send(Event::Info {
            message: message.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_the_receiver_in_order_and_none_drops_them() {
        let (p, rx) = Progress::channel();
        p.warn("a");
        p.info("b");
        drop(p);
        let got: Vec<Event> = rx.iter().collect();
        assert_eq!(
            got,
            vec![
                Event::Warning {
                    message: "a".into()
                },
                Event::Info {
                    message: "b".into()
                }
            ]
        );
        Progress::none().warn("dropped");
    }

    #[test]
    fn a_full_queue_makes_the_sender_wait_for_the_receiver() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (p, rx) = Progress::channel();
        let sent = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..QUEUED_EVENTS * 4 {
                    p.info(i.to_string());
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                drop(p);
            });
            while sent.load(Ordering::SeqCst) < QUEUED_EVENTS {
                std::thread::yield_now();
            }
            // Give the sender every chance to run ahead: it cannot.
            for _ in 0..10_000 {
                std::thread::yield_now();
            }
            let mut received = 0;
            loop {
                assert!(sent.load(Ordering::SeqCst) <= received + QUEUED_EVENTS);
                if rx.recv().is_err() {
                    break;
                }
                received += 1;
            }
            assert_eq!(received, QUEUED_EVENTS * 4);
        });
    }
}
