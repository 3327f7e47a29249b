//! WORKDIR: sets the config's working directory and, like BuildKit, creates the directory
//! in a layer of its own so later COPY and RUN steps find it.
//!
//! BuildKit's rule (dockerfile2llb `dispatchWorkdir`): for any path but `/`, a `mkdir -p`
//! file op, mode 0755, owned by the USER in force (resolved like `COPY --chown`: a name
//! through the image's /etc/passwd, a bare uid also as the gid, an unknown name as root),
//! timestamped with `SOURCE_DATE_EPOCH` when set; its history entry is not `empty_layer`, so
//! an existing directory still gives a layer, an empty one. Existing directories keep their
//! metadata; symlinks in the image are followed inside the image root, so `WORKDIR /app`
//! with `/app -> /srv/app` creates `/srv/app` and nothing outside the image.

use super::copy::{self, CopyError, DirMeta, ImageView, Node};
use super::owner::{OwnerError, resolve_owner};
use super::runner::Runner;
use super::{BuildError, step_failed};
use crate::dockerfile::Span;
use crate::image::ImageBuilder;
use crate::layer::{EntrySource, LayerEntry};

/// Why a WORKDIR step failed.
#[derive(Debug, thiserror::Error)]
enum WorkdirStepError {
    #[error("WORKDIR {path} is created owned by USER {user}")]
    Owner {
        path: String,
        user: String,
        #[source]
        source: OwnerError,
    },
    #[error("WORKDIR {path}")]
    Create {
        path: String,
        #[source]
        source: WorkdirError,
    },
}

impl Runner<'_> {
    /// `WORKDIR path` (already absolute and clean, from the plan).
    pub(super) fn workdir(
        &mut self,
        img: &mut ImageBuilder,
        span: Span,
        path: &str,
        created_by: &str,
    ) -> Result<(), BuildError> {
        img.set_working_dir(path);
        if !creates_layer(path) {
            img.add_empty_step(created_by);
            return Ok(());
        }
        let lowers = self.unpacked_layers(img.layers())?;
        let image = self.image_tree(&lowers);
        let (uid, gid) = match img.config().user.as_deref().filter(|u| !u.is_empty()) {
            None => (0, 0),
            Some(user) => match resolve_owner(user, &|f| image.read_file(f)) {
                Ok(ids) => ids,
                // BuildKit's file op takes a user name missing from /etc/passwd as root (the
                // next RUN is what fails); an unknown group is an error there too.
                Err(_) if !user.contains(':') => (0, 0),
                Err(e) => {
                    let e = WorkdirStepError::Owner {
                        path: path.to_string(),
                        user: user.to_string(),
                        source: e,
                    };
                    return Err(step_failed(span, e));
                }
            },
        };
        let owner = DirMeta {
            mode: 0o755,
            uid,
            gid,
            mtime: u64::try_from(self.created.timestamp()).unwrap_or(0),
        };
        let entries = mkdir_entries(&image, path, owner).map_err(|e| {
            let e = WorkdirStepError::Create {
                path: path.to_string(),
                source: e,
            };
            step_failed(span, e)
        })?;
        self.add_layer(img, entries, created_by)
    }
}

/// Whether WORKDIR `path` writes a layer: BuildKit makes none for `/` only.
pub(super) fn creates_layer(path: &str) -> bool {
    !path.trim_matches('/').is_empty()
}

/// The entries of `mkdir -p path` in `image`: nothing when the directory exists, else the
/// missing directories (with `new`'s metadata) and the existing ones above them (with the
/// image's own, as a layer diff of the mkdir would list them).
pub(super) fn mkdir_entries(
    image: &dyn ImageView,
    path: &str,
    new: DirMeta,
) -> Result<Vec<LayerEntry>, WorkdirError> {
    let resolved = copy::resolve_in_image(image, path).map_err(|e| match e {
        CopyError::NotDir { blocker, .. } => WorkdirError::NotDir(blocker),
        CopyError::SymlinkLoop(_) => WorkdirError::SymlinkLoop,
        other => WorkdirError::Resolve(other),
    })?;
    let mut entries = Vec::new();
    let mut creating = false;
    let mut sofar = String::new();
    for part in resolved.split('/').filter(|p| !p.is_empty()) {
        sofar = copy::join(&sofar, part);
        // Below a directory this step creates, nothing exists: no need to look.
        let found = if creating { None } else { image.node(&sofar) };
        let meta = match found {
            Some(Node::Dir(meta)) => meta,
            Some(Node::Other | Node::Symlink(_)) => {
                return Err(WorkdirError::NotDir(format!("/{sofar}")));
            }
            None => {
                creating = true;
                new
            }
        };
        entries.push(LayerEntry {
            path: sofar.clone(),
            source: EntrySource::Dir,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
        });
    }
    Ok(if creating { entries } else { Vec::new() })
}

/// Why WORKDIR cannot create its directory in the image.
#[derive(Debug, thiserror::Error)]
pub(super) enum WorkdirError {
    #[error("{0} exists in the image and is not a directory")]
    NotDir(String),
    #[error("too many levels of symlinks in the image")]
    SymlinkLoop,
    #[error(transparent)]
    Resolve(CopyError),
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Fake(HashMap<String, Node>);

    impl ImageView for Fake {
        fn node(&self, path: &str) -> Option<Node> {
            self.0.get(path).cloned()
        }
    }

    fn dir(mode: u32, uid: u64) -> Node {
        Node::Dir(DirMeta {
            mode,
            uid,
            gid: uid,
            mtime: 1,
        })
    }

    fn image() -> Fake {
        Fake(HashMap::from([
            ("usr".to_string(), dir(0o755, 0)),
            ("srv".to_string(), dir(0o700, 5)),
            ("app".to_string(), Node::Symlink("/srv/app".into())),
            ("escape".to_string(), Node::Symlink("../../../tmp/x".into())),
            ("file".to_string(), Node::Other),
        ]))
    }

    const NEW: DirMeta = DirMeta {
        mode: 0o755,
        uid: 1000,
        gid: 1000,
        mtime: 9,
    };

    fn summary(entries: &[LayerEntry]) -> Vec<(String, u32, u64)> {
        entries
            .iter()
            .map(|e| (e.path.clone(), e.mode, e.uid))
            .collect()
    }

    #[test]
    fn missing_directories_are_created_and_existing_ones_keep_their_metadata() {
        let e = mkdir_entries(&image(), "/usr/local/app", NEW).unwrap();
        assert_eq!(
            summary(&e),
            [
                ("usr".into(), 0o755, 0),
                ("usr/local".into(), 0o755, 1000),
                ("usr/local/app".into(), 0o755, 1000)
            ]
        );
        assert!(mkdir_entries(&image(), "/usr", NEW).unwrap().is_empty());
    }

    #[test]
    fn symlinks_are_followed_inside_the_image_root() {
        let e = mkdir_entries(&image(), "/app/sub", NEW).unwrap();
        assert_eq!(
            summary(&e),
            [
                ("srv".into(), 0o700, 5),
                ("srv/app".into(), 0o755, 1000),
                ("srv/app/sub".into(), 0o755, 1000)
            ]
        );
        // A link climbing out of the root stops at the root.
        let e = mkdir_entries(&image(), "/escape", NEW).unwrap();
        assert_eq!(
            summary(&e),
            [("tmp".into(), 0o755, 1000), ("tmp/x".into(), 0o755, 1000)]
        );
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let err = mkdir_entries(&image(), "/file", NEW)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/file") && err.contains("not a directory"),
            "{err}"
        );
        assert!(mkdir_entries(&image(), "/file/below", NEW).is_err());
    }

    #[test]
    fn only_the_root_makes_no_layer() {
        assert!(!creates_layer("/"));
        assert!(creates_layer("/a"));
    }
}
