//! The build context: the directory a build may read, filtered by `.dockerignore`, with file
//! digests served from a persistent stat cache so that unchanged files are never read again.
//!
//! The stat cache works like git's index: a file whose (size, mtime, ctime, inode, mode) match
//! the cached record keeps its cached digest. A file changed in the last two seconds is never
//! cached, because a second change within the filesystem's timestamp granularity could keep
//! the same stat (git's "racy clean" problem).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use crate::digest::Digest;
use crate::plan::ignore::DockerIgnore;

/// Files changed more recently than this are hashed but not cached (see the module docs).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Why the context could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read build context {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("build context path {0:?} is not in the context (it may be excluded by .dockerignore)")]
    NotFound(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an entry of the context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
    },
    Dir,
    Symlink {
        target: PathBuf,
    },
    /// Sockets, fifos and devices: not copyable into images from a context.
    Other,
}

/// One file, directory or symlink of the context, with its stat data (never its content).
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the context root, `/`-separated, no leading `/` (empty for the root).
    pub rel: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    stat: StatKey,
}

impl Entry {
    /// Modification time in whole seconds (what a tar header holds).
    pub fn mtime(&self) -> u64 {
        u64::try_from(self.stat.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0)
    }
}

/// The build context directory with its ignore rules and stat cache.
pub struct Context {
    root: PathBuf,
    ignore: DockerIgnore,
    cache: Mutex<StatCache>,
}

impl Context {
    /// Opens a context. `cache_file` is where the stat cache persists between builds (none for
    /// a one-off build: every file is then hashed once).
    pub fn open(
        root: &Path,
        ignore: DockerIgnore,
        cache_file: Option<PathBuf>,
    ) -> Result<Context, ContextError> {
        let root = fs::canonicalize(root).map_err(io_err(root))?;
        let cache = StatCache::load(cache_file);
        Ok(Context {
            root,
            ignore,
            cache: Mutex::new(cache),
        })
    }

    /// Whether `.dockerignore` excludes `rel`; free when there is no `.dockerignore` (the
    /// matcher allocates per call, which showed in the profile of a 50,000-file walk).
    fn excluded(&self, rel: &str) -> bool {
        !self.ignore.is_empty() && self.ignore.is_excluded(rel)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute host path of a context-relative path.
    pub fn host_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Every included context path, sorted, for matching COPY wildcards and close-match hints.
    pub fn all_paths(&self) -> Result<Vec<String>, ContextError> {
        Ok(self
            .entries("")?
            .into_iter()
            .map(|e| e.rel)
            .filter(|r| !r.is_empty())
            .collect())
    }

    /// The entry at `rel` and, for a directory, everything included below it: sorted by path,
    /// parents before children. Symlinks are not followed.
    pub fn entries(&self, rel: &str) -> Result<Vec<Entry>, ContextError> {
        let rel = rel.trim_matches('/');
        if !rel.is_empty() && self.excluded(rel) && self.ignore.can_skip_dir(rel) {
            return Err(ContextError::NotFound(rel.to_string()));
        }
        let top = self.entry(rel)?;
        let mut out = Vec::new();
        let is_dir = top.kind == EntryKind::Dir;
        if !rel.is_empty() && self.excluded(rel) && !is_dir {
            return Err(ContextError::NotFound(rel.to_string()));
        }
        out.push(top);
        if is_dir {
            self.walk_dir(rel, &mut out)?;
        }
        Ok(out)
    }

    /// Whether `rel` is in the context (not excluded), without walking below it.
    pub fn contains(&self, rel: &str) -> bool {
        let rel = rel.trim_matches('/');
        if rel.is_empty() {
            return true;
        }
        if self.excluded(rel) && self.ignore.can_skip_dir(rel) {
            return false;
        }
        match self.entry(rel) {
            Ok(e) => e.kind == EntryKind::Dir || !self.excluded(rel),
            Err(_) => false,
        }
    }

    fn entry(&self, rel: &str) -> Result<Entry, ContextError> {
        let path = self.host_path(rel);
        let meta = fs::symlink_metadata(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ContextError::NotFound(rel.to_string()),
            _ => ContextError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        self.entry_of(rel.to_string(), &meta)
    }

    /// The entry for `rel` from its (not followed) metadata; only a symlink costs a syscall.
    fn entry_of(&self, rel: String, meta: &fs::Metadata) -> Result<Entry, ContextError> {
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            EntryKind::File { size: meta.len() }
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let path = self.host_path(&rel);
            EntryKind::Symlink {
                target: fs::read_link(&path).map_err(io_err(&path))?,
            }
        } else {
            EntryKind::Other
        };
        Ok(Entry {
            rel,
            kind,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            stat: StatKey::of(meta),
        })
    }

    /// Depth-first, children sorted by name, so the output order is deterministic. Children
    /// are stat'ed relative to the open directory (`DirEntry::metadata` is an `fstatat` on
    /// the directory's fd), so a 50,000-file walk does not resolve 50,000 full paths, and on
    /// all cores: a stat is kernel CPU time, and a no-change rebuild is mostly this walk.
    fn walk_dir(&self, rel: &str, out: &mut Vec<Entry>) -> Result<(), ContextError> {
        let dir = self.host_path(rel);
        let mut children: Vec<(String, fs::DirEntry)> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e)))
            .collect::<Result<_, _>>()
            .map_err(io_err(&dir))?;
        children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let parts: Vec<Vec<Entry>> = children
            .into_par_iter()
            .map(|(name, dirent)| {
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                self.walk_child(child, &dirent)
            })
            .collect::<Result<_, _>>()?;
        out.extend(parts.into_iter().flatten());
        Ok(())
    }

    /// One child of a directory and, for a directory, everything included below it.
    fn walk_child(&self, child: String, dirent: &fs::DirEntry) -> Result<Vec<Entry>, ContextError> {
        let excluded = self.excluded(&child);
        if excluded && self.ignore.can_skip_dir(&child) {
            return Ok(Vec::new());
        }
        let meta = dirent.metadata().map_err(io_err(&dirent.path()))?;
        let entry = self.entry_of(child, &meta)?;
        if entry.kind != EntryKind::Dir {
            return Ok(if excluded { Vec::new() } else { vec![entry] });
        }
        let rel = entry.rel.clone();
        let mut tree = vec![entry];
        self.walk_dir(&rel, &mut tree)?;
        // An excluded directory is still walked when an exception may re-include a child;
        // it then appears only if something below it does (Docker keeps such parents).
        if excluded && tree.len() == 1 {
            tree.clear();
        }
        Ok(tree)
    }

    /// The content digest of every regular file among `entries`, in order (None for others).
    /// Files whose stat matches the cache are not read; the rest are hashed in parallel.
    pub fn file_digests(&self, entries: &[Entry]) -> Result<Vec<Option<Digest>>, ContextError> {
        entries
            .par_iter()
            .map(|e| match e.kind {
                EntryKind::File { .. } => self.file_digest(e).map(Some),
                _ => Ok(None),
            })
            .collect()
    }

    fn file_digest(&self, e: &Entry) -> Result<Digest, ContextError> {
        if let Some(d) = self
            .cache
            .lock()
            .expect("stat cache lock")
            .get(&e.rel, &e.stat)
        {
            return Ok(d);
        }
        let path = self.host_path(&e.rel);
        let (digest, _) =
            Digest::of_reader(File::open(&path).map_err(io_err(&path))?).map_err(io_err(&path))?;
        self.cache
            .lock()
            .expect("stat cache lock")
            .insert(&e.rel, e.stat, digest);
        Ok(digest)
    }

    /// Writes the stat cache back (atomically) if it changed. Failure to save only costs speed,
    /// so the caller may report it as a warning.
    pub fn save_cache(&self) -> io::Result<()> {
        self.cache.lock().expect("stat cache lock").save()
    }
}

/// The stat fields that, when unchanged, let a cached digest stand for the file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatKey {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    mode: u32,
}

impl StatKey {
    fn of(m: &fs::Metadata) -> StatKey {
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

struct StatCache {
    file: Option<PathBuf>,
    entries: HashMap<String, (StatKey, Digest)>,
    dirty: bool,
    racy_window: Duration,
}

impl StatCache {
    /// A missing, unreadable or outdated cache file is an empty cache, not an error.
    fn load(file: Option<PathBuf>) -> StatCache {
        let entries = file
            .as_deref()
            .and_then(|p| fs::read(p).ok())
            .and_then(|b| codec::decode(&b))
            .unwrap_or_default();
        StatCache {
            file,
            entries,
            dirty: false,
            racy_window: RACY_WINDOW,
        }
    }

    fn get(&self, rel: &str, stat: &StatKey) -> Option<Digest> {
        self.entries
            .get(rel)
            .filter(|(k, _)| k == stat)
            .map(|(_, d)| *d)
    }

    fn insert(&mut self, rel: &str, stat: StatKey, digest: Digest) {
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(i64::MAX);
        if self.file.is_some() && !stat.is_racy(now_ns, self.racy_window) {
            self.entries.insert(rel.to_string(), (stat, digest));
            self.dirty = true;
        }
    }

    fn save(&mut self) -> io::Result<()> {
        let Some(file) = self.file.as_deref().filter(|_| self.dirty) else {
            return Ok(());
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        {
            let mut w = io::BufWriter::new(&mut tmp);
            codec::encode(&self.entries, &mut w)?;
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
/// Layout (little-endian): `MAGIC`, entry count (u64), then per entry the path length (u32),
/// the path, size, mtime ns, ctime ns, inode (8 bytes each), mode (u32) and the 32-byte sha256;
/// last, the sha256 of everything before it. The file is renamed into place without an fsync
/// (it is only a cache), so after a crash it may hold zeroed blocks: anything that does not
/// parse exactly or fails the checksum (old format, torn or truncated file) is an empty cache,
/// never a wrong digest.
mod codec {
    use std::collections::HashMap;
    use std::io::{self, Write};

    use super::StatKey;
    use crate::digest::{Digest, HashingWriter};

    /// Names the format and its version; bump the last byte when the layout changes.
    const MAGIC: &[u8; 8] = b"kilnsc\x00\x02";
    const FIXED: usize = 4 * 8 + 4 + 32;

    pub(super) fn encode(
        entries: &HashMap<String, (StatKey, Digest)>,
        w: &mut impl Write,
    ) -> io::Result<()> {
        let mut h = HashingWriter::new(w);
        h.write_all(MAGIC)?;
        h.write_all(&(entries.len() as u64).to_le_bytes())?;
        for (rel, (k, d)) in entries {
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

    pub(super) fn decode(file: &[u8]) -> Option<HashMap<String, (StatKey, Digest)>> {
        let (body, sum) = file.split_at_checked(file.len().checked_sub(32)?)?;
        if Digest::of(body).as_bytes() != sum {
            return None;
        }
        let mut b = body;
        if take(&mut b, MAGIC.len())? != MAGIC {
            return None;
        }
        let count = usize::try_from(u64::from_le_bytes(array(&mut b)?)).ok()?;
        // Each entry takes at least FIXED bytes: a corrupt count cannot make us over-allocate.
        let mut out = HashMap::with_capacity(count.min(b.len() / FIXED));
        for _ in 0..count {
            let len = u32::from_le_bytes(array(&mut b)?) as usize;
            let rel = std::str::from_utf8(take(&mut b, len)?).ok()?.to_string();
            let key = StatKey {
                size: u64::from_le_bytes(array(&mut b)?),
                mtime_ns: i64::from_le_bytes(array(&mut b)?),
                ctime_ns: i64::from_le_bytes(array(&mut b)?),
                ino: u64::from_le_bytes(array(&mut b)?),
                mode: u32::from_le_bytes(array(&mut b)?),
            };
            let digest = Digest::from_bytes(array(&mut b)?);
            out.insert(rel, (key, digest));
        }
        b.is_empty().then_some(out)
    }

    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }

    fn array<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
        take(b, N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("src/deep")).unwrap();
        fs::create_dir_all(d.path().join("logs")).unwrap();
        fs::write(d.path().join("src/main.rs"), "fn main() {}").unwrap();
        fs::write(d.path().join("src/deep/a.txt"), "a").unwrap();
        fs::write(d.path().join("logs/x.log"), "x").unwrap();
        fs::write(d.path().join("logs/keep.log"), "k").unwrap();
        std::os::unix::fs::symlink("src/main.rs", d.path().join("link")).unwrap();
        d
    }

    fn ctx(d: &Path, ignore: &str, cache: Option<PathBuf>) -> Context {
        Context::open(d, DockerIgnore::parse(ignore).unwrap(), cache).unwrap()
    }

    #[test]
    fn entries_are_sorted_parents_first_and_respect_ignore_with_exceptions() {
        let d = tree();
        let c = ctx(d.path(), "logs\n!logs/keep.log\n", None);
        let rels: Vec<String> = c.entries("").unwrap().into_iter().map(|e| e.rel).collect();
        assert_eq!(
            rels,
            [
                "",
                "link",
                "logs",
                "logs/keep.log",
                "src",
                "src/deep",
                "src/deep/a.txt",
                "src/main.rs"
            ]
        );
        assert!(matches!(
            c.entries("logs/x.log"),
            Err(ContextError::NotFound(_))
        ));
        let link = c.entries("link").unwrap().remove(0);
        assert_eq!(
            link.kind,
            EntryKind::Symlink {
                target: "src/main.rs".into()
            }
        );
    }

    #[test]
    fn digests_are_content_digests_and_survive_a_reload_through_the_cache() {
        let d = tree();
        let cache = d.path().join("stat-cache.json");
        let main = d.path().join("src/main.rs");
        let c = ctx(d.path(), "stat-cache.json\n", Some(cache.clone()));
        // ctime cannot be set back, so accept files changed just now for this test.
        c.cache.lock().unwrap().racy_window = Duration::ZERO;
        let entries = c.entries("src/main.rs").unwrap();
        let digests = c.file_digests(&entries).unwrap();
        assert_eq!(digests, vec![Some(Digest::of(b"fn main() {}"))]);
        c.save_cache().unwrap();

        let reloaded = ctx(d.path(), "stat-cache.json\n", Some(cache.clone()));
        let hit = reloaded
            .cache
            .lock()
            .unwrap()
            .get("src/main.rs", &entries[0].stat);
        assert_eq!(hit, Some(Digest::of(b"fn main() {}")));

        // A changed file has a new stat (ctime at least), so its old digest is never served.
        fs::write(&main, "fn main() { changed() }").unwrap();
        let changed = reloaded.entries("src/main.rs").unwrap();
        assert_eq!(
            reloaded.file_digests(&changed).unwrap(),
            vec![Some(Digest::of(b"fn main() { changed() }"))]
        );
    }

    #[test]
    fn recently_changed_files_are_hashed_but_not_cached() {
        let d = tree();
        let cache = d.path().join("c.json");
        let c = ctx(d.path(), "", Some(cache));
        let e = c.entries("src/deep/a.txt").unwrap();
        assert_eq!(c.file_digests(&e).unwrap(), vec![Some(Digest::of(b"a"))]);
        assert!(
            c.cache.lock().unwrap().entries.is_empty(),
            "a file written just now is racy"
        );
    }

    #[test]
    fn the_cache_file_round_trips_and_a_damaged_one_is_an_empty_cache() {
        let key = StatKey {
            size: 12,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: -5,
            ino: u64::MAX,
            mode: 0o100644,
        };
        let mut entries = HashMap::new();
        entries.insert("src/main.rs".to_string(), (key, Digest::of(b"a")));
        entries.insert("d/\u{e9}t\u{e9}".to_string(), (key, Digest::of(b"b")));
        let mut bytes = Vec::new();
        codec::encode(&entries, &mut bytes).unwrap();
        assert_eq!(codec::decode(&bytes), Some(entries));

        assert_eq!(codec::decode(&bytes[..bytes.len() - 1]), None, "truncated");
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(codec::decode(&longer), None, "trailing bytes");
        assert_eq!(
            codec::decode(br#"{"version":1,"entries":{}}"#),
            None,
            "old JSON"
        );
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(codec::decode(&flipped), None, "checksum");
        // A count no file could hold, under a valid checksum: refused without allocating it.
        let mut huge_count = bytes[..bytes.len() - 32].to_vec();
        huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let sum = Digest::of(&huge_count);
        huge_count.extend_from_slice(sum.as_bytes());
        assert_eq!(codec::decode(&huge_count), None, "count");
    }

    #[test]
    fn contains_agrees_with_entries_without_walking() {
        let d = tree();
        let c = ctx(d.path(), "logs\n!logs/keep.log\nsrc/deep\n", None);
        for rel in [
            "",
            "src",
            "src/main.rs",
            "logs",
            "logs/keep.log",
            "logs/x.log",
            "src/deep",
            "src/deep/a.txt",
            "missing",
            "link",
        ] {
            assert_eq!(c.contains(rel), c.entries(rel).is_ok(), "{rel:?}");
        }
    }
}
