//! `kiln images`, `inspect`, `tag`, `rmi`, `prune`, `save`: the local store from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use super::args::{GlobalArgs, parse_duration, parse_size};
use super::env::open_store;
use crate::Reference;
use crate::error_chain::Causes;
use crate::image::{LayoutKind, Output, Platform, Stored, write_docker_archive};
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Show full image IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, serde::Serialize)]
struct ImageRow {
    name: String,
    repository: String,
    tag: String,
    id: String,
    digest: String,
    created: Option<DateTime<Utc>>,
    size: u64,
}

/// One row per name; a multi-platform index is one row, its ID the index digest (as docker's
/// containerd store shows it), its size every member's. An image that cannot be read (a
/// missing blob) still gets its row, with what is known, and a warning: the listing must not
/// fail on it.
fn rows(store: &Store) -> anyhow::Result<Vec<ImageRow>> {
    let mut rows = Vec::new();
    for record in store.list_images()? {
        let familiar = record.name.familiar();
        let tag = record.name.tag().unwrap_or("<none>").to_string();
        let repository = familiar
            .strip_suffix(&format!(":{tag}"))
            .unwrap_or(&familiar)
            .to_string();
        let (id, created, size) = match Stored::load(store, &record.manifest) {
            Ok(image) => (image.id(), image.created(), image.size()),
            Err(e) => {
                eprintln!("warning: {familiar}: {}", Causes(&e));
                (record.manifest, None, 0)
            }
        };
        rows.push(ImageRow {
            name: record.name.to_string(),
            repository,
            tag,
            id: id.to_string(),
            digest: record.manifest.to_string(),
            created,
            size,
        });
    }
    Ok(rows)
}

pub fn images(g: &GlobalArgs, a: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let rows = rows(&store)?;
    let short = |id: &str| {
        let hex = id.trim_start_matches("sha256:");
        if a.no_trunc {
            id.to_string()
        } else {
            hex[..12].to_string()
        }
    };
    if a.quiet {
        for r in &rows {
            println!("{}", short(&r.id));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.format == ListFormat::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = Utc::now();
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.repository.clone(),
                r.tag.clone(),
                short(&r.id),
                r.created.map_or("N/A".into(), |c| human_age(c, now)),
                human_size(r.size),
            ]
        })
        .collect();
    let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// Sizes the way `docker images` prints them: decimal units, four significant digits
/// (Go's `%.4g`), trailing zeros dropped.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    let int_digits = (v.max(1.0).log10().floor() as usize) + 1;
    let decimals = 4usize.saturating_sub(int_digits);
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[unit])
}

/// `5 minutes ago`, `3 days ago`, as `docker images` shows the age.
fn human_age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds();
    if secs < 1 {
        return "Less than a second ago".into();
    }
    let (n, unit) = match secs {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 14 => (s / 86_400, "day"),
        s if s < 86_400 * 60 => (s / (86_400 * 7), "week"),
        s if s < 86_400 * 365 * 2 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    let n = if n == 1 && unit == "hour" {
        "About an".to_string()
    } else if n == 1 {
        "1".to_string()
    } else {
        n.to_string()
    };
    format!("{n} {unit}{plural} ago")
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Image name, ID or digest.
    pub image: String,
}

pub fn inspect(g: &GlobalArgs, a: InspectArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let digest = store.resolve(&a.image)?;
    let image = Stored::load(&store, &digest)?;
    let names: Vec<String> = store
        .list_images()?
        .into_iter()
        .filter(|r| r.manifest == digest)
        .map(|r| r.name.to_string())
        .collect();
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b);
    let mut out = serde_json::json!({
        "Id": image.id(),
        "Digest": image.digest(),
        "RepoTags": names,
        "Size": image.size(),
    });
    match &image {
        Stored::Image(i) => {
            out["Manifest"] = json(&i.manifest)?;
            out["Config"] = json(&i.config)?;
        }
        // Each member as a single image shows, under the platform it serves.
        Stored::Index(index) => {
            out["Index"] = json(&index.bytes)?;
            let members = index
                .members
                .iter()
                .map(|m| {
                    Ok(serde_json::json!({
                        "Platform": m.platform.to_string(),
                        "Id": m.image.config_digest,
                        "Digest": m.image.manifest_digest,
                        "Size": m.image.size(),
                        "Manifest": json(&m.image.manifest)?,
                        "Config": json(&m.image.config)?,
                    }))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            out["Manifests"] = members.into();
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// The image to name: a name, ID or digest.
    pub source: String,
    /// The new name (`name[:tag]`).
    pub target: String,
}

pub fn tag(g: &GlobalArgs, a: TagArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let digest = store.resolve(&a.source)?;
    let target: Reference = a.target.parse()?;
    if target.digest().is_some() {
        bail!(
            "cannot tag with a digest reference {:?}: give a name with a tag, e.g. app:1.0",
            a.target
        );
    }
    store.tag(&target, &digest)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// Image names (or IDs: removes every name of that image).
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn rmi(g: &GlobalArgs, a: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let mut failed = false;
    for input in &a.images {
        match untag_all(&store, input) {
            Ok(names) => {
                for n in names {
                    println!("Untagged: {}", n.familiar());
                }
            }
            Err(e) => {
                eprintln!("error: {input}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A name removes itself; an ID or digest removes every name of that image.
fn untag_all(store: &Store, input: &str) -> anyhow::Result<Vec<Reference>> {
    let records = store.list_images()?;
    if let Ok(name) = input.parse::<Reference>()
        && records.iter().any(|r| r.name == name)
    {
        store.untag(&name)?;
        return Ok(vec![name]);
    }
    let digest = store.resolve(input)?;
    let mut removed = Vec::new();
    for r in records.into_iter().filter(|r| r.manifest == digest) {
        store.untag(&r.name)?;
        removed.push(r.name);
    }
    Ok(removed)
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Also drop build-cache entries not used for this long (e.g. 36h, 7d, 90m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_duration: Option<std::time::Duration>,
    /// Also trim the build cache, least recently used first, to this many bytes of layers
    /// (e.g. 10GB, 512MiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub keep_bytes: Option<u64>,
}

pub fn prune(g: &GlobalArgs, a: PruneArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    if a.keep_duration.is_some() || a.keep_bytes.is_some() {
        let t = crate::build::trim_cache(&store, a.keep_duration, a.keep_bytes)?;
        println!(
            "Dropped {} build-cache entries; {} of cached layers kept",
            t.entries,
            human_size(t.kept_bytes)
        );
    }
    let r = store.prune()?;
    println!(
        "Deleted {} blobs, {} unpacked layers, {} cache entries, {} leftover temp files, \
         {} scratch dirs of interrupted builds",
        r.blobs, r.layer_dirs, r.cache_entries, r.temp_files, r.scratch_dirs
    );
    println!("Total reclaimed space: {}", human_size(r.bytes));
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveFormat {
    /// docker-archive: what `docker load` and `podman load` read (the default, as docker save).
    Docker,
    /// OCI image layout in a tar (`oci-archive`).
    Oci,
}

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// The image to save: a name, ID or digest.
    pub image: String,
    /// The archive file to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Archive format.
    #[arg(long, value_enum, default_value_t = SaveFormat::Docker)]
    pub format: SaveFormat,
    /// For a multi-platform image saved as a docker archive (one platform's image, as
    /// `docker save`): the platform to save (default: this machine's). An OCI archive holds
    /// every platform.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

pub fn save(g: &GlobalArgs, a: SaveArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let digest = store.resolve(&a.image)?;
    let image = Stored::load(&store, &digest)?;
    // Saved by name: that name; by ID: every name the image has.
    let records = store.list_images()?;
    let by_name = a
        .image
        .parse::<Reference>()
        .ok()
        .filter(|n| records.iter().any(|r| &r.name == n));
    let names: Vec<Reference> = match by_name {
        Some(n) => vec![n],
        None => records
            .into_iter()
            .filter(|r| r.manifest == digest)
            .map(|r| r.name)
            .collect(),
    };
    let saving = || format!("saving {} to {}", a.image, a.output.display());
    match a.format {
        SaveFormat::Docker => {
            let platform = match &a.platform {
                Some(p) => Platform::parse(p).context("--platform")?,
                None => Platform::host(),
            };
            let one = image.for_platform(&platform).with_context(|| {
                format!(
                    "saving {}: choose the platform to save with --platform",
                    a.image
                )
            })?;
            write_docker_archive(&store, one, &names, &a.output).with_context(saving)?;
        }
        SaveFormat::Oci => {
            let out = Output::Oci {
                dest: a.output.clone(),
                kind: LayoutKind::Tar,
            };
            out.write(&store, &image, &names).with_context(saving)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_docker() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(7_812_345), "7.812MB");
        assert_eq!(human_size(123_456_789), "123.5MB");
        assert_eq!(human_size(5_000_000_000), "5GB");
        assert_eq!(human_size(1_000), "1kB");
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let ago = |s| human_age(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(30), "30 seconds ago");
        assert_eq!(ago(3600), "About an hour ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(ago(400 * 86_400), "13 months ago");
    }
}
