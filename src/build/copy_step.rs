//! COPY and ADD steps: the source tree (context, stage or image), ownership and mode, and
//! the layer of entries they write. No sandbox is involved: files stream from the source
//! tree straight into the layer.

use std::path::PathBuf;

use super::BuildError;
use super::context::Context;
use super::copy::{self, CopyOptions};
use super::stage::{Runner, step_err, unpack_options};
use crate::dockerfile::Span;
use crate::image::{ImageBuilder, Layer};
use crate::layer;
use crate::plan::ignore::DockerIgnore;
use crate::plan::{CopyFrom, SourceSpec};

impl<'a> Runner<'a> {
    /// ADD differs from COPY for URLs and local archives, which kiln does not handle yet;
    /// refuse them rather than silently copying an archive unextracted.
    pub(super) fn check_add_sources(
        &self,
        sources: &[SourceSpec],
        span: Span,
    ) -> Result<(), BuildError> {
        for s in sources {
            let SourceSpec::Path { path } = s else {
                continue;
            };
            if path.contains("://") || path.starts_with("git@") {
                return Err(step_err(
                    span,
                    format!(
                        "ADD from a URL ({path}) is not supported by kiln yet; download it in a RUN step"
                    ),
                ));
            }
            if let Some(ctx) = self.context {
                let host = ctx.host_path(path.trim_start_matches('/'));
                if host.is_file() && is_archive(&host) {
                    return Err(step_err(
                        span,
                        format!(
                            "ADD of the archive {path} (auto-extraction) is not supported by kiln yet"
                        ),
                    ));
                }
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
        let lowers = self.unpacked_layers(img.layers())?;
        let (uid, gid) = match spec.chown {
            Some(c) => resolve_owner(c, &lowers).map_err(|m| step_err(span, m))?,
            None => (0, 0),
        };
        let chmod = spec
            .chmod
            .map(parse_chmod)
            .transpose()
            .map_err(|m| step_err(span, m))?;
        let exclude = if spec.exclude.is_empty() {
            None
        } else {
            Some(
                DockerIgnore::parse(&spec.exclude.join("\n"))
                    .map_err(|e| step_err(span, e.to_string()))?,
            )
        };
        let existing = |p: &str| {
            copy::dir_meta_in(&lowers, p).map(|m| super::rootless::image_owner(self.sandbox, m))
        };
        let now = u64::try_from(self.created.timestamp()).unwrap_or(0);
        let (tree_holder, from) = self.source_tree(spec.from, span)?;
        let tree: &Context = match &tree_holder {
            SourceTree::Context(c) => c,
            SourceTree::Rootfs { tree, .. } => tree,
        };
        let opts = CopyOptions {
            uid,
            gid,
            chmod,
            exclude,
            now,
            existing_dir: &existing,
            from: &from,
        };
        let entries = copy::entries(tree, spec.sources, spec.dest, &opts)
            .map_err(|e| step_err(span, e.to_string()))?;
        self.add_layer(img, entries, created_by)
    }

    pub(super) fn source_tree(
        &self,
        from: &CopyFrom,
        span: Span,
    ) -> Result<(SourceTree<'a>, String), BuildError> {
        match from {
            CopyFrom::Context => {
                let ctx = self.context.ok_or_else(|| step_err(span, "COPY needs a build context, but the Dockerfile came from stdin without one"))?;
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
                let stored = self.stored_image(name).map_err(|m| step_err(span, m))?;
                Ok((self.rootfs(&stored.layers)?, format!("image {name}")))
            }
        }
    }

    /// The merged file tree of `layers`, unpacked into a temp dir (whiteouts applied).
    pub(super) fn rootfs(&self, layers: &[Layer]) -> Result<SourceTree<'a>, BuildError> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-rootfs-")
            .tempdir()
            .map_err(|source| BuildError::Io {
                action: "creating a temp dir for COPY --from",
                source,
            })?;
        for l in layers {
            let blob = self.store.open_blob(&l.digest)?;
            layer::unpack_layer(blob, dir.path(), &unpack_options())?;
        }
        let ctx = Context::open(
            dir.path(),
            DockerIgnore::parse("").expect("empty ignore"),
            None,
        )?;
        Ok(SourceTree::Rootfs {
            tree: ctx,
            _dir: dir,
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
}

/// Where COPY reads from: the context, or a stage/image rootfs unpacked into a temp dir that
/// lives as long as this value.
pub(super) enum SourceTree<'a> {
    Context(&'a Context),
    Rootfs {
        tree: Context,
        _dir: tempfile::TempDir,
    },
}

/// `--chmod`: octal only for now.
pub(super) fn parse_chmod(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("--chmod={s}: kiln supports octal modes (e.g. 0755) only so far"))
}

/// `--chown=user[:group]`: numeric ids as they are, names through the image's passwd/group.
pub(super) fn resolve_owner(spec: &str, lowers: &[PathBuf]) -> Result<(u64, u64), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match user.parse::<u64>() {
        Ok(n) => n,
        Err(_) => lookup(lowers, "etc/passwd", user, 2).ok_or_else(|| {
            format!("--chown={spec}: user {user:?} is not in the image's /etc/passwd")
        })?,
    };
    let gid = match group {
        None => match user.parse::<u64>() {
            // A numeric user without a group gets the same number as gid (Docker's rule).
            Ok(n) => n,
            Err(_) => lookup(lowers, "etc/passwd", user, 3).unwrap_or(uid),
        },
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => lookup(lowers, "etc/group", g, 2).ok_or_else(|| {
                format!("--chown={spec}: group {g:?} is not in the image's /etc/group")
            })?,
        },
    };
    Ok((uid, gid))
}

/// Field `field` (0-based) of the line for `name` in the top-most layer that has `file`.
fn lookup(lowers: &[PathBuf], file: &str, name: &str, field: usize) -> Option<u64> {
    let text = lowers
        .iter()
        .find_map(|l| std::fs::read_to_string(l.join(file)).ok())?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))?
        .get(field)?
        .parse()
        .ok()
}

/// gzip, bzip2, xz, zstd or a plain tar, by content (ADD auto-extracts those).
fn is_archive(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 262];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(b"BZh")
        || h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &h[257..262] == b"ustar")
}
