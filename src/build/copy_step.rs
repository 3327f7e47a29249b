//! COPY and ADD steps: the source tree (context, stage or image), ownership and mode, and
//! the layer of entries they write. No sandbox is involved: files stream from the source
//! tree straight into the layer.

use std::path::PathBuf;

use super::add::AddError;
use super::cache::{self, SourceDigest};
use super::context::{Context, EntryKind};
use super::copy::{self, Chmod, CopyOptions};
use super::image_tree::{ImageTree, LayerView};
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
        let (tree_holder, from) = match self.layer_source_tree(spec)? {
            Some(t) => t,
            None => self.source_tree(spec.from, span)?,
        };
        let tree = tree_holder.tree();
        // Extracted archives and downloads are spooled here until the layer is written.
        let scratch = self.store.scratch_dir("add-")?;
        let extractor = add::Extractor::new(tree.root(), scratch.path());
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
            keep_owners: spec.chown.is_none() && tree_holder.owners_kept(),
            owners: tree_holder.owners(),
        };
        let (local, downloads) = match &spec.add {
            Some(add) => self.downloads(spec, add, &opts, scratch.path(), &extract, span)?,
            None => (spec.sources.to_vec(), Vec::new()),
        };
        let entries = copy::entries(tree, &local, spec.dest, &opts, downloads)
            .map_err(|e| step_failed(span, e))?;
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
            owners: None,
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

    pub(super) fn source_tree(
        &self,
        from: &CopyFrom,
        span: Span,
    ) -> Result<(SourceTree<'a>, String), BuildError> {
        match from {
            CopyFrom::Context => {
                let ctx = self
                    .context
                    .ok_or_else(|| step_failed(span, copy::CopyError::NoContext))?;
                Ok((SourceTree::Context(ctx), "the build context".into()))
            }
            CopyFrom::Stage(i) => {
                let layers = self
                    .done
                    .get(i)
                    .expect("plan orders dependencies first")
                    .layers()
                    .to_vec();
                Ok((self.rootfs(&layers)?, format!("stage {i}")))
            }
            CopyFrom::Image(name) => {
                let stored = self.stored_image(name).map_err(|e| step_failed(span, e))?;
                let layers: Vec<BuildLayer> = stored.layers.iter().map(|&l| l.into()).collect();
                Ok((self.rootfs(&layers)?, format!("image {name}")))
            }
        }
    }

    /// For `COPY --from` a stage or image whose sources each lie in one layer (a directory
    /// a RUN or COPY made, no other layer adding to it), the directory of that layer in the
    /// store as the source tree: read where the step left it, nothing unpacked. None when
    /// the sources need the merged tree ([`Runner::rootfs`]): wildcards, symlinks on the
    /// way, deletions or device nodes below a source, several layers, several source
    /// layers, or owners the store does not keep as the image has them (rootless).
    fn layer_source_tree(
        &self,
        spec: &CopySpec,
    ) -> Result<Option<(SourceTree<'a>, String)>, BuildError> {
        let (layers, from) = match spec.from {
            CopyFrom::Stage(i) => {
                let img = self.done.get(i).expect("plan orders dependencies first");
                (img.layers().to_vec(), format!("stage {i}"))
            }
            _ => return Ok(None),
        };
        if spec.add.is_some()
            || spec.parents
            || unpack_options().ownership != layer::Ownership::Preserve
            || self.sandbox.mapped_fs().is_some()
        {
            return Ok(None);
        }
        let mut paths = Vec::new();
        for s in spec.sources {
            match s {
                SourceSpec::Path { path } if !path.contains(['*', '?', '[', '\\']) => {
                    paths.push(crate::lexical_path::in_root(path))
                }
                _ => return Ok(None),
            }
        }
        let lowers = self.unpacked_layers(&layers)?;
        let image = self.image_tree(&lowers);
        let mut dir = None;
        for p in &paths {
            let real = copy::resolve_in_image(&image, p).ok();
            let sole = real
                .filter(|r| r == p && !r.is_empty())
                .and_then(|r| image.sole_layer(&r));
            match (sole, dir) {
                (Some(d), None) => dir = Some(d),
                (Some(d), Some(seen)) if d == seen => {}
                _ => return Ok(None),
            }
        }
        let Some(dir) = dir else { return Ok(None) };
        let tree = Context::open(dir, DockerIgnore::parse("").expect("empty ignore"), None)?;
        for p in &paths {
            // A deletion below the source is a device node here; the merged tree drops it.
            let listed = tree.entries(p)?;
            if listed.iter().any(|e| e.kind == EntryKind::Other) {
                return Ok(None);
            }
        }
        let tree = SourceTree::Rootfs {
            tree,
            owners: None,
            _dir: None,
        };
        Ok(Some((tree, from)))
    }

    /// The merged file tree of `layers`, unpacked into a temp dir (whiteouts applied). The dir
    /// is in the store, like a RUN step's scratch dir: a big stage must not fill a small /tmp,
    /// and the files land on the filesystem the layers come from.
    pub(super) fn rootfs(&self, layers: &[BuildLayer]) -> Result<SourceTree<'a>, BuildError> {
        let blobs: Vec<_> = layers.iter().filter_map(|l| l.blob().copied()).collect();
        self.env.remote.ensure(&blobs, self.progress)?;
        let dir = self.store.scratch_dir("rootfs-")?;
        let opts = unpack_options();
        // Unprivileged, the files cannot be given their owners: read them from the headers.
        let mut owners =
            (opts.ownership != layer::Ownership::Preserve).then(Box::<layer::Owners>::default);
        // A layer kept only unpacked is read from its dir as a tar (`layer_tar`).
        for l in layers {
            layer::unpack_layer(self.layer_tar(l)?, dir.path(), &opts)?;
            if let Some(owners) = &mut owners {
                layer::apply_layer_owners(self.layer_tar(l)?, owners)?;
            }
        }
        let ctx = Context::open(
            dir.path(),
            DockerIgnore::parse("").expect("empty ignore"),
            None,
        )?;
        Ok(SourceTree::Rootfs {
            tree: ctx,
            owners,
            _dir: Some(Box::new(dir)),
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

/// Where COPY reads from: the context, or a stage/image rootfs unpacked into a temp dir that
/// lives as long as this value (or a layer directory of the store, which outlives it).
pub(super) enum SourceTree<'a> {
    Context(&'a Context),
    Rootfs {
        tree: Context,
        /// The owners the layers give the files, when the unpack could not (unprivileged).
        owners: Option<Box<layer::Owners>>,
        _dir: Option<Box<crate::store::ScratchDir>>,
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

    /// Whether the tree's files have the owners the image gives them: a stage or image
    /// unpacked by root does (an unprivileged unpack cannot chown, and the context's owners
    /// are the host's, which Docker never copies).
    fn owners_kept(&self) -> bool {
        match self {
            SourceTree::Context(_) => false,
            SourceTree::Rootfs { owners, .. } => {
                owners.is_some() || unpack_options().ownership == layer::Ownership::Preserve
            }
        }
    }

    /// The owners read from the layers where the files could not be given them.
    fn owners(&self) -> Option<&layer::Owners> {
        match self {
            SourceTree::Context(_) => None,
            SourceTree::Rootfs { owners, .. } => owners.as_deref(),
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
