//! What commands take from their surroundings rather than from their flags: the store the
//! global flags and `$KILN_ROOT` name, the Dockerfile on disk or stdin, `SOURCE_DATE_EPOCH`,
//! and the async runtime registry commands run on. Shared by the commands, which never import
//! each other.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::args::GlobalArgs;
use crate::store::Store;

/// Opens the store named by `--root`/`$KILN_ROOT`, else the default location.
/// Opens the store named by `--root`/`$KILN_ROOT`, else the default location. Trees of the
/// user's sub-uids (left by rootless builds) are removed as root of its id map, by this
/// executable re-run as the sandbox's mapped helper.
pub fn open_store(g: &GlobalArgs) -> anyhow::Result<Store> {
    let root = g.root.clone().unwrap_or_else(Store::default_root);
    let store = Store::open(&root)
        .with_context(|| format!("opening the kiln store at {}", root.display()))?;
    Ok(match std::env::current_exe() {
        Ok(exe) => store.with_sub_id_remover(std::sync::Arc::new(move |path| {
            crate::sandbox::remove_tree_as_mapped_root(&exe, path).map_err(std::io::Error::other)
        })),
        Err(_) => store,
    })
}

/// The async runtime registry transfers run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `-f` as given (relative to the working directory), else `Dockerfile`, else `Containerfile`
/// in the context.
pub fn dockerfile_path(context: &Path, file: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(f) = file {
        return Ok(f.to_path_buf());
    }
    for name in ["Dockerfile", "Containerfile"] {
        let p = context.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no Dockerfile or Containerfile in {} (use -f FILE to name one)",
        context.display()
    )
}

/// Reads a Dockerfile from a path or, for `-`, standard input; returns its display name too.
/// Invalid UTF-8 is replaced rather than refused, as Docker reads bytes. A Dockerfile inside
/// `context` is resolved with the context as `/`: a `Dockerfile -> /etc/shadow` there is
/// `<context>/etc/shadow`, never the host file.
pub fn read_dockerfile(file: &Path, context: Option<&Path>) -> anyhow::Result<(String, String)> {
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the Dockerfile from standard input")?;
        return Ok((
            "<stdin>".into(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    bytes = match context {
        Some(ctx) => crate::fs_root::read_maybe_in(ctx, file),
        None => std::fs::read(file),
    }
    .with_context(|| format!("reading {}", file.display()))?;
    Ok((
        file.display().to_string(),
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// `SOURCE_DATE_EPOCH`, when set and not empty: the time reproducible builds clamp to.
pub fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}
