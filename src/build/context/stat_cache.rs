//! The persistent stat cache of a context: (path, stat) → content digest, like git's index.
//!
//! A no-change rebuild looks up every file of the context here, so the cache is built for
//! that: the file is kept as loaded (one buffer, no per-path `String`: 50,000 of them in a
//! `HashMap` took longer to build and drop than the lookups they served), its records sorted
//! in the walk's order (path components compared in turn). The walk asks for paths in that
//! same order, so a lookup is mostly one comparison with the record after the last hit;
//! anything else is a binary search. Digests recorded by this build go to a small side map;
//! the file is rewritten, sorted, only when there are some.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::Digest;

/// The stat fields that, when unchanged, let a cached digest stand for the file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StatKey {
    pub(super) size: u64,
    pub(super) mtime_ns: i64,
    pub(super) ctime_ns: i64,
    pub(super) ino: u64,
    pub(super) mode: u32,
}

impl StatKey {
    pub(super) fn of(m: &fs::Metadata) -> StatKey {
        StatKey {
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            mode: m.mode(),
        }
    }

    fn is_racy(&self, now_ns: i64, window: Duration) -> bool {
        let newest = self.mtime_ns.max(self.ctime_ns);
        newest > now_ns - window.as_nanos() as i64
    }
}

pub(super) struct StatCache {
    file: Option<PathBuf>,
    /// The cache file as loaded (empty if there was none or it was damaged); boxed to keep
    /// `Context` small.
    loaded: Box<codec::Table>,
    /// Recorded by this build; wins over `loaded`.
    added: HashMap<String, (StatKey, Digest)>,
    /// Whether `added` has records the file lacks.
    dirty: bool,
    pub(super) racy_window: Duration,
}

impl StatCache {
    /// A missing, unreadable or outdated cache file is an empty cache, not an error.
    pub(super) fn load(file: Option<PathBuf>, racy_window: Duration) -> StatCache {
        let loaded = file
            .as_deref()
            .and_then(|p| fs::read(p).ok())
            .and_then(codec::Table::decode)
            .unwrap_or_default()
            .into();
        StatCache {
            file,
            loaded,
            added: HashMap::new(),
            dirty: false,
            racy_window,
        }
    }

    /// The cached digest of `rel` if its stat is still `stat`. `hint` is where the lookup
    /// before it (in walk order) left off; start at 0.
    pub(super) fn get(&self, rel: &str, stat: &StatKey, hint: &mut usize) -> Option<Digest> {
        let added = match self.added.is_empty() {
            true => None,
            false => self.added.get(rel).copied(),
        };
        let found = added.or_else(|| self.loaded.get(rel, hint));
        found.filter(|(k, _)| k == stat).map(|(_, d)| d)
    }

    /// Records a digest read after `now`, unless the file is racy (see `context`'s docs).
    pub(super) fn insert(&mut self, rel: &str, stat: StatKey, digest: Digest, now: SystemTime) {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(i64::MAX);
        if self.file.is_some() && !stat.is_racy(now_ns, self.racy_window) {
            self.added.insert(rel.to_string(), (stat, digest));
            self.dirty = true;
        }
    }

    /// How many paths the cache holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.records().len()
    }

    /// Every record, this build's over the loaded ones, in walk order.
    fn records(&self) -> Vec<(&str, StatKey, Digest)> {
        let mut out: Vec<(&str, StatKey, Digest)> = self
            .loaded
            .iter()
            .filter(|(rel, _, _)| !self.added.contains_key(*rel))
            .collect();
        out.extend(self.added.iter().map(|(r, &(k, d))| (r.as_str(), k, d)));
        out.sort_unstable_by(|a, b| codec::walk_order(a.0.as_bytes(), b.0.as_bytes()));
        out
    }

    pub(super) fn save(&mut self) -> io::Result<()> {
        let Some(file) = self.file.as_deref().filter(|_| self.dirty) else {
            return Ok(());
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        {
            let mut w = io::BufWriter::new(&mut tmp);
            codec::encode(&self.records(), &mut w)?;
            io::Write::flush(&mut w)?;
        }
        // Renamed into place only when whole: a crash leaves the old cache or none.
        tmp.persist(file).map_err(|e| e.error)?;
        self.dirty = false;
        Ok(())
    }
}

/// The stat cache file: a compact binary table, because a 50,000-entry JSON file took longer
/// to parse (~60 ms) than the whole stat walk it saves reads for.
///
/// Layout (little-endian): `MAGIC`, entry count (u64), then per entry, in [`walk_order`] of
/// their paths, the path length (u32), the path, size, mtime ns, ctime ns, inode (8 bytes
/// each), mode (u32) and the 32-byte sha256; last, the sha256 of everything before it. The
/// file is renamed into place without an fsync (it is only a cache), so after a crash it may
/// hold zeroed blocks: anything that does not parse exactly, is out of order or fails the
/// checksum (old format, torn or truncated file) is an empty cache, never a wrong digest.
pub(super) mod codec {
    use std::cmp::Ordering;
    use std::io::{self, Write};

    use super::StatKey;
    use crate::digest::{Digest, HashingWriter};

    /// Names the format and its version; bump the last byte when the layout changes.
    /// 3: records sorted in walk order.
    const MAGIC: &[u8; 8] = b"kilnsc\x00\x03";
    /// The bytes of an entry after its path.
    const FIXED: usize = 4 * 8 + 4 + 32;
    /// Where the records start: after the magic and the count.
    const HEADER: usize = MAGIC.len() + 8;

    /// The order of the context walk: depth first, parents before children, siblings by
    /// name; i.e. paths compared component by component, which is byte order with `/` below
    /// every other byte.
    pub(in super::super) fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
        let rank = |c: u8| if c == b'/' { 0 } else { u16::from(c) + 1 };
        match a.iter().zip(b).find(|(x, y)| x != y) {
            Some((&x, &y)) => rank(x).cmp(&rank(y)),
            None => a.len().cmp(&b.len()),
        }
    }

    /// Writes `entries`, which must be sorted in [`walk_order`] without repeats.
    pub(in super::super) fn encode(
        entries: &[(&str, StatKey, Digest)],
        w: &mut impl Write,
    ) -> io::Result<()> {
        let mut h = HashingWriter::new(w);
        h.write_all(MAGIC)?;
        h.write_all(&(entries.len() as u64).to_le_bytes())?;
        for (rel, k, d) in entries {
            let len = u32::try_from(rel.len()).map_err(io::Error::other)?;
            h.write_all(&len.to_le_bytes())?;
            h.write_all(rel.as_bytes())?;
            h.write_all(&k.size.to_le_bytes())?;
            h.write_all(&k.mtime_ns.to_le_bytes())?;
            h.write_all(&k.ctime_ns.to_le_bytes())?;
            h.write_all(&k.ino.to_le_bytes())?;
            h.write_all(&k.mode.to_le_bytes())?;
            h.write_all(d.as_bytes())?;
        }
        let (w, sum, _) = h.finish();
        w.write_all(sum.as_bytes())
    }

    /// A decoded cache file: its bytes and the offset of each record, in walk order.
    #[derive(Default)]
    pub(in super::super) struct Table {
        bytes: Vec<u8>,
        records: Vec<u32>,
    }

    impl Table {
        /// `None` unless `bytes` is a whole, well-formed cache file (see the module docs).
        pub(in super::super) fn decode(bytes: Vec<u8>) -> Option<Table> {
            let body_len = bytes.len().checked_sub(32)?;
            let (body, sum) = bytes.split_at(body_len);
            if !body.starts_with(MAGIC) || Digest::of(body).as_bytes() != sum {
                return None;
            }
            // Offsets are u32: a cache past 4 GiB (tens of millions of files) is not one.
            u32::try_from(body_len).ok()?;
            let count = usize::try_from(u64::from_le_bytes(array(body, MAGIC.len())?)).ok()?;
            // Each entry takes more than FIXED bytes: a corrupt count cannot over-allocate.
            let mut records = Vec::with_capacity(count.min(body_len / FIXED));
            let mut at = HEADER;
            let mut previous: Option<&[u8]> = None;
            for _ in 0..count {
                let len = u32::from_le_bytes(array(body, at)?) as usize;
                let path = body.get(at + 4..at + 4 + len)?;
                std::str::from_utf8(path).ok()?;
                if previous.is_some_and(|p| walk_order(p, path) != Ordering::Less) {
                    return None;
                }
                previous = Some(path);
                records.push(at as u32);
                at += 4 + len + FIXED;
            }
            if at != body_len {
                return None;
            }
            Some(Table { bytes, records })
        }

        fn path(&self, n: usize) -> &[u8] {
            self.path_at(self.records[n])
        }

        /// The path of the record at byte offset `at`.
        fn path_at(&self, at: u32) -> &[u8] {
            let at = at as usize;
            let len = u32::from_le_bytes(array(&self.bytes, at).expect("checked by decode"));
            &self.bytes[at + 4..at + 4 + len as usize]
        }

        /// The stat and digest of record `n` (its bytes were bounds-checked by `decode`).
        fn record(&self, n: usize) -> (StatKey, Digest) {
            let at = self.records[n] as usize + 4 + self.path(n).len();
            let f = &self.bytes[at..at + FIXED];
            let u64_at = |i: usize| u64::from_le_bytes(f[i..i + 8].try_into().expect("8 bytes"));
            let key = StatKey {
                size: u64_at(0),
                mtime_ns: u64_at(8) as i64,
                ctime_ns: u64_at(16) as i64,
                ino: u64_at(24),
                mode: u32::from_le_bytes(f[32..36].try_into().expect("4 bytes")),
            };
            let digest = Digest::from_bytes(f[36..].try_into().expect("32 bytes"));
            (key, digest)
        }

        /// The record of `rel`. `hint` is the record after the previous lookup's place:
        /// checked first, then a binary search; it is left after this lookup's place.
        pub(in super::super) fn get(
            &self,
            rel: &str,
            hint: &mut usize,
        ) -> Option<(StatKey, Digest)> {
            let path = rel.as_bytes();
            let n = if *hint < self.records.len() && self.path(*hint) == path {
                *hint
            } else {
                let found = self
                    .records
                    .binary_search_by(|&at| walk_order(self.path_at(at), path));
                match found {
                    Ok(n) => n,
                    Err(n) => {
                        *hint = n;
                        return None;
                    }
                }
            };
            *hint = n + 1;
            Some(self.record(n))
        }

        /// Every record in order: path, stat and digest.
        pub(in super::super) fn iter(&self) -> impl Iterator<Item = (&str, StatKey, Digest)> {
            (0..self.records.len()).map(|n| {
                let path = std::str::from_utf8(self.path(n)).expect("checked by decode");
                let (key, digest) = self.record(n);
                (path, key, digest)
            })
        }
    }

    fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
        b.get(at..at.checked_add(N)?)?.try_into().ok()
    }
}
