//! Parsing speed: a generated 5,000-line Dockerfile, raw parse and parse + typing.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use kiln::dockerfile::{parse, parse_instructions};

/// About 5,000 lines mixing every common form: continuations, heredocs, JSON, flags, ENV.
fn generated_dockerfile() -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine\n");
    let mut stage = 0;
    while s.lines().count() < 5_000 {
        s.push_str(&format!(
            "FROM --platform=$BUILDPLATFORM ${{BASE}}:3.{stage} AS stage{stage}\n\
             ENV A=1 B=\"two words\" C=three\\ words\n\
             LABEL org.opencontainers.image.title=\"kiln\" version=1.{stage}\n\
             RUN apt-get update \\\n    && apt-get install -y curl git \\\n    # a comment\n    && rm -rf /var/lib/apt/lists/*\n\
             COPY --from=stage0 --chown=1000:1000 --chmod=644 src/ /app/src/\n\
             RUN --mount=type=cache,target=/root/.cache <<EOF\nset -e\necho building $A\nmake -j2\nEOF\n\
             CMD [\"/app/run\", \"--port\", \"8080\"]\n\
             HEALTHCHECK --interval=30s --timeout=3s CMD curl -f http://localhost/ || exit 1\n\n"
        ));
        stage += 1;
    }
    s
}

fn bench(c: &mut Criterion) {
    let src = generated_dockerfile();
    let lines = src.lines().count();
    c.bench_function(&format!("parse {lines} lines"), |b| {
        b.iter(|| parse(black_box(&src)).unwrap())
    });
    c.bench_function(&format!("parse + type {lines} lines"), |b| {
        b.iter(|| parse_instructions(&parse(black_box(&src)).unwrap()).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
