//! Progress events: how every stage below `cli` reports what it is doing.
//!
//! Library code never prints. It sends [`Event`]s to a [`Progress`] sink; the CLI renders them
//! (a TTY display, plain lines for CI logs, or JSON for tools). A sink that drops everything
//! is [`Progress::none`], for tests and library users who do not care.

use std::sync::mpsc;

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

/// A cheap, clonable sink for [`Event`]s.
#[derive(Clone, Debug)]
pub struct Progress {
    tx: Option<mpsc::Sender<Event>>,
}

impl Progress {
    /// A sink that drops every event.
    pub fn none() -> Progress {
        Progress { tx: None }
    }

    /// A sink and the receiver the renderer reads from.
    pub fn channel() -> (Progress, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        (Progress { tx: Some(tx) }, rx)
    }

    /// Sends an event; a renderer that has gone away is not an error for the sender.
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
}
