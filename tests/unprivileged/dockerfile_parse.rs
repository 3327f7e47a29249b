//! The parser's own behaviour: directives, escapes, continuations, heredocs, flags, typed
//! instructions and every parse error with its exact message and position.

use kiln::dockerfile::{
    self, Command, CommandLine, Healthcheck, Instruction, ParseError, Source, Span, parse,
    parse_instructions,
};

fn testdata(name: &str) -> String {
    let path = crate::common::repo_root()
        .join("testdata/dockerfile")
        .join(name);
    String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
}

fn instructions(src: &str) -> Vec<Instruction> {
    parse_instructions(&parse(src).unwrap()).unwrap()
}

fn dump(src: &str) -> String {
    parse(src).unwrap().dump()
}

/// The error of parsing and typing `src`, rendered as the CLI shows it.
fn error(src: &str) -> (Span, String) {
    let err: ParseError = parse(src)
        .and_then(|ast| parse_instructions(&ast).map(|_| ()))
        .expect_err(src);
    (err.span, err.kind.to_string())
}

#[test]
fn directives_are_read_only_at_the_top_and_case_insensitively() {
    let ast =
        parse("# Syntax = docker/dockerfile:1.7\n#ESCAPE=`\n# check=skip=all\nFROM a\n").unwrap();
    assert_eq!(
        ast.directives.syntax.as_deref(),
        Some("docker/dockerfile:1.7")
    );
    assert_eq!(ast.directives.escape, '`');
    assert_eq!(ast.directives.check.as_deref(), Some("skip=all"));

    // After a comment, an instruction or a blank line, directives are plain comments.
    for src in [
        "# hello\n# escape=`\nFROM a\n",
        "\n# escape=`\nFROM a\n",
        "FROM a\n# escape=`\n",
    ] {
        assert_eq!(parse(src).unwrap().directives.escape, '\\', "{src:?}");
    }
    // An unknown directive also ends them.
    assert_eq!(
        parse("# foo=bar\n# escape=`\nFROM a\n")
            .unwrap()
            .directives
            .escape,
        '\\'
    );
}

#[test]
fn bom_crlf_and_backtick_escape() {
    let ast = parse(&testdata("bom-escape.Dockerfile")).unwrap();
    assert_eq!(ast.directives.escape, '`');
    // With ` as escape, a trailing backslash does not continue the line.
    assert_eq!(
        ast.dump(),
        "(from \"alpine\")\n(run \"dir c:\\\\\")\n(copy \"a\" \"b\" \"c:\\\\\")\n"
    );
    assert_eq!(
        dump(&testdata("crlf.Dockerfile")),
        "(from \"alpine\")\n(run \"echo a   b\")\n"
    );
}

#[test]
fn continuations_drop_comments_and_blank_lines() {
    let ast = parse("FROM a\nRUN echo hello \\\n# comment\n\n  world\nRUN x\n").unwrap();
    assert_eq!(ast.nodes[1].args(), ["echo hello   world"]);
    assert_eq!((ast.nodes[1].span.line, ast.nodes[1].span.end_line), (2, 5));
    assert_eq!(ast.warnings.len(), 1);
    assert_eq!(ast.warnings[0].rule, "NoEmptyContinuation");
    // A trailing escape at the end of the file ends the instruction.
    assert_eq!(dump("FROM a\nRUN x \\"), "(from \"a\")\n(run \"x\")\n");
    // An escaped escape is not a continuation.
    assert_eq!(
        dump("FROM a\nENV A b\\\\\nENV C d\n"),
        "(from \"a\")\n(env \"A\" \"b\\\\\\\\\" \"\")\n(env \"C\" \"d\" \"\")\n"
    );
}

#[test]
fn keywords_are_case_insensitive_and_columns_point_at_them() {
    let ins = instructions("from alpine AS Build\n   Run echo\n");
    assert_eq!(ins[0].keyword, "from");
    let Command::From(from) = &ins[0].command else {
        panic!()
    };
    assert_eq!(from.name.as_deref(), Some("build"));
    assert_eq!(from.as_keyword.as_deref(), Some("AS"));
    assert_eq!(ins[1].span, Span::new(2, 4, 2));
    assert!(
        matches!(&ins[1].command, Command::Run(r) if r.command == CommandLine::Shell("echo".into()))
    );
}

#[test]
fn heredocs_bodies_names_quoting_and_chomping() {
    let src = testdata("heredocs.Dockerfile");
    let ast = parse(&src).unwrap();
    let ins = parse_instructions(&ast).unwrap();
    let Command::Run(run) = &ins[1].command else {
        panic!()
    };
    assert_eq!(run.command, CommandLine::Shell("<<EOF".into()));
    assert_eq!(run.heredocs.len(), 1);
    assert_eq!(run.heredocs[0].content, "echo hello\necho $HOME\n");
    assert!(run.heredocs[0].expand);
    assert_eq!((ins[1].span.line, ins[1].span.end_line), (3, 6));

    let Command::Run(run) = &ins[2].command else {
        panic!()
    };
    let doc = &run.heredocs[0];
    assert_eq!(
        (doc.name.as_str(), doc.expand, doc.chomp),
        ("EOT", false, true)
    );
    assert_eq!(doc.content, "\techo tabs stripped\n");
    assert_eq!(doc.body(), "echo tabs stripped\n");

    let Command::Run(run) = &ins[3].command else {
        panic!()
    };
    let docs: Vec<_> = run
        .heredocs
        .iter()
        .map(|d| (d.name.as_str(), d.fd, d.expand, d.content.as_str()))
        .collect();
    assert_eq!(
        docs,
        vec![("FILE1", 0, true, "one\n"), ("FILE2", 3, false, "two $x\n")]
    );

    let Command::Copy(copy) = &ins[4].command else {
        panic!()
    };
    assert_eq!(copy.dest, "/dir/");
    let files: Vec<_> = copy
        .sources
        .iter()
        .map(|s| match s {
            Source::Heredoc(h) => (h.name.clone(), h.content.clone()),
            Source::Path(p) => panic!("unexpected path {p}"),
        })
        .collect();
    assert_eq!(
        files,
        vec![("a".into(), "A\n".into()), ("b".into(), "B\n".into())]
    );

    let Command::Run(run) = &ins[5].command else {
        panic!()
    };
    assert!(
        run.heredocs[0]
            .content
            .starts_with("#!/usr/bin/env python3\n")
    );

    // Exec form never has heredocs.
    let Command::Run(run) = &ins[6].command else {
        panic!()
    };
    assert!(run.heredocs.is_empty());
    assert_eq!(
        run.command,
        CommandLine::Exec(vec!["echo".into(), "<<NOT".into()])
    );

    let Command::Onbuild(on) = &ins[7].command else {
        panic!()
    };
    assert_eq!(on.expression, "RUN <<X\ntrigger body\nX");
    assert!(matches!(&*on.trigger, Command::Run(r) if r.heredocs[0].content == "trigger body\n"));
    assert!(matches!(&ins[8].command, Command::Cmd(CommandLine::Shell(s)) if s == "done"));
}

#[test]
fn exec_form_falls_back_to_shell_form_on_invalid_json() {
    let ins = instructions(
        "FROM a\nCMD [\"a\", 'b']\nENTRYPOINT [\"x\"] trailing\nSHELL [\"/bin/bash\", \"-c\"]\n",
    );
    assert_eq!(
        ins[1].command,
        Command::Cmd(CommandLine::Shell("[\"a\", 'b']".into()))
    );
    // Text after the array makes the whole line shell form (Go's json.Unmarshal rejects it).
    assert_eq!(
        ins[2].command,
        Command::Entrypoint(CommandLine::Shell("[\"x\"] trailing".into()))
    );
    assert_eq!(
        ins[3].command,
        Command::Shell(vec!["/bin/bash".into(), "-c".into()])
    );
}

#[test]
fn env_label_arg_forms() {
    let ins =
        instructions("ARG A B=2 C=\"x y\"\nFROM a\nENV k v w\nENV a=1 b=\"2 3\"\nLABEL x=y\n");
    let Command::Arg(args) = &ins[0].command else {
        panic!()
    };
    let decls: Vec<_> = args
        .iter()
        .map(|a| (a.name.as_str(), a.default.as_deref()))
        .collect();
    assert_eq!(
        decls,
        vec![("A", None), ("B", Some("2")), ("C", Some("\"x y\""))]
    );
    let Command::Env(env) = &ins[2].command else {
        panic!()
    };
    assert_eq!(
        (env[0].key.as_str(), env[0].value.as_str(), env[0].equals),
        ("k", "v w", false)
    );
    let Command::Env(env) = &ins[3].command else {
        panic!()
    };
    assert_eq!(env.len(), 2);
    assert_eq!(env[1].value, "\"2 3\"");
}

#[test]
fn flags_are_typed_per_instruction() {
    let ins = instructions(
        "FROM --platform=$BUILDPLATFORM a AS b\n\
         COPY --from=b --chown=1:2 --chmod=644 --link --parents --exclude=*.md --exclude=x s /d/\n\
         ADD --checksum=sha256:ab --keep-git-dir=true --unpack=false https://x/y.tar /d\n\
         RUN --mount=type=cache,target=/c --mount=type=bind,from=b --network=none --security=sandbox make\n\
         HEALTHCHECK --interval=1m30s --timeout=3s --start-period=0s --start-interval=5s --retries=3 CMD [\"true\"]\n\
         HEALTHCHECK NONE\n",
    );
    let Command::From(from) = &ins[0].command else {
        panic!()
    };
    assert_eq!(from.platform.as_deref(), Some("$BUILDPLATFORM"));
    let Command::Copy(c) = &ins[1].command else {
        panic!()
    };
    assert_eq!(
        (c.from.as_deref(), c.chown.as_deref(), c.chmod.as_deref()),
        (Some("b"), Some("1:2"), Some("644"))
    );
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, vec!["*.md", "x"]);
    let Command::Add(a) = &ins[2].command else {
        panic!()
    };
    assert_eq!(
        (a.checksum.as_deref(), a.keep_git_dir, a.unpack),
        (Some("sha256:ab"), true, Some(false))
    );
    let Command::Run(r) = &ins[3].command else {
        panic!()
    };
    assert_eq!(r.mounts.len(), 2);
    assert_eq!(
        (r.network.as_deref(), r.security.as_deref()),
        (Some("none"), Some("sandbox"))
    );
    let Command::Healthcheck(Healthcheck::Cmd {
        interval,
        start_period,
        retries,
        test,
        ..
    }) = &ins[4].command
    else {
        panic!()
    };
    assert_eq!(*interval, Some(std::time::Duration::from_secs(90)));
    assert_eq!(*start_period, None);
    assert_eq!(*retries, Some(3));
    assert_eq!(*test, CommandLine::Exec(vec!["true".into()]));
    assert_eq!(ins[5].command, Command::Healthcheck(Healthcheck::None));
}

#[test]
fn every_parse_error_names_its_place() {
    let cases: &[(&str, (usize, usize), &str)] = &[
        (
            "# escape=`\n# escape=\\\nFROM a\n",
            (2, 1),
            "only one escape parser directive can be used",
        ),
        (
            "# escape=x\nFROM a\n",
            (1, 1),
            "invalid escape token 'x' does not match ` or \\",
        ),
        (
            "FROM a\n  RUN <<EOF\nbody\n",
            (2, 3),
            "unterminated heredoc: no line `EOF` ends it before the end of the file",
        ),
        ("# only a comment\n\n", (2, 1), "file with no instructions"),
        (
            "FROM a\nCMD [\"a\", 1]\n",
            (2, 1),
            "when using JSON array syntax, arrays must be comprised of strings only",
        ),
        (
            "FROM a\nENV onlykey\n",
            (2, 1),
            "ENV must have two arguments",
        ),
        (
            "FROM a\nLABEL a=b c\n",
            (2, 1),
            "Syntax error - can't find = in \"c\". Must be of the form: name=value",
        ),
        ("FROM a\nFOO bar\n", (2, 1), "unknown instruction: FOO"),
        (
            "FROM a\nCOPY --from=a --bogus=1 x y\n",
            (2, 15),
            "unknown flag: --bogus (COPY accepts --from, --chown, --chmod, --link, --parents, --exclude)",
        ),
        (
            "FROM a\nWORKDIR --x=1 /a\n",
            (2, 9),
            "unknown flag: --x (WORKDIR accepts no flags)",
        ),
        (
            "FROM a\nCOPY --from=a --from=b x y\n",
            (2, 15),
            "duplicate flag specified: --from",
        ),
        (
            "FROM a\nCOPY --from x y\n",
            (2, 6),
            "missing a value on flag: --from",
        ),
        (
            "FROM a\nCOPY --link=maybe x y\n",
            (2, 6),
            "expecting boolean value for flag --link, not: maybe",
        ),
        (
            "FROM a\nEXPOSE\n",
            (2, 1),
            "EXPOSE requires at least one argument",
        ),
        (
            "FROM a\nUSER\n",
            (2, 1),
            "USER requires exactly one argument",
        ),
        (
            "FROM a\nCOPY onlyone\n",
            (2, 1),
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined.",
        ),
        ("FROM a\nENV =x\n", (2, 1), "ENV names can not be blank"),
        (
            "FROM a\nCOPY x <<EOF\nhi\nEOF\n",
            (2, 1),
            "COPY cannot accept a heredoc as a destination",
        ),
        (
            "FROM a b\n",
            (1, 1),
            "FROM requires either one or three arguments (FROM image [AS name])",
        ),
        (
            "FROM a AS 1st\n",
            (1, 1),
            "invalid name for build stage: \"1st\", name can't start with a number or contain symbols",
        ),
        (
            "FROM a\nONBUILD ONBUILD RUN x\n",
            (2, 1),
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        (
            "FROM a\nONBUILD from b\n",
            (2, 1),
            "FROM isn't allowed as an ONBUILD trigger",
        ),
        (
            "FROM a\nONBUILD MAINTAINER me\n",
            (2, 1),
            "MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
        (
            "FROM a\nHEALTHCHECK NONE x\n",
            (2, 1),
            "HEALTHCHECK NONE takes no arguments",
        ),
        (
            "FROM a\nHEALTHCHECK CMD\n",
            (2, 1),
            "Missing command after HEALTHCHECK CMD",
        ),
        (
            "FROM a\nHEALTHCHECK CONNECT x\n",
            (2, 1),
            "Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)",
        ),
        (
            "FROM a\nHEALTHCHECK --interval=5 CMD x\n",
            (2, 13),
            "invalid duration \"5\" for --interval (use e.g. 30s, 1m30s, 500ms)",
        ),
        (
            "FROM a\nHEALTHCHECK --timeout=10us CMD x\n",
            (2, 13),
            "Interval \"timeout\" cannot be less than 1ms",
        ),
        (
            "FROM a\nHEALTHCHECK --retries=-1 CMD x\n",
            (2, 13),
            "invalid value \"-1\" for --retries (a whole number >= 0)",
        ),
        (
            "FROM a\nSHELL /bin/sh -c\n",
            (2, 1),
            "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]",
        ),
        (
            "FROM a\nVOLUME [\"\"]\n",
            (2, 1),
            "VOLUME specified can not be an empty string",
        ),
    ];
    for (src, (line, column), message) in cases {
        let (span, got) = error(src);
        assert_eq!(got, *message, "message for {src:?}");
        assert_eq!(
            (span.line, span.column),
            (*line, *column),
            "position for {src:?}"
        );
    }
}

#[test]
fn rendered_error_shows_file_line_column_source_and_caret() {
    let src = "FROM a\nCOPY --bogus x y\n";
    let err = parse_instructions(&parse(src).unwrap()).unwrap_err();
    assert_eq!(
        err.render("Dockerfile", src),
        "Dockerfile:2:6: unknown flag: --bogus (COPY accepts --from, --chown, --chmod, --link, --parents, --exclude)\n 2 | COPY --bogus x y\n   |      ^"
    );
    let _ = dockerfile::render_at; // the same renderer serves the plan's errors
}
