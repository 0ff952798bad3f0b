//! `application/x-www-form-urlencoded` parsing that refuses invalid UTF-8 instead of hiding it.
//!
//! Common parsers replace undecodable bytes with U+FFFD, which would silently alter a publisher's
//! data. Mercure requires UTF-8 field names and values, so this parser percent-decodes each pair and
//! reports the first invalid one. Both publish bodies and subscription query strings go through it.

use percent_encoding::percent_decode;

/// A pair whose name or value is not valid UTF-8 once decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Decodes `input` into name/value pairs in order. `+` means space; a name without `=` has an empty
/// value; empty segments (`a=1&&b=2`) are skipped.
pub fn parse_pairs(input: &[u8]) -> Result<Vec<(String, String)>, InvalidUtf8> {
    let mut out = Vec::new();
    for segment in input.split(|b| *b == b'&') {
        if segment.is_empty() {
            continue;
        }
        let (name, value) = match segment.iter().position(|b| *b == b'=') {
            Some(i) => (&segment[..i], &segment[i + 1..]),
            None => (segment, &b""[..]),
        };
        out.push((decode(name)?, decode(value)?));
    }
    Ok(out)
}

/// Decodes one name or value: `+` to a space, then percent-decoding, into one allocation of the
/// raw length (decoding never grows it): a publish's 200-byte `data` costs one allocation, not a
/// growing buffer. A literal `+` is never a hex digit, so no escape spans one, and decoding the
/// pieces between them is decoding the whole with `+` as a space (a `%2B` stays a `+`).
fn decode(raw: &[u8]) -> Result<String, InvalidUtf8> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, piece) in raw.split(|&b| b == b'+').enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend(percent_decode(piece));
    }
    String::from_utf8(out).map_err(|_| InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs_in_order() {
        let pairs = parse_pairs(b"topic=a%2Fb&topic=c+d&private&data=%C3%A9&&x=").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("topic".into(), "a/b".into()),
                ("topic".into(), "c d".into()),
                ("private".into(), "".into()),
                ("data".into(), "é".into()),
                ("x".into(), "".into()),
            ]
        );
    }

    #[test]
    fn refuses_invalid_utf8() {
        assert_eq!(parse_pairs(b"data=%FF"), Err(InvalidUtf8));
        assert_eq!(parse_pairs(b"data=\xff"), Err(InvalidUtf8));
    }

    #[test]
    fn decodes_as_percent_decoding_after_plus_to_space() {
        for raw in [
            "",
            "a",
            "a+b",
            "%2B+%2b",
            "%41%4a%4A",
            "%",
            "%4",
            "%4g",
            "%%41",
            "%+41",
            "100%+",
            "%C3%A9+%E2%82%AC",
            "x%2",
            "%zz%41",
        ] {
            let spaced = raw.replace('+', " ");
            let expected: Vec<u8> = percent_encoding::percent_decode(spaced.as_bytes()).collect();
            assert_eq!(
                decode(raw.as_bytes()).map(String::into_bytes),
                Ok(expected),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn keeps_a_stray_percent() {
        assert_eq!(
            parse_pairs(b"a=100%").unwrap(),
            vec![("a".into(), "100%".into())]
        );
    }
}
