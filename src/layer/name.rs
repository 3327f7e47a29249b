//! File names as bytes, carried in `String`s: the names COPY reads from a context or a
//! stage are bytes (Linux allows any but `/` and NUL), while the planner, the ignore
//! matcher, the cache keys and [`super::LayerEntry`] work on `str`. [`encode`] maps a name
//! to a string one to one, and [`decode`] gives the exact bytes back where a file is opened
//! or a tar entry named, so `caf\xe9` lands in the image as `caf\xe9`.
//!
//! Valid UTF-8 stays as it is, except the 256 code points `U+10FF00..=U+10FFFF` (the end of
//! the last private-use plane, which no real name uses). Those stand for one raw byte each
//! (`U+10FF00 + byte`): a byte that is not UTF-8 is written as its escape, and so are the
//! four bytes of a name's own character from that range, so no two names encode alike.

use std::borrow::Cow;

/// The first code point of the escapes; `ESCAPE + b` stands for byte `b`.
const ESCAPE: u32 = 0x10_FF00;

/// Whether `c` is one of the escapes (a name holding one is not its own encoding).
pub fn is_escape_char(c: char) -> bool {
    u32::from(c) >= ESCAPE
}

fn escape(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.push(char::from_u32(ESCAPE + u32::from(b)).expect("a valid code point"));
    }
}

/// The string standing for the name `bytes` (borrowed when it is plain UTF-8).
pub fn encode(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s.chars().any(is_escape_char) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_escape_char(c) {
                escape(&mut out, c.encode_utf8(&mut [0; 4]).as_bytes());
            } else {
                out.push(c);
            }
        }
        escape(&mut out, chunk.invalid());
    }
    Cow::Owned(out)
}

/// The bytes of the name `s` stands for (borrowed when it holds no escape).
pub fn decode(s: &str) -> Cow<'_, [u8]> {
    if !s.chars().any(is_escape_char) {
        return Cow::Borrowed(s.as_bytes());
    }
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        if is_escape_char(c) {
            out.push(u8::try_from(u32::from(c) - ESCAPE).expect("an escape is one byte"));
        } else {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
    }
    Cow::Owned(out)
}

/// [`decode`] as an `OsStr`, for opening the file.
pub fn decode_os(s: &str) -> Cow<'_, std::ffi::OsStr> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    match decode(s) {
        Cow::Borrowed(b) => Cow::Borrowed(std::ffi::OsStr::from_bytes(b)),
        Cow::Owned(v) => Cow::Owned(std::ffi::OsString::from_vec(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_no_two_encode_alike() {
        let names: [&[u8]; 7] = [
            b"plain/caf\xc3\xa9",
            b"caf\xe9",
            b"\xff\xfe/x\x80",
            "own-escape-\u{10FF41}".as_bytes(),
            b"\xf4\x8f\xbd\x81",
            b"",
            b"A",
        ];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            let e = encode(n);
            assert_eq!(&*decode(&e), n, "{e:?}");
            assert!(seen.insert(e.into_owned()));
        }
        // A name's own U+10FF41 is not the escape of `A`.
        assert_ne!(encode("\u{10FF41}".as_bytes()), encode(b"A"));
        assert!(matches!(encode(b"plain"), Cow::Borrowed(_)));
        assert_eq!(decode(&encode(b"caf\xe9")).len(), 4);
    }
}
