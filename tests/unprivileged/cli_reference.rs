//! docs/cli.md shows each command's `--help`: every `## kiln COMMAND` section's `text` block
//! must be exactly what `kiln COMMAND --help` prints, so the reference cannot drift from the
//! flags. `KILN_UPDATE_CLI_DOCS=1 cargo test --test unprivileged cli_reference` rewrites the
//! blocks from the binary (the way they were made); review the diff.

use std::process::Command;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[test]
fn docs_cli_md_shows_each_commands_help() {
    let path = crate::common::repo_root().join("docs/cli.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let sections = help_blocks(&doc);
    assert!(
        sections.len() >= 13,
        "docs/cli.md: expected a `## kiln COMMAND` section with a text block per command, found {}",
        sections.len()
    );
    let mut updated = doc.clone();
    let mut stale = Vec::new();
    for block in &sections {
        let help = help_of(&block.command);
        if help != block.text {
            stale.push(format!(
                "## kiln {}: docs/cli.md has\n{}\n-- but `kiln {} --help` prints --\n{}",
                block.command.join(" "),
                block.text,
                block.command.join(" "),
                help
            ));
            updated = updated.replacen(&block.text, &help, 1);
        }
    }
    if stale.is_empty() {
        return;
    }
    if std::env::var_os("KILN_UPDATE_CLI_DOCS").is_some() {
        std::fs::write(&path, updated).unwrap();
        println!("rewrote {} section(s) of docs/cli.md", stale.len());
        return;
    }
    panic!(
        "docs/cli.md is out of date (KILN_UPDATE_CLI_DOCS=1 rewrites it):\n{}",
        stale.join("\n\n")
    );
}

/// A `## kiln COMMAND` section's first fenced `text` block.
struct HelpBlock {
    command: Vec<String>,
    text: String,
}

fn help_blocks(doc: &str) -> Vec<HelpBlock> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(command) = line.strip_prefix("## kiln ") else {
            continue;
        };
        if lines.next() != Some("") || lines.next() != Some("```text") {
            continue;
        }
        let text: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        out.push(HelpBlock {
            command: command.split_whitespace().map(String::from).collect(),
            text: text.join("\n"),
        });
    }
    out
}

/// `kiln COMMAND --help` as a user without `KILN_ROOT`/`KILN_LOG` sees it (clap shows their
/// values otherwise).
fn help_of(command: &[String]) -> String {
    let out = Command::new(KILN)
        .args(command)
        .arg("--help")
        .env_remove("KILN_ROOT")
        .env_remove("KILN_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "kiln {command:?} --help failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end_matches('\n')
        .to_string()
}
