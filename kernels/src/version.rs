//! Orders version strings the way package versions read: runs of digits compare as
//! numbers (`linux-image-6.1.0-56` is newer than `linux-image-6.1.0-9`), everything
//! else byte by byte.

use std::cmp::Ordering;

/// `a` against `b`, digit runs compared as numbers (leading zeros ignored).
pub(crate) fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let split = |s: &'_ [u8]| {
                    s.iter()
                        .position(|c| !c.is_ascii_digit())
                        .unwrap_or(s.len())
                };
                let (na, nb) = (split(a), split(b));
                let strip = |s: &'_ [u8]| -> Vec<u8> {
                    s.iter().copied().skip_while(|&c| c == b'0').collect()
                };
                let (da, db) = (strip(&a[..na]), strip(&b[..nb]));
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(&db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_compare_as_numbers() {
        assert_eq!(version_cmp("a-010", "a-9"), Ordering::Greater);
        assert_eq!(version_cmp("6.1.0-56", "6.1.0-9"), Ordering::Greater);
        assert_eq!(version_cmp("6.1.0-09", "6.1.0-9"), Ordering::Equal);
        assert_eq!(version_cmp("6.1", "6.1.0"), Ordering::Less);
        assert_eq!(version_cmp("a", "b"), Ordering::Less);
    }
}
