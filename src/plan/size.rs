//! Sizes with units: the one parser for `RUN --mount=type=tmpfs,size=` and the CLI's byte
//! flags (`push --chunk-size`, `images prune --keep-bytes`).
//!
//! Docker reads every such value with go-units' `RAMInBytes` (`--shm-size`, `--memory`, tmpfs
//! `size=`, BuildKit's mount `size=`, `docker builder prune --keep-storage`): the units are
//! binary whatever the spelling, so `k`, `kb`, `ki` and `kib` all mean 1024 and `10GB` is
//! 10 GiB; a fraction (`1.5g`) and one space before the unit are accepted, case does not
//! matter. kiln reads them the same way, so a value means what it means to `docker build`.

/// Why a value is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size {0:?} (bytes, or a number with a unit: 512k, 64m, 1.5g, 10GB; units are binary)"
)]
pub struct SizeError(pub String);

/// Bytes in `text`, as Docker's `RAMInBytes` reads it (see the module docs).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let bad = || SizeError(text.to_string());
    let lower = text.to_ascii_lowercase();
    let number_end = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(number_end);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let shift = match unit.trim_end_matches('b') {
        _ if unit.len() > 3 || unit.matches('b').count() > 1 => return Err(bad()),
        "" => 0,
        u => {
            let letter = u.strip_suffix('i').unwrap_or(u);
            match letter {
                "k" => 10,
                "m" => 20,
                "g" => 30,
                "t" => 40,
                "p" => 50,
                _ => return Err(bad()),
            }
        }
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (w, Some(f)),
        Some(_) => return Err(bad()),
        None => (number, None),
    };
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let mut bytes = whole.checked_mul(1 << shift).ok_or_else(bad)?;
    if let Some(f) = fraction {
        // As Go's `int64(size * unit)`: the fraction's bytes, truncated.
        let part: f64 = format!("0.{f}").parse().map_err(|_| bad())?;
        bytes = bytes
            .checked_add((part * (1u64 << shift) as f64) as u64)
            .ok_or_else(bad)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_reads_them_binary_units_in_every_spelling() {
        for (text, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("10b", 10),
            ("512k", 512 << 10),
            ("512K", 512 << 10),
            ("512kb", 512 << 10),
            ("512KiB", 512 << 10),
            ("512ki", 512 << 10),
            ("64m", 64 << 20),
            ("5MB", 5 << 20),
            ("4MiB", 4 << 20),
            ("10GB", 10 << 30),
            ("2 g", 2 << 30),
            ("1.5g", 3 << 29),
            ("0.5k", 512),
            ("1t", 1 << 40),
            ("1pb", 1 << 50),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "m",
            "-1",
            "4XB",
            "4 MiB extra",
            "1.2.3g",
            "1.g",
            ".5",
            "5kbb",
            "5bk",
            "5  m",
            "5e3",
            "99999999999p",
        ] {
            assert_eq!(parse_size(bad), Err(SizeError(bad.to_string())), "{bad}");
        }
    }
}
