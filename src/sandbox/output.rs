//! A step's stdout and stderr, read into progress events with bounded memory and cost.
//!
//! A command can print without end (`yes`), or gigabytes without a newline. Three caps keep
//! kiln's memory flat and the command at full speed whatever it prints:
//! - a line longer than [`LINE_CAP`] is cut there (said once per step);
//! - after [`LOG_CAP`] bytes the step's output is clipped: the rest is read and dropped,
//!   counted, and the count told at the end, as BuildKit does with its 2 MiB default
//!   (`BUILDKIT_STEP_LOG_MAX_SIZE`), so a flood neither queues up nor floods the terminal;
//! - the last [`TAIL_LINES`] lines (clipped or not) are kept for the error message of a
//!   step that fails.
//!
//! The progress channel itself is bounded too (see [`crate::progress`]): a slow renderer
//! makes these readers wait, and the command with them, instead of queueing.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::sync::Mutex;

use crate::progress::{Event, Progress};

/// Longest line passed on. Go's `bufio.Scanner`, which Docker and BuildKit tools read lines
/// with, stops at the same 64 KiB (`MaxScanTokenSize`); nobody reads a longer line in a log.
pub(super) const LINE_CAP: usize = 64 * 1024;
/// Output bytes of one step shown before the rest is clipped: BuildKit's default.
pub(super) const LOG_CAP: usize = 2 * 1024 * 1024;
/// How many trailing output lines a [`StepOutcome`](super::StepOutcome) keeps.
pub(super) const TAIL_LINES: usize = 20;
/// One read from the pipe: large enough that a flood of short lines costs few system calls.
const READ_SIZE: usize = 64 * 1024;

/// The output of one step, shared by its stdout and stderr readers.
pub(super) struct StepLog<'a> {
    id: &'a str,
    progress: &'a Progress,
    state: Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    /// Bytes sent as events so far.
    shown: usize,
    /// Lines read after the log was clipped.
    hidden: u64,
    told_cut: bool,
    /// The last lines, raw, with whether each was cut. Buffers are reused: a flood of short
    /// lines allocates nothing.
    tail: VecDeque<(Vec<u8>, bool)>,
}

impl<'a> StepLog<'a> {
    pub(super) fn new(id: &'a str, progress: &'a Progress) -> StepLog<'a> {
        StepLog {
            id,
            progress,
            state: Mutex::new(LogState::default()),
        }
    }

    /// Reads `stream` to its end, line by line (a read error ends it like EOF: the command's
    /// exit status tells what happened).
    pub(super) fn read(&self, mut stream: impl Read) {
        let mut buf = vec![0u8; READ_SIZE];
        let mut partial = Partial::default();
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut state = self.lock();
            let mut rest = &buf[..n];
            if !partial.is_empty() {
                let Some(i) = memchr::memchr(b'\n', rest) else {
                    partial.add(rest);
                    continue;
                };
                partial.add(&rest[..i]);
                self.line(&mut state, &partial.bytes, partial.cut);
                partial.clear();
                rest = &rest[i + 1..];
            }
            if state.shown >= LOG_CAP {
                rest = skip_hidden(&mut state, rest);
            }
            while let Some(i) = memchr::memchr(b'\n', rest) {
                if i <= LINE_CAP {
                    self.line(&mut state, &rest[..i], false);
                } else {
                    partial.add(&rest[..i]);
                    self.line(&mut state, &partial.bytes, partial.cut);
                    partial.clear();
                }
                rest = &rest[i + 1..];
            }
            partial.add(rest);
        }
        if !partial.is_empty() {
            let mut state = self.lock();
            self.line(&mut state, &partial.bytes, partial.cut);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn line(&self, state: &mut LogState, bytes: &[u8], cut: bool) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        keep_in_tail(&mut state.tail, bytes, cut);
        if state.shown >= LOG_CAP {
            state.hidden += 1;
            return;
        }
        state.shown += bytes.len() + 1;
        self.send(String::from_utf8_lossy(bytes).into_owned());
        if cut && !state.told_cut {
            state.told_cut = true;
            self.send(format!("[line cut at {} KiB]", LINE_CAP / 1024));
        }
        if state.shown >= LOG_CAP {
            self.send(format!(
                "[output clipped, log limit {} MiB reached]",
                LOG_CAP / (1024 * 1024)
            ));
        }
    }

    fn send(&self, line: String) {
        self.progress.send(Event::StepOutput {
            id: self.id.to_string(),
            line,
        });
    }

    /// Tells how much was clipped, and returns the last lines for the error message.
    pub(super) fn finish(self) -> Vec<String> {
        let hidden = self.lock().hidden;
        if hidden > 0 {
            self.send(format!(
                "[{hidden} more line(s) not shown; the last {TAIL_LINES} are in the error if the step fails]"
            ));
        }
        let state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        state
            .tail
            .into_iter()
            .map(|(bytes, cut)| {
                let line = String::from_utf8_lossy(&bytes).into_owned();
                if cut { line + " [cut]" } else { line }
            })
            .collect()
    }
}

/// Once the log is clipped, only the count of lines and the last [`TAIL_LINES`] matter:
/// counts the complete lines of `chunk` (which starts a line) that the tail would lose
/// anyway, and returns the rest. A flood then costs a vectorised newline count per read,
/// not a loop per line.
fn skip_hidden<'c>(state: &mut LogState, chunk: &'c [u8]) -> &'c [u8] {
    let Some(cut) = memchr::memrchr_iter(b'\n', chunk).nth(TAIL_LINES) else {
        return chunk;
    };
    let (skipped, rest) = chunk.split_at(cut + 1);
    state.hidden += memchr::memchr_iter(b'\n', skipped).count() as u64;
    rest
}

/// Pushes a line into the tail, reusing the buffer of the line it pushes out.
fn keep_in_tail(tail: &mut VecDeque<(Vec<u8>, bool)>, bytes: &[u8], cut: bool) {
    let mut buf = if tail.len() == TAIL_LINES {
        tail.pop_front().map(|(b, _)| b).unwrap_or_default()
    } else {
        Vec::new()
    };
    buf.clear();
    buf.extend_from_slice(bytes);
    tail.push_back((buf, cut));
}

/// The start of a line whose end has not been read yet, at most [`LINE_CAP`] bytes.
#[derive(Default)]
struct Partial {
    bytes: Vec<u8>,
    cut: bool,
}

impl Partial {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && !self.cut
    }

    fn add(&mut self, more: &[u8]) {
        let room = LINE_CAP - self.bytes.len();
        if more.len() > room {
            self.cut = true;
        }
        self.bytes.extend_from_slice(&more[..more.len().min(room)]);
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.cut = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Vec<String>, Vec<String>) {
        let (progress, events) = Progress::channel();
        let reader = std::thread::spawn(move || {
            events
                .iter()
                .map(|e| match e {
                    Event::StepOutput { line, .. } => line,
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        });
        let log = StepLog::new("0.1", &progress);
        // Two reads, so lines and cuts span them.
        let (first, second) = input.split_at(input.len() / 3);
        log.read(std::io::Read::chain(first, second));
        let tail = log.finish();
        drop(progress);
        (reader.join().unwrap(), tail)
    }

    #[test]
    fn lines_are_passed_on_with_line_ends_removed() {
        let (shown, tail) = run(b"one\r\ntwo\n\nthree");
        assert_eq!(shown, ["one", "two", "", "three"]);
        assert_eq!(tail, ["one", "two", "", "three"]);
    }

    #[test]
    fn a_long_line_is_cut_and_said_so_once() {
        let mut input = vec![b'x'; LINE_CAP * 3];
        input.push(b'\n');
        input.extend(vec![b'y'; LINE_CAP + 1]);
        input.extend(b"\nshort\n");
        let (shown, tail) = run(&input);
        assert_eq!(
            shown.len(),
            4,
            "{:?}",
            shown.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(shown[0], "x".repeat(LINE_CAP));
        assert_eq!(shown[1], "[line cut at 64 KiB]");
        assert_eq!(shown[2], "y".repeat(LINE_CAP));
        assert_eq!(shown[3], "short");
        assert_eq!(tail[0], format!("{} [cut]", "x".repeat(LINE_CAP)));
        assert_eq!(tail[2], "short");
    }

    #[test]
    fn a_flood_is_clipped_counted_and_its_last_lines_kept() {
        let lines = 2 * LOG_CAP / 8;
        let input: Vec<u8> = (0..lines)
            .flat_map(|i| format!("{i:07}\n").into_bytes())
            .collect();
        let (shown, tail) = run(&input);
        let visible = LOG_CAP / 8;
        assert_eq!(shown.len(), visible + 2, "{:?}", &shown[visible - 2..]);
        assert_eq!(shown[visible - 1], format!("{:07}", visible - 1));
        assert_eq!(shown[visible], "[output clipped, log limit 2 MiB reached]");
        assert_eq!(
            shown[visible + 1],
            format!(
                "[{} more line(s) not shown; the last 20 are in the error if the step fails]",
                lines - visible
            )
        );
        let want: Vec<String> = (lines - TAIL_LINES..lines)
            .map(|i| format!("{i:07}"))
            .collect();
        assert_eq!(tail, want);
    }
}
