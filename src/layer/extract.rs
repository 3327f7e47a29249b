//! Writing one layer's tar entries into the root, every operation by descriptor.
//!
//! Each entry's parent is resolved inside the root ([`crate::fs_root`]) to an
//! `O_PATH` descriptor; the final component is never followed (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`, `linkat` without `AT_SYMLINK_FOLLOW`), so an existing symlink is
//! replaced, not written through. Directory modes and mtimes are applied at the end, deepest
//! first (a read-only directory of the layer must not stop its own children from being
//! written), re-opening each directory from the root without following any symlink: a
//! directory a later entry replaced (by a symlink to the host, say) is skipped, never chmod'ed
//! through.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use filetime::FileTime;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, mkdirat, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat, linkat, symlinkat};
use tar::EntryType;

use super::whiteouts::{OPAQUE_MARKER, WHITEOUT_PREFIX, make_whiteout, mark_opaque};
use super::{Deletions, LayerError, Ownership, UnpackOptions};
use crate::fs_root::{
    Resolved, kind, list_dir, open_dir, open_real_dir, remove_at, resolve_dir, split_entry, stat_at,
};

/// Metadata of one entry, gathered from the header and its PAX records.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

pub(super) struct Unpacker<'a> {
    root: OwnedFd,
    root_path: PathBuf,
    opts: &'a UnpackOptions,
    /// Real paths (from the root) this layer created, and their ancestors: an opaque marker
    /// keeps them.
    written: HashSet<Vec<u8>>,
    /// Whiteouts this layer made in overlay form: a directory of the same layer that later
    /// takes the name must be opaque, the lower one was deleted.
    whited: HashSet<Vec<u8>>,
    /// Directories (real path components) whose mode and mtime are applied at the end.
    dirs: Vec<(Vec<Vec<u8>>, u32, i64)>,
    /// The parent (entry components, resolved dir) of the previous entry when it was a plain
    /// file: the next file in the same directory skips resolving it again. Any other kind of
    /// entry clears it, since only a file there cannot change the parent's path.
    last_parent: Option<(Vec<Vec<u8>>, Resolved)>,
    pub entries: u64,
    pub whiteouts: u64,
    pub warnings: Vec<String>,
}

impl<'a> Unpacker<'a> {
    pub(super) fn new(root: OwnedFd, root_path: PathBuf, opts: &'a UnpackOptions) -> Unpacker<'a> {
        Unpacker {
            root,
            root_path,
            opts,
            written: HashSet::new(),
            whited: HashSet::new(),
            dirs: Vec::new(),
            last_parent: None,
            entries: 0,
            whiteouts: 0,
            warnings: Vec::new(),
        }
    }

    /// Unpacks every entry of the tar read from `r`, then applies directory modes and times
    /// and reads `r` to its end (the diffID covers any padding after the end marker).
    pub(super) fn all(&mut self, r: impl Read) -> Result<(), LayerError> {
        let mut archive = tar::Archive::new(r);
        for entry in archive.entries().map_err(LayerError::Input)? {
            if crate::progress::interrupted() {
                return Err(LayerError::Interrupted);
            }
            self.entry(entry.map_err(LayerError::Input)?)?;
        }
        self.finish_dirs()?;
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(LayerError::Input)?;
        Ok(())
    }

    fn fail(&self, shown: &str, rel: &[u8], source: io::Error) -> LayerError {
        LayerError::Unpack {
            entry: shown.to_string(),
            dest: self.root_path.join(std::ffi::OsStr::from_bytes(rel)),
            source,
        }
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let name = e.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&name).into_owned();
        let Some((parents, last)) = split_entry(&name) else {
            if e.header().entry_type() != EntryType::Directory {
                self.warnings.push(format!(
                    "skipped entry {shown:?}: it names no file inside the layer"
                ));
            }
            return Ok(());
        };
        let deletion = last.starts_with(WHITEOUT_PREFIX);
        let is_file = is_file_type(e.header().entry_type()) && !deletion;
        let parent = match self.last_parent.take() {
            Some((comps, dir))
                if is_file && comps.iter().map(Vec::as_slice).eq(parents.iter().copied()) =>
            {
                dir
            }
            _ => {
                // Applying a deletion never needs to make the directory it deletes from.
                let create = !(deletion && self.opts.deletions == Deletions::Apply);
                match self.resolve_parent(&parents, create) {
                    Ok(dir) => dir,
                    Err(err) if deletion && err.raw_os_error() == Some(libc::ENOENT) => {
                        return Ok(());
                    }
                    Err(err) => return Err(self.fail(&shown, b"", err)),
                }
            }
        };
        if deletion {
            self.whiteouts += 1;
            let rel = parent.child_rel(last);
            return self
                .deletion(&parent, last, &shown)
                .map_err(|err| self.fail(&shown, &rel, err));
        }
        let rel = parent.child_rel(last);
        let meta = read_meta(&mut e).map_err(LayerError::Input)?;
        let created = self
            .create(&mut e, &parent, last, &meta, &shown)
            .map_err(|err| self.fail(&shown, &rel, err))?;
        if created {
            self.entries += 1;
            self.mark_written(rel);
        }
        if is_file {
            let comps = parents.iter().map(|c| c.to_vec()).collect();
            self.last_parent = Some((comps, parent));
        }
        Ok(())
    }

    /// [`resolve_dir`], where a whiteout this layer made on the way (`.wh.d`, then `d/x`
    /// without a `d/` entry) becomes the opaque directory it stands for.
    fn resolve_parent(&mut self, parents: &[&[u8]], create: bool) -> io::Result<Resolved> {
        loop {
            match resolve_dir(self.root.as_fd(), parents, create) {
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) && self.revive(parents)? => {}
                other => return other,
            }
        }
    }

    /// Turns the first whiteout of this layer among `parents` into an opaque directory;
    /// false when there is none.
    fn revive(&mut self, parents: &[&[u8]]) -> io::Result<bool> {
        let Deletions::Overlay(x) = self.opts.deletions else {
            return Ok(false);
        };
        for (i, name) in parents.iter().enumerate() {
            let Ok(dir) = resolve_dir(self.root.as_fd(), &parents[..i], true) else {
                return Ok(false);
            };
            if self.whited.remove(&dir.child_rel(name)) {
                let fd = dir.fd.as_fd();
                remove_at(fd, name)?;
                mkdirat(fd, *name, Mode::from_bits_truncate(0o755))?;
                mark_opaque(fd, name, x)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `.wh..wh..opq` (`last`) or `.wh.NAME` in `parent`.
    fn deletion(&mut self, parent: &Resolved, last: &[u8], shown: &str) -> io::Result<()> {
        let dir = parent.fd.as_fd();
        if last == OPAQUE_MARKER {
            return match self.opts.deletions {
                Deletions::Apply => self.clear_unwritten(parent),
                Deletions::Overlay(x) => mark_opaque(dir, b".", x),
            };
        }
        let victim = &last[WHITEOUT_PREFIX.len()..];
        if victim.is_empty() || victim == b"." || victim == b".." || victim.contains(&b'/') {
            self.warnings
                .push(format!("skipped malformed whiteout {shown:?}"));
            return Ok(());
        }
        let Deletions::Overlay(x) = self.opts.deletions else {
            return remove_at(dir, victim);
        };
        let rel = parent.child_rel(victim);
        match stat_at(dir, victim)? {
            // This layer's own entry already hides the lower one; a directory must also not
            // merge with it.
            Some(st) if self.written.contains(&rel) => {
                if kind(&st) == SFlag::S_IFDIR {
                    mark_opaque(dir, victim, x)?;
                }
                Ok(())
            }
            existing => {
                if existing.is_some() {
                    remove_at(dir, victim)?;
                }
                make_whiteout(dir, victim)?;
                self.whited.insert(rel);
                Ok(())
            }
        }
    }

    /// Applied `.wh..wh..opq`: everything in `dir` that this layer did not itself write goes.
    fn clear_unwritten(&self, dir: &Resolved) -> io::Result<()> {
        let fd = dir.fd.as_fd();
        for name in list_dir(fd)? {
            let rel = dir.child_rel(&name);
            if !self.written.contains(&rel) {
                remove_at(fd, &name)?;
            } else if stat_at(fd, &name)?.is_some_and(|st| kind(&st) == SFlag::S_IFDIR) {
                self.clear_unwritten(&dir.child_dir(&name)?)?;
            }
        }
        Ok(())
    }

    fn mark_written(&mut self, mut rel: Vec<u8>) {
        loop {
            let cut = rel.iter().rposition(|&c| c == b'/');
            if !self.written.insert(rel.clone()) {
                return;
            }
            match cut {
                Some(i) => rel.truncate(i),
                None => return,
            }
        }
    }

    /// Creates the entry `name` in `parent`. False when it was skipped.
    fn create<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        parent: &Resolved,
        name: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> io::Result<bool> {
        let dir = parent.fd.as_fd();
        // A whiteout of this layer that the entry replaces: the lower one stays deleted.
        let replaces_whiteout = self.whited.remove(&parent.child_rel(name));
        let kind = e.header().entry_type();
        match kind {
            EntryType::Directory => {
                self.create_dir(parent, name, meta, shown)?;
                if let (true, Deletions::Overlay(x)) = (replaces_whiteout, self.opts.deletions) {
                    mark_opaque(dir, name, x)?;
                }
                return Ok(true);
            }
            // The tar crate expands GNU sparse entries to their full contents on read.
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.create_file(e, dir, name, meta, shown)?;
                return Ok(true);
            }
            EntryType::Symlink => {
                let link = e.link_name_bytes().unwrap_or_default().into_owned();
                remove_at(dir, name)?;
                symlinkat(&link[..], dir, name)?;
            }
            EntryType::Link => return self.hardlink(e, dir, name, shown),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if !self.node(e, dir, name, meta, shown)? {
                    return Ok(false);
                }
            }
            other => {
                self.warnings.push(format!(
                    "skipped entry {shown:?}: unsupported tar type {other:?}"
                ));
                return Ok(false);
            }
        }
        self.own_at(dir, name, meta)?;
        if kind != EntryType::Symlink {
            // After chown: chown clears setuid/setgid bits.
            let mode = Mode::from_bits_truncate((meta.mode & 0o7777) as libc::mode_t);
            fchmodat(dir, name, mode, FchmodatFlags::NoFollowSymlink)?;
        }
        if self.opts.xattrs && restorable(&meta.xattrs).next().is_some() {
            self.warnings.push(format!(
                "xattrs of {shown:?} not restored: only files and directories take them here"
            ));
        }
        let t = TimeSpec::new(meta.mtime, 0);
        nix::sys::stat::utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)?;
        Ok(true)
    }

    fn create_dir(
        &mut self,
        parent: &Resolved,
        name: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> io::Result<()> {
        let dir = parent.fd.as_fd();
        match stat_at(dir, name)? {
            Some(st) if kind(&st) == SFlag::S_IFDIR => {}
            existing => {
                if existing.is_some() {
                    remove_at(dir, name)?;
                }
                mkdirat(dir, name, Mode::from_bits_truncate(0o755))?;
            }
        }
        self.own_at(dir, name, meta)?;
        if self.opts.xattrs {
            let f = File::from(open_dir(dir, name)?);
            self.set_xattrs(&f, meta, shown);
        }
        let mut comps = parent.comps.clone();
        comps.push(name.to_vec());
        self.dirs.push((comps, meta.mode, meta.mtime));
        Ok(())
    }

    /// A regular file, owned, moded and timed through its open descriptor. `O_EXCL |
    /// O_NOFOLLOW` fails on anything already there, symlinks included; only then is the old
    /// entry removed, so a fresh tree pays no extra lookup per file.
    fn create_file<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> io::Result<()> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let open = || openat(dir, name, flags, Mode::from_bits_truncate(0o600));
        let fd = match open() {
            Err(Errno::EEXIST) => {
                remove_at(dir, name)?;
                open()?
            }
            other => other?,
        };
        let mut f = File::from(fd);
        io::copy(e, &mut f)?;
        if let Some((uid, gid)) = self.host_ids(meta)? {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        // After chown: chown clears setuid/setgid bits.
        f.set_permissions(std::fs::Permissions::from_mode(meta.mode & 0o7777))?;
        self.set_xattrs(&f, meta, shown);
        let t = FileTime::from_unix_time(meta.mtime, 0);
        filetime::set_file_handle_times(&f, Some(t), Some(t))
    }

    /// A hardlink: its target is resolved inside the root too (its own last component not
    /// followed), and must be an existing non-directory.
    fn hardlink<R: Read>(
        &mut self,
        e: &tar::Entry<'_, R>,
        dir: BorrowedFd<'_>,
        name: &[u8],
        shown: &str,
    ) -> io::Result<bool> {
        let link = e.link_name_bytes().unwrap_or_default().into_owned();
        let to = String::from_utf8_lossy(&link).into_owned();
        let mut skip = |why: &str| {
            self.warnings
                .push(format!("skipped hardlink {shown:?} to {to:?}: {why}"));
            Ok(false)
        };
        let Some((parents, last)) = split_entry(&link) else {
            return skip("empty link target");
        };
        let source = match resolve_dir(self.root.as_fd(), &parents, false) {
            Ok(s) => s,
            Err(_) => return skip("the target is not an existing file in the layer"),
        };
        let src = source.fd.as_fd();
        let Some(st) = stat_at(src, last)?.filter(|st| kind(st) != SFlag::S_IFDIR) else {
            return skip("the target is not an existing file in the layer");
        };
        if let Some(here) = stat_at(dir, name)?
            && (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino)
        {
            return Ok(true);
        }
        remove_at(dir, name)?;
        linkat(src, last, dir, name, AtFlags::empty())?;
        Ok(true)
    }

    /// Device nodes and fifos; devices the process may not create are skipped with a warning.
    fn node<R: Read>(
        &mut self,
        e: &tar::Entry<'_, R>,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> io::Result<bool> {
        let h = e.header();
        let (kind, letter) = match h.entry_type() {
            EntryType::Char => (SFlag::S_IFCHR, 'c'),
            EntryType::Block => (SFlag::S_IFBLK, 'b'),
            _ => (SFlag::S_IFIFO, 'p'),
        };
        let (major, minor) = if kind == SFlag::S_IFIFO {
            (0, 0)
        } else {
            (
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            )
        };
        if kind == SFlag::S_IFCHR
            && (major, minor) == (0, 0)
            && self.opts.deletions != Deletions::Apply
        {
            self.warnings.push(format!(
                "skipped device node {shown:?} (c 0:0): in an overlay lower dir it would be a deletion"
            ));
            return Ok(false);
        }
        remove_at(dir, name)?;
        let dev = nix::sys::stat::makedev(major.into(), minor.into());
        let mode = Mode::from_bits_truncate((meta.mode & 0o777) as libc::mode_t);
        match mknodat(dir, name, kind, mode, dev) {
            Ok(()) => Ok(true),
            Err(Errno::EPERM) => {
                self.warnings.push(format!(
                    "skipped device node {shown:?} ({letter} {major}:{minor}): creating devices needs privileges"
                ));
                Ok(false)
            }
            Err(err) => Err(err.into()),
        }
    }

    fn own_at(&self, dir: BorrowedFd<'_>, name: &[u8], meta: &Meta) -> io::Result<()> {
        let Some((uid, gid)) = self.host_ids(meta)? else {
            return Ok(());
        };
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        Ok(fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)?)
    }

    /// The host uid and gid an entry gets (None: ownership is left as created).
    fn host_ids(&self, meta: &Meta) -> io::Result<Option<(u32, u32)>> {
        let (uid, gid) = match &self.opts.ownership {
            Ownership::Ignore => return Ok(None),
            Ownership::Preserve => (meta.uid, meta.gid),
            Ownership::Map(m) => {
                let unmapped = |kind, id| {
                    io::Error::other(format!("image {kind} {id} has no host id in the id map"))
                };
                let uid = m
                    .uids
                    .image_to_host(meta.uid)
                    .ok_or_else(|| unmapped("uid", meta.uid))?;
                let gid = m
                    .gids
                    .image_to_host(meta.gid)
                    .ok_or_else(|| unmapped("gid", meta.gid))?;
                (uid, gid)
            }
        };
        let id =
            |v: u64| u32::try_from(v).map_err(|_| io::Error::other(format!("id {v} out of range")));
        Ok(Some((id(uid)?, id(gid)?)))
    }

    /// Restores xattrs where the kernel lets us; overlay's own are never restored (they would
    /// change how this directory behaves as an overlay lower layer).
    fn set_xattrs(&mut self, f: &File, meta: &Meta, shown: &str) {
        if !self.opts.xattrs {
            return;
        }
        for (name, value) in restorable(&meta.xattrs) {
            if let Err(err) = xattr::FileExt::set_xattr(f, name, value) {
                self.warnings
                    .push(format!("xattr {name} not restored on {shown:?}: {err}"));
            }
        }
    }

    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        // Deepest first: chmod 0555 on a parent must come after its children's mtimes.
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (comps, mode, mtime) in &self.dirs {
            let fail = |source| {
                self.fail(
                    &String::from_utf8_lossy(&comps.join(&b'/')),
                    &comps.join(&b'/'),
                    source,
                )
            };
            let (name, parents) = comps.split_last().expect("a directory entry has a name");
            let parent = match open_real_dir(self.root.as_fd(), parents) {
                Ok(fd) => fd,
                // A later entry replaced a directory on the way: not this one any more.
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(fail(e)),
            };
            match stat_at(parent.as_fd(), name) {
                Ok(Some(st)) if kind(&st) == SFlag::S_IFDIR => {}
                Ok(_) => continue,
                Err(e) => return Err(fail(e)),
            }
            set_dir_mode_and_time(parent.as_fd(), name, *mode, *mtime).map_err(fail)?;
        }
        Ok(())
    }
}

/// ENOENT, ENOTDIR or ELOOP: a component is missing or no longer a real directory.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
    )
}

/// chmod and utimes of the directory `name` in `parent`, through a descriptor of it (a
/// directory unreadable to us is done with `AT_SYMLINK_NOFOLLOW` calls instead).
fn set_dir_mode_and_time(
    parent: BorrowedFd<'_>,
    name: &[u8],
    mode: u32,
    mtime: i64,
) -> io::Result<()> {
    let m = Mode::from_bits_truncate((mode & 0o7777) as libc::mode_t);
    let t = TimeSpec::new(mtime, 0);
    match open_dir(parent, name) {
        Ok(fd) => {
            nix::sys::stat::fchmod(&fd, m)?;
            Ok(nix::sys::stat::futimens(&fd, &t, &t)?)
        }
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            fchmodat(parent, name, m, FchmodatFlags::NoFollowSymlink)?;
            Ok(nix::sys::stat::utimensat(
                parent,
                name,
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            )?)
        }
        Err(e) => Err(e),
    }
}

/// The xattrs of an entry that may be restored (not overlay's own).
fn restorable(xattrs: &[(String, Vec<u8>)]) -> impl Iterator<Item = (&str, &[u8])> {
    xattrs
        .iter()
        .filter(|(k, _)| !k.starts_with("trusted.overlay.") && !k.starts_with("user.overlay."))
        .map(|(k, v)| (k.as_str(), v.as_slice()))
}

fn read_meta<R: Read>(e: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = e.header();
    let mut m = Meta {
        mode: h.mode()?,
        uid: h.uid()?,
        gid: h.gid()?,
        mtime: h.mtime()? as i64,
        xattrs: Vec::new(),
    };
    if let Some(pax) = e.pax_extensions()? {
        for rec in pax {
            let rec = rec?;
            let Ok(key) = rec.key() else { continue };
            let num = || {
                std::str::from_utf8(rec.value_bytes())
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
            };
            match key {
                "uid" => m.uid = num().unwrap_or(m.uid),
                "gid" => m.gid = num().unwrap_or(m.gid),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        m.xattrs
                            .push((name.to_string(), rec.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    Ok(m)
}

fn is_file_type(t: EntryType) -> bool {
    matches!(
        t,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
    )
}
