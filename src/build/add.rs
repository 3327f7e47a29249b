//! What ADD does beyond COPY: local tar archives are extracted, URLs are downloaded.
//!
//! Archives (gzip, bzip2, xz, zstd or plain tar, recognised by content, not name) are read as
//! a stream: each entry becomes a layer entry under the destination, regular files spooled to
//! a scratch directory in the store so nothing is held in memory. Entry paths are cleaned
//! (`..` stops at the destination, a leading `/` is dropped), so an archive can never place a
//! file outside its destination. As buildah does, the archive's own owners, modes and mtimes
//! are kept (`--chown`/`--chmod` do not apply to extracted content), the archive's root entry
//! (`./`) gives the destination directory its metadata, and a later entry for a path wins.
//!
//! Downloads go through the caller's [`super::Fetch`] hook into a scratch file; the file gets
//! mode 0600 and the `Last-Modified` time, as Docker gives it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::copy::{CopyError, join};
use crate::digest::{Digest, HashingWriter};
use crate::layer::{EntrySource, LayerEntry};

/// Opens `path` as a tar stream if it is a tar archive, compressed or not (decided by the
/// decompressed content starting with a valid tar header, as Docker's `IsArchivePath` does).
pub(crate) fn open_archive(path: &Path) -> io::Result<Option<Box<dyn Read>>> {
    let mut block = Vec::with_capacity(512);
    // A file that is not what its magic number says is just a file: copy it as it is.
    let probe = open_decoded(path)?.take(512).read_to_end(&mut block);
    if probe.is_err() || !is_tar_header(&block) {
        return Ok(None);
    }
    // Reopen rather than keep the probe's decoder: the probe consumed its first block.
    open_decoded(path).map(Some)
}

/// The decoder for `path` picked by magic number (after [`open_archive`] said it is a tar).
fn open_decoded(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut file = BufReader::new(File::open(path)?);
    let head = file.fill_buf()?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(file))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        // Concatenated streams, like `xz -d`: `true`.
        Box::new(lzma_rust2::XzReader::new(file, true))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(file)?)
    } else {
        Box::new(file)
    })
}

/// A 512-byte block whose checksum field matches its content (and that is not all zeros).
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = String::from_utf8_lossy(&block[148..156]);
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == stored
}

/// ADD's archive sources turned into layer entries, each spooled to its own directory.
pub(crate) struct Extractor<'a> {
    /// The source tree's root, to name archives relative to it in messages.
    tree_root: &'a Path,
    scratch: &'a Path,
    count: std::cell::Cell<usize>,
    warnings: std::cell::RefCell<Vec<String>>,
}

impl<'a> Extractor<'a> {
    pub fn new(tree_root: &'a Path, scratch: &'a Path) -> Self {
        Extractor {
            tree_root,
            scratch,
            count: Default::default(),
            warnings: Default::default(),
        }
    }

    /// The entries of the archive at `host` placed under `dest`, or `None` for a file that
    /// is not a tar archive (ADD then copies it as it is).
    pub fn extract(&self, host: &Path, dest: &str) -> Result<Option<Vec<LayerEntry>>, CopyError> {
        let shown = host.strip_prefix(self.tree_root).unwrap_or(host);
        let shown = shown.display().to_string();
        let fail = |e: io::Error| CopyError::Add(format!("ADD {shown}: {e}"));
        let Some(tar) = open_archive(host).map_err(fail)? else {
            return Ok(None);
        };
        let n = self.count.replace(self.count.get() + 1);
        let dir = self.scratch.join(format!("archive-{n}"));
        std::fs::create_dir(&dir).map_err(fail)?;
        let mut warnings = self.warnings.borrow_mut();
        archive_entries(tar, dest, &dir, &shown, &mut warnings).map(Some)
    }

    /// What was skipped, one sentence each, for progress warnings.
    pub fn into_warnings(self) -> Vec<String> {
        self.warnings.into_inner()
    }
}

/// Reads the tar stream `tar` into layer entries under `dest` (image-relative directory),
/// spooling file contents into `scratch`. `shown` names the archive in errors; warnings
/// (entries skipped) are pushed to `warnings`.
pub(crate) fn archive_entries(
    tar: impl Read,
    dest: &str,
    scratch: &Path,
    shown: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<LayerEntry>, CopyError> {
    let fail = |e: io::Error| CopyError::Add(format!("ADD {shown}: reading the archive: {e}"));
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    // Hard links stay links, as docker extracts them (one file, several names); the COPY
    // code that places these entries also orders each group so its content comes first.
    let mut files: HashSet<String> = HashSet::new();
    for (n, entry) in archive.entries().map_err(fail)?.enumerate() {
        let mut entry = entry.map_err(fail)?;
        let rel = clean_entry(&entry.path_bytes());
        let h = entry.header();
        // Empty numeric fields (some writers leave them blank) read as 0, as Go's tar does.
        let (mode, uid, gid, mtime) = (
            h.mode().unwrap_or(0) & 0o7777,
            h.uid().unwrap_or(0),
            h.gid().unwrap_or(0),
            h.mtime().unwrap_or(0),
        );
        let kind = h.entry_type();
        // The archive's root entry (`./`) is the destination directory itself.
        let path = if rel.is_empty() {
            dest.to_string()
        } else {
            join(dest, &rel)
        };
        if path.is_empty() {
            continue; // the root of an archive extracted at `/`: the image's root stays
        }
        let source = match kind {
            tar::EntryType::Directory => EntrySource::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let spool = scratch.join(format!("{n}"));
                let mut f = File::create(&spool).map_err(fail)?;
                let size = io::copy(&mut entry, &mut f).map_err(fail)?;
                files.insert(rel.clone());
                EntrySource::File { path: spool, size }
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                EntrySource::Symlink {
                    target: crate::layer::name::encode(&target).into_owned(),
                }
            }
            tar::EntryType::Link => {
                let target = clean_entry(&entry.link_name_bytes().unwrap_or_default());
                if files.contains(&target) {
                    EntrySource::Hardlink {
                        target: join(dest, &target),
                    }
                } else {
                    warnings.push(format!(
                        "ADD {shown}: skipped hard link {rel:?}: its target {target:?} is not an earlier file of the archive"
                    ));
                    continue;
                }
            }
            // PAX and GNU long-name records are consumed by the tar reader itself.
            _ => {
                warnings.push(format!(
                    "ADD {shown}: skipped {rel:?}: devices and fifos are not extracted"
                ));
                continue;
            }
        };
        let mode = if matches!(source, EntrySource::Symlink { .. }) {
            0o777
        } else {
            mode
        };
        out.push(LayerEntry {
            path,
            source,
            mode,
            uid,
            gid,
            mtime,
        });
    }
    Ok(out)
}

/// An archive entry's path made relative and clean: `..` cannot climb above the root.
fn clean_entry(raw: &[u8]) -> String {
    crate::lexical_path::in_root(&crate::layer::name::encode(raw))
}

/// Why an ADD source could not be downloaded or checked. URLs appear redacted ([`redact`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AddError {
    #[error("ADD {url}: writing the download to {path}")]
    Spool {
        url: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The [`Fetch`](super::Fetch) hook's own error.
    #[error("ADD {url}")]
    Fetch {
        url: String,
        #[source]
        source: super::HookError,
    },
    #[error("creating a download dir in the store")]
    DownloadDir(#[source] crate::store::StoreError),
    #[error("--checksum={0}: expected sha256:<64 hex digits> (the digest of the file)")]
    Checksum(String),
    #[error(
        "ADD {url}: checksum mismatch: --checksum says {want}, the download is {got}; fix the checksum or the URL"
    )]
    ChecksumMismatch {
        url: String,
        want: Digest,
        got: Digest,
    },
    #[error("ADD {0}: the URL has no file name; give a destination file path (not ending in /)")]
    NoFileName(String),
    #[error(
        "ADD --checksum applies to file URLs; for the git source {0} pin the commit instead (#<commit id>)"
    )]
    ChecksumOnGit(String),
    #[error("ADD --checksum applies to URL sources only, and {0} is a local path")]
    ChecksumOnPath(String),
    #[error("ADD {0}: only http:// and https:// URLs can be downloaded")]
    Scheme(String),
}

/// What a download brought back besides the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchInfo {
    /// `Last-Modified`, in seconds since the epoch.
    pub last_modified: Option<i64>,
}

/// A downloaded ADD source, spooled to a scratch file.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub path: PathBuf,
    pub size: u64,
    pub digest: Digest,
    /// From `Last-Modified`, when the server sent one.
    pub mtime: Option<u64>,
}

/// Downloads `url` with `fetch` into a new file in `scratch`, hashing as it streams.
pub(crate) fn download(
    fetch: &super::Fetch,
    url: &str,
    scratch: &Path,
    name: &str,
) -> Result<Fetched, AddError> {
    let path = scratch.join(name);
    let spool = |source| AddError::Spool {
        url: redact(url),
        path: path.clone(),
        source,
    };
    let file = File::create(&path).map_err(spool)?;
    let mut w = HashingWriter::new(io::BufWriter::new(file));
    let info = fetch(url, &mut w).map_err(|source| AddError::Fetch {
        url: redact(url),
        source,
    })?;
    let (out, digest, size) = w.finish();
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(spool)?;
    Ok(Fetched {
        path,
        size,
        digest,
        mtime: info.last_modified.and_then(|t| u64::try_from(t).ok()),
    })
}

/// `--checksum=sha256:<hex>`: the digest the download must have.
pub(crate) fn parse_checksum(s: &str) -> Result<Digest, AddError> {
    s.parse::<Digest>()
        .map_err(|_| AddError::Checksum(s.to_string()))
}

/// The file name a URL gives a download into a directory (Docker: the last path segment).
pub(crate) fn url_file_name(url: &str) -> Result<String, AddError> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let path = path.split_once('/').map_or("", |(_, p)| p);
    path.rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_string)
        .ok_or_else(|| AddError::NoFileName(redact(url)))
}

/// `url` without the credentials it may carry (`https://user:pw@host/…`), for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// True for the sources ADD downloads.
pub(crate) fn is_url(path: &str) -> bool {
    path.starts_with("http://") || path.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tarball(entries: &[(&str, &[u8], u32, u64)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, body, mode, uid) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(*mode);
            h.set_uid(*uid);
            h.set_gid(*uid);
            h.set_mtime(1_600_000_000);
            h.set_entry_type(tar::EntryType::Regular);
            // Raw name bytes: the tar writer itself refuses `..`, and hostile archives have it.
            h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
            h.set_cksum();
            b.append(&h, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn every_compression_is_recognised_by_content_and_a_plain_file_is_not() {
        let d = tempfile::tempdir().unwrap();
        let tar = tarball(&[("a.txt", b"a", 0o644, 0)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).unwrap();
        let mut xz =
            lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
        xz.write_all(&tar).unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        let mut text_gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        text_gz.write_all(&[b'x'; 600]).unwrap();
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("plain", tar.clone(), true),
            ("gz", gz.finish().unwrap(), true),
            ("bz", bz.finish().unwrap(), true),
            ("xz", xz.finish().unwrap(), true),
            ("zst", zst, true),
            ("text.tar.gz", text_gz.finish().unwrap(), false),
            ("empty.tar", vec![0; 1024], false),
            ("short", b"hello".to_vec(), false),
        ];
        for (name, bytes, want) in cases {
            let p = d.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let got = open_archive(&p).unwrap();
            assert_eq!(got.is_some(), want, "{name}");
            if let Some(mut r) = got {
                let mut all = Vec::new();
                r.read_to_end(&mut all).unwrap();
                assert_eq!(all, tar, "{name} decodes to the tar");
            }
        }
    }

    /// Made by xz 5.4 (liblzma), the reference the pure-Rust decoder must agree with:
    /// `(printf 'kiln ' | xz -C sha256; printf 'xz ' | xz -C crc32 --x86 --lzma2=preset=1;
    /// printf 'streams\n' | xz -C none; printf '\0\0\0\0')`: three concatenated streams with
    /// every check type, a BCJ filter, and stream padding.
    const XZ_MULTI_STREAM: &[u8] = &[
        0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x0a, 0xe1, 0xfb, 0x0c, 0xa1, 0x02, 0x00, 0x21,
        0x01, 0x16, 0x00, 0x00, 0x00, 0x74, 0x2f, 0xe5, 0xa3, 0x01, 0x00, 0x04, 0x6b, 0x69, 0x6c,
        0x6e, 0x20, 0x00, 0x00, 0x00, 0x00, 0xd3, 0x3b, 0x45, 0x21, 0xb8, 0x5d, 0x35, 0x48, 0x4a,
        0x34, 0x6a, 0xb6, 0x97, 0xd3, 0x8f, 0x08, 0x82, 0xbf, 0xf7, 0x80, 0xcc, 0xf2, 0xb9, 0x92,
        0x08, 0xd6, 0x01, 0x39, 0x28, 0x6c, 0x42, 0xb8, 0x00, 0x01, 0x35, 0x05, 0x12, 0x83, 0xdd,
        0xf2, 0x18, 0x9b, 0x4b, 0x9a, 0x01, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x59, 0x5a, 0xfd, 0x37,
        0x7a, 0x58, 0x5a, 0x00, 0x00, 0x01, 0x69, 0x22, 0xde, 0x36, 0x02, 0x01, 0x04, 0x00, 0x21,
        0x01, 0x10, 0x00, 0x8b, 0x21, 0x6f, 0x49, 0x01, 0x00, 0x02, 0x78, 0x7a, 0x20, 0x00, 0x00,
        0x4e, 0x51, 0x1d, 0x4b, 0x00, 0x01, 0x17, 0x03, 0x07, 0x60, 0x0c, 0xbc, 0x90, 0x42, 0x99,
        0x0d, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x59, 0x5a, 0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00,
        0x00, 0x00, 0xff, 0x12, 0xd9, 0x41, 0x02, 0x00, 0x21, 0x01, 0x16, 0x00, 0x00, 0x00, 0x74,
        0x2f, 0xe5, 0xa3, 0x01, 0x00, 0x07, 0x73, 0x74, 0x72, 0x65, 0x61, 0x6d, 0x73, 0x0a, 0x00,
        0x00, 0x01, 0x18, 0x08, 0x40, 0xa5, 0x46, 0xac, 0x06, 0x72, 0x9e, 0x7a, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x59, 0x5a, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn xz_made_by_liblzma_decodes_across_streams_and_a_truncated_one_fails() {
        let d = tempfile::tempdir().unwrap();
        let whole = d.path().join("multi.xz");
        std::fs::write(&whole, XZ_MULTI_STREAM).unwrap();
        let mut all = Vec::new();
        open_decoded(&whole).unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, b"kiln xz streams\n");
        // Cut inside the last stream: an error, never a silently shorter file.
        let cut = d.path().join("cut.xz");
        std::fs::write(&cut, &XZ_MULTI_STREAM[..XZ_MULTI_STREAM.len() - 30]).unwrap();
        let mut part = Vec::new();
        let res = open_decoded(&cut).unwrap().read_to_end(&mut part);
        assert!(res.is_err(), "a truncated xz decoded to {part:?}");
    }

    #[test]
    fn entries_keep_archive_metadata_and_never_leave_the_destination() {
        let d = tempfile::tempdir().unwrap();
        let tar = tarball(&[
            ("./ok/a", b"a", 0o640, 1234),
            ("../../../etc/evil", b"e", 0o644, 0),
            ("/abs/b", b"b", 0o600, 7),
        ]);
        let mut warn = Vec::new();
        let got = archive_entries(&tar[..], "opt/x", d.path(), "t.tar", &mut warn).unwrap();
        let summary: Vec<(&str, u32, u64)> = got
            .iter()
            .map(|e| (e.path.as_str(), e.mode, e.uid))
            .collect();
        assert_eq!(
            summary,
            [
                ("opt/x/ok/a", 0o640, 1234),
                ("opt/x/etc/evil", 0o644, 0),
                ("opt/x/abs/b", 0o600, 7)
            ]
        );
        let EntrySource::File { path, size } = &got[0].source else {
            panic!("a file")
        };
        assert_eq!((std::fs::read(path).unwrap(), *size), (b"a".to_vec(), 1));
        assert!(warn.is_empty());
    }

    #[test]
    fn hard_links_stay_links_and_devices_are_skipped_with_a_warning() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "bin/tool", &b"tool"[..]).unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Link);
        l.set_size(0);
        l.set_mode(0o755);
        b.append_link(&mut l, "bin/alias", "bin/tool").unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_entry_type(tar::EntryType::Fifo);
        f.set_size(0);
        f.set_cksum();
        b.append_data(&mut f, "pipe", &[][..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut warn = Vec::new();
        let got = archive_entries(&tar[..], "opt", d.path(), "t.tar", &mut warn).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].path, "opt/bin/alias");
        assert_eq!(
            got[1].source,
            EntrySource::Hardlink {
                target: "opt/bin/tool".into()
            },
            "the link names the file's place in the image"
        );
        assert_eq!(warn.len(), 1, "{warn:?}");
        assert!(warn[0].contains("\"pipe\""), "{warn:?}");
    }

    #[test]
    fn url_file_names_come_from_the_path() {
        assert_eq!(url_file_name("https://h/a/b.tgz?x=1").unwrap(), "b.tgz");
        assert_eq!(url_file_name("http://h:8080/f#frag").unwrap(), "f");
        assert!(url_file_name("https://h/").is_err());
        assert!(url_file_name("https://h").is_err());
    }

    #[test]
    fn a_failed_download_names_the_url_without_credentials_and_its_cause_once() {
        let fetch = |_: &str, _: &mut dyn Write| -> Result<FetchInfo, super::super::HookError> {
            Err(io::Error::other("connection reset").into())
        };
        let dir = tempfile::tempdir().unwrap();
        let err = download(&fetch, "https://u:pw@h/f", dir.path(), "x").unwrap_err();
        let shown = crate::error_chain::Causes(&err).to_string();
        assert_eq!(shown, "ADD https://***@h/f: connection reset");
        // The message itself never carries the cause (it is the source).
        assert_eq!(err.to_string(), "ADD https://***@h/f");
    }

    #[test]
    fn credentials_in_urls_never_reach_messages() {
        assert_eq!(redact("https://u:secret@h/a@b"), "https://***@h/a@b");
        assert_eq!(redact("https://h/p?q=a@b"), "https://h/p?q=a@b");
        let err = url_file_name("https://u:secret@h/")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
