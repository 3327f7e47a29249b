//! COPY/ADD: which files of a source tree land where in the image, as layer entries.
//!
//! Docker's rules (checked against buildah): a directory source copies its *contents*; a file
//! goes to `dest` itself unless `dest` ends in `/`; a top-level symlink source is followed;
//! symlinks inside a copied directory are kept; files get uid/gid 0 unless `--chown`; missing
//! parent directories are created 0755 root, existing ones keep the base image's metadata.

use std::path::{Path, PathBuf};

use super::context::{Context, ContextError, Entry, EntryKind};
use crate::layer::{EntrySource, LayerEntry};
use crate::plan::SourceSpec;
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
    #[error("COPY source {0:?} is a symlink that leaves the source tree")]
    SymlinkEscape(String),
    #[error("{0}")]
    Context(#[from] ContextError),
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

/// How copied entries are owned and stamped.
pub(crate) struct CopyOptions<'a> {
    pub uid: u64,
    pub gid: u64,
    /// `--chmod` for files and directories alike (Docker applies it to both).
    pub chmod: Option<u32>,
    /// `--exclude` patterns, matched relative to each source.
    pub exclude: Option<DockerIgnore>,
    /// mtime for heredoc files and created parents.
    pub now: u64,
    /// The directory at an image path, if the image already has one.
    pub existing_dir: &'a dyn Fn(&str) -> Option<DirMeta>,
    /// What to call the tree in errors (`build context`, `stage builder`).
    pub from: &'a str,
}

/// The entries a COPY of `sources` to `dest` (absolute; a trailing `/` means a directory)
/// writes, parents included.
pub(crate) fn entries(
    tree: &Context,
    sources: &[SourceSpec],
    dest: &str,
    opts: &CopyOptions,
) -> Result<Vec<LayerEntry>, CopyError> {
    let dest_is_dir = dest.ends_with('/');
    let dest = dest.trim_matches('/').to_string();
    let mut out = Vec::new();
    for source in sources {
        match source {
            SourceSpec::Inline { name, content } => {
                let path = if dest_is_dir {
                    join(&dest, name)
                } else {
                    dest.clone()
                };
                let mode = opts.chmod.unwrap_or(0o644);
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
                for rel in matches(tree, path)? {
                    copy_one(tree, &rel, &dest, dest_is_dir, opts, &mut out)?;
                }
            }
        }
    }
    add_parents(&mut out, opts);
    Ok(out)
}

/// Context-relative paths a source names: itself, or every top-most match of a wildcard.
pub(crate) fn matches(tree: &Context, path: &str) -> Result<Vec<String>, CopyError> {
    let clean = clean(path);
    if !clean.contains(['*', '?', '[']) {
        return Ok(vec![clean]);
    }
    let pattern = DockerIgnore::parse(&clean).map_err(|_| CopyError::NoMatch(path.to_string()))?;
    let all = tree.all_paths()?;
    // A match whose parent also matched is inside a copied directory already.
    let found: Vec<String> = all
        .into_iter()
        .filter(|p| pattern.is_excluded(p) && !parent(p).is_some_and(|q| pattern.is_excluded(q)))
        .collect();
    if found.is_empty() {
        return Err(CopyError::NoMatch(path.to_string()));
    }
    Ok(found)
}

fn copy_one(
    tree: &Context,
    rel: &str,
    dest: &str,
    dest_is_dir: bool,
    opts: &CopyOptions,
    out: &mut Vec<LayerEntry>,
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
        let target = follow(tree, rel)?;
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
                out.push(entry(&top, dest.to_string(), tree, opts));
            }
            for e in &listed[1..] {
                let below = e.rel.strip_prefix(&base).unwrap_or(&e.rel);
                if let Some(x) = exclude(opts, below) {
                    if x {
                        continue;
                    }
                }
                out.push(entry(e, join(dest, below), tree, opts));
            }
        }
        _ => {
            let path = if dest_is_dir || dest.is_empty() {
                join(dest, &name)
            } else {
                dest.to_string()
            };
            out.push(entry(&top, path, tree, opts));
        }
    }
    Ok(())
}

fn exclude(opts: &CopyOptions, rel: &str) -> Option<bool> {
    opts.exclude.as_ref().map(|x| x.is_excluded(rel))
}

/// One layer entry for a source entry placed at `path` (image-relative).
fn entry(e: &Entry, path: String, tree: &Context, opts: &CopyOptions) -> LayerEntry {
    let source = match &e.kind {
        EntryKind::Dir => EntrySource::Dir,
        EntryKind::File { size } => EntrySource::File {
            path: tree.host_path(&e.rel),
            size: *size,
        },
        EntryKind::Symlink { target } => EntrySource::Symlink {
            target: target.to_string_lossy().into_owned(),
        },
        // Docker refuses sockets and devices in a context; an empty file is the least surprise.
        EntryKind::Other => EntrySource::Inline(Vec::new()),
    };
    let mode = match (&e.kind, opts.chmod) {
        (EntryKind::Symlink { .. }, _) => 0o777,
        (_, Some(m)) => m,
        (_, None) => e.mode & 0o7777,
    };
    LayerEntry {
        path,
        source,
        mode,
        uid: opts.uid,
        gid: opts.gid,
        mtime: e.mtime(),
    }
}

/// Resolves a top-level symlink source inside the tree (Docker follows it).
fn follow(tree: &Context, rel: &str) -> Result<String, CopyError> {
    let root = tree.root();
    let real = std::fs::canonicalize(tree.host_path(rel)).map_err(|_| CopyError::NotFound {
        path: rel.to_string(),
        from: "the source (dangling symlink)".into(),
        hint: String::new(),
    })?;
    let inside = real
        .strip_prefix(root)
        .map_err(|_| CopyError::SymlinkEscape(rel.to_string()))?;
    Ok(inside.to_string_lossy().into_owned())
}

/// Every missing ancestor directory of the entries, with the image's metadata if it exists.
fn add_parents(out: &mut Vec<LayerEntry>, opts: &CopyOptions) {
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
        let m = (opts.existing_dir)(&p).unwrap_or(DirMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: opts.now,
        });
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

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Docker strips a leading `/` and `./`, and a trailing `/`: sources cannot leave the tree.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Up to three tree paths that look like what the user meant.
fn close_matches(tree: &Context, missing: &str) -> String {
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

/// The top-most unpacked layer directory that has a directory at `path`, for `existing_dir`.
pub(crate) fn dir_meta_in(lowers: &[PathBuf], path: &str) -> Option<DirMeta> {
    use std::os::unix::fs::MetadataExt;
    lowers.iter().find_map(|l| {
        let m = std::fs::symlink_metadata(Path::new(l).join(path)).ok()?;
        m.is_dir().then(|| DirMeta {
            mode: m.mode() & 0o7777,
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
            mtime: m.mtime().max(0) as u64,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
        let none = |_: &str| None;
        let opts = CopyOptions {
            uid: 0,
            gid: 0,
            chmod: None,
            exclude: None,
            now: 0,
            existing_dir: &none,
            from: "build context",
        };
        let mut got: Vec<String> = entries(c, &specs, dest, &opts)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        got.sort();
        got
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
        let none = |_: &str| None;
        let opts = CopyOptions {
            uid: 0,
            gid: 0,
            chmod: None,
            exclude: None,
            now: 0,
            existing_dir: &none,
            from: "build context",
        };
        let err = entries(
            &c,
            &[SourceSpec::Path {
                path: "config.yml".into(),
            }],
            "/etc/",
            &opts,
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
        let existing = |p: &str| {
            (p == "tmp").then_some(DirMeta {
                mode: 0o1777,
                uid: 0,
                gid: 0,
                mtime: 5,
            })
        };
        let opts = CopyOptions {
            uid: 1000,
            gid: 100,
            chmod: Some(0o750),
            exclude: None,
            now: 9,
            existing_dir: &existing,
            from: "ctx",
        };
        let mut got = entries(
            &c,
            &[SourceSpec::Path {
                path: "run.sh".into(),
            }],
            "/tmp/x/run",
            &opts,
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
                ("tmp/x", 0o755, 0),
                ("tmp/x/run", 0o750, 1000)
            ]
        );
    }
}
