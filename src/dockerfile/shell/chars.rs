//! Go's character classes, as BuildKit's lexer and pattern matcher use them for names
//! (`$name`, `${name}`): shared by [`super::lex`] and [`super::pattern`].

use std::sync::LazyLock;

use regex::Regex;

/// Go's `unicode.IsLetter` (general category L). `char::is_alphabetic` is wider (it also takes
/// letter numbers and some combining marks), so non-ASCII goes through the category table.
pub(super) fn is_letter(ch: char) -> bool {
    static LETTER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\p{L}$").expect("valid"));
    if ch.is_ascii() {
        ch.is_ascii_alphabetic()
    } else {
        LETTER.is_match(ch.encode_utf8(&mut [0; 4]))
    }
}

/// Go's `unicode.IsDigit` (general category Nd).
pub(super) fn is_digit(ch: char) -> bool {
    static DIGIT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\p{Nd}$").expect("valid"));
    if ch.is_ascii() {
        ch.is_ascii_digit()
    } else {
        DIGIT.is_match(ch.encode_utf8(&mut [0; 4]))
    }
}
