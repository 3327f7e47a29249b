//! COPY/ADD: which files of a source tree land where in the image, as layer entries.
//!
//! Docker's rules (checked against buildah): a directory source copies its *contents*; a file
//! goes to `dest` itself unless `dest` ends in `/`; a top-level symlink source is followed,
//! with the source tree as `/` (see `crate::fs_root`: no source path ever leads out of the
//! context or the stage); symlinks inside a copied directory are kept; files from the context
//! get uid/gid 0 unless `--chown`, files from a stage or image keep their owners there; names
//! of one file stay hard links to it within one COPY; missing parent directories, and the
//! directory a directory source goes into, are created 0755 (BuildKit's copier: not the
//! source directory's mode), existing ones keep the base image's metadata.
//!
//! Every destination path is resolved inside the image ([`resolve_in_image`]): symlinks the
//! image already has are followed as if the image root were `/` (an absolute target restarts
//! at the root, `..` stops there), so `COPY x /app/` lands in `/srv/app` when the image has
//! `/app -> /srv/app`, and no symlink can make a copied path leave the image. kiln never
//! writes through those links itself: the layer names the resolved paths.
//!
//! Checked against buildah 1.28 (`tests/build_copy.rs` compares the whole tree):
//! - `/app -> srv/app`, `COPY x /app/` writes `/srv/app/x`; an absolute link (`/abslink ->
//!   /srv/abs`) is re-rooted in the image; a link climbing with `..` stops at the root.
//! - `COPY x /etc` onto an existing directory writes `/etc/x`.
//! - Parents COPY creates are 0755 and owned by the `--chown` user (`--chmod` is not applied
//!   to them); existing parents keep the image's metadata.
//! - `--chown=user` whose group is not in /etc/group takes the gid from /etc/passwd.
//! - A file written where the image has a symlink replaces the link (the target is untouched).
//! - Differs from buildah on purpose: a copied directory that meets a symlink to a directory
//!   merges into the link's target, as BuildKit's copier does (it stats the destination
//!   through the link); buildah 1.28 replaces the link with a directory, which on a usr-merged
//!   base (`/lib -> usr/lib`) hides every library. A dangling link's target is created.
//! - Paths an upper layer deleted (whiteouts, opaque directories) are absent: a deleted
//!   symlink is not followed and a deleted directory's metadata is not reused.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::context::{Context, ContextError, Entry, EntryKind};
use crate::layer::{EntrySource, LayerEntry};
use crate::lexical_path::in_root;
use crate::plan::SourceSpec;
use crate::plan::glob::{Glob, GlobError};
use crate::plan::ignore::DockerIgnore;

/// Why a COPY could not be planned into entries.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    #[error("COPY source {path:?} not found in {from}{hint}")]
    NotFound {
        path: String,
        from: String,
        hint: String,
    },
    #[error("COPY source pattern {0:?} matches no files")]
    NoMatch(String),
    #[error("COPY source pattern {pattern:?} is not a valid wildcard")]
    Pattern {
        pattern: String,
        #[source]
        source: GlobError,
    },
    #[error("COPY needs a build context, but the Dockerfile came from stdin without one")]
    NoContext,
    #[error("COPY destination {0:?}: too many levels of symlinks in the image")]
    SymlinkLoop(String),
    #[error("COPY destination {path:?}: {blocker:?} is not a directory in the image")]
    NotDir { path: String, blocker: String },
    #[error(transparent)]
    Context(#[from] ContextError),
    /// ADD could not read or extract a source (the message names it).
    #[error("{0}")]
    Add(String),
}

/// What the image has at a path (see [`ImageView`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Dir(DirMeta),
    Symlink(String),
    /// A file, device or anything else that is not a directory.
    Other,
}

/// The image a COPY writes into, as far as placing files needs it.
pub(crate) trait ImageView {
    /// What the merged image has at `path` (image-relative, no leading `/`; never follows
    /// a symlink at `path` itself). `None` when absent or deleted by an upper layer.
    fn node(&self, path: &str) -> Option<Node>;
}

/// Linux gives up after 40 symlinks in one resolution (ELOOP); so do we.
const MAX_SYMLINKS: u32 = 40;

/// Resolves `path` inside the image the way `openat2(RESOLVE_IN_ROOT)` would: every symlink
/// met (the last component included) is followed with the image root as `/`, `..` never
/// climbs above the root. Missing components are kept as they are (COPY creates them).
pub(crate) fn resolve_in_image(view: &dyn ImageView, path: &str) -> Result<String, CopyError> {
    let mut queue: std::collections::VecDeque<String> =
        path.split('/').map(str::to_string).collect();
    let mut here: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                here.pop();
                continue;
            }
            _ => {}
        }
        here.push(c);
        let sofar = here.join("/");
        match view.node(&sofar) {
            Some(Node::Symlink(target)) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(CopyError::SymlinkLoop(path.to_string()));
                }
                here.pop();
                if target.starts_with('/') {
                    here.clear();
                }
                for t in target.split('/').rev() {
                    queue.push_front(t.to_string());
                }
            }
            Some(Node::Other) if !queue.iter().all(|c| c.is_empty() || c == ".") => {
                return Err(CopyError::NotDir {
                    path: path.to_string(),
                    blocker: format!("/{sofar}"),
                });
            }
            _ => {}
        }
    }
    Ok(here.join("/"))
}

/// `--chmod`: octal, or symbolic like chmod(1) (`u+x`, `go-w`, `a=rX`, `u=rwX,go=rX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    Octal(u32),
    Symbolic(Vec<ModeClause>),
}

/// A `--chmod` value that is not a mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChmodError {
    #[error("--chmod={0}: not an octal mode (0000 to 7777)")]
    Octal(String),
    #[error(
        "--chmod={0}: not a mode; use octal (0755) or symbolic like chmod(1) (u+x, go-w, a=rX)"
    )]
    Mode(String),
}

/// One `who op perms` clause of a symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModeClause {
    /// The bits of `u`, `g`, `o` the clause touches (0o7777 masks, `a` = all three).
    who: u32,
    op: char,
    perms: String,
}

impl Chmod {
    pub fn parse(s: &str) -> Result<Chmod, ChmodError> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(|| ChmodError::Octal(s.to_string()));
        }
        let bad = || ChmodError::Mode(s.to_string());
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let who_end = part.find(['+', '-', '=']).ok_or_else(bad)?;
            let mut who = 0;
            for c in part[..who_end].chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(bad()),
                };
            }
            // No `who`: all of them (chmod(1) would also apply the umask; a build has none).
            if who == 0 {
                who = 0o7777;
            }
            let mut rest = &part[who_end..];
            while let Some(op) = rest.chars().next().filter(|c| matches!(c, '+' | '-' | '=')) {
                rest = &rest[1..];
                let end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
                let perms = &rest[..end];
                let ok = perms.chars().all(|c| "rwxXst".contains(c))
                    || (perms.len() == 1 && "ugo".contains(perms));
                if !ok {
                    return Err(bad());
                }
                clauses.push(ModeClause {
                    who,
                    op,
                    perms: perms.to_string(),
                });
                rest = &rest[end..];
            }
            if !rest.is_empty() {
                return Err(bad());
            }
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode a file (or directory) with permission bits `mode` gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c) => c,
        };
        let mut mode = mode & 0o7777;
        for c in clauses {
            let bits = c.bits(mode, is_dir) & c.who;
            mode = match c.op {
                '+' => mode | bits,
                '-' => mode & !bits,
                _ => (mode & !c.who) | bits,
            };
        }
        mode
    }
}

impl ModeClause {
    /// The permission bits the clause names, for all three classes (masked by `who` later).
    fn bits(&self, mode: u32, is_dir: bool) -> u32 {
        let copy = |shift: u32| {
            let b = (mode >> shift) & 0o7;
            b << 6 | b << 3 | b
        };
        match self.perms.as_str() {
            "u" => return copy(6),
            "g" => return copy(3),
            "o" => return copy(0),
            _ => {}
        }
        let mut b = 0;
        for c in self.perms.chars() {
            b |= match c {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if is_dir || mode & 0o111 != 0 => 0o111,
                's' => 0o6000,
                't' => 0o1000,
                _ => 0,
            };
        }
        b
    }
}

/// The metadata of a directory that already exists in the image (kept when COPY writes it
/// again as a parent, so `COPY x /tmp/` does not turn /tmp's 1777 into 0755).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirMeta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

/// ADD's archive extraction: given a source file (host path, as the tree names it) and the
/// image directory it goes to, the entries of the archive, or `None` when it is no archive.
pub(crate) type Unpack<'a> = dyn Fn(&Path, &str) -> Result<Option<Vec<LayerEntry>>, CopyError> + 'a;

/// How copied entries are owned and stamped.
pub(crate) struct CopyOptions<'a> {
    pub uid: u64,
    pub gid: u64,
    /// `--chmod` for files and directories alike (Docker applies it to both).
    pub chmod: Option<Chmod>,
    /// `--exclude` patterns, matched relative to each source.
    pub exclude: Option<DockerIgnore>,
    /// `--parents`: keep each source's path (relative to the tree root or to a `/./` pivot).
    pub parents: bool,
    /// mtime for heredoc files and created parents.
    pub now: u64,
    /// The image the entries go into (existing directories and symlinks).
    pub image: &'a dyn ImageView,
    /// ADD: extracts top-level archive sources instead of copying them.
    pub unpack: Option<&'a Unpack<'a>>,
    /// What to call the tree in errors (`build context`, `stage builder`).
    pub from: &'a str,
    /// Entries keep the owners the tree gives them ([`SourceTree::owner`]) instead of
    /// `uid`/`gid`: COPY --from a stage or image without `--chown` (Docker resets only the
    /// context's owners).
    pub keep_owners: bool,
}

/// A tree COPY reads its sources from: the build context ([`Context`]), or a stage's or
/// image's layers read where the store keeps them ([`super::image_tree::LayerSource`]).
/// Every path is resolved inside the tree, with the tree as `/`.
pub(crate) trait SourceTree {
    /// The entry at `rel` and, for a directory, everything below it: sorted by path,
    /// parents first, symlinks not followed (those in the parents of `rel` are).
    fn entries(&self, rel: &str) -> Result<Vec<Entry>, ContextError>;
    /// `rel` with its symlinks resolved inside the tree, the last one too when `follow`.
    fn resolve(&self, rel: &str, follow: bool) -> Result<String, ContextError>;
    /// Every path of the tree, sorted (wildcards and close-match hints).
    fn all_paths(&self) -> Result<Vec<String>, ContextError>;
    /// The host path of a file to read, resolved inside the tree (ADD's archives).
    fn host_path(&self, rel: &str) -> Result<PathBuf, ContextError>;
    /// The host path of an entry [`SourceTree::entries`] listed, for the layer writer (which
    /// opens it refusing symlinks on the way).
    fn listed_path(&self, e: &Entry) -> PathBuf;
    /// The owner the tree gives a listed entry (in the image's ids, for a stage or image).
    fn owner(&self, e: &Entry) -> (u32, u32);
}

impl SourceTree for Context {
    fn entries(&self, rel: &str) -> Result<Vec<Entry>, ContextError> {
        Context::entries(self, rel)
    }
    fn resolve(&self, rel: &str, follow: bool) -> Result<String, ContextError> {
        Context::resolve(self, rel, follow)
    }
    fn all_paths(&self) -> Result<Vec<String>, ContextError> {
        Context::all_paths(self)
    }
    fn host_path(&self, rel: &str) -> Result<PathBuf, ContextError> {
        Context::host_path(self, rel)
    }
    fn listed_path(&self, e: &Entry) -> PathBuf {
        Context::listed_path(self, e)
    }
    fn owner(&self, e: &Entry) -> (u32, u32) {
        (e.uid, e.gid)
    }
}

/// The entries a COPY of `sources` to `dest` (absolute; a trailing `/` means a directory)
/// writes, after `extra` (ADD's downloads, already placed under `dest`), parents included,
/// every path resolved inside the image.
pub(crate) fn entries(
    tree: &dyn SourceTree,
    sources: &[SourceSpec],
    dest: &str,
    opts: &CopyOptions,
    extra: Vec<LayerEntry>,
) -> Result<Vec<LayerEntry>, CopyError> {
    let (dest, dest_is_dir) = destination(dest, opts.image)?;
    let mut out = extra;
    let mut names = FirstNames::default();
    for source in sources {
        match source {
            SourceSpec::Inline { name, content } => {
                let path = if dest_is_dir {
                    join(&dest, name)
                } else {
                    dest.clone()
                };
                let mode = opts.chmod.as_ref().map_or(0o644, |c| c.apply(0o644, false));
                out.push(LayerEntry {
                    path,
                    source: EntrySource::Inline(content.clone().into_bytes()),
                    mode,
                    uid: opts.uid,
                    gid: opts.gid,
                    mtime: opts.now,
                });
            }
            SourceSpec::Path { path } => {
                let (pivot, _) = split_pivot(path);
                for rel in matches(tree, path)? {
                    if opts.parents {
                        // The source's own path (below the pivot) is kept under dest.
                        let keep = rel
                            .strip_prefix(&pivot)
                            .map(|r| r.trim_start_matches('/'))
                            .unwrap_or(&rel);
                        let to = join(&dest, keep);
                        copy_one(tree, &rel, &to, false, opts, &mut out, &mut names)?;
                    } else {
                        copy_one(tree, &rel, &dest, dest_is_dir, opts, &mut out, &mut names)?;
                    }
                }
            }
        }
    }
    let mut out = place(out, opts.image)?;
    links_after_targets(&mut out);
    add_parents(&mut out, opts);
    Ok(out)
}

/// The destination resolved inside the image, and whether it is a directory: it ends in
/// `/`, or the image already has a directory there (`COPY f /etc` writes `/etc/f`).
pub(crate) fn destination(dest: &str, image: &dyn ImageView) -> Result<(String, bool), CopyError> {
    let trimmed = dest.trim_matches('/');
    if trimmed.is_empty() {
        return Ok((String::new(), true));
    }
    let full = resolve_in_image(image, trimmed)?;
    if dest.ends_with('/') || matches!(image.node(&full), Some(Node::Dir(_))) {
        return Ok((full, true));
    }
    // A file destination replaces whatever is there (a symlink too), in a resolved parent.
    let (parent, name) = match trimmed.rsplit_once('/') {
        Some((p, n)) => (resolve_in_image(image, p)?, n),
        None => (String::new(), trimmed),
    };
    Ok((join(&parent, name), false))
}

/// `--parents` pivot: the cleaned part before a `/./` in a source (empty without one).
fn split_pivot(path: &str) -> (String, String) {
    match path.split_once("/./") {
        Some((before, after)) => (in_root(before), in_root(after)),
        None => (String::new(), in_root(path)),
    }
}

/// Every entry at its path resolved inside the image: parents through the image's symlinks,
/// and a directory entry that meets a symlink to a directory merges into its target (as
/// Docker does) instead of replacing the link.
fn place(entries: Vec<LayerEntry>, image: &dyn ImageView) -> Result<Vec<LayerEntry>, CopyError> {
    let mut resolved: std::collections::HashMap<String, String> = Default::default();
    let mut out = Vec::with_capacity(entries.len());
    for mut e in entries {
        let (parent, name) = match e.path.rsplit_once('/') {
            Some((p, n)) => (p.to_string(), n.to_string()),
            None => (String::new(), e.path.clone()),
        };
        let rp = match resolved.get(&parent) {
            Some(r) => r.clone(),
            None => {
                let r = resolve_in_image(image, &parent)?;
                resolved.insert(parent, r.clone());
                r
            }
        };
        let mut path = join(&rp, &name);
        if let EntrySource::Hardlink { target } = &mut e.source {
            // Its target is a file of this COPY: placed by the same rule.
            let (tp, tn) = target.rsplit_once('/').unwrap_or(("", target.as_str()));
            let rtp = resolve_in_image(image, tp)?;
            *target = join(&rtp, tn);
        }
        if e.source == EntrySource::Dir {
            if let Some(Node::Symlink(_)) = image.node(&path) {
                path = resolve_in_image(image, &path)?;
            }
        }
        if path.is_empty() {
            continue; // the root itself: its metadata is the image's
        }
        e.path = path;
        out.push(e);
    }
    Ok(out)
}

/// Context-relative paths a source names: itself, or every top-most match of a wildcard. A
/// source is a path glob, not a `.dockerignore` line: `#` and `!` are plain characters.
pub(crate) fn matches(tree: &dyn SourceTree, path: &str) -> Result<Vec<String>, CopyError> {
    let clean = in_root(path);
    if !clean.contains(['*', '?', '[']) {
        return Ok(vec![clean]);
    }
    let pattern = Glob::compile(&clean).map_err(|source| CopyError::Pattern {
        pattern: path.to_string(),
        source,
    })?;
    let all = tree.all_paths()?;
    // A match whose parent also matched is inside a copied directory already.
    let found: Vec<String> = all
        .into_iter()
        .filter(|p| pattern.matches(p) && !parent(p).is_some_and(|q| pattern.matches(q)))
        .collect();
    if found.is_empty() {
        return Err(CopyError::NoMatch(path.to_string()));
    }
    Ok(found)
}

/// Copies one matched source: a directory's contents into `dest`, a file to `dest` (or
/// into it when it is a directory), an archive (ADD) extracted into `dest`.
fn copy_one(
    tree: &dyn SourceTree,
    rel: &str,
    dest: &str,
    dest_is_dir: bool,
    opts: &CopyOptions,
    out: &mut Vec<LayerEntry>,
    names: &mut FirstNames,
) -> Result<(), CopyError> {
    let mut listed = tree.entries(rel).map_err(|e| match e {
        ContextError::NotFound(p) => CopyError::NotFound {
            hint: close_matches(tree, &p),
            path: p,
            from: opts.from.to_string(),
        },
        other => other.into(),
    })?;
    let name = rel.rsplit('/').next().unwrap_or(rel).to_string();
    if let EntryKind::Symlink { .. } = listed[0].kind {
        // Docker follows a symlink named as a source, with the tree as `/`.
        let target = tree.resolve(rel, true).map_err(|_| CopyError::NotFound {
            path: rel.to_string(),
            from: format!("{} (dangling symlink)", opts.from),
            hint: String::new(),
        })?;
        listed = tree.entries(&target)?;
    }
    let top = listed[0].clone();
    match top.kind {
        EntryKind::Dir => {
            let base = if top.rel.is_empty() {
                String::new()
            } else {
                format!("{}/", top.rel)
            };
            if !dest.is_empty() {
                out.push(dest_dir(dest, opts));
            }
            for e in &listed[1..] {
                let below = e.rel.strip_prefix(&base).unwrap_or(&e.rel);
                if let Some(x) = exclude(opts, below) {
                    if x {
                        continue;
                    }
                }
                out.push(entry(e, join(dest, below), tree, opts, names)?);
            }
        }
        _ => {
            if let (Some(unpack), EntryKind::File { .. }) = (opts.unpack, &top.kind) {
                if let Some(extracted) = unpack(&tree.host_path(&top.rel)?, dest)? {
                    out.extend(extracted);
                    return Ok(());
                }
            }
            let path = if dest_is_dir || dest.is_empty() {
                join(dest, &name)
            } else {
                dest.to_string()
            };
            out.push(entry(&top, path, tree, opts, names)?);
        }
    }
    Ok(())
}

fn exclude(opts: &CopyOptions, rel: &str) -> Option<bool> {
    opts.exclude.as_ref().map(|x| x.is_excluded(rel))
}

/// One layer entry for a source entry placed at `path` (image-relative). A file's source is
/// its host path as the tree's walk found it, with no symlink in it (the layer writer opens
/// it refusing symlinks, so one swapped in since fails the layer); a
/// file whose inode this COPY met before becomes a hard link to the name it got then.
fn entry(
    e: &Entry,
    path: String,
    tree: &dyn SourceTree,
    opts: &CopyOptions,
    names: &mut FirstNames,
) -> Result<LayerEntry, CopyError> {
    let first = e.hardlink.and_then(|id| match names.entry(id) {
        std::collections::hash_map::Entry::Occupied(o) => Some(o.get().clone()),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(path.clone());
            None
        }
    });
    let source = match &e.kind {
        EntryKind::Dir => EntrySource::Dir,
        EntryKind::File { .. } if first.is_some() => EntrySource::Hardlink {
            target: first.expect("checked"),
        },
        EntryKind::File { size } => EntrySource::ResolvedFile {
            path: tree.listed_path(e),
            size: *size,
        },
        EntryKind::Symlink { target } => EntrySource::Symlink {
            target: crate::layer::name::encode(target.as_os_str().as_bytes()).into_owned(),
        },
        // Docker refuses sockets and devices in a context; an empty file is the least surprise.
        EntryKind::Other => EntrySource::Inline(Vec::new()),
    };
    let mode = match (&e.kind, &opts.chmod) {
        (EntryKind::Symlink { .. }, _) => 0o777,
        (kind, Some(m)) => m.apply(e.mode, *kind == EntryKind::Dir),
        (_, None) => e.mode & 0o7777,
    };
    let (uid, gid) = if opts.keep_owners {
        let (u, g) = tree.owner(e);
        (u64::from(u), u64::from(g))
    } else {
        (opts.uid, opts.gid)
    };
    Ok(LayerEntry {
        path,
        source,
        mode,
        uid,
        gid,
        mtime: e.mtime(),
    })
}

/// The image path each multiply-linked source file was first copied to, in one COPY.
type FirstNames = std::collections::HashMap<super::context::FileId, String>;

/// A tar names a hard link's target before the link, and the layer writer sorts entries by
/// path: so in each group of links the name that sorts first holds the content, and the
/// others link to it (the copy made the first name met the target, which may sort later).
fn links_after_targets(out: &mut [LayerEntry]) {
    use std::collections::HashMap;
    let by_path: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(
                e.source,
                EntrySource::File { .. } | EntrySource::ResolvedFile { .. }
            )
        })
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, e) in out.iter().enumerate() {
        if let EntrySource::Hardlink { target } = &e.source {
            if let Some(&t) = by_path.get(target) {
                groups.entry(t).or_default().push(i);
            }
        }
    }
    let order = |p: &str| p.split('/').map(str::to_string).collect::<Vec<_>>();
    for (target, links) in groups {
        let Some(&first) = links.iter().min_by_key(|&&i| order(&out[i].path)) else {
            continue;
        };
        if order(&out[first].path) > order(&out[target].path) {
            continue;
        }
        let name = out[first].path.clone();
        out[first].source = std::mem::replace(
            &mut out[target].source,
            EntrySource::Hardlink {
                target: name.clone(),
            },
        );
        for i in links.into_iter().filter(|&i| i != first) {
            out[i].source = EntrySource::Hardlink {
                target: name.clone(),
            };
        }
    }
}

/// The directory a directory source's contents go into. BuildKit makes it as it makes
/// missing parents (0755, the `--chown` user, whatever the source directory's mode), and
/// an existing one keeps its metadata: `COPY sub /sub` with `sub` at 0700 gives 0755.
fn dest_dir(dest: &str, opts: &CopyOptions) -> LayerEntry {
    let m = match opts.image.node(dest) {
        Some(Node::Dir(m)) => m,
        _ => created_dir(opts),
    };
    LayerEntry {
        path: dest.to_string(),
        source: EntrySource::Dir,
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        mtime: m.mtime,
    }
}

/// The metadata of a directory COPY creates.
fn created_dir(opts: &CopyOptions) -> DirMeta {
    DirMeta {
        mode: 0o755,
        uid: opts.uid,
        gid: opts.gid,
        mtime: opts.now,
    }
}

/// Every missing ancestor directory of the entries, with the image's metadata if it exists
/// (created ones are 0755 whatever `--chmod` says, and owned by the `--chown` user: what
/// buildah 1.28 does here, and BuildKit too; Docker's legacy builder made them root's).
pub(crate) fn add_parents(out: &mut Vec<LayerEntry>, opts: &CopyOptions) {
    let have: std::collections::HashSet<String> = out.iter().map(|e| e.path.clone()).collect();
    let mut parents = std::collections::BTreeSet::new();
    for e in out.iter() {
        let mut p = e.path.as_str();
        while let Some(q) = parent(p) {
            if !have.contains(q) {
                parents.insert(q.to_string());
            }
            p = q;
        }
    }
    for p in parents {
        let existing = match opts.image.node(&p) {
            Some(Node::Dir(m)) => Some(m),
            _ => None,
        };
        let m = existing.unwrap_or_else(|| created_dir(opts));
        out.push(LayerEntry {
            path: p,
            source: EntrySource::Dir,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime,
        });
    }
}

fn parent(p: &str) -> Option<&str> {
    p.rsplit_once('/').map(|(a, _)| a).filter(|a| !a.is_empty())
}

pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Up to three tree paths that look like what the user meant.
fn close_matches(tree: &dyn SourceTree, missing: &str) -> String {
    let Ok(all) = tree.all_paths() else {
        return String::new();
    };
    let name = missing.rsplit('/').next().unwrap_or(missing).to_lowercase();
    let stem = name.split('.').next().unwrap_or(&name).to_string();
    let near: Vec<String> = all
        .into_iter()
        .filter(|p| {
            let base = p.rsplit('/').next().unwrap_or(p).to_lowercase();
            base == name || (!stem.is_empty() && base.starts_with(&stem))
        })
        .take(3)
        .collect();
    if near.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", near.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;

    /// An image given as a map of paths to nodes.
    #[derive(Default)]
    struct Fake(HashMap<String, Node>);

    impl Fake {
        fn dir(&mut self, p: &str, mode: u32) {
            let m = DirMeta {
                mode,
                uid: 0,
                gid: 0,
                mtime: 5,
            };
            self.0.insert(p.into(), Node::Dir(m));
        }
        fn link(&mut self, p: &str, target: &str) {
            self.0.insert(p.into(), Node::Symlink(target.into()));
        }
    }

    impl ImageView for Fake {
        fn node(&self, path: &str) -> Option<Node> {
            self.0.get(path).cloned()
        }
    }

    fn ctx(files: &[(&str, &str)]) -> (tempfile::TempDir, Context) {
        let d = tempfile::tempdir().unwrap();
        for (p, body) in files {
            let path = d.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, body).unwrap();
        }
        let c = Context::open(d.path(), DockerIgnore::parse("").unwrap(), None).unwrap();
        (d, c)
    }

    fn paths(sources: &[&str], dest: &str, c: &Context) -> Vec<String> {
        let specs: Vec<SourceSpec> = sources
            .iter()
            .map(|s| SourceSpec::Path {
                path: s.to_string(),
            })
            .collect();
        let opts = CopyOptions {
            uid: 0,
            gid: 0,
            chmod: None,
            exclude: None,
            parents: false,
            now: 0,
            image: &Fake::default(),
            unpack: None,
            from: "build context",
            keep_owners: false,
        };
        let mut got: Vec<String> = entries(c, &specs, dest, &opts, Vec::new())
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        got.sort();
        got
    }

    #[test]
    fn a_source_is_a_glob_not_a_dockerignore_line() {
        let (_d, c) = ctx(&[
            ("#n1.md", "h"),
            ("!y1", "b"),
            ("y2", "not a match"),
            ("d/!z", "below"),
        ]);
        assert_eq!(matches(&c, "#n*.md").unwrap(), ["#n1.md"]);
        assert_eq!(matches(&c, "!y*").unwrap(), ["!y1"]);
        assert_eq!(matches(&c, "/../d/!*").unwrap(), ["d/!z"]);
        assert_eq!(matches(&c, "!x").unwrap(), ["!x"]);
        assert!(matches!(
            matches(&c, "#zz*"),
            Err(CopyError::NoMatch(p)) if p == "#zz*"
        ));
        assert!(matches!(
            matches(&c, "a[b"),
            Err(CopyError::Pattern {
                source: GlobError::UnclosedClass,
                ..
            })
        ));
    }

    #[test]
    fn files_dirs_and_wildcards_land_where_docker_puts_them() {
        let (_d, c) = ctx(&[
            ("a.txt", "a"),
            ("src/main.rs", "m"),
            ("src/lib/x.rs", "x"),
            ("b.txt", "b"),
        ]);
        assert_eq!(paths(&["a.txt"], "/app/a", &c), ["app", "app/a"]);
        assert_eq!(paths(&["a.txt"], "/app/", &c), ["app", "app/a.txt"]);
        assert_eq!(
            paths(&["src"], "/app/", &c),
            ["app", "app/lib", "app/lib/x.rs", "app/main.rs"]
        );
        assert_eq!(paths(&["*.txt"], "/t/", &c), ["t", "t/a.txt", "t/b.txt"]);
        assert_eq!(paths(&["/../src/lib/"], "/", &c), ["x.rs"]);
    }

    #[test]
    fn a_missing_source_suggests_close_matches() {
        let (_d, c) = ctx(&[("config.yaml", "c")]);
        let opts = CopyOptions {
            uid: 0,
            gid: 0,
            chmod: None,
            exclude: None,
            parents: false,
            now: 0,
            image: &Fake::default(),
            unpack: None,
            from: "build context",
            keep_owners: false,
        };
        let err = entries(
            &c,
            &[SourceSpec::Path {
                path: "config.yml".into(),
            }],
            "/etc/",
            &opts,
            Vec::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "COPY source \"config.yml\" not found in build context; did you mean config.yaml?"
        );
        let err = entries(
            &c,
            &[SourceSpec::Path {
                path: "*.toml".into(),
            }],
            "/etc/",
            &opts,
            Vec::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "COPY source pattern \"*.toml\" matches no files"
        );
    }

    #[test]
    fn chown_chmod_and_existing_parents_are_applied() {
        let (_d, c) = ctx(&[("run.sh", "#!/bin/sh")]);
        let mut image = Fake::default();
        image.dir("tmp", 0o1777);
        let opts = CopyOptions {
            uid: 1000,
            gid: 100,
            chmod: Some(Chmod::Octal(0o750)),
            exclude: None,
            parents: false,
            now: 9,
            image: &image,
            unpack: None,
            from: "ctx",
            keep_owners: false,
        };
        let mut got = entries(
            &c,
            &[SourceSpec::Path {
                path: "run.sh".into(),
            }],
            "/tmp/x/run",
            &opts,
            Vec::new(),
        )
        .unwrap();
        got.sort_by(|a, b| a.path.cmp(&b.path));
        let summary: Vec<(&str, u32, u64)> = got
            .iter()
            .map(|e| (e.path.as_str(), e.mode, e.uid))
            .collect();
        assert_eq!(
            summary,
            [
                ("tmp", 0o1777, 0),
                ("tmp/x", 0o755, 1000),
                ("tmp/x/run", 0o750, 1000)
            ]
        );
    }

    #[test]
    fn destinations_resolve_through_image_symlinks_without_leaving_the_root() {
        let mut img = Fake::default();
        img.dir("srv", 0o755);
        img.dir("srv/app", 0o750);
        img.link("app", "srv/app");
        img.link("abs", "/srv/app");
        img.link("up", "../../../srv");
        img.link("loop", "loop");
        img.0.insert("file".into(), Node::Other);
        let r = |p: &str| resolve_in_image(&img, p);
        assert_eq!(r("app/x").unwrap(), "srv/app/x");
        assert_eq!(r("abs/x").unwrap(), "srv/app/x");
        assert_eq!(r("up/app").unwrap(), "srv/app");
        assert_eq!(r("../../etc").unwrap(), "etc");
        assert!(matches!(r("loop/x"), Err(CopyError::SymlinkLoop(_))));
        assert!(matches!(r("file/x"), Err(CopyError::NotDir { .. })));

        let (_d, c) = ctx(&[("x", "x"), ("d/y", "y")]);
        let opts = CopyOptions {
            uid: 0,
            gid: 0,
            chmod: None,
            exclude: None,
            parents: false,
            now: 0,
            image: &img,
            unpack: None,
            from: "ctx",
            keep_owners: false,
        };
        let placed = |src: &str, dest: &str| {
            let spec = [SourceSpec::Path { path: src.into() }];
            let mut got: Vec<(String, u32)> = entries(&c, &spec, dest, &opts, Vec::new())
                .unwrap()
                .into_iter()
                .map(|e| (e.path, e.mode))
                .collect();
            got.sort();
            got
        };
        // The existing directories keep their metadata; nothing replaces the symlink.
        assert_eq!(
            placed("x", "/app/"),
            [
                ("srv".into(), 0o755),
                ("srv/app".into(), 0o750),
                ("srv/app/x".into(), 0o644)
            ]
        );
        // An existing directory is a directory destination even without a trailing slash.
        assert_eq!(placed("x", "/abs").last().unwrap().0, "srv/app/x");
        assert_eq!(placed("d", "/up/app/").last().unwrap().0, "srv/app/y");
    }

    #[test]
    fn parents_keep_source_paths_below_the_pivot() {
        let (_d, c) = ctx(&[("a/b/c.txt", "c"), ("a/d/c.txt", "d"), ("x/y/z", "z")]);
        let opts = CopyOptions {
            uid: 0,
            gid: 0,
            chmod: None,
            exclude: None,
            parents: true,
            now: 0,
            image: &Fake::default(),
            unpack: None,
            from: "ctx",
            keep_owners: false,
        };
        let files = |src: &str| {
            let spec = [SourceSpec::Path { path: src.into() }];
            let mut got: Vec<String> = entries(&c, &spec, "/out/", &opts, Vec::new())
                .unwrap()
                .into_iter()
                .filter(|e| e.source != EntrySource::Dir)
                .map(|e| e.path)
                .collect();
            got.sort();
            got
        };
        assert_eq!(files("a/*/c.txt"), ["out/a/b/c.txt", "out/a/d/c.txt"]);
        assert_eq!(files("./x/./y"), ["out/y/z"]);
        assert_eq!(files("x/y"), ["out/x/y/z"]);
    }

    #[test]
    fn a_copied_directory_goes_into_a_0755_or_existing_destination() {
        use std::os::unix::fs::PermissionsExt;
        let (d, c) = ctx(&[("sub/f", "f")]);
        fs::set_permissions(d.path().join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
        let mut image = Fake::default();
        image.dir("old", 0o1777);
        let opts = CopyOptions {
            uid: 7,
            gid: 8,
            chmod: None,
            exclude: None,
            parents: false,
            now: 9,
            image: &image,
            unpack: None,
            from: "ctx",
            keep_owners: false,
        };
        let dirs = |dest: &str| {
            let spec = [SourceSpec::Path { path: "sub".into() }];
            let mut got: Vec<(String, u32, u64)> = entries(&c, &spec, dest, &opts, Vec::new())
                .unwrap()
                .into_iter()
                .filter(|e| e.source == EntrySource::Dir)
                .map(|e| (e.path, e.mode, e.uid))
                .collect();
            got.sort();
            got
        };
        // BuildKit: the destination is made like a missing parent, not after the source.
        assert_eq!(dirs("/sub"), [("sub".into(), 0o755, 7)]);
        assert_eq!(
            dirs("/a/b/"),
            [("a".into(), 0o755, 7), ("a/b".into(), 0o755, 7)]
        );
        assert_eq!(dirs("/old"), [("old".into(), 0o1777, 0)]);
    }

    #[test]
    fn symbolic_chmod_follows_chmod_1() {
        let m = |s: &str, mode: u32, dir: bool| Chmod::parse(s).unwrap().apply(mode, dir);
        assert_eq!(m("755", 0o600, false), 0o755);
        assert_eq!(m("u+x", 0o644, false), 0o744);
        assert_eq!(m("go-w", 0o666, false), 0o644);
        assert_eq!(m("a=rX", 0o640, false), 0o444);
        assert_eq!(m("a=rX", 0o750, false), 0o555);
        assert_eq!(m("a=rX", 0o700, true), 0o555);
        assert_eq!(m("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(m("+x", 0o644, false), 0o755);
        assert_eq!(m("g=u", 0o740, false), 0o770);
        assert_eq!(m("u+s,o+t", 0o755, false), 0o5755);
        for bad in ["9", "u+q", "x+r", "u", "", "u+x,"] {
            assert!(Chmod::parse(bad).is_err(), "{bad}");
        }
    }
}
