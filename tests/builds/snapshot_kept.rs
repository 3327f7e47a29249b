//! A step's result is kept as the directory it was made in (issue 13): a RUN's overlay upper
//! dir becomes the store's unpacked layer (moved, not unpacked again from the layer's blob),
//! and `COPY --from` a stage still sees exactly the stage's files when its sources can be read
//! straight from one such directory (and when they cannot: a deletion, several layers).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::build_support::{
    bases_or_skip, context, file_content, file_tree, kiln_build, read_layout, succeeded,
};

/// The diffIDs of an image's layers, bottom first.
fn diff_ids(image: &crate::build_support::LayoutImage) -> Vec<String> {
    image.config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

fn layer_dir(store: &Path, diff_id: &str) -> std::path::PathBuf {
    store
        .join("layers")
        .join(diff_id.strip_prefix("sha256:").unwrap())
}

#[test]
fn a_run_result_is_the_store_layer_it_was_made_as() {
    let Some(bases) = bases_or_skip() else { return };
    if !crate::build_support::is_root() {
        println!("SKIPPED: needs root (chroot isolation with overlay)");
        return;
    }
    // The file's inode as the step saw it: overlay shows an upper-only file's own inode
    // when all layers are on one filesystem, as the store's are.
    let dockerfile = format!(
        "FROM {}\nRUN echo made > /made && stat -c %i /made > /made.ino\nRUN cat /made\n",
        bases.busybox()
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let store = tempfile::tempdir().unwrap();
    let layout = ctx.path().join("layout");
    let out = kiln_build(
        store.path(),
        &[
            "--progress",
            "plain",
            "--isolation",
            "chroot",
            "-t",
            "kept",
            &format!("--output=type=oci,dest={}", layout.display()),
        ],
        ctx.path(),
    );
    let log = succeeded(&out);
    if log.contains("copy of their root") {
        println!("SKIPPED: no overlay here (the copy fallback makes its own upper dir)");
        return;
    }
    let image = read_layout(&layout, "latest");
    let run_layer = diff_ids(&image)
        .into_iter()
        .nth_back(1)
        .expect("the RUN's layer");
    let seen = String::from_utf8(file_content(&image, "made.ino").unwrap()).unwrap();
    let dir = layer_dir(store.path(), &run_layer);
    let kept = std::fs::metadata(dir.join("made")).unwrap();
    assert_eq!(
        kept.ino().to_string(),
        seen.trim(),
        "the store's layer dir holds the file the step wrote, not a copy unpacked from the blob"
    );
    assert_eq!(std::fs::read(dir.join("made")).unwrap(), b"made\n");
    // Nothing of the step is left in scratch.
    let scratch: Vec<_> = std::fs::read_dir(store.path().join("scratch"))
        .unwrap()
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}

#[test]
fn copy_from_a_stage_sees_its_files_whether_read_in_place_or_merged() {
    let Some(bases) = bases_or_skip() else { return };
    if !crate::build_support::is_root() {
        println!("SKIPPED: needs root (chroot isolation)");
        return;
    }
    let b = bases.busybox();
    let dockerfile = format!(
        "FROM {b} AS gen\n\
         RUN mkdir -p /out/sub /del && echo one > /out/sub/one && ln -s /etc/shadow /out/shadow \
             && echo a > /del/a && echo b > /del/b && echo f > /file\n\
         RUN rm /del/a\n\
         FROM {b}\n\
         COPY --from=gen /out/ /srv/out/\n\
         COPY --from=gen /del /srv/del\n\
         COPY --from=gen /file /etc/passwd /srv/\n"
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let store = tempfile::tempdir().unwrap();
    let layout = ctx.path().join("layout");
    succeeded(&kiln_build(
        store.path(),
        &[
            "--isolation",
            "chroot",
            &format!("--output=type=oci,dest={}", layout.display()),
        ],
        ctx.path(),
    ));
    let image = read_layout(&layout, "latest");
    let tree = file_tree(&image);
    let has = |p: &str| tree.contains_key(p);
    // One layer: read in place; the link inside stays a link (never followed to the host).
    assert_eq!(
        file_content(&image, "srv/out/sub/one").as_deref(),
        Some(&b"one\n"[..])
    );
    assert_eq!(tree["srv/out/shadow"].kind, "symlink -> /etc/shadow");
    // Deleted in a later layer of the stage: absent, the other file kept.
    assert!(!has("srv/del/a"), "{:?}", tree.keys().collect::<Vec<_>>());
    assert_eq!(
        file_content(&image, "srv/del/b").as_deref(),
        Some(&b"b\n"[..])
    );
    // Sources from two layers (the RUN's and the base's) in one COPY.
    assert_eq!(
        file_content(&image, "srv/file").as_deref(),
        Some(&b"f\n"[..])
    );
    assert!(
        file_content(&image, "srv/passwd")
            .unwrap()
            .starts_with(b"root:")
    );
}
