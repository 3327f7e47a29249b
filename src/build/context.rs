//! The build context: the directory a build may read, filtered by `.dockerignore`, with file
//! digests served from a persistent stat cache so that unchanged files are never read again.
//!
//! The stat cache works like git's index: a file whose (size, mtime, ctime, inode, mode) match
//! the cached record keeps its cached digest. A file changed in the last two seconds is never
//! cached, because a second change within the filesystem's timestamp granularity could keep
//! the same stat (git's "racy clean" problem).

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rayon::prelude::*;

use crate::digest::Digest;
use crate::layer::name;
use crate::plan::ignore::DockerIgnore;

mod stat_cache;

use crate::fs_root::{Root, proc_fd};
use nix::fcntl::OFlag;
use stat_cache::{StatCache, StatKey};

/// Files changed more recently than this are hashed but not cached (see the module docs).
const RACY_WINDOW: Duration = Duration::from_secs(2);
/// Stat cache lookups per parallel task (see [`Context::file_digests`]).
const LOOKUP_CHUNK: usize = 512;

/// Why the context could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read build context {path}")]
    Io { path: PathBuf, source: io::Error },
    /// A layer dir of a stage or image (`COPY --from`) could not be read.
    #[error("cannot read {path}, a layer of the COPY --from stage or image in the store")]
    Layer { path: PathBuf, source: io::Error },
    #[error("build context path {0:?} is not in the context (it may be excluded by .dockerignore)")]
    NotFound(String),
    /// Ctrl-C or SIGTERM while walking or hashing (see [`crate::progress::interrupt`]).
    #[error("interrupted while reading the build context")]
    Interrupted,
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

/// What walking one child of a directory gave.
enum Walked {
    /// Excluded by `.dockerignore`, with nothing below it re-included.
    Skipped,
    /// A file, symlink or other non-directory.
    Leaf(Entry),
    /// A directory, then everything included below it.
    Tree(Vec<Entry>),
}

/// The context-relative path of `name` in directory `rel`, built without `format!` (this
/// runs once per file of the context).
///
/// A name that is not UTF-8 is kept byte for byte through [`name::encode`].
fn child_rel(rel: &str, file_name: std::ffi::OsString) -> String {
    let name = match file_name.into_string() {
        Ok(n) if !n.contains(name::is_escape_char) => n,
        Ok(n) => name::encode(n.as_bytes()).into_owned(),
        Err(n) => name::encode(n.as_bytes()).into_owned(),
    };
    if rel.is_empty() {
        return name;
    }
    let mut path = String::with_capacity(rel.len() + 1 + name.len());
    path.push_str(rel);
    path.push('/');
    path.push_str(&name);
    path
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
    /// For a regular file with other names: which file it is, so that COPY keeps the names
    /// one file (as Docker does) instead of making copies.
    pub hardlink: Option<FileId>,
    /// Which directory of a tree of several holds it (a layer of a stage or image read by
    /// `COPY --from`, see [`super::image_tree::LayerSource`]); 0 in a context.
    pub layer: usize,
}

/// The identity of a file with several names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl Entry {
    /// Modification time in whole seconds (what a tar header holds).
    pub fn mtime(&self) -> u64 {
        u64::try_from(self.stat.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0)
    }
}

/// The build context directory with its ignore rules and stat cache.
pub struct Context {
    /// Every path is resolved inside it: a symlink never leads out of the context.
    root: Root,
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
        let root = Root::open(root).map_err(io_err(root))?;
        let cache = StatCache::load(cache_file, RACY_WINDOW);
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
        self.root.path()
    }

    /// `root/rel` without resolving anything: for naming a path in an error.
    fn host_join(&self, rel: &str) -> PathBuf {
        self.root().join(&*name::decode_os(rel))
    }

    /// The host path of a context-relative path, resolved inside the context (its parents
    /// hold no symlink; the last component is not followed). For APIs that take a path;
    /// reads made here go through the root's descriptor instead.
    pub fn host_path(&self, rel: &str) -> Result<PathBuf, ContextError> {
        self.root
            .resolve(&name::decode_os(rel), false)
            .map_err(self.lookup_err(rel))
    }

    /// The host path of an entry this context listed ([`Context::entries`]): the walk named
    /// it by real directories only, below the canonical root, so it is joined, not resolved
    /// again (a resolution per file cost more than reading it). Only for openers that refuse
    /// symlinks on the way themselves (`EntrySource::ResolvedFile`): the tree may have
    /// changed since the walk.
    pub fn listed_path(&self, e: &Entry) -> PathBuf {
        self.host_join(&e.rel)
    }

    /// `rel` with every symlink in it resolved inside the context, the last one too when
    /// `follow` is set (Docker follows a symlink named as a COPY source, with the context
    /// as `/`). A dangling link is [`ContextError::NotFound`].
    pub fn resolve(&self, rel: &str, follow: bool) -> Result<String, ContextError> {
        let real = self
            .root
            .resolve_rel(&name::decode_os(rel), follow)
            .map_err(self.lookup_err(rel))?;
        Ok(name::encode(real.as_os_str().as_bytes()).into_owned())
    }

    /// A missing path (or a file where a directory was needed) is not found; anything else
    /// is an I/O error on that path.
    fn lookup_err<'s>(&'s self, rel: &'s str) -> impl FnOnce(io::Error) -> ContextError + 's {
        move |e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => ContextError::NotFound(rel.to_string()),
            _ => ContextError::Io {
                path: self.host_join(rel),
                source: e,
            },
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
    ///
    /// Symlinks in the parents of `rel` are resolved inside the context, and the entries
    /// are named by the resolved path (`link/x` with `link -> /src` lists `src/x`).
    pub fn entries(&self, rel: &str) -> Result<Vec<Entry>, ContextError> {
        let rel = self.resolve(rel.trim_matches('/'), false)?;
        let rel = rel.as_str();
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
        let Ok(rel) = self.resolve(rel.trim_matches('/'), false) else {
            return false;
        };
        let rel = rel.as_str();
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

    /// The entry at `rel` (already resolved: see [`Context::resolve`]), stat'ed through a
    /// descriptor opened inside the root.
    fn entry(&self, rel: &str) -> Result<Entry, ContextError> {
        let fd = self
            .root
            .open_at(&name::decode_os(rel), OFlag::O_PATH, false)
            .map_err(self.lookup_err(rel))?;
        let meta = File::from(fd)
            .metadata()
            .map_err(io_err(&self.host_join(rel)))?;
        self.entry_of(rel.to_string(), &meta)
    }

    /// The target of the symlink at `rel`, read through a descriptor opened inside the root.
    fn read_link(&self, rel: &str) -> Result<PathBuf, ContextError> {
        let path = self.host_join(rel);
        let fd = self
            .root
            .open_at(&name::decode_os(rel), OFlag::O_PATH, false)
            .map_err(io_err(&path))?;
        let target = nix::fcntl::readlinkat(&fd, "").map_err(|e| ContextError::Io {
            path,
            source: e.into(),
        })?;
        Ok(PathBuf::from(target))
    }

    /// The entry for `rel` from its (not followed) metadata; only a symlink costs a syscall.
    fn entry_of(&self, rel: String, meta: &fs::Metadata) -> Result<Entry, ContextError> {
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            EntryKind::File { size: meta.len() }
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink {
                target: self.read_link(&rel)?,
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
            hardlink: (ft.is_file() && meta.nlink() > 1).then(|| FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            }),
            layer: 0,
        })
    }

    /// Depth-first, children sorted by name, so the output order is deterministic. Children
    /// are stat'ed relative to the open directory (`DirEntry::metadata` is an `fstatat` on
    /// the directory's fd), so a 50,000-file walk does not resolve 50,000 full paths, and on
    /// all cores: a stat is kernel CPU time, and a no-change rebuild is mostly this walk.
    /// Allocations are per directory, not per file (a file costs its path and nothing else).
    ///
    /// The directory is opened inside the root without following a last symlink, and read
    /// through that descriptor: a directory swapped for a symlink mid-walk is an error, not
    /// a way out of the context.
    fn walk_dir(&self, rel: &str, out: &mut Vec<Entry>) -> Result<(), ContextError> {
        let dir = self.host_join(rel);
        let fd = self
            .root
            .open_at(
                &name::decode_os(rel),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                false,
            )
            .map_err(io_err(&dir))?;
        let mut children: Vec<(String, fs::DirEntry)> = fs::read_dir(proc_fd(&fd))
            .map_err(io_err(&dir))?
            .map(|e| e.map(|e| (child_rel(rel, e.file_name()), e)))
            .collect::<Result<_, _>>()
            .map_err(io_err(&dir))?;
        // Same parent, so ordering the paths orders the names.
        children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let walked: Vec<Walked> = children
            .into_par_iter()
            .map(|(child, dirent)| self.walk_child(child, &dirent))
            .collect::<Result<_, _>>()?;
        for w in walked {
            match w {
                Walked::Skipped => {}
                Walked::Leaf(e) => out.push(e),
                Walked::Tree(tree) => out.extend(tree),
            }
        }
        Ok(())
    }

    /// One child of a directory and, for a directory, everything included below it.
    fn walk_child(&self, child: String, dirent: &fs::DirEntry) -> Result<Walked, ContextError> {
        if crate::progress::interrupted() {
            return Err(ContextError::Interrupted);
        }
        let excluded = self.excluded(&child);
        if excluded && self.ignore.can_skip_dir(&child) {
            return Ok(Walked::Skipped);
        }
        let meta = dirent.metadata().map_err(io_err(&self.host_join(&child)))?;
        let entry = self.entry_of(child, &meta)?;
        if entry.kind != EntryKind::Dir {
            return Ok(if excluded {
                Walked::Skipped
            } else {
                Walked::Leaf(entry)
            });
        }
        let rel = entry.rel.clone();
        let mut tree = vec![entry];
        self.walk_dir(&rel, &mut tree)?;
        // An excluded directory is still walked when an exception may re-include a child;
        // it then appears only if something below it does (Docker keeps such parents).
        if excluded && tree.len() == 1 {
            return Ok(Walked::Skipped);
        }
        Ok(Walked::Tree(tree))
    }

    /// The content digest of every regular file among `entries`, in order (None for others).
    /// Files whose stat matches the cache are not read: all lookups are made under one lock
    /// (on all cores: the cache is only read meanwhile), the misses hashed in parallel
    /// without it, then recorded under one lock again.
    pub fn file_digests(&self, entries: &[Entry]) -> Result<Vec<Option<Digest>>, ContextError> {
        let is_file = |e: &Entry| matches!(e.kind, EntryKind::File { .. });
        let mut out: Vec<Option<Digest>> = vec![None; entries.len()];
        {
            let cache = self.cache.lock().expect("stat cache lock");
            let cache = &*cache;
            // In chunks of consecutive entries, so each lookup can start where the last hit.
            out.par_chunks_mut(LOOKUP_CHUNK)
                .zip(entries.par_chunks(LOOKUP_CHUNK))
                .for_each(|(out, entries)| {
                    let mut hint = 0;
                    for (o, e) in out.iter_mut().zip(entries) {
                        if is_file(e) {
                            *o = cache.get(&e.rel, &e.stat, &mut hint);
                        }
                    }
                });
        }
        let misses: Vec<usize> = (0..entries.len())
            .filter(|&i| out[i].is_none() && is_file(&entries[i]))
            .collect();
        if misses.is_empty() {
            return Ok(out);
        }
        // Taken before any file is read: the racy-clean check must not see a later time.
        let now = SystemTime::now();
        let hashed: Vec<Digest> = misses
            .par_iter()
            .map(|&i| self.hash_file(&entries[i].rel))
            .collect::<Result<_, _>>()?;
        let mut cache = self.cache.lock().expect("stat cache lock");
        for (&i, digest) in misses.iter().zip(hashed) {
            cache.insert(&entries[i].rel, entries[i].stat, digest, now);
            out[i] = Some(digest);
        }
        Ok(out)
    }

    fn hash_file(&self, rel: &str) -> Result<Digest, ContextError> {
        if crate::progress::interrupted() {
            return Err(ContextError::Interrupted);
        }
        let path = self.host_join(rel);
        let file = self
            .root
            .open_file(&name::decode_os(rel))
            .map_err(io_err(&path))?;
        let (digest, _) =
            Digest::of_reader(crate::progress::StopOnInterrupt(file)).map_err(io_err(&path))?;
        Ok(digest)
    }

    /// Sorts entries of one tree the way [`Context::entries`] lists them (parents first,
    /// then each directory's children by name): for merging the walks of several dirs.
    pub fn sort_walk_order(entries: &mut [Entry]) {
        entries.sort_by(|a, b| stat_cache::codec::walk_order(a.rel.as_bytes(), b.rel.as_bytes()));
    }

    /// Writes the stat cache back (atomically) if it changed. Failure to save only costs speed,
    /// so the caller may report it as a warning.
    pub fn save_cache(&self) -> io::Result<()> {
        self.cache.lock().expect("stat cache lock").save()
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
        // The stat cache's lookups count on the walk giving paths in its order.
        let order =
            |a: &String, b: &String| stat_cache::codec::walk_order(a.as_bytes(), b.as_bytes());
        assert!(rels.is_sorted_by(|a, b| order(a, b).is_lt()));
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
            .get("src/main.rs", &entries[0].stat, &mut 0);
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
            c.cache.lock().unwrap().len() == 0,
            "a file written just now is racy"
        );
    }

    #[test]
    fn the_cache_file_round_trips_and_a_damaged_one_is_an_empty_cache() {
        use stat_cache::codec::{self, Table};
        let key = StatKey {
            size: 12,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: -5,
            ino: u64::MAX,
            mode: 0o100644,
        };
        let other = StatKey { size: 0, ..key };
        let entries = [
            ("", other, Digest::of(b"c")),
            ("d/\u{e9}t\u{e9}", key, Digest::of(b"b")),
            ("src/main.rs", key, Digest::of(b"a")),
        ];
        let mut bytes = Vec::new();
        codec::encode(&entries, &mut bytes).unwrap();
        let table = Table::decode(bytes.clone()).expect("decodes");
        for (rel, k, d) in entries {
            assert_eq!(table.get(rel, &mut 0), Some((k, d)), "{rel:?}");
        }
        assert_eq!(table.get("src", &mut 0), None);
        assert_eq!(table.get("src/main.r", &mut 0), None);
        assert_eq!(table.iter().count(), 3);

        let decodes = |b: &[u8]| Table::decode(b.to_vec()).is_some();
        assert!(!decodes(&bytes[..bytes.len() - 1]), "truncated");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(!decodes(&longer), "trailing bytes");
        assert!(!decodes(br#"{"version":1,"entries":{}}"#), "old JSON");
        assert!(!decodes(b""), "empty");
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert!(!decodes(&flipped), "checksum");
        // A count no file could hold, under a valid checksum: refused without allocating it.
        let with_sum = |mut body: Vec<u8>| {
            let sum = Digest::of(&body);
            body.extend_from_slice(sum.as_bytes());
            body
        };
        let mut huge_count = bytes[..bytes.len() - 32].to_vec();
        huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(!decodes(&with_sum(huge_count)), "count");
        // A path length running past the end, under a valid checksum.
        let mut long_path = bytes[..bytes.len() - 32].to_vec();
        long_path[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!decodes(&with_sum(long_path)), "path length");
        // Out of order or repeated: lookups could not trust a binary search.
        for bad in [[entries[1], entries[0]], [entries[2], entries[2]]] {
            let mut bytes = Vec::new();
            codec::encode(&bad, &mut bytes).unwrap();
            assert!(!decodes(&bytes), "{bad:?}");
        }
    }

    #[test]
    fn lookups_in_walk_order_and_out_of_it_find_every_path() {
        use stat_cache::codec::{self, Table, walk_order};
        let key = |size| StatKey {
            size,
            mtime_ns: 1,
            ctime_ns: 2,
            ino: 3,
            mode: 0o100644,
        };
        // Names that sort differently in byte order and walk order (`-` is below `/`).
        let mut names: Vec<String> = (0..3000)
            .map(|i| format!("t/d{}{}/f{i}", i % 7, ["", "-x", ".y"][i % 3]))
            .collect();
        names.sort_by(|a, b| walk_order(a.as_bytes(), b.as_bytes()));
        names.dedup();
        let entries: Vec<(&str, StatKey, Digest)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), key(i as u64), Digest::of(n.as_bytes())))
            .collect();
        let mut bytes = Vec::new();
        codec::encode(&entries, &mut bytes).unwrap();
        let table = Table::decode(bytes).unwrap();
        let expect = |i: usize| Some((key(i as u64), Digest::of(names[i].as_bytes())));
        let mut hint = 0;
        for (i, name) in names.iter().enumerate() {
            assert_eq!(table.get(name, &mut hint), expect(i));
            assert_eq!(hint, i + 1, "the next lookup starts at the next record");
        }
        let mut hint = 0;
        for i in (0..names.len()).rev().step_by(7) {
            assert_eq!(table.get(&names[i], &mut hint), expect(i));
            assert_eq!(table.get(&format!("{}z", names[i]), &mut hint), None);
        }
        assert_eq!(walk_order(b"a/b", b"a-c"), std::cmp::Ordering::Less);
        assert_eq!(walk_order(b"a", b"a/b"), std::cmp::Ordering::Less);
    }

    #[test]
    fn a_saved_cache_serves_old_and_new_records_after_a_reload() {
        let d = tree();
        let cache = d.path().join("sc");
        let c = ctx(d.path(), "sc\n", Some(cache.clone()));
        c.cache.lock().unwrap().racy_window = Duration::ZERO;
        let main = c.entries("src/main.rs").unwrap();
        c.file_digests(&main).unwrap();
        c.save_cache().unwrap();

        // A second build adds a file: the rewritten cache holds both.
        let c = ctx(d.path(), "sc\n", Some(cache.clone()));
        c.cache.lock().unwrap().racy_window = Duration::ZERO;
        let a = c.entries("src/deep/a.txt").unwrap();
        c.file_digests(&a).unwrap();
        c.save_cache().unwrap();

        let c = ctx(d.path(), "sc\n", Some(cache));
        let cached = c.cache.lock().unwrap();
        assert_eq!(cached.len(), 2);
        assert_eq!(
            cached.get("src/main.rs", &main[0].stat, &mut 0),
            Some(Digest::of(b"fn main() {}"))
        );
        assert_eq!(
            cached.get("src/deep/a.txt", &a[0].stat, &mut 0),
            Some(Digest::of(b"a"))
        );
        let other_stat = StatKey {
            ino: a[0].stat.ino + 1,
            ..a[0].stat
        };
        assert_eq!(
            cached.get("src/deep/a.txt", &other_stat, &mut 0),
            None,
            "inode moved"
        );
    }

    #[test]
    fn symlinks_in_a_source_path_resolve_inside_the_context() {
        let d = tree();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("host")).unwrap();
        std::os::unix::fs::symlink("/src", d.path().join("abs")).unwrap();
        let c = ctx(d.path(), "", None);
        // `host` points at a host directory: inside the context that path does not exist.
        assert!(matches!(
            c.entries("host/secret"),
            Err(ContextError::NotFound(_))
        ));
        assert!(!c.contains("host/secret"));
        assert!(matches!(
            c.resolve("host", true),
            Err(ContextError::NotFound(_))
        ));
        // `abs -> /src` is the context's `src`, and its entries are named by that path.
        let rels: Vec<String> = c
            .entries("abs/deep")
            .unwrap()
            .into_iter()
            .map(|e| e.rel)
            .collect();
        assert_eq!(rels, ["src/deep", "src/deep/a.txt"]);
        assert_eq!(c.resolve("abs", true).unwrap(), "src");
        assert_eq!(
            c.host_path("abs/main.rs").unwrap(),
            c.root().join("src/main.rs")
        );
    }

    #[test]
    fn names_that_are_not_utf8_are_walked_and_read_byte_for_byte() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let raw = std::ffi::OsStr::from_bytes(b"caf\xe9");
        fs::create_dir(d.path().join(raw)).unwrap();
        fs::write(d.path().join(raw).join(raw), "bytes").unwrap();
        let c = ctx(d.path(), "", None);
        let entries = c.entries("").unwrap();
        let file = entries.last().unwrap();
        assert_eq!(
            &*name::decode(&file.rel),
            &b"caf\xe9/caf\xe9"[..],
            "{:?}",
            file.rel
        );
        assert_eq!(
            c.host_path(&file.rel).unwrap(),
            c.root().join(raw).join(raw)
        );
        assert_eq!(
            c.file_digests(&entries).unwrap().last().unwrap(),
            &Some(Digest::of(b"bytes"))
        );
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
