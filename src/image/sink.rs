//! Where an export goes: a directory or a tar file, written beside the destination and moved
//! into place only when complete, so a failure never leaves a half-written output.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use super::{ImageError, IoContext, Result};

pub(super) enum Sink {
    Dir {
        tmp: TempDir,
        dest: PathBuf,
    },
    Tar {
        tar: tar::Builder<BufWriter<NamedTempFile>>,
        dest: PathBuf,
    },
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Sink {
    /// A directory output; `dest` must not exist or be an empty directory.
    pub fn dir(dest: &Path) -> Result<Sink> {
        if dest.exists() && fs::read_dir(dest).ctx("read", dest)?.next().is_some() {
            return Err(ImageError::DestinationExists(dest.to_path_buf()));
        }
        let parent = parent_of(dest);
        let tmp = tempfile::Builder::new()
            .prefix(".kiln-out-")
            .tempdir_in(&parent)
            .ctx("create temp dir in", &parent)?;
        Ok(Sink::Dir {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// A tar file output (replaces `dest` if it exists, like `docker save -o`).
    pub fn tar(dest: &Path) -> Result<Sink> {
        let parent = parent_of(dest);
        let tmp = tempfile::Builder::new()
            .prefix(".kiln-out-")
            .tempfile_in(&parent)
            .ctx("create temp file in", &parent)?;
        let mut tar = tar::Builder::new(BufWriter::with_capacity(256 * 1024, tmp));
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(Sink::Tar {
            tar,
            dest: dest.to_path_buf(),
        })
    }

    fn dest(&self) -> &Path {
        match self {
            Sink::Dir { dest, .. } | Sink::Tar { dest, .. } => dest,
        }
    }

    pub fn add_dir(&mut self, path: &str) -> Result<()> {
        let dest = self.dest().to_path_buf();
        match self {
            Sink::Dir { tmp, .. } => {
                let p = tmp.path().join(path);
                fs::create_dir_all(&p).ctx("create", &p)
            }
            Sink::Tar { tar, .. } => {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(0);
                tar.append_data(&mut h, format!("{path}/"), io::empty())
                    .ctx("write", &dest)
            }
        }
    }

    /// Adds a file of exactly `size` bytes, streamed from `data`.
    pub fn add_file(&mut self, path: &str, size: u64, data: impl Read) -> Result<()> {
        let dest = self.dest().to_path_buf();
        match self {
            Sink::Dir { tmp, .. } => {
                let p = tmp.path().join(path);
                let mut f = File::create(&p).ctx("create", &p)?;
                let n = io::copy(&mut data.take(size), &mut f).ctx("write", &p)?;
                short_read(n, size, &p)
            }
            Sink::Tar { tar, .. } => {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(size);
                h.set_mtime(0);
                // tar::Builder pads or fails on a short reader; take() guards a long one.
                tar.append_data(&mut h, path, data.take(size))
                    .ctx("write", &dest)
            }
        }
    }

    /// Moves the output into place.
    pub fn finish(self) -> Result<()> {
        match self {
            Sink::Dir { tmp, dest } => {
                if dest.exists() {
                    fs::remove_dir(&dest).ctx("replace empty directory", &dest)?;
                }
                let path = tmp.keep();
                // tempdir() makes it 0700; an exported layout is meant to be shared.
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .ctx("chmod", &path)?;
                fs::rename(&path, &dest).or_else(|e| {
                    let _ = fs::remove_dir_all(&path);
                    Err(e).ctx("rename output to", &dest)
                })
            }
            Sink::Tar { tar, dest } => {
                let file = tar
                    .into_inner()
                    .ctx("write", &dest)?
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .ctx("write", &dest)?;
                // Temp files are 0600; an archive is meant to be shared, like `docker save -o`.
                file.as_file()
                    .set_permissions(fs::Permissions::from_mode(0o644))
                    .ctx("chmod", &dest)?;
                file.as_file().sync_all().ctx("sync", &dest)?;
                file.persist(&dest)
                    .map_err(|e| e.error)
                    .ctx("rename output to", &dest)?;
                Ok(())
            }
        }
    }
}

fn short_read(n: u64, size: u64, path: &Path) -> Result<()> {
    if n == size {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("blob ended after {n} of {size} bytes"),
        ))
        .ctx("write", path)
    }
}
