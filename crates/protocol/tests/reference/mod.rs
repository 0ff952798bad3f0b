//! Plain reference implementations the property tests and the fuzz targets check the protocol
//! crate against: SSE reading by the HTML "event stream interpretation" rules (the
//! `quicksilver-event-stream` crate, shared with the test kit's SSE client), an RFC 6570 URI
//! template expander, and a form-urlencoded encoder.
//!
//! They are deliberately naive (no performance concern, no shared code with the crate) so that a
//! disagreement points at a bug in one of the two. The fuzz crate includes this file by path, so
//! both suites use the very same references; not every user needs every function, hence the
//! `dead_code` allowance, and the items are `pub` for the fuzz crate, which re-exports them, though
//! a test binary cannot reach them from outside (`unreachable_pub`).

#![allow(dead_code, unreachable_pub)]

pub use quicksilver_event_stream::SseEvent;
use quicksilver_event_stream::{EventStreamParser, SseItem};

/// The events a browser dispatches from a whole `text/event-stream` body, read by the repository's one
/// event-stream reader (the `quicksilver-event-stream` crate, which the test kit's SSE client uses too):
/// lines end at CRLF, CR or LF; `:` starts a comment; one space after the colon is dropped; an `id`
/// containing NUL is ignored; an event is dispatched at a blank line only when its data buffer is
/// non-empty. Events still pending at the end of the input are dropped, as the specification says for
/// an unterminated final block. Each event's `fields` names every field line of its block, for
/// field-injection checks.
pub fn parse_sse(stream: &str) -> Vec<SseEvent> {
    EventStreamParser::new()
        .feed_collect(stream.as_bytes())
        .into_iter()
        .filter_map(|item| match item {
            SseItem::Event(event) => Some(event),
            SseItem::Comment(_) => None,
        })
        .collect()
}

/// `data` as an SSE client reassembles it: every CRLF and lone CR becomes LF.
pub fn normalize_newlines(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// Percent-encodes `s` for an `application/x-www-form-urlencoded` body: only ASCII alphanumerics
/// and `*-._` stay as they are, space becomes `+`.
pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A form body for `pairs`, in order.
pub fn form_body<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(n, v)| format!("{}={}", form_encode(n), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A URI template variable's value (RFC 6570 §2.4).
#[derive(Clone, Debug)]
pub enum Value {
    /// Undefined: the variable is skipped.
    Undef,
    /// A string.
    Str(String),
    /// A list (an empty list is undefined).
    List(Vec<String>),
    /// An associative array (an empty one is undefined).
    Assoc(Vec<(String, String)>),
}

/// One `varname[:prefix|*]` of a parsed expression.
#[derive(Clone, Debug)]
struct VarSpec {
    prefix: Option<usize>,
    explode: bool,
}

/// Expands `template` with one value per variable occurrence, taken in order from `values`
/// (cycled; `Undef` when empty), following RFC 6570 Appendix A. Returns `None` when the template
/// is not one this simple parser understands (the caller then has nothing to compare).
///
/// Literals are copied verbatim rather than percent-encoding non-URI characters: a topic is an
/// IRI and selector matching compares literals as written.
pub fn expand_template(template: &str, values: &[Value]) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    let mut next_value = 0usize;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let body = &rest[open + 1..close];
        rest = &rest[close + 1..];
        let (op, list) = match body.chars().next()? {
            c @ ('+' | '#' | '.' | '/' | ';' | '?' | '&') => (Some(c), &body[1..]),
            _ => (None, body),
        };
        let (first, sep, named, ifemp, reserved) = match op {
            None => ("", ",", false, "", false),
            Some('+') => ("", ",", false, "", true),
            Some('#') => ("#", ",", false, "", true),
            Some('.') => (".", ".", false, "", false),
            Some('/') => ("/", "/", false, "", false),
            Some(';') => (";", ";", true, "", false),
            Some('?') => ("?", "&", true, "=", false),
            Some('&') => ("&", "&", true, "=", false),
            Some(_) => return None,
        };
        let mut wrote_any = false;
        for spec in list.split(',') {
            let (name, var) = parse_varspec(spec)?;
            let value = if values.is_empty() {
                Value::Undef
            } else {
                values[next_value % values.len()].clone()
            };
            next_value += 1;
            let expanded = match expand_var(name, &var, &value, sep, named, ifemp, reserved) {
                Some(e) => e,
                None => continue,
            };
            out.push_str(if wrote_any { sep } else { first });
            wrote_any = true;
            out.push_str(&expanded);
        }
    }
    if rest.contains('}') {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

fn parse_varspec(spec: &str) -> Option<(&str, VarSpec)> {
    if let Some(name) = spec.strip_suffix('*') {
        return Some((
            name,
            VarSpec {
                prefix: None,
                explode: true,
            },
        ));
    }
    if let Some((name, n)) = spec.split_once(':') {
        return Some((
            name,
            VarSpec {
                prefix: Some(n.parse().ok()?),
                explode: false,
            },
        ));
    }
    Some((
        spec,
        VarSpec {
            prefix: None,
            explode: false,
        },
    ))
}

/// One variable's expansion without the leading `first`/`sep`; `None` when undefined.
fn expand_var(
    name: &str,
    var: &VarSpec,
    value: &Value,
    sep: &str,
    named: bool,
    ifemp: &str,
    reserved: bool,
) -> Option<String> {
    let enc = |s: &str| encode_value(s, reserved);
    let mut out = String::new();
    match value {
        Value::Undef => return None,
        Value::Str(s) => {
            if named {
                out.push_str(name);
                if s.is_empty() {
                    out.push_str(ifemp);
                    return Some(out);
                }
                out.push('=');
            }
            let s: String = match var.prefix {
                Some(n) => s.chars().take(n).collect(),
                None => s.clone(),
            };
            out.push_str(&enc(&s));
        }
        Value::List(items) if items.is_empty() => return None,
        Value::Assoc(items) if items.is_empty() => return None,
        Value::List(items) if !var.explode => {
            if named {
                out.push_str(name);
                out.push('=');
            }
            out.push_str(&items.iter().map(|i| enc(i)).collect::<Vec<_>>().join(","));
        }
        Value::Assoc(items) if !var.explode => {
            if named {
                out.push_str(name);
                out.push('=');
            }
            let flat: Vec<String> = items.iter().flat_map(|(k, v)| [enc(k), enc(v)]).collect();
            out.push_str(&flat.join(","));
        }
        Value::List(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| {
                    if named {
                        if i.is_empty() {
                            format!("{name}{ifemp}")
                        } else {
                            format!("{name}={}", enc(i))
                        }
                    } else {
                        enc(i)
                    }
                })
                .collect();
            out.push_str(&parts.join(sep));
        }
        Value::Assoc(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|(k, v)| {
                    if named && v.is_empty() {
                        format!("{}{ifemp}", enc(k))
                    } else {
                        format!("{}={}", enc(k), enc(v))
                    }
                })
                .collect();
            out.push_str(&parts.join(sep));
        }
    }
    Some(out)
}

/// Encodes a value: unreserved characters stay; with `reserved` (`+`, `#`), reserved characters
/// and existing percent-encoded triplets stay too; everything else is percent-encoded UTF-8.
fn encode_value(s: &str, reserved: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        let keep_reserved = reserved && b":/?#[]@!$&'()*+,;=".contains(&b);
        let triplet = reserved
            && b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if unreserved || keep_reserved {
            out.push(b as char);
        } else if triplet {
            out.push_str(&s[i..i + 3]);
            i += 3;
            continue;
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        i += 1;
    }
    out
}
