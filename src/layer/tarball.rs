//! Deterministic tar headers: ustar fields set by hand, PAX records for what does not fit.

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

/// Largest value the octal ustar size field holds (11 digits).
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;
/// Largest value the octal ustar uid/gid fields hold (7 digits).
const USTAR_MAX_ID: u64 = 0o7_777_777;

/// Everything a layer tar records about one entry, already mapped and clamped.
#[derive(Debug, Clone)]
pub(crate) struct EntryHeader<'a> {
    /// Path relative to the layer root, `/`-separated, without a leading `./`.
    pub path: &'a [u8],
    pub kind: EntryType,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub link: Option<&'a [u8]>,
    pub device: Option<(u32, u32)>,
    /// (name, value), sorted by name.
    pub xattrs: &'a [(String, Vec<u8>)],
}

/// Writes one entry (PAX extension header if needed, ustar header, data, padding).
pub(crate) fn append<W: Write>(
    b: &mut tar::Builder<W>,
    e: &EntryHeader<'_>,
    data: impl Read,
) -> io::Result<()> {
    let mut h = Header::new_ustar();
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();

    let mut path = e.path.to_vec();
    if e.kind == EntryType::Directory {
        path.push(b'/');
    }
    if !set_name(&mut h, &path) {
        pax.push(("path".into(), path.clone()));
        let cut = path.len().min(100);
        h.as_ustar_mut().expect("ustar").name[..cut].copy_from_slice(&path[..cut]);
    }
    if let Some(link) = e.link {
        let field = &mut h.as_ustar_mut().expect("ustar").linkname;
        if link.len() <= field.len() {
            field[..link.len()].copy_from_slice(link);
        } else {
            pax.push(("linkpath".into(), link.to_vec()));
            field.copy_from_slice(&link[..100]);
        }
    }
    if e.size > USTAR_MAX_SIZE {
        pax.push(("size".into(), e.size.to_string().into_bytes()));
    }
    if e.uid > USTAR_MAX_ID {
        pax.push(("uid".into(), e.uid.to_string().into_bytes()));
    }
    if e.gid > USTAR_MAX_ID {
        pax.push(("gid".into(), e.gid.to_string().into_bytes()));
    }
    for (name, value) in e.xattrs {
        pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
    }

    h.set_entry_type(e.kind);
    h.set_mode(e.mode & 0o7777);
    // Big ids also go into the header in base-256 (what GNU tar and Go write) beside PAX.
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    h.set_size(e.size);
    if let Some((major, minor)) = e.device {
        h.set_device_major(major)?;
        h.set_device_minor(minor)?;
    }
    h.set_cksum();

    if !pax.is_empty() {
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    b.append(&h, data)
}

/// Puts `path` into the ustar name (and prefix) fields; false when it does not fit.
fn set_name(h: &mut Header, path: &[u8]) -> bool {
    let u = h.as_ustar_mut().expect("ustar");
    if path.len() <= u.name.len() {
        u.name[..path.len()].copy_from_slice(path);
        return true;
    }
    // ustar splits at a '/' into prefix (≤155) and name (≤100); a trailing '/' stays in name.
    let body = path.strip_suffix(b"/").unwrap_or(path);
    for (i, &c) in body.iter().enumerate().rev() {
        if c != b'/' {
            continue;
        }
        let (prefix, name) = (&path[..i], &path[i + 1..]);
        if name.len() > u.name.len() {
            return false;
        }
        if prefix.len() <= u.prefix.len() && !name.is_empty() {
            u.prefix[..prefix.len()].copy_from_slice(prefix);
            u.name[..name.len()].copy_from_slice(name);
            return true;
        }
    }
    false
}

/// A reader that yields exactly `size` bytes of a file, or fails if the file changed size
/// while the layer was being written (a torn entry would corrupt the whole tar).
pub(crate) struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Exact<R> {
    pub(crate) fn new(inner: R, size: u64) -> Self {
        Exact { inner, left: size }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self
            .inner
            .read(&mut buf[..want])
            .map_err(|e| io::Error::new(e.kind(), SourceError(e.to_string())))?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                SourceError("file shrank while the layer was being written".into()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Marks an I/O error as coming from reading the source file (not from writing the blob),
/// so the caller can name the right culprit.
#[derive(Debug)]
struct SourceError(String);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

pub(crate) fn is_source_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SourceError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a [u8], xattrs: &'a [(String, Vec<u8>)]) -> EntryHeader<'a> {
        EntryHeader {
            path,
            kind: EntryType::Regular,
            mode: 0o4755,
            uid: 3_000_000,
            gid: 7,
            mtime: 1_700_000_000,
            size: 3,
            link: None,
            device: None,
            xattrs,
        }
    }

    fn read_back(tar_bytes: &[u8]) -> Vec<(Vec<u8>, u64, u32, Vec<(String, Vec<u8>)>)> {
        let mut a = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut x = Vec::new();
            if let Some(p) = e.pax_extensions().unwrap() {
                for r in p {
                    let r = r.unwrap();
                    x.push((r.key().unwrap().to_string(), r.value_bytes().to_vec()));
                }
            }
            out.push((
                e.path_bytes().to_vec(),
                e.header().uid().unwrap(),
                e.header().mode().unwrap(),
                x,
            ));
        }
        out
    }

    #[test]
    fn long_paths_big_ids_and_xattrs_go_into_pax_records() {
        let long = format!("{}/{}", "d".repeat(200), "f".repeat(120));
        let mid = format!("{}/{}", "p".repeat(150), "n".repeat(90));
        let caps = vec![("security.capability".to_string(), vec![1, 0, 0, 2])];
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, &entry(long.as_bytes(), &caps), &b"abc"[..]).unwrap();
        append(&mut b, &entry(mid.as_bytes(), &[]), &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let got = read_back(&bytes);
        assert_eq!(got[0].0, long.as_bytes());
        assert_eq!(got[0].1, 3_000_000);
        assert_eq!(got[0].2, 0o4755);
        assert!(
            got[0]
                .3
                .contains(&("SCHILY.xattr.security.capability".into(), vec![1, 0, 0, 2]))
        );
        // 150 + 90 fits the ustar prefix/name split: no PAX path record needed.
        assert_eq!(got[1].0, mid.as_bytes());
        assert!(!got[1].3.iter().any(|(k, _)| k == "path"));
    }

    #[test]
    fn exact_refuses_a_short_file() {
        let mut r = Exact::new(&b"ab"[..], 3);
        let mut v = Vec::new();
        assert!(is_source_error(&r.read_to_end(&mut v).unwrap_err()));
        let mut r = Exact::new(&b"abcd"[..], 3);
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        assert_eq!(v, b"abc");
    }
}
