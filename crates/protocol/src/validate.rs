//! Character rules shared by topics, event ids, event types and selectors.
//!
//! An event id and a type end up on their own SSE line, and an id travels back in the
//! `Last-Event-ID` header, so a line break or other control character there would let a publisher
//! inject fields into other people's streams. The rule follows the specification: no C0 or C1
//! control characters, no DEL, no Unicode format characters (general category `Cf`).

/// Whether `c` is forbidden in topics, ids, types and selectors.
pub fn is_forbidden_char(c: char) -> bool {
    let u = c as u32;
    u <= 0x1F || (0x7F..=0x9F).contains(&u) || is_format_char(c)
}

/// Whether `s` holds no forbidden character.
pub fn is_clean(s: &str) -> bool {
    !s.chars().any(is_forbidden_char)
}

/// Unicode general category `Cf` (format characters): soft hyphen, Arabic and Syriac marks,
/// zero-width and bidirectional controls, word joiners, the BOM, interlinear annotations, tags and a
/// few script-specific ones. The table covers every `Cf` code point of Unicode 15.
fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD
        | 0x0600..=0x0605
        | 0x061C
        | 0x06DD
        | 0x070F
        | 0x0890..=0x0891
        | 0x08E2
        | 0x180E
        | 0x200B..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x206F
        | 0xFEFF
        | 0xFFF9..=0xFFFB
        | 0x110BD
        | 0x110CD
        | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A
        | 0xE0001
        | 0xE0020..=0xE007F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_controls_and_format_chars() {
        for s in [
            "a\nb",
            "a\rb",
            "\u{0}",
            "\u{7f}",
            "\u{85}",
            "a\u{200B}b",
            "\u{FEFF}",
            "\u{202E}",
        ] {
            assert!(!is_clean(s), "{s:?} should be rejected");
        }
        for s in [
            "https://example.com/books/1",
            "urn:uuid:1234",
            "é日本",
            "a b",
        ] {
            assert!(is_clean(s), "{s:?} should be accepted");
        }
    }
}
