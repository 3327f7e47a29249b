//! Layer writing throughput beside the machine's floor, measured in the same run.
//!
//! `cargo bench --bench layer` generates into a temp dir:
//! - a 1 GiB tree (`KILN_BENCH_MB` to change) of 16 MiB files, half word-salad text, half random;
//! - a 50,000-file tree (`KILN_BENCH_FILES`) of 0.5–8 KiB files in 500 directories;
//!
//! and for each prints MB/s of `write_layer` next to the floors on the same bytes:
//! sha256 alone, and the compressor alone (one stream on one thread, and one stream per core
//! over halves of the data: the best a 2-core machine can do). Peak RSS is VmHWM, reset
//! before each layer (`/proc/self/clear_refs`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln::layer::{Compression, DiffKind, Encoding, LayerOptions, write_layer};

const WORDS: [&str; 24] = [
    "layer",
    "image",
    "build",
    "kiln",
    "the",
    "of",
    "and",
    "to",
    "container",
    "rootless",
    "tar",
    "digest",
    "stream",
    "config",
    "manifest",
    "registry",
    "push",
    "pull",
    "cache",
    "step",
    "run",
    "copy",
    "from",
    "stage",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill_text(&mut self, buf: &mut Vec<u8>, len: usize) {
        while buf.len() < len {
            let r = self.next();
            buf.extend_from_slice(WORDS[(r % 24) as usize].as_bytes());
            buf.push(if r & 0xf00 == 0 { b'\n' } else { b' ' });
            if r & 0xff000 == 0 {
                buf.extend_from_slice(format!("{}", r >> 40).as_bytes());
            }
        }
        buf.truncate(len);
    }
    fn fill_random(&mut self, buf: &mut Vec<u8>, len: usize) {
        while buf.len() < len {
            buf.extend_from_slice(&self.next().to_le_bytes());
        }
        buf.truncate(len);
    }
}

fn gen_big(root: &Path, total_mb: usize) -> Vec<PathBuf> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut files = Vec::new();
    let mut buf = Vec::with_capacity(1 << 20);
    for i in 0..total_mb.div_ceil(16) {
        let path = root.join(format!("d{}/f{i:03}.bin", i % 4));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = io::BufWriter::new(fs::File::create(&path).unwrap());
        for _ in 0..16 {
            buf.clear();
            if i % 2 == 0 {
                rng.fill_text(&mut buf, 1 << 20);
            } else {
                rng.fill_random(&mut buf, 1 << 20);
            }
            f.write_all(&buf).unwrap();
        }
        files.push(path);
    }
    files
}

fn gen_many(root: &Path, count: usize) -> Vec<PathBuf> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut files = Vec::with_capacity(count);
    let mut buf = Vec::new();
    for i in 0..count {
        let path = root.join(format!("dir{:03}/file{i:05}.txt", i % 500));
        if i < 500 {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        let len = 512 + (rng.next() % (8 * 1024 - 512)) as usize;
        buf.clear();
        if i % 4 == 0 {
            rng.fill_random(&mut buf, len);
        } else {
            rng.fill_text(&mut buf, len);
        }
        fs::write(&path, &buf).unwrap();
        files.push(path);
    }
    files
}

fn read_all(files: &[PathBuf], mut sink: impl Write) -> u64 {
    let mut n = 0;
    for f in files {
        n += io::copy(&mut fs::File::open(f).unwrap(), &mut sink).unwrap();
    }
    n
}

/// Throughput in MB/s of `f` over `bytes`.
fn timed(bytes: u64, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    bytes as f64 / 1e6 / t.elapsed().as_secs_f64()
}

/// The compressor alone: one stream per thread over `threads` interleaved slices of the files.
fn compressor_floor(files: &[PathBuf], bytes: u64, threads: usize, codec: Encoding) -> f64 {
    timed(bytes, || {
        std::thread::scope(|s| {
            for t in 0..threads {
                let mine: Vec<PathBuf> = files.iter().skip(t).step_by(threads).cloned().collect();
                s.spawn(move || match codec.compression() {
                    Compression::Zstd => {
                        let mut e = zstd::stream::Encoder::new(io::sink(), codec.level()).unwrap();
                        read_all(&mine, &mut e);
                        e.finish().unwrap();
                    }
                    Compression::Gzip => {
                        let mut e = flate2::write::GzEncoder::new(
                            io::sink(),
                            flate2::Compression::new(codec.level().unsigned_abs()),
                        );
                        read_all(&mine, &mut e);
                        e.finish().unwrap();
                    }
                    Compression::None => unreachable!("no floor for a plain tar"),
                });
            }
        });
    })
}

fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mb() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Counter(u64);
impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn bench_tree(name: &str, root: &Path, files: &[PathBuf]) {
    let bytes = read_all(files, io::sink()); // also warms the page cache
    let threads = rayon::current_num_threads();
    println!(
        "\n== {name}: {} files, {:.0} MB of file data, {threads} rayon threads",
        files.len(),
        bytes as f64 / 1e6
    );
    let sha = timed(bytes, || {
        let mut h = kiln::digest::HashingWriter::new(io::sink());
        read_all(files, &mut h);
    });
    println!("floor  sha256 (read + hash)            {sha:8.1} MB/s");
    // gzip-5 is kiln's default; gzip-6 is zlib's customary level, for comparison.
    let codecs = [
        ("gzip-5", Encoding::default()),
        ("gzip-6", Encoding::new(Compression::Gzip, Some(6)).unwrap()),
        ("zstd-3", Encoding::new(Compression::Zstd, Some(3)).unwrap()),
    ];
    let mut cases = vec![("none", Encoding::plain(), sha)];
    for (n, codec) in codecs {
        let one = compressor_floor(files, bytes, 1, codec);
        let all = compressor_floor(files, bytes, threads, codec);
        println!("floor  {n} alone: 1 stream {one:7.1} MB/s, {threads} streams {all:7.1} MB/s");
        cases.push((n, codec, all));
    }
    for (n, encoding, floor) in cases {
        let opts = LayerOptions {
            encoding,
            ..LayerOptions::default()
        };
        reset_peak_rss();
        let mut out = Counter(0);
        let t = Instant::now();
        write_layer(root, DiffKind::Directory, &opts, &mut out).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let mbs = bytes as f64 / 1e6 / secs;
        println!(
            "layer  {n:7} {mbs:8.1} MB/s = {:5.1}% of floor  ({:.2} s, {:.0} files/s, ratio {:.3}, peak RSS {:.1} MB)",
            100.0 * mbs / floor,
            secs,
            files.len() as f64 / secs,
            out.0 as f64 / bytes as f64,
            peak_rss_mb()
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let full = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (mb, count) = if full {
        (env("KILN_BENCH_MB", 1024), env("KILN_BENCH_FILES", 50_000))
    } else {
        (8, 500)
    };
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big");
    let many = tmp.path().join("many");
    let t = Instant::now();
    let big_files = gen_big(&big, mb);
    let many_files = gen_many(&many, count);
    println!(
        "generated test trees in {:.1} s under {}",
        t.elapsed().as_secs_f64(),
        tmp.path().display()
    );
    bench_tree("mixed 16 MiB files", &big, &big_files);
    bench_tree("small files", &many, &many_files);
}
