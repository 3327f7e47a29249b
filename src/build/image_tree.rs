//! The merged file tree of an image's layers as COPY/ADD see it when they place files:
//! which paths are directories (with their metadata) and which are symlinks, with the
//! deletions of upper layers (whiteouts, opaque directories) applied.
//!
//! Layers are the store's unpacked layer directories, which keep their deletions in
//! overlay's form (a 0/0 character device for a deleted name, `overlay.opaque=y` on a
//! directory that hides the layers below, the layer root included).

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::copy::{DirMeta, ImageView, Node};
use crate::layer::{is_opaque_dir, is_whiteout_at};

/// One layer: its unpacked directory.
pub(crate) struct LayerView {
    pub dir: PathBuf,
}

impl LayerView {
    pub fn new(dir: PathBuf) -> LayerView {
        LayerView { dir }
    }

    /// What this layer has at `path` (never following a symlink, not even in a parent:
    /// a parent that is not a real directory here means the layer has nothing below it),
    /// and whether the layer hides `path` in the layers below.
    fn lookup(&self, path: &str) -> (Option<Node>, bool) {
        let comps: Vec<&str> = path.split('/').collect();
        let mut here = self.dir.clone();
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            here.push(c);
            let Ok(m) = std::fs::symlink_metadata(&here) else {
                // Absent here; an opaque directory above (or root) hides the lower layers' copy.
                let hidden = (0..=i).any(|j| is_opaque_dir(&self.dir.join(comps[..j].join("/"))));
                return (None, hidden);
            };
            if is_whiteout_at(&here, &m) {
                return (None, true);
            }
            if last {
                return (Some(node(&here, &m)), true);
            }
            if !m.is_dir() {
                // A file or symlink replaced the directory: nothing below it shows through.
                return (None, true);
            }
        }
        (None, false)
    }
}

fn node(path: &std::path::Path, m: &std::fs::Metadata) -> Node {
    if m.file_type().is_symlink() {
        let target = std::fs::read_link(path).unwrap_or_default();
        Node::Symlink(target.to_string_lossy().into_owned())
    } else if m.is_dir() {
        Node::Dir(DirMeta {
            mode: m.mode() & 0o7777,
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
            mtime: m.mtime().max(0) as u64,
        })
    } else {
        Node::Other
    }
}

/// The layers of an image, top layer first, with lookups memoised.
pub(crate) struct ImageTree<'o> {
    layers: Vec<LayerView>,
    memo: RefCell<HashMap<String, Option<Node>>>,
    /// Turns the owner of an unpacked dir (host ids) into the owner the image has.
    owner: Box<dyn Fn(DirMeta) -> DirMeta + 'o>,
}

impl<'o> ImageTree<'o> {
    pub fn new(layers: Vec<LayerView>) -> ImageTree<'o> {
        ImageTree {
            layers,
            memo: RefCell::new(HashMap::new()),
            owner: Box::new(|m| m),
        }
    }

    /// Rootless stores hold sub-uids (or the user's own id) where the image has its own ids.
    pub fn with_owner_map(mut self, owner: impl Fn(DirMeta) -> DirMeta + 'o) -> ImageTree<'o> {
        self.owner = Box::new(owner);
        self
    }
}

impl ImageTree<'_> {
    /// The text of the file the merged image has at `path` (symlinks on the way followed
    /// inside the image, deleted files absent), e.g. `etc/passwd` for `--chown`.
    pub fn read_file(&self, path: &str) -> Option<String> {
        let path = super::copy::resolve_in_image(self, path).ok()?;
        for l in &self.layers {
            match l.lookup(&path) {
                (Some(Node::Other), _) => return std::fs::read_to_string(l.dir.join(&path)).ok(),
                (Some(_), _) | (None, true) => return None,
                (None, false) => {}
            }
        }
        None
    }
}

impl ImageTree<'_> {
    /// The one layer whose directory holds all the merged image has at `path` (a real
    /// path: no symlink on the way), so that it can be read there directly: the top layer
    /// that has it, when it is a file, or a directory no other layer has anything of.
    pub fn sole_layer(&self, path: &str) -> Option<&std::path::Path> {
        let mut layers = self.layers.iter();
        let top = loop {
            let l = layers.next()?;
            match l.lookup(path) {
                (Some(n), _) => break (l, n),
                (None, true) => return None,
                (None, false) => {}
            }
        };
        match top.1 {
            Node::Other => Some(&top.0.dir),
            Node::Dir(_) if layers.all(|l| l.lookup(path).0.is_none()) => Some(&top.0.dir),
            _ => None,
        }
    }
}

impl ImageView for ImageTree<'_> {
    fn node(&self, path: &str) -> Option<Node> {
        if path.is_empty() {
            return None;
        }
        if let Some(n) = self.memo.borrow().get(path) {
            return n.clone();
        }
        let mut found = None;
        for l in &self.layers {
            let (n, stop) = l.lookup(path);
            if stop || n.is_some() {
                found = match n {
                    Some(Node::Dir(meta)) => Some(Node::Dir((self.owner)(meta))),
                    other => other,
                };
                break;
            }
        }
        self.memo
            .borrow_mut()
            .insert(path.to_string(), found.clone());
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn upper_whiteouts_opaque_dirs_and_replaced_dirs_hide_lower_layers() {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        let upper = t.path().join("upper");
        for d in ["gone/sub", "opq/old", "kept", "file/x"] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        fs::create_dir_all(upper.join("opq/new")).unwrap();
        fs::write(upper.join("file"), "").unwrap();
        nix::sys::stat::mknod(
            &upper.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        xattr::set(upper.join("opq"), "user.overlay.opaque", b"y").unwrap();
        let tree = ImageTree::new(vec![LayerView::new(upper.clone()), LayerView::new(lower)]);
        assert!(matches!(tree.node("kept"), Some(Node::Dir(_))));
        assert_eq!(tree.node("gone"), None);
        assert_eq!(tree.node("gone/sub"), None);
        assert!(matches!(tree.node("opq"), Some(Node::Dir(_))));
        assert!(matches!(tree.node("opq/new"), Some(Node::Dir(_))));
        assert_eq!(tree.node("opq/old"), None);
        assert_eq!(tree.node("file"), Some(Node::Other));
        assert_eq!(tree.node("file/x"), None);
        assert_eq!(tree.read_file("file").as_deref(), Some(""));
        assert_eq!(tree.read_file("kept"), None);
        assert_eq!(tree.read_file("gone"), None);
        // An opaque layer root hides every lower layer.
        xattr::set(&upper, "user.overlay.opaque", b"y").unwrap();
        let lower = t.path().join("lower");
        let tree = ImageTree::new(vec![LayerView::new(upper), LayerView::new(lower)]);
        assert_eq!(tree.node("kept"), None);
        assert!(matches!(tree.node("opq/new"), Some(Node::Dir(_))));
    }
}
