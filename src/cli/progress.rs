//! Renders [`Event`]s for every command (build, pull, push), BuildKit style.
//!
//! - [`Mode::Tty`]: a live display (indicatif): one line per running step with a timer and the
//!   last few lines of its output under it, one bar per blob transfer with its rate. Finished
//!   steps and blobs become permanent lines above the live area; a step that never finished
//!   (the build failed in it) is shown again with all of its output.
//! - [`Mode::Plain`]: line by line for CI logs: `#3 [build 2/4] RUN make`, its output as
//!   `#3 0.512 …`, then `#3 DONE 1.2s` or `#3 CACHED`; cache misses as `#3 <why>`.
//! - [`Mode::Json`]: one JSON object per event per line, with `time_ms` since the start.
//! - [`Mode::Quiet`]: warnings only.
//!
//! Only what the library sends is shown, and it never sends environment values or
//! credentials: step names are the Dockerfile's text as written, before any expansion.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressState, ProgressStyle};

use crate::image::Stored;
use crate::progress::{Event, Progress};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Tty,
    Plain,
    Json,
    Quiet,
}

impl Mode {
    /// `--progress auto|tty|plain|json` and `-q`. `auto` (and `tty` without a terminal, where
    /// a live display cannot be drawn) is plain unless stderr is a terminal. `-q` wins.
    pub(super) fn choose(flag: &str, quiet: bool) -> Mode {
        let terminal = std::io::stderr().is_terminal();
        match flag {
            _ if quiet => Mode::Quiet,
            "json" => Mode::Json,
            "plain" => Mode::Plain,
            _ if terminal => Mode::Tty,
            _ => Mode::Plain,
        }
    }

    /// Whether the final summary is printed (not for tools or with `-q`).
    pub(super) fn summary(self) -> bool {
        matches!(self, Mode::Tty | Mode::Plain)
    }
}

/// The thread drawing progress; [`Renderer::finish`] waits until every event is shown.
pub(super) struct Renderer {
    handle: JoinHandle<()>,
}

/// Starts rendering in `mode`; events sent to the returned sink are shown until every clone
/// of it is dropped.
pub(super) fn start(mode: Mode) -> (Progress, Renderer) {
    let (progress, events) = Progress::channel();
    let handle = std::thread::spawn(move || render(events, mode));
    (progress, Renderer { handle })
}

impl Renderer {
    /// Waits for the display to be complete and cleared (drop the sink first).
    pub(super) fn finish(self) {
        let _ = self.handle.join();
    }
}

/// The average rate of a transfer of `bytes` that began at `start`, in MB/s (the final lines
/// of pull and push).
pub(super) fn mb_per_s(bytes: u64, start: Instant) -> f64 {
    bytes as f64 / 1e6 / start.elapsed().as_secs_f64().max(1e-6)
}

fn render(events: Receiver<Event>, mode: Mode) {
    let start = Instant::now();
    match mode {
        Mode::Json => lines_of(events, |e| vec![json_line(&e, start.elapsed())]),
        Mode::Quiet => lines_of(events, |e| match e {
            Event::Warning { message } => vec![format!("warning: {message}")],
            _ => Vec::new(),
        }),
        Mode::Plain => {
            let mut plain = Plain::new();
            lines_of(events, |e| plain.event(&e, Instant::now()));
            for line in plain.finish(Instant::now()) {
                eprintln!("{line}");
            }
        }
        Mode::Tty => {
            let mut tty = Tty::new();
            while let Some(e) = next_or_idle(&events, || tty.refresh()) {
                tty.event(e);
            }
            tty.finish();
        }
    }
}

/// Writes the lines `show` makes of each event to stderr, buffered while more events are
/// queued and flushed as soon as none is: a flood of output costs few system calls, and a
/// quiet moment still shows everything at once.
fn lines_of(events: Receiver<Event>, mut show: impl FnMut(Event) -> Vec<String>) {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    while let Some(e) = next_or_idle(&events, || {
        let _ = out.flush();
    }) {
        for line in show(e) {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = out.flush();
}

/// The next event; when none is queued, first `idle` (flush, redraw), then wait for one.
/// `None` once every sender is gone.
fn next_or_idle(events: &Receiver<Event>, idle: impl FnOnce()) -> Option<Event> {
    match events.try_recv() {
        Ok(e) => Some(e),
        Err(TryRecvError::Empty) => {
            idle();
            events.recv().ok()
        }
        Err(TryRecvError::Disconnected) => None,
    }
}

/// One event as a JSON object, with the milliseconds since the renderer started.
fn json_line(e: &Event, since_start: Duration) -> String {
    let mut v = serde_json::to_value(e).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("time_ms".into(), (since_start.as_millis() as u64).into());
    }
    v.to_string()
}

/// `sha256:0123456789ab`: enough of a blob digest to tell blobs apart on one screen.
fn short_id(id: &str) -> &str {
    let end = id.find(':').map_or(12, |c| c + 13);
    id.get(..end).unwrap_or(id)
}

/// Output lines may carry terminal control sequences (colours, `\r` progress): drawn raw in a
/// live display they would move the cursor under indicatif's feet.
fn printable(line: &str) -> String {
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The plain formatter: a number (`#N`) per step or blob, in the order they first appear.
pub(super) struct Plain {
    next: u32,
    steps: HashMap<String, Vertex>,
    blobs: HashMap<String, Blob>,
}

struct Vertex {
    num: u32,
    started: Instant,
    done: bool,
}

struct Blob {
    num: u32,
    started: Instant,
    last_shown: Instant,
    done: bool,
}

/// A blob's progress line at most this often (CI logs stay short).
const PLAIN_BYTES_EVERY: Duration = Duration::from_secs(1);

impl Plain {
    pub(super) fn new() -> Plain {
        Plain {
            next: 1,
            steps: HashMap::new(),
            blobs: HashMap::new(),
        }
    }

    fn vertex(&mut self, id: &str, now: Instant) -> &mut Vertex {
        let next = &mut self.next;
        self.steps.entry(id.to_string()).or_insert_with(|| {
            *next += 1;
            Vertex {
                num: *next - 1,
                started: now,
                done: false,
            }
        })
    }

    /// The lines `e` prints (none for most blob progress).
    pub(super) fn event(&mut self, e: &Event, now: Instant) -> Vec<String> {
        match e {
            Event::StepStarted { id, name } => {
                let v = self.vertex(id, now);
                v.started = now;
                vec![format!("#{} {name}", v.num)]
            }
            Event::StepOutput { id, line } => {
                let v = self.vertex(id, now);
                let secs = now.duration_since(v.started).as_secs_f64();
                vec![format!("#{} {secs:.3} {line}", v.num)]
            }
            Event::StepDone { id, cached, millis } => {
                let v = self.vertex(id, now);
                v.done = true;
                if *cached {
                    vec![format!("#{} CACHED", v.num)]
                } else {
                    vec![format!("#{} DONE {:.1}s", v.num, *millis as f64 / 1000.0)]
                }
            }
            Event::CacheMiss { id, reason } => {
                vec![format!("#{} {reason}", self.vertex(id, now).num)]
            }
            Event::Bytes { id, done, total } => self.bytes(id, *done, *total, now),
            Event::Warning { message } => vec![format!("warning: {message}")],
            Event::Info { message } => vec![message.clone()],
        }
    }

    fn bytes(&mut self, id: &str, done: u64, total: Option<u64>, now: Instant) -> Vec<String> {
        let fresh = !self.blobs.contains_key(id);
        if fresh {
            self.next += 1;
        }
        let num = self.next - 1;
        let b = self.blobs.entry(id.to_string()).or_insert(Blob {
            num,
            started: now,
            last_shown: now,
            done: false,
        });
        let complete = total.is_some_and(|t| done >= t);
        if b.done || !(fresh || complete || now.duration_since(b.last_shown) >= PLAIN_BYTES_EVERY) {
            return Vec::new();
        }
        b.last_shown = now;
        b.done = complete;
        let size = match total {
            Some(t) => format!("{} / {}", HumanBytes(done), HumanBytes(t)),
            None => HumanBytes(done).to_string(),
        };
        let secs = now.duration_since(b.started).as_secs_f64();
        let state = if complete { " done" } else { "" };
        vec![format!(
            "#{} {} {size} {secs:.1}s{state}",
            b.num,
            short_id(id)
        )]
    }

    /// Steps that never finished: the build failed (or was interrupted) in them.
    pub(super) fn finish(&mut self, now: Instant) -> Vec<String> {
        let mut open: Vec<&Vertex> = self.steps.values().filter(|v| !v.done).collect();
        open.sort_by_key(|v| v.num);
        open.iter()
            .map(|v| {
                let secs = now.duration_since(v.started).as_secs_f64();
                format!("#{} ERROR after {secs:.1}s", v.num)
            })
            .collect()
    }
}

/// Live lines of a running step's output shown under it.
const TAIL_LINES: usize = 6;
/// Output kept per running step, to show again in full if it fails.
const KEPT_LINES: usize = 1000;

struct LiveStep {
    name: String,
    started: Instant,
    bar: ProgressBar,
    tail: Vec<ProgressBar>,
    lines: VecDeque<String>,
    dropped: usize,
    /// Lines came since the tail bars were last drawn.
    stale: bool,
    /// Why the cache missed, shown under the step's final line.
    miss: Option<String>,
}

/// The live display.
struct Tty {
    multi: MultiProgress,
    step_style: ProgressStyle,
    tail_style: ProgressStyle,
    steps: HashMap<String, LiveStep>,
    blobs: HashMap<String, (ProgressBar, Instant)>,
    finished_blobs: HashSet<String>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("secs", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1}s", s.elapsed().as_secs_f64());
        })
}

impl Tty {
    fn new() -> Tty {
        Tty {
            multi: MultiProgress::new(),
            step_style: style("{spinner:.cyan} {wide_msg} {secs:.dim}").tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
            tail_style: style("   {wide_msg:.dim}"),
            steps: HashMap::new(),
            blobs: HashMap::new(),
            finished_blobs: HashSet::new(),
        }
    }

    fn println(&self, line: impl AsRef<str>) {
        let _ = self.multi.println(line);
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::StepStarted { id, name } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(self.step_style.clone());
                bar.set_message(name.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                let step = LiveStep {
                    name,
                    started: Instant::now(),
                    bar,
                    tail: Vec::new(),
                    lines: VecDeque::new(),
                    dropped: 0,
                    stale: false,
                    miss: None,
                };
                if let Some(old) = self.steps.insert(id, step) {
                    self.clear(&old);
                }
            }
            Event::StepOutput { id, line } => self.output(&id, printable(&line)),
            Event::StepDone { id, cached, millis } => {
                if let Some(step) = self.steps.remove(&id) {
                    self.clear(&step);
                    self.println(if cached {
                        format!("=> CACHED {}", step.name)
                    } else {
                        format!("=> {}  {:.1}s", step.name, millis as f64 / 1000.0)
                    });
                    if let Some(why) = step.miss {
                        self.println(format!("   {why}"));
                    }
                }
            }
            Event::CacheMiss { id, reason } => match self.steps.get_mut(&id) {
                Some(step) => step.miss = Some(reason),
                None => self.println(format!("   {reason}")),
            },
            Event::Bytes { id, done, total } => self.bytes(id, done, total),
            Event::Warning { message } => self.println(format!("warning: {message}")),
            Event::Info { message } => self.println(message),
        }
    }

    fn output(&mut self, id: &str, line: String) {
        let Some(step) = self.steps.get_mut(id) else {
            return self.println(format!("   {line}"));
        };
        if step.lines.len() == KEPT_LINES {
            step.lines.pop_front();
            step.dropped += 1;
        }
        step.lines.push_back(line);
        step.stale = true;
    }

    /// Shows the last lines of each step whose output changed: done only when no event is
    /// waiting, so a flood of output costs one redraw per pause, not one per line.
    fn refresh(&mut self) {
        for step in self.steps.values_mut().filter(|s| s.stale) {
            step.stale = false;
            while step.tail.len() < TAIL_LINES.min(step.lines.len()) {
                let after = step.tail.last().unwrap_or(&step.bar);
                let bar = self.multi.insert_after(after, ProgressBar::new_spinner());
                bar.set_style(self.tail_style.clone());
                step.tail.push(bar);
            }
            let first = step.lines.len() - step.tail.len();
            for (bar, line) in step.tail.iter().zip(step.lines.iter().skip(first)) {
                bar.set_message(line.clone());
            }
        }
    }

    fn bytes(&mut self, id: String, done: u64, total: Option<u64>) {
        if self.finished_blobs.contains(&id) {
            return;
        }
        let (bar, started) = self.blobs.entry(id.clone()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
            let template = match total {
                Some(_) => "   {prefix} [{bar:25}] {bytes}/{total_bytes} {bytes_per_sec}",
                None => "   {prefix} {bytes} {bytes_per_sec}",
            };
            bar.set_style(style(template).progress_chars("=> "));
            bar.set_prefix(short_id(&id).to_string());
            (bar, Instant::now())
        });
        bar.set_position(done);
        if total.is_some_and(|t| done >= t) {
            let line = format!(
                "=> {} {} done  {:.1}s",
                short_id(&id),
                HumanBytes(done),
                started.elapsed().as_secs_f64()
            );
            bar.finish_and_clear();
            self.multi.remove(bar);
            self.blobs.remove(&id);
            self.finished_blobs.insert(id);
            self.println(line);
        }
    }

    fn clear(&self, step: &LiveStep) {
        for bar in step.tail.iter().chain([&step.bar]) {
            bar.finish_and_clear();
            self.multi.remove(bar);
        }
    }

    /// Leaves no bar drawn; a step that never finished is where the build failed: show it
    /// with its whole output (the error itself follows from the caller).
    fn finish(mut self) {
        let mut open: Vec<LiveStep> = self.steps.drain().map(|(_, s)| s).collect();
        open.sort_by_key(|s| s.started);
        for step in &open {
            self.clear(step);
            self.println(format!(
                "=> ERROR {}  {:.1}s",
                step.name,
                step.started.elapsed().as_secs_f64()
            ));
            if let Some(why) = &step.miss {
                self.println(format!("   {why}"));
            }
            if step.dropped > 0 {
                self.println(format!("   … {} earlier line(s)", step.dropped));
            }
            for line in &step.lines {
                self.println(format!("   {line}"));
            }
        }
        for (bar, _) in self.blobs.values() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// What a finished build reports.
pub(super) struct Summary<'a> {
    pub image: &'a Stored,
    pub layers_built: usize,
    pub layers_reused: usize,
    pub elapsed: Duration,
    /// Names the image was stored under.
    pub names: Vec<String>,
    /// `name@digest` for each push.
    pub pushed: Vec<String>,
}

/// The final summary, for people (the image ID alone goes to stdout).
pub(super) fn summary_lines(s: &Summary) -> Vec<String> {
    let mut lines = vec![format!(
        "built in {:.1}s: {} layer(s) written, {} reused",
        s.elapsed.as_secs_f64(),
        s.layers_built,
        s.layers_reused
    )];
    match s.image {
        Stored::Image(image) => {
            let size: u64 = image.layers.iter().map(|l| l.size).sum();
            lines.extend([
                format!("  image id   {}", image.config_digest),
                format!("  manifest   {}", image.manifest_digest),
                format!(
                    "  size       {} compressed in {} layer(s)",
                    HumanBytes(size),
                    image.layers.len()
                ),
            ]);
        }
        Stored::Index(index) => {
            lines.push(format!("  index      {}", index.digest));
            lines.extend(index.members.iter().map(|m| {
                format!(
                    "  {:<10} image id {}, manifest {}",
                    m.platform.to_string(),
                    m.image.config_digest,
                    m.image.manifest_digest
                )
            }));
            lines.push(format!(
                "  size       {} compressed",
                HumanBytes(index.size())
            ));
        }
    }
    lines.extend(s.names.iter().map(|n| format!("  stored as  {n}")));
    lines.extend(s.pushed.iter().map(|n| format!("  pushed     {n}")));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(id: &str, name: &str) -> Event {
        Event::StepStarted {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn plain_numbers_steps_prefixes_output_and_marks_done_or_cached() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Plain::new();
        let mut out = Vec::new();
        out.extend(p.event(&started("0.1", "[build 1/2] COPY . /app"), ms(0)));
        out.extend(p.event(
            &Event::StepDone {
                id: "0.1".into(),
                cached: true,
                millis: 3,
            },
            ms(3),
        ));
        out.extend(p.event(&started("0.2", "[build 2/2] RUN make"), ms(10)));
        out.extend(p.event(
            &Event::CacheMiss {
                id: "0.2".into(),
                reason: "RUN make: cache miss, parent changed".into(),
            },
            ms(11),
        ));
        out.extend(p.event(
            &Event::StepOutput {
                id: "0.2".into(),
                line: "cc -o app".into(),
            },
            ms(522),
        ));
        out.extend(p.event(
            &Event::StepDone {
                id: "0.2".into(),
                cached: false,
                millis: 1234,
            },
            ms(1244),
        ));
        assert_eq!(
            out,
            [
                "#1 [build 1/2] COPY . /app",
                "#1 CACHED",
                "#2 [build 2/2] RUN make",
                "#2 RUN make: cache miss, parent changed",
                "#2 0.512 cc -o app",
                "#2 DONE 1.2s",
            ]
        );
        assert!(p.finish(ms(2000)).is_empty());
    }

    #[test]
    fn plain_keeps_interleaved_steps_apart_and_reports_unfinished_ones() {
        let t0 = Instant::now();
        let mut p = Plain::new();
        p.event(&started("0.1", "[a 1/1] RUN x"), t0);
        p.event(&started("1.1", "[b 1/1] RUN y"), t0);
        let line = |id: &str| Event::StepOutput {
            id: id.into(),
            line: "hi".into(),
        };
        assert_eq!(p.event(&line("1.1"), t0), ["#2 0.000 hi"]);
        assert_eq!(p.event(&line("0.1"), t0), ["#1 0.000 hi"]);
        p.event(
            &Event::StepDone {
                id: "1.1".into(),
                cached: false,
                millis: 5,
            },
            t0,
        );
        assert_eq!(
            p.finish(t0 + Duration::from_millis(1500)),
            ["#1 ERROR after 1.5s"]
        );
    }

    #[test]
    fn plain_blob_progress_is_throttled_and_ends_with_done() {
        let t0 = Instant::now();
        let mut p = Plain::new();
        let id = format!("sha256:{}", "ab".repeat(32));
        let bytes = |done| Event::Bytes {
            id: id.clone(),
            done,
            total: Some(2048),
        };
        let first = p.event(&bytes(100), t0);
        assert_eq!(first, ["#1 sha256:abababababab 100 B / 2.00 KiB 0.0s"]);
        assert!(
            p.event(&bytes(200), t0 + Duration::from_millis(10))
                .is_empty()
        );
        let later = p.event(&bytes(1024), t0 + Duration::from_millis(1100));
        assert_eq!(later.len(), 1, "{later:?}");
        let done = p.event(&bytes(2048), t0 + Duration::from_millis(1200));
        assert_eq!(
            done,
            ["#1 sha256:abababababab 2.00 KiB / 2.00 KiB 1.2s done"]
        );
        assert!(
            p.event(&bytes(2048), t0 + Duration::from_secs(5))
                .is_empty()
        );
        assert_eq!(p.event(&started("0.1", "s"), t0), ["#2 s"]);
    }

    #[test]
    fn plain_passes_warnings_and_info_through() {
        let mut p = Plain::new();
        let now = Instant::now();
        assert_eq!(
            p.event(
                &Event::Warning {
                    message: "w".into()
                },
                now
            ),
            ["warning: w"]
        );
        assert_eq!(
            p.event(
                &Event::Info {
                    message: "pulling x".into()
                },
                now
            ),
            ["pulling x"]
        );
    }

    #[test]
    fn json_lines_carry_the_event_and_time_ms() {
        let line = json_line(
            &Event::StepDone {
                id: "0.1".into(),
                cached: true,
                millis: 7,
            },
            Duration::from_millis(42),
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "step_done");
        assert_eq!(v["id"], "0.1");
        assert_eq!(v["cached"], true);
        assert_eq!(v["time_ms"], 42);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn the_summary_names_digests_size_counts_and_names() {
        let layer = |n: u8, size| crate::image::Layer {
            digest: crate::Digest::of(&[n]),
            size,
            diff_id: crate::Digest::of(&[n, n]),
            compression: crate::image::Compression::Gzip,
        };
        let image = crate::image::StoredImage {
            manifest_digest: crate::Digest::of(b"m"),
            manifest: Vec::new(),
            format: crate::image::ImageFormat::Oci,
            config_digest: crate::Digest::of(b"c"),
            config: Vec::new(),
            layers: vec![layer(1, 1000), layer(2, 2048)],
        };
        let lines = summary_lines(&Summary {
            image: &Stored::Image(image.clone()),
            layers_built: 1,
            layers_reused: 1,
            elapsed: Duration::from_millis(2345),
            names: vec!["docker.io/library/app:1".into()],
            pushed: vec![format!("reg:5000/app@{}", image.manifest_digest)],
        });
        assert_eq!(
            lines,
            [
                "built in 2.3s: 1 layer(s) written, 1 reused".to_string(),
                format!("  image id   {}", image.config_digest),
                format!("  manifest   {}", image.manifest_digest),
                "  size       2.98 KiB compressed in 2 layer(s)".to_string(),
                "  stored as  docker.io/library/app:1".to_string(),
                format!("  pushed     reg:5000/app@{}", image.manifest_digest),
            ]
        );
    }

    #[test]
    fn control_characters_are_not_drawn_raw() {
        assert_eq!(printable("\x1b[31mred\r"), " [31mred ");
        assert_eq!(short_id("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }
}
