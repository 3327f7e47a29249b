//! `--output` destinations (`type=oci,dest=DIR|FILE.tar`, `type=docker,dest=FILE.tar`) and
//! exporting a stored image to one.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::docker_archive::write_docker_archive;
use super::index::Stored;
use super::oci_layout::{LayoutKind, write_oci_index_layout, write_oci_layout};
use super::{ImageError, Result};
use crate::reference::Reference;
use crate::store::Store;

/// Where a built image goes besides the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout, as a directory or a tar file.
    Oci { dest: PathBuf, kind: LayoutKind },
    /// A docker-archive tar (`docker load`, `podman load`).
    Docker { dest: PathBuf },
}

/// Why an `--output` value is not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid --output {input:?}: {reason} (expected type=oci,dest=DIR|FILE.tar or type=docker,dest=FILE.tar)"
)]
pub struct OutputSpecError {
    input: String,
    reason: String,
}

impl FromStr for Output {
    type Err = OutputSpecError;

    /// Parses `type=oci,dest=out/` / `type=oci,dest=img.tar` / `type=docker,dest=img.tar`.
    /// An OCI destination ending in `.tar` is a tar file unless `tar=false` says otherwise.
    fn from_str(s: &str) -> std::result::Result<Output, OutputSpecError> {
        let err = |reason: String| OutputSpecError {
            input: s.to_string(),
            reason,
        };
        let (mut typ, mut dest, mut tar) = (None, None, None);
        for field in s.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| err(format!("{field:?} is not key=value")))?;
            match k.trim() {
                "type" => typ = Some(v.trim().to_string()),
                "dest" => dest = Some(PathBuf::from(v)),
                "tar" => {
                    tar = Some(match v.trim() {
                        "true" => true,
                        "false" => false,
                        other => return Err(err(format!("tar={other:?} must be true or false"))),
                    })
                }
                other => return Err(err(format!("unknown key {other:?}"))),
            }
        }
        let dest = dest
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| err("dest= is missing".into()))?;
        match typ.as_deref() {
            Some("oci") => {
                let is_tar = tar.unwrap_or_else(|| dest.extension().is_some_and(|e| e == "tar"));
                let kind = if is_tar {
                    LayoutKind::Tar
                } else {
                    LayoutKind::Dir
                };
                Ok(Output::Oci { dest, kind })
            }
            Some("docker") if tar != Some(false) => Ok(Output::Docker { dest }),
            Some("docker") => Err(err("type=docker is always a tar".into())),
            Some(other) => Err(err(format!("unknown type {other:?}"))),
            None => Err(err("type= is missing".into())),
        }
    }
}

impl Output {
    pub fn dest(&self) -> &Path {
        match self {
            Output::Oci { dest, .. } | Output::Docker { dest } => dest,
        }
    }

    /// Writes `image` here, named `names` (the first one names the OCI index entry). A
    /// multi-platform index goes to an OCI layout whole; a docker archive cannot hold one.
    pub fn write(&self, store: &Store, image: &Stored, names: &[Reference]) -> Result<()> {
        match (self, image) {
            (Output::Oci { dest, kind }, Stored::Image(image)) => {
                write_oci_layout(store, image, names.first(), dest, *kind)
            }
            (Output::Oci { dest, kind }, Stored::Index(index)) => {
                write_oci_index_layout(store, index, names.first(), dest, *kind)
            }
            (Output::Docker { dest }, Stored::Image(image)) => {
                write_docker_archive(store, image, names, dest)
            }
            (Output::Docker { .. }, Stored::Index(index)) => {
                Err(ImageError::IndexInDockerArchive {
                    digest: index.digest,
                    platforms: index.platforms(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_buildkit_users_know() {
        assert_eq!(
            "type=oci,dest=out".parse(),
            Ok(Output::Oci {
                dest: "out".into(),
                kind: LayoutKind::Dir
            })
        );
        assert_eq!(
            "type=oci,dest=img.tar".parse(),
            Ok(Output::Oci {
                dest: "img.tar".into(),
                kind: LayoutKind::Tar
            })
        );
        assert_eq!(
            "dest=img,type=oci,tar=true".parse(),
            Ok(Output::Oci {
                dest: "img".into(),
                kind: LayoutKind::Tar
            })
        );
        assert_eq!(
            "type=docker,dest=d.tar".parse(),
            Ok(Output::Docker {
                dest: "d.tar".into()
            })
        );
        for bad in [
            "type=oci",
            "dest=x",
            "type=zip,dest=x",
            "type=oci,dest=x,color=red",
            "oci",
        ] {
            let e = bad.parse::<Output>().unwrap_err();
            assert!(e.to_string().contains("--output"), "{e}");
        }
    }
}
