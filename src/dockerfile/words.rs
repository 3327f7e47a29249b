//! Word-level helpers of the parser: BuildKit's word splitting (quotes kept), builder-flag
//! extraction and heredoc-marker recognition. Nothing here expands variables.

use super::ast::Heredoc;

/// Splits `rest` into words on unquoted whitespace, keeping quotes and escapes in the words
/// (they are removed later, at expansion). Used by ENV, LABEL and ARG.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    blank_ok = true;
                    phase = Phase::Quote(ch);
                }
                if ch == escape {
                    // An escape at the very end is dropped; otherwise it is kept together
                    // with the character it protects (even a quote).
                    match chars.next() {
                        None => continue,
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Quote(quote) => {
                let mut ch = ch;
                if ch == quote {
                    phase = Phase::Word;
                }
                // Single quotes protect everything, the escape character included.
                if ch == escape && quote != '\'' {
                    match chars.next() {
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                        Some(next) => {
                            word.push(ch);
                            ch = next;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Spaces => unreachable!("handled above"),
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Takes the leading `--flag[=value]` words off an instruction's arguments. Returns the rest of
/// the line and the flags. `--` ends the flags. Flags always use `\` as escape, as BuildKit.
pub(crate) fn extract_flags(line: &str) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut iter = line.char_indices().peekable();
    while let Some((pos, ch)) = iter.next() {
        if !in_word {
            if ch.is_whitespace() {
                continue;
            }
            if !line[pos..].starts_with("--") {
                return (&line[pos..], flags);
            }
            in_word = true;
        }
        if let Some(q) = quote {
            if ch == q {
                quote = None;
                continue;
            }
            let ch = if ch == '\\' {
                match iter.next() {
                    Some((_, next)) => next,
                    None => {
                        quote = None;
                        continue;
                    }
                }
            } else {
                ch
            };
            word.push(ch);
            continue;
        }
        if ch.is_whitespace() {
            in_word = false;
            if word == "--" {
                return (&line[pos..], flags);
            }
            if blank_ok || !word.is_empty() {
                flags.push(std::mem::take(&mut word));
            }
            word.clear();
            blank_ok = false;
            continue;
        }
        if ch == '\'' || ch == '"' {
            quote = Some(ch);
            blank_ok = true;
            continue;
        }
        let ch = if ch == '\\' {
            match iter.next() {
                Some((_, next)) => next,
                None => continue,
            }
        } else {
            ch
        };
        word.push(ch);
    }
    if in_word && word != "--" && (blank_ok || !word.is_empty()) {
        flags.push(word);
    }
    ("", flags)
}

/// Splits a line into shell words keeping quotes and escapes verbatim: the first step of
/// finding heredoc markers (`<<EOF`, `<<-"EOF"`, `3<<EOF`).
fn raw_shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match quote {
            Some(q) => {
                word.push(ch);
                if ch == q {
                    quote = None;
                } else if ch == '\\' && q == '"' {
                    word.extend(chars.next());
                }
            }
            None if ch.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            None => {
                word.push(ch);
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                } else if ch == '\\' {
                    word.extend(chars.next());
                }
            }
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Removes shell quoting from a heredoc delimiter word.
fn unquote(word: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = word.chars();
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => out.extend(chars.next()),
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => quote = Some(ch),
            (None, '\\') => out.extend(chars.next()),
            (None, c) => out.push(c),
        }
    }
    out
}

/// Recognises one heredoc marker word: `[fd]<<[-]WORD` where WORD has no `<`.
pub fn parse_heredoc_marker(word: &str) -> Option<Heredoc> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let name = unquote(rest);
    if name.is_empty() {
        return None;
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Some(Heredoc {
        fd: word[..digits].parse().unwrap_or(0),
        expand: quotes(rest) == quotes(&name),
        chomp,
        name,
        content: String::new(),
    })
}

/// Every heredoc marker on a logical line, in order.
pub(crate) fn heredocs_in_line(line: &str) -> Vec<Heredoc> {
    raw_shell_words(line)
        .iter()
        .filter_map(|w| parse_heredoc_marker(w))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"a="b c" d=e\ f 'g\'"#, '\\'),
            vec![r#"a="b c""#, r"d=e\ f", r"'g\'"]
        );
    }

    #[test]
    fn flags_stop_at_first_non_flag_and_double_dash() {
        assert_eq!(
            extract_flags("--from=a --chown=\"1 2\" src dst"),
            (
                "src dst",
                vec!["--from=a".to_string(), "--chown=1 2".to_string()]
            )
        );
        assert_eq!(
            extract_flags("--link -- --x y"),
            (" --x y", vec!["--link".into()])
        );
        assert_eq!(extract_flags("-x"), ("-x", vec![]));
    }

    #[test]
    fn heredoc_markers() {
        let h = heredocs_in_line(r#"RUN 3<<-"EOF" cat <<'X' echo "<<NO" <<B"#);
        let names: Vec<_> = h
            .iter()
            .map(|h| (h.name.as_str(), h.fd, h.expand, h.chomp))
            .collect();
        assert_eq!(
            names,
            vec![
                ("EOF", 3, false, true),
                ("X", 0, false, false),
                ("B", 0, true, false)
            ]
        );
        assert!(parse_heredoc_marker("<<").is_none());
        assert!(parse_heredoc_marker("a<<b").is_none());
    }
}
