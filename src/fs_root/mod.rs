//! A directory used as `/`: every path below it is resolved by descriptor, so a symlink
//! (absolute, or full of `..`) met on the way is followed as if the directory were the root
//! of the filesystem and never leads outside it. `link -> /etc` in a build context means
//! `<context>/etc`, in an image root `<root>/etc`, as with Docker and runc.
//!
//! The one implementation of that resolution, used by everything that touches an image
//! root or a context: the unpacker (`layer`), COPY/ADD sources and the Dockerfile and ignore
//! readers (`build`, `plan`, `cli`), and the sandbox's mount targets and working directory.
//!
//! - [`resolve`] is the descriptor walk: each component opened `O_PATH | O_NOFOLLOW`
//!   relative to its parent's descriptor, symlinks read through their own descriptor and
//!   walked again from the root, `..` never above it, ELOOP after 40 links. No path string
//!   is handed to the kernel whole, so no component can be swapped for a symlink between a
//!   check and its use. It can make what is missing on the way ([`Create`]), which
//!   `openat2` cannot: the unpacker and the sandbox's mountpoints need that.
//! - [`Root`] opens for reading with `openat2(RESOLVE_IN_ROOT)` (one system call) and falls
//!   back to the walk where the kernel lacks it (ENOSYS) or a seccomp profile refuses it
//!   (EPERM, CI containers): same answers either way.
//! - `at.rs`: the `*at` helpers (stat, list, remove, open a real path with no symlink on it).
//!
//! Nothing here imports from another kiln module: it sits at the bottom of the graph.

mod at;
mod root;
mod walk;

#[cfg(test)]
mod tests;
#[cfg(test)]
use root::fd_path;

pub(crate) use at::{
    kind, list_dir, open_dir, open_real, open_real_dir, remove_at, split_entry, stat_at,
};
pub(crate) use root::{Root, open_no_symlinks, proc_fd, read_maybe_in};
pub(crate) use walk::{Create, Leaf, Resolved, Walk, in_root_path, resolve, resolve_dir};
