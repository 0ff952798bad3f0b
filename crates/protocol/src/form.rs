//! `application/x-www-form-urlencoded` parsing that refuses invalid UTF-8 instead of hiding it.
//!
//! Common parsers replace undecodable bytes with U+FFFD, which would silently alter a publisher's
//! data. Mercure requires UTF-8 field names and values, so this parser percent-decodes each pair and
//! reports the first invalid one. Both publish bodies and subscription query strings go through it.

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

/// Decodes one name or value: `+` to a space, `%XX` to its byte (a `%` not followed by two hex
/// digits stays as it is), in one pass into one allocation of the raw length (decoding never grows
/// it): a publish's 200-byte `data` costs one allocation, not a growing buffer.
fn decode(raw: &[u8]) -> Result<String, InvalidUtf8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let next = bytes.as_slice();
                match (
                    next.first().and_then(hex_value),
                    next.get(1).and_then(hex_value),
                ) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        bytes.nth(1);
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| InvalidUtf8)
}

/// The value of a hex digit.
fn hex_value(digit: &u8) -> Option<u8> {
    char::from(*digit)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
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
