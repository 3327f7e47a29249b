//! The merged file tree of an image's layers as COPY/ADD see it when they place files:
//! which paths are directories (with their metadata) and which are symlinks, with the
//! deletions of upper layers (whiteouts, opaque directories) applied.
//!
//! Layers are the store's unpacked layer directories, which do not keep whiteouts, so each
//! layer's whiteouts are listed once from its blob and kept beside the build cache.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::copy::{DirMeta, ImageView, Node};
use crate::layer::Whiteout;

/// One layer: its unpacked directory and what it deletes from the layers below.
pub(crate) struct LayerView {
    pub dir: PathBuf,
    pub deleted: HashSet<String>,
    pub opaque: HashSet<String>,
}

impl LayerView {
    pub fn new(dir: PathBuf, whiteouts: Vec<Whiteout>) -> LayerView {
        let mut v = LayerView {
            dir,
            deleted: HashSet::new(),
            opaque: HashSet::new(),
        };
        for w in whiteouts {
            match w {
                Whiteout::Path(p) => v.deleted.insert(p),
                Whiteout::Opaque(p) => v.opaque.insert(p),
            };
        }
        v
    }

    /// What this layer has at `path` (never following a symlink, not even in a parent:
    /// a parent that is not a real directory here means the layer has nothing below it),
    /// and whether the layer hides `path` in the layers below.
    fn lookup(&self, path: &str) -> (Option<Node>, bool) {
        let comps: Vec<&str> = path.split('/').collect();
        let mut here = self.dir.clone();
        for (i, c) in comps.iter().enumerate() {
            let sofar = comps[..=i].join("/");
            let last = i + 1 == comps.len();
            if self.deleted.contains(&sofar) {
                return (None, true);
            }
            here.push(c);
            let Ok(m) = std::fs::symlink_metadata(&here) else {
                // Absent here; an opaque directory above hides the lower layers' copy.
                let hidden = (1..=i).any(|j| self.opaque.contains(&comps[..j].join("/")));
                return (None, hidden);
            };
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
        let tree = ImageTree::new(vec![
            LayerView::new(
                upper,
                vec![
                    Whiteout::Path("gone".into()),
                    Whiteout::Opaque("opq".into()),
                ],
            ),
            LayerView::new(lower, vec![]),
        ]);
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
    }
}
