//! The fallback when overlay cannot be mounted: one writable copy of the merged lower dirs
//! ([`populate`]), a metadata snapshot of it before the step ([`Snapshot::take`]), and the
//! step's diff written into the upper dir in overlay's own form afterwards ([`write_diff`]).
//!
//! Runs in the step's outer process, i.e. as root of the user namespace in rootless mode, so
//! files of any mapped id can be copied and compared. Content is read only for entries whose
//! (size, mtime ns, mode, uid, gid, inode, ctime ns, birth time) changed.

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, mknod};

type Res<T> = Result<T, String>;

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Copies `lowers` (top first, overlay upper-dir form: whiteouts and opaque dirs honoured)
/// into the empty directory `dest`, so `dest` holds what the overlay would have shown.
pub(crate) fn populate(lowers: &[PathBuf], dest: &Path) -> Res<()> {
    for lower in lowers.iter().rev() {
        apply_layer(lower, dest)?;
    }
    Ok(())
}

fn apply_layer(layer: &Path, dest: &Path) -> Res<()> {
    if crate::layer::hides_lower_layers(layer) {
        // An opaque marker at the layer's root: nothing of the layers below remains.
        for entry in std::fs::read_dir(dest).map_err(|e| err(dest, e))? {
            remove_any(&entry.map_err(|e| err(dest, e))?.path())?;
        }
    }
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(layer).min_depth(1) {
        let entry = entry.map_err(|e| err(layer, e))?;
        let rel = entry
            .path()
            .strip_prefix(layer)
            .expect("walk stays in layer");
        let meta = entry.metadata().map_err(|e| err(entry.path(), e))?;
        let target = dest.join(rel);
        if is_whiteout(entry.path(), &meta) {
            remove_any(&target)?;
            continue;
        }
        let existing = std::fs::symlink_metadata(&target).ok();
        let keep_dir = meta.is_dir() && existing.as_ref().is_some_and(|m| m.is_dir());
        // An opaque directory hides what lower layers put below it: start it afresh.
        let opaque = keep_dir && has_overlay_attr(entry.path(), "opaque", b"y");
        if opaque || (!keep_dir && existing.is_some()) {
            remove_any(&target)?;
        }
        copy_entry(entry.path(), &meta, &target, &mut links)?;
        if meta.is_dir() {
            dirs.push((target, meta));
        }
    }
    // Directory times last: creating their children changed them.
    for (dir, meta) in dirs.iter().rev() {
        set_times(dir, meta)?;
    }
    Ok(())
}

/// Copies one entry (not a directory's content) with its owner, mode, times and xattrs
/// (overlay's own excepted). Hard links of one source inode stay linked.
fn copy_entry(
    src: &Path,
    meta: &Metadata,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Res<()> {
    let ft = meta.file_type();
    if !ft.is_dir() && meta.nlink() > 1 {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            return std::fs::hard_link(first, dst).map_err(|e| err(dst, e));
        }
        links.insert((meta.dev(), meta.ino()), dst.to_path_buf());
    }
    if ft.is_dir() {
        if !dst.is_dir() {
            std::fs::create_dir(dst).map_err(|e| err(dst, e))?;
        }
    } else if ft.is_file() {
        // copy_file_range underneath: a reflink where the file system can.
        std::fs::copy(src, dst).map_err(|e| err(src, e))?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| err(src, e))?;
        std::os::unix::fs::symlink(target, dst).map_err(|e| err(dst, e))?;
    } else {
        let kind = if ft.is_char_device() {
            SFlag::S_IFCHR
        } else if ft.is_block_device() {
            SFlag::S_IFBLK
        } else if ft.is_fifo() {
            SFlag::S_IFIFO
        } else {
            return Ok(()); // sockets are not part of an image
        };
        mknod(dst, kind, Mode::from_bits_truncate(0o600), meta.rdev()).map_err(|e| err(dst, e))?;
    }
    match std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())) {
        // An owner outside the user namespace's map (shown as the overflow id) cannot be
        // given; the copy keeps ours, as overlay would show "nobody" instead.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        other => other.map_err(|e| err(dst, e))?,
    }
    if !ft.is_symlink() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| err(dst, e))?;
        copy_xattrs(src, dst);
    }
    if !ft.is_dir() {
        set_times(dst, meta)?;
    }
    Ok(())
}

fn copy_xattrs(src: &Path, dst: &Path) {
    let Ok(names) = xattr::list(src) else { return };
    for name in names {
        let text = name.to_string_lossy();
        if text.starts_with("trusted.overlay.") || text.starts_with("user.overlay.") {
            continue;
        }
        if let Ok(Some(value)) = xattr::get(src, &name) {
            // Best effort, like cp -a: security.* may be refused in a user namespace.
            let _ = xattr::set(dst, &name, &value);
        }
    }
}

fn set_times(path: &Path, meta: &Metadata) -> Res<()> {
    let mtime = filetime::FileTime::from_last_modification_time(meta);
    let atime = filetime::FileTime::from_last_access_time(meta);
    filetime::set_symlink_file_times(path, atime, mtime).map_err(|e| err(path, e))
}

fn remove_any(path: &Path) -> Res<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(|e| err(path, e)),
        Ok(_) => std::fs::remove_file(path).map_err(|e| err(path, e)),
        Err(_) => Ok(()),
    }
}

/// The value of `trusted.overlay.<attr>` or `user.overlay.<attr>`.
fn overlay_attr(path: &Path, attr: &str) -> Option<Vec<u8>> {
    ["trusted.overlay.", "user.overlay."]
        .iter()
        .find_map(|p| xattr::get(path, format!("{p}{attr}")).ok().flatten())
}

fn has_overlay_attr(path: &Path, attr: &str, value: &[u8]) -> bool {
    overlay_attr(path, attr).is_some_and(|v| v == value)
}

/// Both forms the layer writer accepts (see `layer::walk::is_whiteout`).
fn is_whiteout(path: &Path, meta: &Metadata) -> bool {
    let ft = meta.file_type();
    (ft.is_char_device() && meta.rdev() == 0)
        || (ft.is_file() && meta.len() == 0 && overlay_attr(path, "whiteout").is_some())
}

/// What is compared to find a changed entry (content is read only when these differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
    ino: u64,
    /// Birth time (statx), where the file system keeps one: a deleted entry's inode number
    /// is often reused at once (`rm -r d; mkdir d`), its birth time is not.
    born: Option<std::time::SystemTime>,
}

impl Stat {
    fn of(m: &Metadata) -> Stat {
        Stat {
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            ino: m.ino(),
            born: m.created().ok(),
        }
    }

    /// Another inode now lives at the path (deleted and made again).
    fn replaced_by(&self, now: &Stat) -> bool {
        self.mode & libc::S_IFMT != now.mode & libc::S_IFMT
            || self.ino != now.ino
            || self.born != now.born
    }
}

/// The state of a root before the step: one [`Stat`] per path (relative).
pub(crate) struct Snapshot(HashMap<PathBuf, Stat>);

impl Snapshot {
    pub(crate) fn take(root: &Path) -> Res<Snapshot> {
        let mut map = HashMap::new();
        for entry in walkdir::WalkDir::new(root).min_depth(1) {
            let entry = entry.map_err(|e| err(root, e))?;
            let meta = entry.metadata().map_err(|e| err(entry.path(), e))?;
            let rel = entry.path().strip_prefix(root).expect("in root");
            map.insert(rel.to_path_buf(), Stat::of(&meta));
        }
        Ok(Snapshot(map))
    }
}

/// How whiteouts and opaque markers are written into the upper dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Markers {
    /// 0/0 character devices and `trusted.overlay.opaque` (real root).
    Trusted,
    /// Empty files with `user.overlay.whiteout` and `user.overlay.opaque` (a user
    /// namespace, where mknod is refused), what a `userxattr` overlay reads.
    User,
}

/// Writes what changed in `root` since `before` into the empty dir `upper`, as an overlay
/// upper dir: new and changed entries (with their parents), whiteouts for deleted entries,
/// opaque directories where a directory was replaced.
pub(crate) fn write_diff(before: Snapshot, root: &Path, upper: &Path, markers: Markers) -> Res<()> {
    let mut before = before.0;
    let mut diff = Diff {
        root,
        upper,
        markers,
        links: HashMap::new(),
        made: HashSet::new(),
        dirs: Vec::new(),
    };
    let mut fresh: HashSet<PathBuf> = HashSet::new(); // replaced dirs: all below is new
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.map_err(|e| err(root, e))?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("in root")
            .to_path_buf();
        let meta = entry.metadata().map_err(|e| err(entry.path(), e))?;
        let now = Stat::of(&meta);
        let old = before.remove(&rel);
        let under_fresh = rel.parent().is_some_and(|p| fresh.contains(p));
        let replaced = old.is_some_and(|o| o.replaced_by(&now));
        if under_fresh || old.is_none() || replaced {
            let opaque = replaced && meta.is_dir();
            diff.copy(&rel, &meta, opaque)?;
            if meta.is_dir() && (under_fresh || opaque) {
                fresh.insert(rel);
            }
        } else if old != Some(now) {
            diff.copy(&rel, &meta, false)?;
        }
    }
    let gone: HashSet<PathBuf> = before.into_keys().collect();
    for rel in &gone {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if gone.contains(parent) || fresh.contains(parent) {
            continue; // hidden already by the parent's whiteout or opaque marker
        }
        diff.whiteout(rel)?;
    }
    diff.finish()
}

struct Diff<'a> {
    root: &'a Path,
    upper: &'a Path,
    markers: Markers,
    links: HashMap<u64, PathBuf>,
    /// Paths already present in the upper dir.
    made: HashSet<PathBuf>,
    /// Directories whose times are set last (children change them).
    dirs: Vec<(PathBuf, Metadata)>,
}

impl Diff<'_> {
    fn copy(&mut self, rel: &Path, meta: &Metadata, opaque: bool) -> Res<()> {
        self.parents(rel)?;
        let dst = self.upper.join(rel);
        let src = self.root.join(rel);
        if !meta.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&meta.ino()) {
                self.made.insert(rel.to_path_buf());
                return std::fs::hard_link(first, &dst).map_err(|e| err(&dst, e));
            }
            self.links.insert(meta.ino(), dst.clone());
        }
        let mut unused = HashMap::new();
        copy_entry(&src, meta, &dst, &mut unused)?;
        if opaque {
            self.mark(&dst, "opaque", b"y")?;
        }
        if meta.is_dir() {
            self.dirs.push((dst, meta.clone()));
        }
        self.made.insert(rel.to_path_buf());
        Ok(())
    }

    /// Copies up the parents of `rel` (owner, mode, times) as overlay would.
    fn parents(&mut self, rel: &Path) -> Res<()> {
        let ancestors: Vec<&Path> = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .collect();
        for dir in ancestors.into_iter().rev() {
            if self.made.contains(dir) {
                continue;
            }
            let src = self.root.join(dir);
            let meta = std::fs::symlink_metadata(&src).map_err(|e| err(&src, e))?;
            copy_entry(&src, &meta, &self.upper.join(dir), &mut HashMap::new())?;
            self.dirs.push((self.upper.join(dir), meta));
            self.made.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path) -> Res<()> {
        self.parents(rel)?;
        let dst = self.upper.join(rel);
        // An upper dir that is itself on overlayfs refuses 0/0 devices: the xattr form then.
        if self.markers == Markers::Trusted && mknod(&dst, SFlag::S_IFCHR, Mode::empty(), 0).is_ok()
        {
            return Ok(());
        }
        std::fs::File::create(&dst).map_err(|e| err(&dst, e))?;
        self.mark(&dst, "whiteout", b"")?;
        // An overlay reads xattr whiteouts only in directories marked "x".
        let parent = dst.parent().expect("below the upper dir");
        if parent != self.upper && !has_overlay_attr(parent, "opaque", b"y") {
            self.mark(parent, "opaque", b"x")?;
        }
        Ok(())
    }

    /// Sets `overlay.<attr>`, `trusted.` first for real root; `user.` where `trusted.` is
    /// refused (a user namespace, an upper dir on overlayfs).
    fn mark(&self, path: &Path, attr: &str, value: &[u8]) -> Res<()> {
        let prefixes: &[&str] = match self.markers {
            Markers::Trusted => &["trusted.overlay.", "user.overlay."],
            Markers::User => &["user.overlay."],
        };
        let mut last = None;
        for prefix in prefixes {
            match xattr::set(path, format!("{prefix}{attr}"), value) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(format!("setting {prefix}{attr}: {e}")),
            }
        }
        Err(err(path, last.expect("at least one prefix")))
    }

    fn finish(self) -> Res<()> {
        for (dir, meta) in self.dirs.iter().rev() {
            set_times(dir, meta)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn tree(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                e.path().strip_prefix(dir).unwrap().display().to_string()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn populate_merges_layers_top_first_with_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let (bottom, top, dest) = (t.path().join("b"), t.path().join("t"), t.path().join("d"));
        write(&bottom.join("etc/a"), "old");
        write(&bottom.join("etc/gone"), "x");
        write(&bottom.join("opq/inner"), "x");
        write(&top.join("etc/a"), "new");
        write(&top.join("etc/gone"), "");
        xattr::set(top.join("etc/gone"), "user.overlay.whiteout", b"").unwrap();
        std::fs::create_dir_all(top.join("opq")).unwrap();
        xattr::set(top.join("opq"), "user.overlay.opaque", b"y").unwrap();
        write(&top.join("opq/fresh"), "y");
        std::fs::create_dir(&dest).unwrap();
        populate(&[top, bottom], &dest).unwrap();
        assert_eq!(tree(&dest), ["etc", "etc/a", "opq", "opq/fresh"]);
        assert_eq!(std::fs::read_to_string(dest.join("etc/a")).unwrap(), "new");
    }

    #[test]
    fn diff_finds_created_changed_deleted_and_replaced() {
        let t = tempfile::tempdir().unwrap();
        let (root, upper) = (t.path().join("r"), t.path().join("u"));
        write(&root.join("etc/keep"), "same");
        write(&root.join("etc/edit"), "before");
        write(&root.join("etc/gone"), "x");
        write(&root.join("tree/a/b"), "x");
        write(&root.join("swap/old"), "x");
        std::fs::create_dir(&upper).unwrap();
        let before = Snapshot::take(&root).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        write(&root.join("etc/edit"), "after");
        std::fs::remove_file(root.join("etc/gone")).unwrap();
        std::fs::remove_dir_all(root.join("tree")).unwrap();
        std::fs::remove_dir_all(root.join("swap")).unwrap();
        write(&root.join("swap/new"), "n");
        write(&root.join("new/file"), "n");
        write_diff(before, &root, &upper, Markers::User).unwrap();
        assert_eq!(
            tree(&upper),
            [
                "etc", "etc/edit", "etc/gone", "new", "new/file", "swap", "swap/new", "tree"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(upper.join("etc/edit")).unwrap(),
            "after"
        );
        for w in ["etc/gone", "tree"] {
            let p = upper.join(w);
            assert!(
                is_whiteout(&p, &std::fs::symlink_metadata(&p).unwrap()),
                "{w}"
            );
        }
        assert!(has_overlay_attr(&upper.join("swap"), "opaque", b"y"));
        assert!(has_overlay_attr(&upper.join("etc"), "opaque", b"x"));
    }
}
