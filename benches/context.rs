//! Context hashing beside its floor, on the shape of issue 7's w3: 50,000 files of 0–8 KiB
//! (~200 MB) in 50 × 10 directories (`KILN_BENCH_FILES` to change the count).
//!
//! - `cold`: `Context::open` without a stat cache, walk, hash every file (2 threads). Files are
//!   in the page cache after the first iteration, so this is CPU cost, not disk.
//! - `floor/sha256 one pass`: sha256 of the same number of bytes from memory, one stream: what
//!   hashing alone costs on one core (cold uses both, so it can beat this).
//! - `warm`: `Context::open` with a full stat cache file, walk, every digest a cache hit: what a
//!   no-change rebuild pays for the context.
//! - `floor/walkdir stat`: a bare `walkdir` walk that stats every entry (`lstat`).
//! - `cache load`: `Context::open` alone: reading the 50,000-entry stat cache file.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use kiln::build::context::Context;
use kiln::digest::Digest;
use kiln::plan::ignore::DockerIgnore;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Writes the tree under `root/tree`; returns the total file bytes.
fn generate(root: &Path, files: usize) -> u64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut total = 0;
    let mut buf = Vec::new();
    for i in 0..files {
        let dir = root.join(format!("tree/d{:02}/e{}", i % 50, (i / 50) % 10));
        if i < 500 {
            fs::create_dir_all(&dir).unwrap();
        }
        let len = (rng.next() % 8193) as usize;
        buf.clear();
        while buf.len() < len {
            buf.extend_from_slice(&rng.next().to_le_bytes());
        }
        buf.truncate(len);
        fs::write(dir.join(format!("f{i:05}.dat")), &buf).unwrap();
        total += len as u64;
    }
    total
}

fn open(root: &Path, cache: Option<PathBuf>) -> Context {
    Context::open(root, DockerIgnore::parse("").unwrap(), cache).unwrap()
}

/// Walk and digest everything, as a COPY of the whole context does for its cache key.
fn hash_all(ctx: &Context) -> usize {
    let entries = ctx.entries("tree").unwrap();
    let digests = ctx.file_digests(&entries).unwrap();
    digests.iter().flatten().count()
}

fn bench(c: &mut Criterion) {
    let files: usize = std::env::var("KILN_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ctx");
    let bytes = generate(&root, files);
    let cache_file = dir.path().join("stat-cache");
    // Files changed in the last 2 s are never cached (racy-clean rule): let the tree age.
    std::thread::sleep(Duration::from_millis(2_100));
    let seed = open(&root, Some(cache_file.clone()));
    assert_eq!(hash_all(&seed), files);
    seed.save_cache().unwrap();
    assert!(cache_file.exists(), "the stat cache was not written");

    let mut g = c.benchmark_group(format!("context {files} files"));
    g.sample_size(10).measurement_time(Duration::from_secs(8));

    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("cold: walk + hash every file", |b| {
        b.iter(|| hash_all(&open(&root, None)))
    });
    let data = vec![0x5au8; bytes as usize];
    g.bench_function("floor/sha256 one pass", |b| {
        b.iter(|| Digest::of(black_box(&data)))
    });
    drop(data);

    g.throughput(Throughput::Elements(files as u64));
    g.bench_function("warm: walk, every file a cache hit", |b| {
        b.iter(|| hash_all(&open(&root, Some(cache_file.clone()))))
    });
    g.bench_function("floor/walkdir stat", |b| {
        b.iter(|| {
            walkdir::WalkDir::new(root.join("tree"))
                .sort_by_file_name()
                .into_iter()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum::<u64>()
        })
    });
    g.bench_function("cache load", |b| {
        b.iter(|| open(&root, Some(cache_file.clone())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
