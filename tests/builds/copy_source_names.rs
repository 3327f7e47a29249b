//! COPY source names are paths and path globs, never `.dockerignore` lines: a source starting
//! with `#` is not a comment and one starting with `!` is not an exception, with or without a
//! wildcard (BuildKit matches sources with Go's `filepath.Match` syntax alone).

use crate::build_support::{context, file_content, file_tree, kiln_build, read_layout, succeeded};

#[test]
fn hash_and_bang_in_copy_sources_are_literal_characters() {
    let ctx = context(&[
        ("#notes.txt", "notes"),
        ("!x", "bang"),
        ("#n1.md", "hash glob"),
        ("!y1", "bang glob"),
        ("y2", "not a match of !y*"),
        (
            "Dockerfile",
            "FROM scratch\n\
             COPY [\"#notes.txt\", \"/\"]\n\
             COPY !x /\n\
             COPY [\"#n*.md\", \"/w/\"]\n\
             COPY !y* /w/\n",
        ),
    ]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let dest = format!("type=oci,dest={}", layout.display());
    let out = kiln_build(
        &work.path().join("store"),
        &["--progress", "plain", "-t", "names:latest", "-o", &dest],
        ctx.path(),
    );
    succeeded(&out);
    let image = read_layout(&layout, "latest");
    let paths: Vec<String> = file_tree(&image).into_keys().collect();
    assert_eq!(paths, ["!x", "#notes.txt", "w", "w/!y1", "w/#n1.md"]);
    assert_eq!(file_content(&image, "#notes.txt").unwrap(), b"notes");
    assert_eq!(file_content(&image, "w/!y1").unwrap(), b"bang glob");
}
