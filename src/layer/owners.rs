//! The owners a stack of layers gives its files, read from the tar headers alone: what an
//! unprivileged unpack (which cannot chown) loses, and `COPY --from` a stage must keep, as
//! Docker does.

use std::collections::HashMap;
use std::io::Read;

use super::LayerError;
use super::unpack::decompressor;
use super::whiteouts::{OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Path (as the build context names it: `/`-separated, no leading `/`, `name`-encoded) →
/// (uid, gid).
pub type Owners = HashMap<String, (u32, u32)>;

/// Applies one layer (a compressed or plain tar) on top of `owners`: its whiteouts delete
/// from the layers below first, then its entries set their owners (a layer's whiteouts never
/// hide its own entries).
pub fn apply_layer_owners(blob: impl Read, owners: &mut Owners) -> Result<(), LayerError> {
    let mut archive = tar::Archive::new(decompressor(blob)?);
    let mut set = Vec::new();
    let mut deleted = Vec::new();
    for entry in archive.entries().map_err(LayerError::Input)? {
        let entry = entry.map_err(LayerError::Input)?;
        let raw = entry.path_bytes();
        let path = clean(&raw);
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if name.as_bytes() == OPAQUE_MARKER {
            deleted.push(Deletion::Children(dir.to_string()));
        } else if let Some(gone) =
            name.strip_prefix(std::str::from_utf8(WHITEOUT_PREFIX).expect("ascii"))
        {
            let gone = if dir.is_empty() {
                gone.to_string()
            } else {
                format!("{dir}/{gone}")
            };
            deleted.push(Deletion::Path(gone));
        } else if !path.is_empty() {
            let h = entry.header();
            let id = |v: std::io::Result<u64>| u32::try_from(v.unwrap_or(0)).unwrap_or(0);
            set.push((path, (id(h.uid()), id(h.gid()))));
        }
    }
    for d in deleted {
        match d {
            Deletion::Path(p) => {
                let below = format!("{p}/");
                owners.retain(|k, _| *k != p && !k.starts_with(&below));
            }
            Deletion::Children(dir) if dir.is_empty() => owners.clear(),
            Deletion::Children(dir) => {
                let below = format!("{dir}/");
                owners.retain(|k, _| !k.starts_with(&below));
            }
        }
    }
    owners.extend(set);
    Ok(())
}

enum Deletion {
    Path(String),
    Children(String),
}

/// A tar entry's path as the context names it: no `./`, no leading or trailing `/`, no `..`
/// out of the root (where the unpacker puts the file).
fn clean(raw: &[u8]) -> String {
    crate::lexical_path::in_root(&super::name::encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, u64)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, id) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_uid(*id);
            h.set_gid(*id + 1);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, &[][..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn later_layers_set_owners_and_whiteouts_delete_only_below() {
        let mut owners = Owners::new();
        apply_layer_owners(
            &layer(&[("./a/", 1), ("a/x", 2), ("b/y", 3), ("c/z", 4)])[..],
            &mut owners,
        )
        .unwrap();
        apply_layer_owners(
            &layer(&[
                ("a/x", 5),
                ("b/.wh.y", 0),
                ("c/.wh..wh..opq", 0),
                ("c/new", 6),
            ])[..],
            &mut owners,
        )
        .unwrap();
        assert_eq!(owners.get("a"), Some(&(1, 2)));
        assert_eq!(owners.get("a/x"), Some(&(5, 6)));
        assert_eq!(owners.get("b/y"), None);
        assert_eq!(owners.get("c/z"), None);
        assert_eq!(owners.get("c/new"), Some(&(6, 7)));
        apply_layer_owners(&layer(&[(".wh..wh..opq", 0), ("d", 9)])[..], &mut owners).unwrap();
        assert_eq!(owners.len(), 1);
    }
}
