//! Heredocs in `kiln build`: `RUN <<EOF` runs the script, `RUN <<EOF cmd` pipes it to the
//! command, `COPY <<EOF` creates the file, expanded unless the delimiter is quoted (BuildKit's
//! rule). FROM the busybox base in a loopback registry.

use super::build_dockerfile_features::{build, text};
use crate::build_support::bases_or_skip;

#[test]
fn heredocs_run_scripts_and_create_files() {
    let Some(bases) = bases_or_skip() else { return };
    let dockerfile = format!(
        "# syntax=docker/dockerfile:1\n\
         FROM {}\n\
         ARG WHO=heredocs\n\
         RUN <<EOF\n\
         echo one > /h1\n\
         echo two >> /h1\n\
         EOF\n\
         RUN <<EOF sh -c 'cat > /h2'\n\
         piped to the command's stdin\n\
         EOF\n\
         COPY <<EOF /etc/greeting\n\
         hello $WHO\n\
         EOF\n\
         COPY <<'EOF' /etc/literal\n\
         hello $WHO\n\
         EOF\n",
        bases.busybox()
    );
    let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = build(tmp.path(), ctx.path(), &[]);
    assert_eq!(text(&image, "h1").as_deref(), Some("one\ntwo\n"));
    assert_eq!(
        text(&image, "h2").as_deref(),
        Some("piped to the command's stdin\n")
    );
    // An unquoted delimiter expands variables, a quoted one does not (BuildKit's rule).
    assert_eq!(
        text(&image, "etc/greeting").as_deref(),
        Some("hello heredocs\n")
    );
    assert_eq!(text(&image, "etc/literal").as_deref(), Some("hello $WHO\n"));
}
