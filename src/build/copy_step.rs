//! COPY and ADD steps: the source tree (context, stage or image), ownership and mode, and
//! the layer of entries they write. No sandbox is involved: files stream from the source
//! tree straight into the layer.
//!
//! `COPY --from` a stage or image reads the store's unpacked layer dirs where they are (a
//! pulled layer unpacked once, a layer of this build the dir its step made), merged with
//! the upper layers' deletions applied ([`LayerSource`]): no blob is read, nothing is
//! unpacked again. The owners the image gives the files are the dirs' own as root, mapped
//! back from sub-ids for a user with a range, and read from the layers' tar headers for a
//! user without one (its store holds every file as its own). A user with a range cannot
//! read the files only the image's other users may (0600 as a sub-id): when a COPY meets
//! one, the mapped helper copies the stage out ([`Runner::mapped_copy`]).

use std::path::PathBuf;

use super::add::AddError;
use super::cache::{self, SourceDigest};
use super::context::{Context, ContextError, Entry};
use super::copy::{self, Chmod, CopyOptions};
use super::image_tree::{ImageTree, LayerSource, LayerView, OwnerOf};
use super::owner::{OwnerError, resolve_owner};
use super::runner::{Runner, unpack_options};
use super::{BuildError, add, git, step_failed};
use crate::dockerfile::Span;
use crate::image::{BuildLayer, ImageBuilder};
use crate::layer;
use crate::plan::ignore::DockerIgnore;
use crate::plan::{CopyFrom, SourceSpec};

impl<'a> Runner<'a> {
    /// Refuses the ADD forms kiln does not implement, naming the line.
    fn check_add_sources(
        &self,
        sources: &[SourceSpec],
        add: &AddSpec,
        span: Span,
    ) -> Result<(), BuildError> {
        for s in sources {
            let SourceSpec::Path { path } = s else {
                continue;
            };
            if git::is_git(path) {
                git::parse(path).map_err(|e| step_failed(span, e))?;
                if add.checksum.is_some() {
                    return Err(step_failed(
                        span,
                        AddError::ChecksumOnGit(add::redact(path)),
                    ));
                }
                continue;
            }
            if path.contains("://") && !add::is_url(path) {
                return Err(step_failed(span, AddError::Scheme(add::redact(path))));
            }
            if add.checksum.is_some() && !add::is_url(path) {
                return Err(step_failed(span, AddError::ChecksumOnPath(path.clone())));
            }
        }
        Ok(())
    }

    pub(super) fn copy(
        &mut self,
        img: &mut ImageBuilder,
        span: Span,
        spec: &CopySpec,
        created_by: &str,
    ) -> Result<(), BuildError> {
        if let Some(add) = &spec.add {
            self.check_add_sources(spec.sources, add, span)?;
        }
        let lowers = self.unpacked_layers(img.layers())?;
        let image = self.image_tree(&lowers);
        let (uid, gid) = match spec.chown {
            Some(c) => resolve_owner(c, &|f| image.read_file(f)).map_err(|e| {
                step_failed(
                    span,
                    ChownError {
                        spec: c.to_string(),
                        source: e,
                    },
                )
            })?,
            None => (0, 0),
        };
        let chmod = spec
            .chmod
            .map(Chmod::parse)
            .transpose()
            .map_err(|e| step_failed(span, e))?;
        let exclude = if spec.exclude.is_empty() {
            None
        } else {
            Some(DockerIgnore::parse(&spec.exclude.join("\n")).map_err(|e| step_failed(span, e))?)
        };
        let now = u64::try_from(self.created.timestamp()).unwrap_or(0);
        let (source, from) = self.copy_source(spec.from, span)?;
        let tree = source.tree();
        // Extracted archives and downloads are spooled here until the layer is written.
        let scratch = self.store.scratch_dir("add-")?;
        let tree_root = match &source {
            CopySource::Context(ctx) => ctx.root(),
            CopySource::Layers(_) => std::path::Path::new("/"),
        };
        let extractor = add::Extractor::new(tree_root, scratch.path());
        let extract = |host: &std::path::Path, dest: &str| extractor.extract(host, dest);
        let unpack_local = spec.add.as_ref().is_some_and(|a| a.unpack != Some(false));
        let opts = CopyOptions {
            uid,
            gid,
            chmod,
            exclude,
            parents: spec.parents,
            now,
            image: &image,
            unpack: if unpack_local { Some(&extract) } else { None },
            from: &from,
            // Docker keeps a stage's or image's owners, never the context's.
            keep_owners: spec.chown.is_none() && matches!(source, CopySource::Layers(_)),
        };
        let (local, downloads) = match &spec.add {
            Some(add) => self.downloads(spec, add, &opts, scratch.path(), &extract, span)?,
            None => (spec.sources.to_vec(), Vec::new()),
        };
        let mut entries = copy::entries(tree, &local, spec.dest, &opts, downloads);
        // Held until the layer is written: the entries name its files.
        let mut _copied_out = None;
        if let CopySource::Layers(layers) = &source {
            if self.sandbox.mapped_fs().is_some() && !read_in_place(&entries) {
                let copied = self.mapped_copy(layers, span)?;
                entries = copy::entries(&copied, &local, spec.dest, &opts, Vec::new());
                _copied_out = Some(copied);
            }
        }
        let entries = entries.map_err(|e| step_failed(span, e))?;
        for w in extractor.into_warnings() {
            self.progress.warn(w);
        }
        self.add_layer(img, entries, created_by)
    }

    /// ADD's URL sources, downloaded (or taken from the cache-key pass) and verified; the
    /// rest of the sources are returned for the ordinary copy.
    fn downloads(
        &self,
        spec: &CopySpec,
        add: &AddSpec,
        opts: &CopyOptions,
        scratch: &std::path::Path,
        extract: &copy::Unpack,
        span: Span,
    ) -> Result<(Vec<SourceSpec>, Vec<layer::LayerEntry>), BuildError> {
        let (gits, rest): (Vec<SourceSpec>, Vec<SourceSpec>) = spec
            .sources
            .iter()
            .cloned()
            .partition(|s| matches!(s, SourceSpec::Path { path } if git::is_git(path)));
        let (urls, local): (Vec<SourceSpec>, Vec<SourceSpec>) = rest
            .into_iter()
            .partition(|s| matches!(s, SourceSpec::Path { path } if add::is_url(path)));
        let mut out = Vec::new();
        for (i, s) in gits.iter().enumerate() {
            if let SourceSpec::Path { path } = s {
                let dir = scratch.join(format!("git-{i}"));
                out.extend(self.git_entries(path, spec.dest, add, opts, &dir, span)?);
            }
        }
        let (dest, dest_is_dir) =
            copy::destination(spec.dest, opts.image).map_err(|e| step_failed(span, e))?;
        for (i, s) in urls.iter().enumerate() {
            let SourceSpec::Path { path: url } = s else {
                continue;
            };
            let got = self.fetch_url(url, add.checksum, scratch, i, span)?;
            if add.unpack == Some(true) {
                if let Some(entries) =
                    extract(&got.path, &dest).map_err(|e| step_failed(span, e))?
                {
                    out.extend(entries);
                    continue;
                }
            }
            let path = if dest_is_dir {
                copy::join(
                    &dest,
                    &add::url_file_name(url).map_err(|e| step_failed(span, e))?,
                )
            } else {
                dest.clone()
            };
            out.push(layer::LayerEntry {
                path,
                source: layer::EntrySource::File {
                    path: got.path,
                    size: got.size,
                },
                mode: opts.chmod.as_ref().map_or(0o600, |c| c.apply(0o600, false)),
                uid: opts.uid,
                gid: opts.gid,
                // No Last-Modified: the build time, like a file made by this step.
                mtime: got.mtime.unwrap_or(opts.now),
            });
        }
        Ok((local, out))
    }

    /// The entries of a git source under `dest`: the resolved commit (from the cache-key
    /// pass, else asked now) checked out into `dir`, copied from its subdir like a COPY.
    fn git_entries(
        &self,
        src: &str,
        dest: &str,
        add: &AddSpec,
        opts: &CopyOptions,
        dir: &std::path::Path,
        span: Span,
    ) -> Result<Vec<layer::LayerEntry>, BuildError> {
        let repo = git::parse(src).map_err(|e| step_failed(span, e))?;
        let agent = self.req.ssh.get("default").map(PathBuf::as_path);
        let at = self.resolve_git(src, &repo, span)?;
        repo.checkout(&at, dir, add.keep_git_dir, agent)
            .map_err(|e| step_failed(span, e))?;
        let tree = Context::open(dir, DockerIgnore::parse("").expect("empty ignore"), None)?;
        let from = format!("the git repository {}", repo.shown());
        let git_opts = CopyOptions {
            uid: opts.uid,
            gid: opts.gid,
            chmod: opts.chmod.clone(),
            exclude: opts.exclude.clone(),
            parents: false,
            now: opts.now,
            image: opts.image,
            // Archives in a repository are files like any other (BuildKit does not unpack them).
            unpack: None,
            from: &from,
            keep_owners: false,
        };
        let sub = if repo.subdir.is_empty() {
            ".".to_string()
        } else {
            repo.subdir.clone()
        };
        copy::entries(
            &tree,
            &[SourceSpec::Path { path: sub }],
            dest,
            &git_opts,
            Vec::new(),
        )
        .map_err(|e| step_failed(span, e))
    }

    /// The commit a git source's ref names: resolved once per build (the cache key and the
    /// step then agree even if the remote moves meanwhile).
    fn resolve_git(
        &self,
        src: &str,
        repo: &git::GitSource,
        span: Span,
    ) -> Result<git::Resolved, BuildError> {
        if let Some(r) = self
            .downloads
            .lock()
            .expect("downloads lock")
            .commits
            .get(src)
        {
            return Ok(r.clone());
        }
        let agent = self.req.ssh.get("default").map(PathBuf::as_path);
        let at = repo.resolve(agent).map_err(|e| step_failed(span, e))?;
        self.downloads
            .lock()
            .expect("downloads lock")
            .commits
            .insert(src.to_string(), at.clone());
        Ok(at)
    }

    /// A URL's content: the download the cache-key pass made, else a new one; checked
    /// against `--checksum` when given.
    fn fetch_url(
        &self,
        url: &str,
        checksum: Option<&str>,
        scratch: &std::path::Path,
        n: usize,
        span: Span,
    ) -> Result<add::Fetched, BuildError> {
        let earlier = self.downloads.lock().expect("downloads lock").get(url);
        let got = match earlier {
            Some(f) => f,
            None => add::download(self.hooks.fetch, url, scratch, &format!("url-{n}"))
                .map_err(|e| step_failed(span, e))?,
        };
        if let Some(want) = checksum {
            let want = add::parse_checksum(want).map_err(|e| step_failed(span, e))?;
            if want != got.digest {
                let mismatch = AddError::ChecksumMismatch {
                    url: add::redact(url),
                    want,
                    got: got.digest,
                };
                return Err(step_failed(span, mismatch));
            }
        }
        Ok(got)
    }

    /// The cache identity of an ADD's sources: context files as for COPY, and for each URL
    /// its `--checksum` or else the digest of a download made now (kept for the step).
    pub(super) fn add_sources(
        &self,
        sources: &[SourceSpec],
        checksum: Option<&str>,
        span: Span,
    ) -> Result<Option<SourceDigest>, BuildError> {
        let mut files = Vec::new();
        for s in sources {
            let SourceSpec::Path { path } = s else {
                continue;
            };
            if git::is_git(path) {
                let repo = git::parse(path).map_err(|e| step_failed(span, e))?;
                let at = self.resolve_git(path, &repo, span)?;
                let id = format!("git commit {} subdir {:?}", at.commit, repo.subdir);
                files.push((add::redact(path), crate::Digest::of(id.as_bytes())));
            } else if add::is_url(path) {
                let digest = match checksum {
                    Some(c) => add::parse_checksum(c).map_err(|e| step_failed(span, e))?,
                    None => self.prefetch(path, span)?,
                };
                // Kept in the cache's explanations on disk: never with credentials.
                files.push((add::redact(path), digest));
            } else if let Some(ctx) = self.context {
                // A missing source is reported by the ADD itself, with hints.
                let paths: Vec<String> = copy::matches(ctx, path)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| ctx.contains(p))
                    .collect();
                files.extend(cache::context_sources(ctx, &paths)?.files);
            }
        }
        Ok(Some(SourceDigest::of_files(files)))
    }

    /// Downloads a URL for its digest before the step runs; the step then reuses the file.
    fn prefetch(&self, url: &str, span: Span) -> Result<crate::Digest, BuildError> {
        let mut d = self.downloads.lock().expect("downloads lock");
        let got = d
            .fetch(self.hooks.fetch, self.store, url)
            .map_err(|e| step_failed(span, e))?;
        Ok(got.digest)
    }

    /// The image's layers (unpacked dirs, top first, which keep their whiteouts) as one
    /// merged tree for placing COPY/ADD entries.
    pub(super) fn image_tree(&self, dirs: &[PathBuf]) -> ImageTree<'a> {
        let views = dirs.iter().cloned().map(LayerView::new).collect();
        let sandbox = self.sandbox;
        ImageTree::new(views).with_owner_map(move |m| super::rootless::image_owner(sandbox, m))
    }

    /// A stage's or image's files copied out of the store's layer dirs by the mapped helper
    /// (as root of the user's id map), for a COPY that could not read them in place: files
    /// of the image's other users that only they may read (0600, 0700 dirs) belong to
    /// sub-ids here. Each layer is written as a tar by the helper (container ids, deletions
    /// as whiteouts), spooled, unpacked over the ones below and its owners recorded.
    fn mapped_copy(
        &self,
        source: &LayerSource<'a>,
        span: Span,
    ) -> Result<UnpackedTree, BuildError> {
        let mapped = self.sandbox.mapped_fs().expect("only for a mapped user");
        let dir = self.store.scratch_dir("copy-from-")?;
        let root = dir.path().join("root");
        let spool = dir.path().join("layer.tar");
        let io = |action| move |source| BuildError::Io { action, source };
        std::fs::create_dir(&root).map_err(io("creating the COPY --from copy"))?;
        let plain = layer::LayerOptions {
            encoding: layer::Encoding::plain(),
            ..Default::default()
        };
        let mut owners = layer::Owners::new();
        for layer_dir in source.layer_dirs().iter().rev() {
            let mut tar =
                std::fs::File::create(&spool).map_err(io("spooling a COPY --from layer"))?;
            mapped
                .write_layer(layer_dir, &plain, &mut tar)
                .map_err(|e| step_failed(span, e))?;
            let read = || std::fs::File::open(&spool).map_err(io("reading a COPY --from layer"));
            layer::unpack_layer(read()?, &root, &unpack_options())?;
            layer::apply_layer_owners(read()?, &mut owners)?;
        }
        let tree = Context::open(&root, DockerIgnore::default(), None)?;
        Ok(UnpackedTree {
            tree,
            owners,
            _dir: dir,
        })
    }

    /// What a RUN's `--mount=type=bind,from=` mounts, and its name for messages.
    pub(super) fn source_tree(
        &self,
        from: &CopyFrom,
        span: Span,
    ) -> Result<(SourceTree<'a>, String), BuildError> {
        let (source, name) = self.copy_source(from, span)?;
        let tree = match source {
            CopySource::Context(ctx) => SourceTree::Context(ctx),
            CopySource::Layers(layers) => self.mount_tree(&layers, &name, span)?,
        };
        Ok((tree, name))
    }

    /// Where a COPY reads: the context, or the layers of a stage or image read in the
    /// store's unpacked layer dirs (a pulled base unpacked there once, as for RUN; a layer
    /// this build made is the dir its step left), merged ([`LayerSource`]).
    fn copy_source(
        &self,
        from: &CopyFrom,
        span: Span,
    ) -> Result<(CopySource<'a>, String), BuildError> {
        let (layers, name) = match from {
            CopyFrom::Context => {
                let ctx = self
                    .context
                    .ok_or_else(|| step_failed(span, copy::CopyError::NoContext))?;
                return Ok((CopySource::Context(ctx), "the build context".into()));
            }
            CopyFrom::Stage(i) => {
                let img = self.done.get(i).expect("plan orders dependencies first");
                (img.layers().to_vec(), format!("stage {i}"))
            }
            CopyFrom::Image(name) => {
                let stored = self.stored_image(name).map_err(|e| step_failed(span, e))?;
                let layers: Vec<BuildLayer> = stored.layers.iter().map(|&l| l.into()).collect();
                (layers, format!("image {name}"))
            }
        };
        let dirs = self.unpacked_layers(&layers)?;
        let owner = self.source_owners(&layers)?;
        let source = LayerSource::new(self.image_tree(&dirs), owner)?;
        Ok((CopySource::Layers(Box::new(source)), name))
    }

    /// How the owner an image gives a file is read from the store's layer dirs (`layers`
    /// bottom first; an entry names its layer top first): root's dirs hold the image's ids;
    /// a subordinate-id map's hold them mapped; a user without a range unpacked everything
    /// as its own, so the ids are read from the layers' tar headers (as the blobs hold them).
    fn source_owners(&self, layers: &[BuildLayer]) -> Result<OwnerOf<'a>, BuildError> {
        if self.sandbox.mapped_fs().is_some() {
            let sandbox = self.sandbox;
            return Ok(Box::new(move |e: &Entry| {
                let meta = copy::DirMeta {
                    mode: 0,
                    uid: u64::from(e.uid),
                    gid: u64::from(e.gid),
                    mtime: 0,
                };
                let m = super::rootless::image_owner(sandbox, meta);
                (m.uid as u32, m.gid as u32)
            }));
        }
        if unpack_options().ownership == layer::Ownership::Preserve {
            return Ok(Box::new(|e: &Entry| (e.uid, e.gid)));
        }
        // Top first, like the entries' layer numbers. Without a subordinate range every
        // layer keeps its blob (its dir cannot hold the image's owners, see `stage.rs`); a
        // blob this store lacks (a pulled base read lazily) reads as the user's own files.
        let mut owners = Vec::with_capacity(layers.len());
        for l in layers.iter().rev() {
            let mut o = layer::Owners::new();
            if let Some(b) = l.blob().filter(|b| self.store.has_blob(&b.digest)) {
                layer::apply_layer_owners(self.store.open_blob(&b.digest)?, &mut o)?;
            }
            owners.push(o);
        }
        Ok(Box::new(move |e: &Entry| {
            owners[e.layer].get(&e.rel).copied().unwrap_or((0, 0))
        }))
    }

    /// The files of a stage or image copied into a temp dir, for a RUN's bind mount, which
    /// needs one directory (and may write to it: the store's layer dirs must not be
    /// mounted). Written as COPY writes them (one pass through the merged layer dirs, no
    /// blob read), unpacked from the tar as it streams. The dir is in the store, like a RUN
    /// step's scratch dir: a big stage must not fill a small /tmp.
    fn mount_tree(
        &self,
        source: &LayerSource<'a>,
        name: &str,
        span: Span,
    ) -> Result<SourceTree<'a>, BuildError> {
        let nothing = ImageTree::new(Vec::new());
        let opts = CopyOptions {
            uid: 0,
            gid: 0,
            chmod: None,
            exclude: None,
            parents: false,
            now: 0,
            image: &nothing,
            unpack: None,
            from: name,
            keep_owners: true,
        };
        let all = [SourceSpec::Path { path: "/".into() }];
        let entries = copy::entries(source, &all, "/", &opts, Vec::new());
        if self.sandbox.mapped_fs().is_some() && !read_in_place(&entries) {
            let copied = self.mapped_copy(source, span)?;
            return Ok(SourceTree::Rootfs {
                tree: copied.tree,
                _dir: Box::new(copied._dir),
            });
        }
        let entries = entries.map_err(|e| step_failed(span, e))?;
        let dir = self.store.scratch_dir("mount-from-")?;
        let plain = layer::LayerOptions {
            encoding: layer::Encoding::plain(),
            ..Default::default()
        };
        let (_, unpacked) = layer::write_entries_teed(entries, &plain, std::io::sink(), |tar| {
            layer::unpack_layer(tar, dir.path(), &unpack_options())
        })?;
        unpacked?;
        let tree = Context::open(dir.path(), DockerIgnore::default(), None)?;
        Ok(SourceTree::Rootfs {
            tree,
            _dir: Box::new(dir),
        })
    }
}

/// The arguments of a COPY/ADD step the runner needs.
pub(super) struct CopySpec<'s> {
    pub(super) sources: &'s [SourceSpec],
    pub(super) dest: &'s str,
    pub(super) from: &'s CopyFrom,
    pub(super) chown: Option<&'s str>,
    pub(super) chmod: Option<&'s str>,
    pub(super) exclude: &'s [String],
    pub(super) parents: bool,
    /// Set for ADD.
    pub(super) add: Option<AddSpec<'s>>,
}

/// What ADD adds to a COPY.
pub(super) struct AddSpec<'s> {
    pub(super) checksum: Option<&'s str>,
    /// `--unpack`: `None` extracts local archives only (Docker's default).
    pub(super) unpack: Option<bool>,
    pub(super) keep_git_dir: bool,
}

/// What a COPY reads: the context, or a stage's or image's layers.
pub(super) enum CopySource<'a> {
    Context(&'a Context),
    Layers(Box<LayerSource<'a>>),
}

impl CopySource<'_> {
    fn tree(&self) -> &dyn copy::SourceTree {
        match self {
            CopySource::Context(ctx) => *ctx,
            CopySource::Layers(layers) => layers.as_ref(),
        }
    }
}

/// Whether a COPY's entries from the store's layer dirs could be listed, and each file
/// read, by this process (see [`Runner::mapped_copy`] for when they cannot).
fn read_in_place(entries: &Result<Vec<layer::LayerEntry>, copy::CopyError>) -> bool {
    let Ok(entries) = entries else {
        return false;
    };
    entries.iter().all(|e| match &e.source {
        layer::EntrySource::ResolvedFile { path, .. } => {
            nix::unistd::access(path.as_path(), nix::unistd::AccessFlags::R_OK).is_ok()
        }
        _ => true,
    })
}

/// A stage's or image's files unpacked into a temp dir (living as long as this value),
/// with the owners the layers' headers give them.
struct UnpackedTree {
    tree: Context,
    owners: layer::Owners,
    _dir: crate::store::ScratchDir,
}

impl copy::SourceTree for UnpackedTree {
    fn entries(&self, rel: &str) -> Result<Vec<Entry>, ContextError> {
        self.tree.entries(rel)
    }
    fn resolve(&self, rel: &str, follow: bool) -> Result<String, ContextError> {
        self.tree.resolve(rel, follow)
    }
    fn all_paths(&self) -> Result<Vec<String>, ContextError> {
        self.tree.all_paths()
    }
    fn host_path(&self, rel: &str) -> Result<PathBuf, ContextError> {
        self.tree.host_path(rel)
    }
    fn listed_path(&self, e: &Entry) -> PathBuf {
        self.tree.listed_path(e)
    }
    fn owner(&self, e: &Entry) -> (u32, u32) {
        self.owners.get(&e.rel).copied().unwrap_or((0, 0))
    }
}

/// What a RUN's `--mount=type=bind,from=` mounts: the context, or a stage's or image's
/// files copied into a temp dir that lives as long as this value.
pub(super) enum SourceTree<'a> {
    Context(&'a Context),
    Rootfs {
        tree: Context,
        _dir: Box<crate::store::ScratchDir>,
    },
}

impl SourceTree<'_> {
    /// The files, whichever tree they are.
    pub(super) fn tree(&self) -> &Context {
        match self {
            SourceTree::Context(ctx) => ctx,
            SourceTree::Rootfs { tree, .. } => tree,
        }
    }
}

/// `--chown=SPEC` could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("--chown={spec}")]
struct ChownError {
    spec: String,
    #[source]
    source: OwnerError,
}
