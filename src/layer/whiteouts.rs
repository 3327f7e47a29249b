//! `layer_whiteouts`: the deletions a layer records, without unpacking it.
//!
//! An unpacked layer directory no longer shows what the layer deleted (a whiteout applied to
//! an empty directory leaves nothing behind), yet a merged view of an image's layers — COPY
//! looking up the parent directories and symlinks of its destination — needs exactly that.

use std::io::Read;

use super::LayerError;
use super::resolve::split_entry;
use super::unpack::decompressor;

/// One deletion recorded in a layer, as an image path without a leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Whiteout {
    /// `.wh.<name>`: the path is deleted from the layers below.
    Path(String),
    /// `.wh..wh..opq`: the directory's contents from the layers below are hidden.
    Opaque(String),
}

/// Lists the whiteouts of the (gzip/zstd/plain) layer read from `blob`, streaming.
pub fn layer_whiteouts(blob: impl Read) -> Result<Vec<Whiteout>, LayerError> {
    let mut archive = tar::Archive::new(decompressor(blob)?);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(LayerError::Input)? {
        let entry = entry.map_err(LayerError::Input)?;
        let name = entry.path_bytes();
        let Some((parents, last)) = split_entry(&name) else {
            continue;
        };
        let dir: Vec<String> = parents
            .iter()
            .filter(|c| **c != b"..")
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let dir = dir.join("/");
        if last == b".wh..wh..opq" {
            out.push(Whiteout::Opaque(dir));
        } else if let Some(victim) = last.strip_prefix(b".wh.") {
            if victim.is_empty() || victim == b"." || victim == b".." {
                continue;
            }
            let victim = String::from_utf8_lossy(victim);
            out.push(Whiteout::Path(if dir.is_empty() {
                victim.into_owned()
            } else {
                format!("{dir}/{victim}")
            }));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_whiteouts_and_opaque_markers_of_a_gzip_layer() {
        let mut b = tar::Builder::new(Vec::new());
        for p in [
            "etc/.wh.passwd",
            "var/cache/.wh..wh..opq",
            "./.wh.tmp",
            "usr/bin/ls",
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, p, &[][..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let got = layer_whiteouts(&gz.finish().unwrap()[..]).unwrap();
        assert_eq!(
            got,
            [
                Whiteout::Path("etc/passwd".into()),
                Whiteout::Opaque("var/cache".into()),
                Whiteout::Path("tmp".into()),
            ]
        );
    }
}
