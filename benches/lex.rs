//! Shell-word expansion throughput: typical instruction words, every operator (wildcard
//! patterns compiled once and cached, and on first use), word splitting of a long ENV line,
//! and a 200-line heredoc body.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln::dockerfile::shell::ShellLex;

fn env() -> HashMap<String, String> {
    let mut env: HashMap<String, String> = (0..50)
        .map(|i| (format!("VAR{i}"), format!("value-{i}")))
        .collect();
    for (k, v) in [
        ("VERSION", "v1.2.3"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "amd64"),
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("URL", "http://example.com/releases/app-1.2.3.tar.gz"),
    ] {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

fn bench(c: &mut Criterion) {
    let lex = ShellLex::new('\\');
    let env = env();
    let mut group = c.benchmark_group("lex");

    let simple = "${TARGETOS}/${TARGETARCH}:$VERSION";
    group.throughput(Throughput::Bytes(simple.len() as u64));
    group.bench_function("process_word/simple", |b| {
        b.iter(|| lex.process_word(black_box(simple), &env).unwrap())
    });

    let operators = "app-${VERSION#v}-${URL##*/}-${URL%.tar.gz}-${PATH//:/;}-${NONE:-d}-${VAR1:+x}";
    group.throughput(Throughput::Bytes(operators.len() as u64));
    group.bench_function("process_word/operators", |b| {
        b.iter(|| lex.process_word(black_box(operators), &env).unwrap())
    });

    // 100 distinct wildcard patterns cycle through the 64-entry regex cache: every call
    // compiles its regular expression, the cost of a pattern's first use.
    let uncached: Vec<String> = (0..100).map(|i| format!("${{URL##*{i}/}}")).collect();
    let mut next = 0;
    group.throughput(Throughput::Elements(1));
    group.bench_function("process_word/wildcard_pattern_first_use", |b| {
        b.iter(|| {
            next = (next + 1) % uncached.len();
            lex.process_word(black_box(&uncached[next]), &env).unwrap()
        })
    });

    let env_line: String = (0..50)
        .map(|i| format!("K{i}=\"$VAR{i} and ${{VAR{i}:-x}}\" L{i}=plain\\ text "))
        .collect();
    group.throughput(Throughput::Bytes(env_line.len() as u64));
    group.bench_function("process_words/env_line_100_pairs", |b| {
        b.iter(|| lex.process_words(black_box(&env_line), &env).unwrap())
    });

    let heredoc: String = (0..200)
        .map(|i| {
            format!(
                "echo \"building $VERSION for ${{TARGETARCH}}\" 'step {i}' > /tmp/$VAR{}\n",
                i % 50
            )
        })
        .collect();
    group.throughput(Throughput::Bytes(heredoc.len() as u64));
    group.bench_function("process_heredoc/200_lines", |b| {
        b.iter(|| lex.process_heredoc(black_box(&heredoc), &env).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
