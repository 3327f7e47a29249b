//! Deletions in overlayfs' own form, for unpacked layer directories that are stacked as
//! overlay lower dirs: a whiteout is a 0/0 character device with the deleted name, an opaque
//! directory carries `overlay.opaque=y`.
//!
//! Which xattr namespace: an overlay mounted by real root reads `trusted.overlay.*`; one
//! mounted in a user namespace (`userxattr`, rootless mode) reads `user.overlay.*` and
//! cannot even see `trusted.`. Root's store serves both (`--isolation chroot` and
//! `rootless`), so root marks an opaque dir with both (`user.` alone where `trusted.` is
//! refused: no `CAP_SYS_ADMIN`, a store on overlayfs). A `trusted` overlay shows the
//! `user.overlay.opaque` of a lower dir as an ordinary xattr and copies it up, where the
//! layer writer would take it for a real opaque directory: after such a step the sandbox
//! drops every `user.overlay.*` from the upper dir ([`drop_user_overlay_xattrs`]; none of
//! them is a mark of that overlay). The copy fallback never copies overlay xattrs.
//!
//! A 0/0 character device needs no privilege since Linux 5.8, in a user namespace or not.
//! An opaque marker at a layer's root hides every layer below, which overlay does not do for
//! a lower dir's root: the readers ([`hides_lower_layers`]) cut the stack there.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, mknodat};

use super::OpaqueXattr;
use crate::fs_root::open_dir;

/// The name prefix of an OCI whiteout entry.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The OCI opaque marker entry.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

const OPAQUE: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Creates the overlay whiteout `name` in `dir`: a 0/0 character device, or where that is
/// refused (overlayfs refuses such devices, so a store on a container's own root gets
/// EPERM) an empty file with `user.overlay.whiteout` in a directory marked
/// `user.overlay.opaque=x`, the form the copy fallback's diff also writes (`sandbox/snapshot.rs`).
pub(crate) fn make_whiteout(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let path = Path::new(std::ffi::OsStr::from_bytes(name));
    match mknodat(dir, path, SFlag::S_IFCHR, Mode::empty(), 0) {
        Err(nix::errno::Errno::EPERM) => {}
        other => return Ok(other?),
    }
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW;
    let mode = Mode::S_IRUSR | Mode::S_IWUSR; // user.* xattrs need write access
    let file = File::from(openat(dir, path, flags | OFlag::O_CLOEXEC, mode)?);
    xattr::FileExt::set_xattr(&file, "user.overlay.whiteout", b"")?;
    let parent = File::from(open_dir(dir, b".")?);
    let opaque = xattr::FileExt::get_xattr(&parent, OPAQUE[1])?;
    if opaque.as_deref() != Some(b"y") {
        xattr::FileExt::set_xattr(&parent, OPAQUE[1], b"x")?;
    }
    Ok(())
}

/// Marks the directory `name` in `dir` opaque (`b"."`: `dir` itself).
pub(crate) fn mark_opaque(dir: BorrowedFd<'_>, name: &[u8], xattr: OpaqueXattr) -> io::Result<()> {
    let f = File::from(open_dir(dir, name)?);
    let set = |key: &str| xattr::FileExt::set_xattr(&f, key, b"y");
    match xattr {
        OpaqueXattr::User => set(OPAQUE[1]),
        OpaqueXattr::Trusted => match set(OPAQUE[0]) {
            Ok(()) => set(OPAQUE[1]).or(Ok(())),
            Err(_) => set(OPAQUE[1]),
        },
    }
}

/// Removes every `user.overlay.*` xattr in `upper` (itself included), the upper dir of an overlay mounted
/// without `userxattr` (its marks are `trusted.`): such xattrs there were copied up from a
/// lower dir or set by the step, and are no deletion. Never follows a symlink; the step
/// must be over (nothing else changes the tree meanwhile).
pub fn drop_user_overlay_xattrs(upper: &Path) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(upper) {
        let entry = entry.map_err(io::Error::from)?;
        if entry.file_type().is_symlink() {
            continue;
        }
        let path = entry.path();
        for name in xattr::list(path)? {
            if name.as_bytes().starts_with(b"user.overlay.") {
                xattr::remove(path, &name)?;
            }
        }
    }
    Ok(())
}

/// Whether an entry of an unpacked layer dir is a whiteout (the name is deleted below).
pub fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// [`is_whiteout`], or the xattr form [`make_whiteout`] falls back to: an empty file at
/// `path` (not followed) carrying `overlay.whiteout`.
pub fn is_whiteout_at(path: &Path, meta: &Metadata) -> bool {
    is_whiteout(meta)
        || (meta.is_file()
            && meta.len() == 0
            && ["user.overlay.whiteout", "trusted.overlay.whiteout"]
                .iter()
                .any(|k| xattr::get(path, k).is_ok_and(|v| v.is_some())))
}

/// Whether the directory at `path` of an unpacked layer dir is opaque (nothing of the
/// layers below shows through it). Not following a symlink at `path`.
pub fn is_opaque_dir(path: &Path) -> bool {
    OPAQUE.iter().any(|k| {
        xattr::get(path, k)
            .ok()
            .flatten()
            .is_some_and(|v| v == b"y")
    })
}

/// Whether the unpacked layer dir `layer` deletes everything below it (an opaque marker at
/// its root): stacking stops there.
pub fn hides_lower_layers(layer: &Path) -> bool {
    is_opaque_dir(layer)
}

/// The layers (top first) that make the image: those below one that hides them dropped.
pub fn visible_layers<P: AsRef<Path>>(layers: &[P]) -> &[P] {
    match layers.iter().position(|l| hides_lower_layers(l.as_ref())) {
        Some(i) => &layers[..=i],
        None => layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn whiteouts_and_opaque_marks_read_back() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        let root = File::open(t.path()).unwrap();
        make_whiteout(root.as_fd(), b"gone").unwrap();
        mark_opaque(root.as_fd(), b"d", OpaqueXattr::User).unwrap();
        let meta = std::fs::symlink_metadata(t.path().join("gone")).unwrap();
        assert!(is_whiteout(&meta));
        assert!(is_opaque_dir(&t.path().join("d")));
        assert!(!hides_lower_layers(t.path()));
        mark_opaque(root.as_fd(), b".", OpaqueXattr::Trusted).unwrap();
        assert!(hides_lower_layers(t.path()));
        let other = tempfile::tempdir().unwrap();
        let stack = [other.path(), t.path(), other.path()];
        assert_eq!(visible_layers(&stack).len(), 2);
        // Root marks both namespaces: a userxattr overlay (rootless) reads `user.`.
        assert_eq!(
            xattr::get(t.path(), OPAQUE[1]).unwrap().as_deref(),
            Some(&b"y"[..])
        );
        drop_user_overlay_xattrs(t.path()).unwrap();
        assert!(xattr::get(t.path(), OPAQUE[1]).unwrap().is_none());
        assert!(!is_opaque_dir(&t.path().join("d")));
    }
}
