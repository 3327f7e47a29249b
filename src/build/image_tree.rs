//! The merged file tree of an image's layers as COPY/ADD see it when they place files:
//! which paths are directories (with their metadata) and which are symlinks, with the
//! deletions of upper layers (whiteouts, opaque directories) applied.
//!
//! Layers are the store's unpacked layer directories, which keep their deletions in
//! overlay's form (a 0/0 character device for a deleted name, `overlay.opaque=y` on a
//! directory that hides the layers below, the layer root included).
//!
//! [`LayerSource`] is the same stack as the tree `COPY --from` reads: each file read from
//! the layer directory that gives it to the image, where the step that made it left it
//! (nothing unpacked again, no blob read), symlinks resolved inside the image.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::context::{Context, ContextError, Entry, EntryKind};
use super::copy::{CopyError, DirMeta, ImageView, Node, SourceTree, join, resolve_in_image};
use crate::layer::{is_opaque_dir, is_whiteout_at};
use crate::plan::ignore::DockerIgnore;

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

/// A stage's or image's files as `COPY --from` reads them: the merged stack of an
/// [`ImageTree`]'s layer dirs. A path is read from the top layer that has it; a directory's
/// listing merges the layers that have it down to one that hides the rest (an opaque
/// directory, a file or a deletion in its place), and a name an upper layer deleted is
/// absent below it. Symlinks are resolved against the merged image ([`resolve_in_image`]),
/// and each layer dir is read through its own [`Context`], which resolves inside that dir:
/// no path ever leaves the image, let alone reaches the host's files.
pub(crate) struct LayerSource<'o> {
    image: ImageTree<'o>,
    /// One per layer of `image`, in its order (top first).
    dirs: Vec<Context>,
    /// The owner the image gives a listed entry (the store holds host ids).
    owner: OwnerOf<'o>,
}

/// The (uid, gid) the image gives an entry listed in one of its layer dirs.
pub(crate) type OwnerOf<'o> = Box<dyn Fn(&Entry) -> (u32, u32) + 'o>;

impl<'o> LayerSource<'o> {
    pub fn new(
        image: ImageTree<'o>,
        owner: impl Fn(&Entry) -> (u32, u32) + 'o,
    ) -> Result<LayerSource<'o>, ContextError> {
        let dirs = image
            .layers
            .iter()
            .map(|l| Context::open(&l.dir, DockerIgnore::default(), None))
            .collect::<Result<_, _>>()
            .map_err(in_store)?;
        Ok(LayerSource {
            image,
            dirs,
            owner: Box::new(owner),
        })
    }

    /// The layer dirs, top first.
    pub fn layer_dirs(&self) -> Vec<PathBuf> {
        self.image.layers.iter().map(|l| l.dir.clone()).collect()
    }

    /// The layers whose directory at `rel` (a real path of the image) is part of the
    /// image's, top first; or the one layer whose file (or symlink) it is, as `Err`.
    fn layers_at(&self, rel: &str) -> Result<Vec<usize>, Option<usize>> {
        let mut found = Vec::new();
        for (i, l) in self.image.layers.iter().enumerate() {
            match l.lookup(rel) {
                (Some(Node::Dir(_)), _) => {
                    found.push(i);
                    // Opaque here or above (the layer root included): nothing below shows.
                    let mut at = Some(rel);
                    let hides = std::iter::from_fn(|| {
                        let p = at?;
                        at = (!p.is_empty()).then(|| p.rsplit_once('/').map_or("", |(a, _)| a));
                        Some(p)
                    })
                    .any(|p| is_opaque_dir(&l.dir.join(p)));
                    if hides {
                        break;
                    }
                }
                (Some(_), _) if found.is_empty() => return Err(Some(i)),
                (Some(_), _) | (None, true) => break,
                (None, false) => {}
            }
        }
        if found.is_empty() {
            Err(None)
        } else {
            Ok(found)
        }
    }

    /// The entries below directory `rel` of each of `layers` (top first), merged: the top
    /// layer's entry for each path, nothing below an upper layer's deletion, file or opaque
    /// directory, no deletion marks.
    fn merged(&self, rel: &str, layers: &[usize]) -> Result<Vec<Entry>, ContextError> {
        // Path -> whether it hides what lower layers have below it.
        let mut seen: HashMap<String, bool> = HashMap::new();
        let mut out = Vec::new();
        for (n, &i) in layers.iter().enumerate() {
            let lower_follow = n + 1 < layers.len();
            // What this layer hides applies to the layers below it, not to itself.
            let mut here = Vec::new();
            for mut e in self.dirs[i].entries(rel).map_err(in_store)? {
                if seen.contains_key(&e.rel) || hidden_above(&seen, rel, &e.rel) {
                    continue;
                }
                let host = self.dirs[i].listed_path(&e);
                let maybe_whiteout =
                    matches!(e.kind, EntryKind::Other | EntryKind::File { size: 0 });
                if maybe_whiteout
                    && std::fs::symlink_metadata(&host).is_ok_and(|m| is_whiteout_at(&host, &m))
                {
                    here.push((e.rel, true));
                    continue;
                }
                let hides = match e.kind {
                    EntryKind::Dir => lower_follow && e.rel != rel && is_opaque_dir(&host),
                    _ => true,
                };
                here.push((e.rel.clone(), hides));
                e.layer = i;
                out.push(e);
            }
            seen.extend(here);
        }
        if layers.len() > 1 {
            Context::sort_walk_order(&mut out);
        }
        Ok(out)
    }
}

/// An I/O error of a layer dir's [`Context`] named as the store's, not the build context's.
fn in_store(e: ContextError) -> ContextError {
    match e {
        ContextError::Io { path, source } => ContextError::Layer { path, source },
        other => other,
    }
}

/// Whether a directory strictly between `top` and `path` hides the lower layers below it.
fn hidden_above(seen: &HashMap<String, bool>, top: &str, path: &str) -> bool {
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if parent.len() <= top.len() {
            break;
        }
        if seen.get(parent) == Some(&true) {
            return true;
        }
        p = parent;
    }
    false
}

impl SourceTree for LayerSource<'_> {
    fn entries(&self, rel: &str) -> Result<Vec<Entry>, ContextError> {
        let rel = SourceTree::resolve(self, rel, false)?;
        match self.layers_at(&rel) {
            Ok(layers) => self.merged(&rel, &layers),
            Err(Some(i)) => {
                let mut listed = self.dirs[i].entries(&rel).map_err(in_store)?;
                for e in &mut listed {
                    e.layer = i;
                }
                Ok(listed)
            }
            Err(None) => Err(ContextError::NotFound(rel)),
        }
    }

    fn resolve(&self, rel: &str, follow: bool) -> Result<String, ContextError> {
        let rel = rel.trim_matches('/');
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let real = if follow || matches!(name, "" | "." | "..") {
            resolve_in_image(&self.image, rel)
        } else {
            resolve_in_image(&self.image, parent).map(|p| join(&p, name))
        };
        let real = real.map_err(|e| match e {
            CopyError::SymlinkLoop(_) => ContextError::Layer {
                path: rel.into(),
                source: std::io::Error::from_raw_os_error(libc::ELOOP),
            },
            _ => ContextError::NotFound(rel.to_string()),
        })?;
        if real.is_empty() || self.image.node(&real).is_some() {
            Ok(real)
        } else {
            Err(ContextError::NotFound(rel.to_string()))
        }
    }

    fn all_paths(&self) -> Result<Vec<String>, ContextError> {
        Ok(SourceTree::entries(self, "")?
            .into_iter()
            .map(|e| e.rel)
            .filter(|r| !r.is_empty())
            .collect())
    }

    fn host_path(&self, rel: &str) -> Result<PathBuf, ContextError> {
        let rel = SourceTree::resolve(self, rel, false)?;
        let i = match self.layers_at(&rel) {
            Ok(layers) => layers[0],
            Err(Some(i)) => i,
            Err(None) => return Err(ContextError::NotFound(rel)),
        };
        self.dirs[i].host_path(&rel).map_err(in_store)
    }

    fn listed_path(&self, e: &Entry) -> PathBuf {
        self.dirs[e.layer].listed_path(e)
    }

    fn owner(&self, e: &Entry) -> (u32, u32) {
        (self.owner)(e)
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

    fn whiteout(at: &std::path::Path) {
        nix::sys::stat::mknod(
            at,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
    }

    fn rels(src: &LayerSource, rel: &str) -> Vec<(String, usize)> {
        src.entries(rel)
            .unwrap()
            .into_iter()
            .map(|e| (e.rel, e.layer))
            .collect()
    }

    #[test]
    fn a_layer_source_merges_layers_applies_deletions_and_resolves_inside_the_image() {
        let t = tempfile::tempdir().unwrap();
        let (top, mid, base) = (
            t.path().join("top"),
            t.path().join("mid"),
            t.path().join("base"),
        );
        for d in ["d/sub", "opq/old", "gone", "etc"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        fs::write(base.join("d/a"), "base a").unwrap();
        fs::write(base.join("d/sub/s"), "s").unwrap();
        fs::write(base.join("opq/old/x"), "old").unwrap();
        fs::write(base.join("etc/shadow"), "image shadow").unwrap();
        fs::create_dir_all(mid.join("d")).unwrap();
        fs::write(mid.join("d/a"), "mid a").unwrap();
        fs::write(mid.join("d/b"), "b").unwrap();
        std::os::unix::fs::symlink("/", mid.join("escape")).unwrap();
        std::os::unix::fs::symlink("../etc", mid.join("d/up")).unwrap();
        // A link a lower layer had where an upper layer made a dir: never walked.
        std::os::unix::fs::symlink("/etc", base.join("sw")).unwrap();
        fs::create_dir_all(top.join("sw")).unwrap();
        fs::write(top.join("sw/y"), "y").unwrap();
        fs::create_dir_all(top.join("d")).unwrap();
        fs::create_dir_all(top.join("opq/new")).unwrap();
        whiteout(&top.join("d/b"));
        whiteout(&top.join("d/sub"));
        whiteout(&top.join("gone"));
        xattr::set(top.join("opq"), "user.overlay.opaque", b"y").unwrap();
        fs::write(top.join("d/c"), "c").unwrap();
        let image = ImageTree::new(vec![
            LayerView::new(top.clone()),
            LayerView::new(mid),
            LayerView::new(base),
        ]);
        let src = LayerSource::new(image, |e: &Entry| (e.uid, e.gid)).unwrap();
        let owned = |v: &[(&str, usize)]| -> Vec<(String, usize)> {
            v.iter().map(|(p, l)| (p.to_string(), *l)).collect()
        };
        // The top layer's dir, `a` from the middle layer over the base's, the deleted `b`
        // and `sub` (with its file) absent, no deletion mark listed.
        assert_eq!(
            rels(&src, "d"),
            owned(&[("d", 0), ("d/a", 1), ("d/c", 0), ("d/up", 1)])
        );
        let a = src.entries("d/a").unwrap().remove(0);
        assert_eq!(fs::read(src.listed_path(&a)).unwrap(), b"mid a");
        assert!(matches!(src.entries("d/b"), Err(ContextError::NotFound(_))));
        assert!(matches!(
            src.entries("gone"),
            Err(ContextError::NotFound(_))
        ));
        assert_eq!(rels(&src, "sw"), owned(&[("sw", 0), ("sw/y", 0)]));
        // An opaque dir hides the lower layers' children.
        assert_eq!(rels(&src, "opq"), owned(&[("opq", 0), ("opq/new", 0)]));
        // Symlinks resolve inside the image: `/escape/etc/shadow` is the image's file.
        assert_eq!(
            src.resolve("escape/etc/shadow", true).unwrap(),
            "etc/shadow"
        );
        let shadow = src.entries("escape/etc/shadow").unwrap().remove(0);
        assert_eq!(shadow.rel, "etc/shadow");
        assert_eq!(fs::read(src.listed_path(&shadow)).unwrap(), b"image shadow");
        assert_eq!(src.resolve("d/up", true).unwrap(), "etc");
        assert_eq!(src.resolve("d/up", false).unwrap(), "d/up");
        let all = src.all_paths().unwrap();
        let expect = [
            "d",
            "d/a",
            "d/c",
            "d/up",
            "escape",
            "etc",
            "etc/shadow",
            "opq",
            "opq/new",
            "sw",
            "sw/y",
        ];
        assert_eq!(all, expect);
        // An opaque layer root: nothing below the top layer shows.
        xattr::set(&top, "user.overlay.opaque", b"y").unwrap();
        let image = ImageTree::new(vec![
            LayerView::new(top),
            LayerView::new(t.path().join("mid")),
        ]);
        let src = LayerSource::new(image, |e: &Entry| (e.uid, e.gid)).unwrap();
        assert_eq!(rels(&src, "d"), owned(&[("d", 0), ("d/c", 0)]));
        assert!(src.entries("escape").is_err());
    }
}
