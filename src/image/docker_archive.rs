//! docker-archive output: the tar `docker save` writes and `docker load` / `podman load` read
//! (`manifest.json`, `repositories`, `<config>.json`, one uncompressed `layer.tar` per layer).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;

use serde::Serialize;

use super::media::{Compression, Layer};
use super::sink::Sink;
use super::stored::StoredImage;
use super::{ImageError, IoContext, Result};
use crate::digest::HashingWriter;
use crate::reference::Reference;
use crate::store::Store;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Writes `image` to the tar file `dest` in docker-archive format, tagged with `names`
/// (references without a tag are left out of `RepoTags`, as Docker does).
pub fn write_docker_archive(
    store: &Store,
    image: &StoredImage,
    names: &[Reference],
    dest: &Path,
) -> Result<()> {
    let mut sink = Sink::tar(dest)?;
    let config_name = format!("{}.json", image.config_digest.hex());
    sink.add_file(&config_name, image.config.len() as u64, &image.config[..])?;
    let scratch_dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut layer_paths = Vec::new();
    for layer in &image.layers {
        let dir = layer.diff_id.hex();
        let path = format!("{dir}/layer.tar");
        if !layer_paths.contains(&path) {
            let (mut tar, size) = uncompressed(store, layer, &scratch_dir)?;
            sink.add_dir(&dir)?;
            sink.add_file(&path, size, &mut tar)?;
        }
        layer_paths.push(path);
    }
    let tagged: Vec<&Reference> = names.iter().filter(|n| n.tag().is_some()).collect();
    let manifest = vec![ManifestEntry {
        config: config_name,
        repo_tags: tagged.iter().map(|n| n.familiar()).collect(),
        layers: layer_paths,
    }];
    let manifest = serde_json::to_vec(&manifest).expect("manifest.json serialises");
    sink.add_file("manifest.json", manifest.len() as u64, &manifest[..])?;
    if let Some(top) = image.layers.last() {
        let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for n in &tagged {
            let tag = n.tag().expect("filtered to tagged names");
            let familiar = n.familiar();
            let repo = familiar
                .strip_suffix(&format!(":{tag}"))
                .unwrap_or(&familiar)
                .to_string();
            repos
                .entry(repo)
                .or_default()
                .insert(tag.to_string(), top.diff_id.hex());
        }
        let repos = serde_json::to_vec(&repos).expect("repositories serialises");
        sink.add_file("repositories", repos.len() as u64, &repos[..])?;
    }
    sink.finish()
}

/// Decompresses a layer blob into an unnamed temp file (streaming; the size must be known
/// before the tar header is written), checking it against the diffID on the way.
fn uncompressed(store: &Store, layer: &Layer, scratch: &Path) -> Result<(File, u64)> {
    let blob = io::BufReader::with_capacity(256 * 1024, store.open_blob(&layer.digest)?);
    let mut reader: Box<dyn Read> = match layer.compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(blob).ctx("read layer", scratch)?),
    };
    let file = tempfile::tempfile_in(scratch).ctx("create temp file in", scratch)?;
    let mut out = HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, file));
    io::copy(&mut reader, &mut out).map_err(|source| ImageError::Io {
        action: "decompress layer",
        path: store.root().join("blobs/sha256").join(layer.digest.hex()),
        source,
    })?;
    let (buf, actual, size) = out.finish();
    if actual != layer.diff_id {
        return Err(ImageError::DiffIdMismatch {
            digest: layer.digest,
            expected: layer.diff_id,
            actual,
        });
    }
    let mut file = buf
        .into_inner()
        .map_err(|e| e.into_error())
        .ctx("write temp file in", scratch)?;
    file.flush().ctx("write temp file in", scratch)?;
    file.rewind().ctx("rewind temp file in", scratch)?;
    Ok((file, size))
}
