//! What one directory entry of a layer source is: its kept xattrs and, for overlayfs upper
//! dirs, whether it is a whiteout or an opaque directory.

use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Overlay's private xattrs live under these prefixes (`userxattr` mounts use `user.`).
const OVERLAY_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

/// xattrs that describe the host, not the image content: never written to a layer.
fn is_host_only(name: &str) -> bool {
    OVERLAY_PREFIXES.iter().any(|p| name.starts_with(p)) || name == "security.selinux"
}

/// All xattrs of `path` (not following symlinks), sorted by name.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let names: Vec<OsString> = match xattr::list(path) {
        Ok(list) => list.collect(),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        // A non-UTF-8 xattr name cannot be a PAX record key; no real image uses one.
        let Ok(key) = std::str::from_utf8(name.as_bytes()) else {
            continue;
        };
        if let Some(value) = xattr::get(path, &name)? {
            out.push((key.to_string(), value));
        }
    }
    out.sort();
    Ok(out)
}

fn overlay_attr<'a>(xattrs: &'a [(String, Vec<u8>)], attr: &str) -> Option<&'a [u8]> {
    xattrs.iter().find_map(|(k, v)| {
        OVERLAY_PREFIXES
            .iter()
            .any(|p| k.strip_prefix(p) == Some(attr))
            .then_some(v.as_slice())
    })
}

/// An overlayfs whiteout: a 0/0 char device, or (kernel ≥ 6.7 "xwhiteout", and what
/// userxattr mounts may use) an empty file carrying an `overlay.whiteout` xattr.
pub(crate) fn is_whiteout(meta: &Metadata, xattrs: &[(String, Vec<u8>)]) -> bool {
    let ft = meta.file_type();
    (ft.is_char_device() && meta.rdev() == 0)
        || (ft.is_file() && meta.len() == 0 && overlay_attr(xattrs, "whiteout").is_some())
}

/// An opaque directory hides everything below it in lower layers. Only the value `y` means
/// opaque: `x` marks a directory that merely contains xattr whiteouts.
pub(crate) fn is_opaque(meta: &Metadata, xattrs: &[(String, Vec<u8>)]) -> bool {
    meta.is_dir() && overlay_attr(xattrs, "opaque") == Some(b"y")
}

/// The xattrs that go into the layer.
pub(crate) fn kept(xattrs: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    xattrs
        .into_iter()
        .filter(|(k, _)| !is_host_only(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(k: &str, v: &[u8]) -> (String, Vec<u8>) {
        (k.to_string(), v.to_vec())
    }

    #[test]
    fn overlay_and_selinux_xattrs_are_dropped_capabilities_kept() {
        let all = vec![
            x("security.capability", b"\x01"),
            x("security.selinux", b"ctx"),
            x("trusted.overlay.opaque", b"y"),
            x("user.overlay.origin", b""),
            x("user.mime", b"text"),
        ];
        let keys: Vec<String> = kept(all).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["security.capability", "user.mime"]);
    }

    #[test]
    fn only_opaque_y_is_opaque() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        assert!(is_opaque(&meta, &[x("user.overlay.opaque", b"y")]));
        assert!(is_opaque(&meta, &[x("trusted.overlay.opaque", b"y")]));
        assert!(!is_opaque(&meta, &[x("user.overlay.opaque", b"x")]));
        assert!(!is_opaque(&meta, &[]));
    }
}
