//! RFC 6570 URI templates compiled into topic matchers.
//!
//! A subscriber may name topics with a URI template such as `https://example.com/books/{id}`; a
//! topic matches when it could be an expansion of the template. The data flow is one way:
//!
//! 1. [`UriTemplate::compile`] checks the size bounds, then parses the raw text into literal runs
//!    and expressions (operator plus variable list), rejecting anything RFC 6570 calls malformed.
//! 2. Every part is translated into a fragment of one anchored regular expression: literals are
//!    escaped verbatim, each expression becomes an optional group accepting whatever its operator can
//!    produce (shapes below).
//! 3. The pattern is compiled once by the `regex` crate under a small size limit, and
//!    [`UriTemplate::is_match`] runs it over the whole topic.
//!
//! The `regex` crate matches in time linear in the topic, whatever the pattern, so a hostile
//! template cannot stall a node (no ReDoS); caps on template length, expressions and variables,
//! plus a compiled-size limit, keep compilation time and memory bounded too.
//!
//! # Regex shape per expression
//!
//! The translation follows the one the reference hub gets from `yosida95/uritemplate`'s `Regexp()`,
//! so the same selector selects the same topics on both hubs. Writing `V(c)` for one variable
//! value, `(?:[c]|%[0-9A-Fa-f]{2})*` (characters of class `c` or percent-encoded octets, possibly
//! none), an expression with `n` variables becomes
//!
//! ```text
//! (?: first V(c) (?: sep V(c) ){0,n-1} )?     no variable exploded
//! (?: first V(c) (?: sep V(c) )*       )?     some variable exploded (`*`)
//! (?: first V(c) )?                           when `sep` is itself in `c`: `{x}` `{+x}` `{#x}` `{.x}`
//! ```
//!
//! (the last is the same language as the first two, in a smaller program), with:
//!
//! | operator | first | sep | class `c`                  |
//! |----------|-------|-----|----------------------------|
//! | `{x}`    |       | `,` | unreserved, `,`            |
//! | `{+x}`   |       | `,` | unreserved, reserved       |
//! | `{#x}`   | `#`   | `,` | unreserved, reserved       |
//! | `{.x}`   | `.`   | `.` | unreserved, `,`            |
//! | `{/x}`   | `/`   | `/` | unreserved, `,`            |
//! | `{;x}`   | `;`   | `;` | unreserved, `,`, `=`       |
//! | `{?x}`   | `?`   | `&` | unreserved, `,`, `=`       |
//! | `{&x}`   | `&`   | `&` | unreserved, `,`, `=`       |
//!
//! `,` is in every class because list values expand to comma-separated items; `=` joins the named
//! operators' `name=value` pairs, and is also allowed when a variable is exploded, since an exploded
//! associative array expands to `key=value` items whatever the operator. (The reference admits `=` in
//! the first value only when the *first* variable is exploded, so `{/x,y*}` there misses `/k=v`
//! (`x` undefined); admitting it keeps every RFC expansion a match.)
//!
//! Like the reference, the translation over-approximates rather than under-approximates: variable
//! names of the named operators are not checked (`{?q}` also accepts `?lang=fr`: an exploded
//! associative array may carry any key), prefix modifiers (`{x:3}`) do not bound the value's length,
//! and the same variable used twice may take different values. Every expansion matches; a few
//! non-expansions match as well. An undefined variable expands to nothing, so
//! `https://example.com/books/{id}` accepts `https://example.com/books/`, as RFC 6570 and the
//! reference hub do.

use std::fmt::Write as _;

use regex::{Regex, RegexBuilder};
use thiserror::Error;

/// Longest template accepted, in bytes. Topic selectors are URLs; this is generous for them and
/// keeps the parse and the generated pattern small.
pub const MAX_TEMPLATE_LEN: usize = 1024;

/// Most expressions (`{...}`) accepted in one template.
pub const MAX_EXPRESSIONS: usize = 32;

/// Most variables accepted in one template, all expressions together. A `{/a,b,c}` list repeats the
/// value pattern once per variable, so this is what bounds the compiled size; real selectors use a
/// handful.
pub const MAX_VARIABLES: usize = 64;

/// Cap on the compiled program of one template. The worst templates within the bounds above compile
/// to under 64 KiB (see the tests); the cap is a backstop should those bounds change.
const REGEX_SIZE_LIMIT: usize = 512 * 1024;

/// Cap on the lazy DFA cache of one template. Template regexes have few states, and thousands of
/// them may be cached on a node, so each gets a small cache rather than the crate's default 2 MiB.
const DFA_SIZE_LIMIT: usize = 256 * 1024;

/// Why a template was refused. Byte offsets index the raw template.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// Longer than [`MAX_TEMPLATE_LEN`].
    #[error("URI template longer than {max} bytes")]
    TooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// More than [`MAX_EXPRESSIONS`] expressions.
    #[error("URI template has more than {max} expressions")]
    TooManyExpressions {
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_VARIABLES`] variables.
    #[error("URI template has more than {max} variables")]
    TooManyVariables {
        /// The limit.
        max: usize,
    },
    /// A `{` without its `}`.
    #[error("unclosed expression starting at byte {at}")]
    Unclosed {
        /// Offset of the `{`.
        at: usize,
    },
    /// A `}` outside an expression.
    #[error("unmatched '}}' at byte {at}")]
    Unopened {
        /// Offset of the `}`.
        at: usize,
    },
    /// `{}` or an operator with no variable.
    #[error("empty expression at byte {at}")]
    EmptyExpression {
        /// Offset of the `{`.
        at: usize,
    },
    /// One of the operators RFC 6570 reserves for future use (`=`, `,`, `!`, `@`, `|`).
    #[error("reserved operator {op:?} at byte {at}")]
    ReservedOperator {
        /// The operator.
        op: char,
        /// Its offset.
        at: usize,
    },
    /// A variable name that is empty or holds a character outside `ALPHA / DIGIT / "_" / "." /
    /// pct-encoded`, or a misplaced dot.
    #[error("invalid variable name at byte {at}")]
    InvalidVarname {
        /// Offset of the name.
        at: usize,
    },
    /// A prefix modifier that is not a number from 1 to 9999.
    #[error("invalid prefix modifier at byte {at}")]
    InvalidPrefix {
        /// Offset of the `:`.
        at: usize,
    },
    /// Something other than `,` or `}` after a variable and its modifier.
    #[error("unexpected {found:?} after variable at byte {at}")]
    UnexpectedAfterVariable {
        /// The character found.
        found: char,
        /// Its offset.
        at: usize,
    },
    /// A literal character RFC 6570 does not allow outside expressions (space, `"`, `<`, `>`, `\`,
    /// `^`, `` ` ``, `|`, controls, ...).
    #[error("character {ch:?} not allowed in a URI template at byte {at}")]
    InvalidLiteral {
        /// The character.
        ch: char,
        /// Its offset.
        at: usize,
    },
    /// A `%` not followed by two hexadecimal digits.
    #[error("invalid percent-encoding at byte {at}")]
    InvalidPercentEncoding {
        /// Offset of the `%`.
        at: usize,
    },
    /// The generated pattern exceeded the compiled-size limit.
    #[error("URI template too complex")]
    TooComplex,
}

/// A compiled URI template: an anchored regular expression accepting the template's expansions.
#[derive(Debug, Clone)]
pub struct UriTemplate {
    regex: Regex,
    /// The literal text before the first expression and after the last: every expansion starts
    /// and ends with them, so a topic that does not is refused with two byte comparisons instead
    /// of a regular-expression search (a node may hold thousands of templates, each tried on every
    /// update).
    prefix: Box<str>,
    suffix: Box<str>,
    approx_memory: usize,
}

impl UriTemplate {
    /// Parses `raw` and compiles it into a matcher.
    pub fn compile(raw: &str) -> Result<Self, TemplateError> {
        if raw.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateError::TooLong {
                max: MAX_TEMPLATE_LEN,
            });
        }
        let parts = parse(raw)?;
        let (pattern, value_copies) = to_pattern(&parts);
        let regex = RegexBuilder::new(&pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .build()
            // The only way a pattern we generated fails to build is by exceeding the size limit.
            .map_err(|_| TemplateError::TooComplex)?;
        let literal_bytes: usize = parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.len(),
                Part::Expression(_) => 0,
            })
            .sum();
        let literal = |p: &Part<'_>| match p {
            Part::Literal(l) => Some(l.to_string()),
            Part::Expression(_) => None,
        };
        let prefix: String = parts.iter().map_while(literal).collect();
        let suffix: String = if parts.iter().any(|p| matches!(p, Part::Expression(_))) {
            let mut tail: Vec<String> = parts.iter().rev().map_while(literal).collect();
            tail.reverse();
            tail.concat()
        } else {
            String::new()
        };
        Ok(Self {
            regex,
            prefix: prefix.into(),
            suffix: suffix.into(),
            approx_memory: BASE_MEMORY
                + value_copies * VALUE_MEMORY
                + literal_bytes * LITERAL_BYTE_MEMORY,
        })
    }

    /// Whether `topic` is (or may be) an expansion of this template; the whole topic must match.
    pub fn is_match(&self, topic: &str) -> bool {
        topic.starts_with(&*self.prefix)
            && topic.ends_with(&*self.suffix)
            && topic.len() >= self.prefix.len() + self.suffix.len()
            && self.regex.is_match(topic)
    }

    /// The literal text before the first expression: every topic it matches starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The generated regular expression, for logs and debugging.
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// A rough estimate of the heap this matcher holds, in bytes, compiled engines plus one search
    /// cache; what a cache of compiled selectors should weigh it at.
    pub fn approx_memory(&self) -> usize {
        self.approx_memory
    }
}

// The memory estimate, measured on `regex` 1.x: about 10 KiB for any compiled regex plus a search
// cache, about 0.75 KiB per copy of the value pattern, and about 50 bytes per literal byte. Rounded
// up: the estimate weighs cache entries, so overestimating only makes the cache hold fewer.
const BASE_MEMORY: usize = 16 * 1024;
const VALUE_MEMORY: usize = 1024;
const LITERAL_BYTE_MEMORY: usize = 64;

/// One piece of a parsed template.
#[derive(Debug, PartialEq, Eq)]
enum Part<'a> {
    /// Text copied as is into expansions.
    Literal(&'a str),
    Expression(Expression),
}

#[derive(Debug, PartialEq, Eq)]
struct Expression {
    op: Operator,
    vars: Vec<VarSpec>,
}

/// What matters of a variable for matching. The name is not kept: matching does not check names.
#[derive(Debug, PartialEq, Eq)]
struct VarSpec {
    explode: bool,
    /// Parsed and validated, but not enforced by the matcher (see the module docs).
    prefix: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Simple,
    Reserved,
    Fragment,
    Label,
    Path,
    PathParam,
    Query,
    QueryContinuation,
}

impl Operator {
    fn from_char(c: char) -> Option<Self> {
        Some(match c {
            '+' => Self::Reserved,
            '#' => Self::Fragment,
            '.' => Self::Label,
            '/' => Self::Path,
            ';' => Self::PathParam,
            '?' => Self::Query,
            '&' => Self::QueryContinuation,
            _ => return None,
        })
    }

    /// Written before the first defined variable.
    fn first(self) -> &'static str {
        match self {
            Self::Simple | Self::Reserved => "",
            Self::Fragment => "#",
            Self::Label => ".",
            Self::Path => "/",
            Self::PathParam => ";",
            Self::Query => "?",
            Self::QueryContinuation => "&",
        }
    }

    /// Written between defined variables (and between exploded items).
    fn separator(self) -> &'static str {
        match self {
            Self::Simple | Self::Reserved | Self::Fragment => ",",
            Self::Label => ".",
            Self::Path => "/",
            Self::PathParam => ";",
            Self::Query | Self::QueryContinuation => "&",
        }
    }

    /// Whether values are written as `name=value`.
    fn named(self) -> bool {
        matches!(
            self,
            Self::PathParam | Self::Query | Self::QueryContinuation
        )
    }

    /// Whether reserved characters pass through values unencoded.
    fn allows_reserved(self) -> bool {
        matches!(self, Self::Reserved | Self::Fragment)
    }
}

/// Splits `raw` into literals and expressions, validating both.
fn parse(raw: &str) -> Result<Vec<Part<'_>>, TemplateError> {
    let mut parts = Vec::new();
    let mut expressions = 0;
    let mut variables = 0;
    let mut literal_start = 0;
    let mut pos = 0;
    while let Some(c) = raw[pos..].chars().next() {
        let at = pos;
        pos += c.len_utf8();
        match c {
            '{' => {
                if literal_start < at {
                    parts.push(Part::Literal(&raw[literal_start..at]));
                }
                // Counted before parsing, so the cap also bounds the work spent on a bad template.
                expressions += 1;
                if expressions > MAX_EXPRESSIONS {
                    return Err(TemplateError::TooManyExpressions {
                        max: MAX_EXPRESSIONS,
                    });
                }
                let close = raw[at..]
                    .find('}')
                    .map(|off| at + off)
                    .ok_or(TemplateError::Unclosed { at })?;
                let expr = parse_expression(raw, at, close)?;
                variables += expr.vars.len();
                if variables > MAX_VARIABLES {
                    return Err(TemplateError::TooManyVariables { max: MAX_VARIABLES });
                }
                parts.push(Part::Expression(expr));
                pos = close + 1;
                literal_start = pos;
            }
            '}' => return Err(TemplateError::Unopened { at }),
            '%' => {
                check_pct(raw, at)?;
                pos = at + 3;
            }
            _ if is_literal_char(c) => {}
            _ => return Err(TemplateError::InvalidLiteral { ch: c, at }),
        }
    }
    if literal_start < raw.len() {
        parts.push(Part::Literal(&raw[literal_start..]));
    }
    Ok(parts)
}

/// Parses the expression whose `{` is at `open` and `}` at `close`.
fn parse_expression(raw: &str, open: usize, close: usize) -> Result<Expression, TemplateError> {
    let body = &raw[open + 1..close];
    let (op, list_start) = match body.chars().next() {
        None => return Err(TemplateError::EmptyExpression { at: open }),
        Some(c @ ('=' | ',' | '!' | '@' | '|')) => {
            return Err(TemplateError::ReservedOperator {
                op: c,
                at: open + 1,
            })
        }
        Some(c) => match Operator::from_char(c) {
            Some(op) => (op, open + 2),
            None => (Operator::Simple, open + 1),
        },
    };
    if list_start == close {
        return Err(TemplateError::EmptyExpression { at: open });
    }
    let mut vars = Vec::new();
    // Every varspec is followed by `,` or by the closing brace, so splitting on `,` is exact.
    let mut start = list_start;
    for spec in raw[list_start..close].split(',') {
        vars.push(parse_varspec(spec, start)?);
        start += spec.len() + 1;
    }
    Ok(Expression { op, vars })
}

/// Parses one `varname [ ":" max-length / "*" ]`, found at byte `at`.
fn parse_varspec(spec: &str, at: usize) -> Result<VarSpec, TemplateError> {
    let name_len = spec.find([':', '*']).unwrap_or(spec.len());
    check_varname(&spec[..name_len], at)?;
    let modifier = &spec[name_len..];
    let modifier_at = at + name_len;
    if modifier.is_empty() {
        return Ok(VarSpec {
            explode: false,
            prefix: None,
        });
    }
    if modifier == "*" {
        return Ok(VarSpec {
            explode: true,
            prefix: None,
        });
    }
    if let Some(digits) = modifier.strip_prefix(':') {
        // max-length = %x31-39 0*3DIGIT: 1 to 9999, no leading zero.
        let valid = (1..=4).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        return match digits.parse::<u16>() {
            Ok(n) if valid => Ok(VarSpec {
                explode: false,
                prefix: Some(n),
            }),
            _ => Err(TemplateError::InvalidPrefix { at: modifier_at }),
        };
    }
    // An explode followed by more text (`x*y`, `x*:3`).
    let found = modifier.chars().nth(1).unwrap_or('*');
    Err(TemplateError::UnexpectedAfterVariable {
        found,
        at: modifier_at + 1,
    })
}

/// `varname = varchar *( ["."] varchar )`, `varchar = ALPHA / DIGIT / "_" / pct-encoded`.
fn check_varname(name: &str, at: usize) -> Result<(), TemplateError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes[0] == b'.' || bytes[bytes.len() - 1] == b'.' {
        return Err(TemplateError::InvalidVarname { at });
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                check_pct(name, i).map_err(|_| TemplateError::InvalidVarname { at })?;
                i += 3;
                continue;
            }
            b'.' if bytes[i - 1] == b'.' => return Err(TemplateError::InvalidVarname { at }),
            b'.' | b'_' => {}
            b if b.is_ascii_alphanumeric() => {}
            _ => return Err(TemplateError::InvalidVarname { at }),
        }
        i += 1;
    }
    Ok(())
}

/// Checks that `s[at]`, a `%`, starts a percent-encoded octet.
fn check_pct(s: &str, at: usize) -> Result<(), TemplateError> {
    match s.as_bytes().get(at + 1..at + 3) {
        Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => Ok(()),
        _ => Err(TemplateError::InvalidPercentEncoding { at }),
    }
}

/// RFC 6570 `literals` other than pct-encoded: printable ASCII except space, `"`, `%`, `<`, `>`,
/// `\`, `^`, `` ` ``, `{`, `|`, `}`, plus `ucschar` and `iprivate`. The apostrophe is allowed, per
/// erratum 6937 (the reference parser agrees).
fn is_literal_char(c: char) -> bool {
    match c {
        '!' | '#' | '$' | '&'..=';' | '=' | '?'..='[' | ']' | '_' | 'a'..='z' | '~' => true,
        _ => matches!(c as u32,
            0xA0..=0xD7FF
            | 0xE000..=0xFDCF
            | 0xFDF0..=0xFFEF
            | 0x1_0000..=0x1_FFFD
            | 0x2_0000..=0x2_FFFD
            | 0x3_0000..=0x3_FFFD
            | 0x4_0000..=0x4_FFFD
            | 0x5_0000..=0x5_FFFD
            | 0x6_0000..=0x6_FFFD
            | 0x7_0000..=0x7_FFFD
            | 0x8_0000..=0x8_FFFD
            | 0x9_0000..=0x9_FFFD
            | 0xA_0000..=0xA_FFFD
            | 0xB_0000..=0xB_FFFD
            | 0xC_0000..=0xC_FFFD
            | 0xD_0000..=0xD_FFFD
            | 0xE_1000..=0xE_FFFD
            | 0xF_0000..=0xF_FFFD
            | 0x10_0000..=0x10_FFFD),
    }
}

/// Unreserved characters other than ASCII letters and digits: `-`, `.`, `_`, `~`.
const UNRESERVED_PUNCT: &[u8] = b"-._~";
/// `reserved = gen-delims / sub-delims`.
const RESERVED: &[u8] = b":/?#[]@!$&'()*+,;=";

/// Builds the anchored pattern for a parsed template; also returns how many copies of a value
/// pattern the compiled program holds (counted repetitions are expanded), for the memory estimate.
fn to_pattern(parts: &[Part<'_>]) -> (String, usize) {
    let mut out = String::from(r"\A");
    let mut value_copies = 0;
    for part in parts {
        match part {
            Part::Literal(text) => out.push_str(&regex::escape(text)),
            Part::Expression(expr) => value_copies += push_expression(&mut out, expr),
        }
    }
    out.push_str(r"\z");
    (out, value_copies)
}

/// Appends the group accepting every expansion of `expr` (shapes in the module docs); returns the
/// number of value-pattern copies it compiles to.
fn push_expression(out: &mut String, expr: &Expression) -> usize {
    let op = expr.op;
    let exploded = expr.vars.iter().any(|v| v.explode);
    let value = value_pattern(op.allows_reserved(), op.named() || exploded);
    out.push_str("(?:");
    out.push_str(&regex::escape(op.first()));
    out.push_str(&value);
    // When the separator is itself in the value class (`,` for `{x}`, `{+x}` and `{#x}`, `.` for
    // `{.x}`), `V (sep V){0,k}` accepts nothing `V` does not, so the group is left out: same
    // language, smaller program.
    let separator_in_class = matches!(
        op,
        Operator::Simple | Operator::Reserved | Operator::Fragment | Operator::Label
    );
    let mut copies = 1;
    if !separator_in_class && (exploded || expr.vars.len() > 1) {
        out.push_str("(?:");
        out.push_str(&regex::escape(op.separator()));
        out.push_str(&value);
        out.push(')');
        if exploded {
            // Exploded lists and maps have any number of items, each after a separator.
            out.push('*');
            copies += 1;
        } else {
            // Each further defined variable adds one separator.
            let _ = write!(out, "{{0,{}}}", expr.vars.len() - 1);
            copies += expr.vars.len() - 1;
        }
    }
    out.push_str(")?");
    copies
}

/// `(?:[class]|%XX)*`: one (possibly empty) value.
fn value_pattern(reserved: bool, equals: bool) -> String {
    let mut class = String::from("a-zA-Z0-9");
    let mut add = |b: u8| {
        let _ = write!(class, r"\x{b:02X}");
    };
    UNRESERVED_PUNCT.iter().copied().for_each(&mut add);
    if reserved {
        RESERVED.iter().copied().for_each(&mut add);
    } else {
        add(b',');
        if equals {
            add(b'=');
        }
    }
    format!("(?:[{class}]|%[0-9A-Fa-f]{{2}})*")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(raw: &str) -> UriTemplate {
        match UriTemplate::compile(raw) {
            Ok(t) => t,
            Err(e) => panic!("{raw:?} should compile: {e}"),
        }
    }

    /// Asserts that `raw` matches every topic in `yes` and none in `no`.
    fn check(raw: &str, yes: &[&str], no: &[&str]) {
        let tpl = t(raw);
        for topic in yes {
            assert!(
                tpl.is_match(topic),
                "{raw:?} should match {topic:?} (pattern {})",
                tpl.pattern()
            );
        }
        for topic in no {
            assert!(
                !tpl.is_match(topic),
                "{raw:?} should not match {topic:?} (pattern {})",
                tpl.pattern()
            );
        }
    }

    #[test]
    fn literal_only_template_matches_itself_only() {
        check(
            "https://example.com/books/1",
            &["https://example.com/books/1"],
            &[
                "https://example.com/books/12",
                "https://example.com/books/",
                "https://exampleXcom/books/1",
            ],
        );
        // Regex metacharacters in literals are literal.
        check(
            "a.b+c(d)*[e]$",
            &["a.b+c(d)*[e]$"],
            &["aXb+c(d)*[e]$", "a.bbc(d)*[e]$"],
        );
    }

    #[test]
    fn simple_expansion() {
        check(
            "https://example.com/books/{id}",
            &[
                "https://example.com/books/1",
                "https://example.com/books/abc-._~",
                "https://example.com/books/Hello%20World%21",
                // A list value.
                "https://example.com/books/1,2,3",
                // An undefined or empty variable expands to nothing (RFC 6570 §3.2.1), as on the
                // reference hub.
                "https://example.com/books/",
            ],
            &[
                "https://example.com/books/1/chapters",
                "https://example.com/books/1?x",
                "https://example.com/books/1#x",
                "https://example.com/books/a=b",
                "https://example.com/books/%2",
                "https://example.com/books/%zz",
                "https://example.com/books/é",
                "https://example.com/books",
                "https://example.com/authors/1",
                "prefix https://example.com/books/1",
            ],
        );
        check(
            "https://example.com/{firstname}/{lastname}",
            &["https://example.com/kevin/dunglas"],
            &[
                "https://example.com/kevin/dunglas/x",
                "https://example.com/kevin",
            ],
        );
        check(
            "{x,y}",
            &["1024,768", "1024", "", "a,b,c,d"],
            &["1024/768", "a=b"],
        );
        check("{x*}", &["a,b", "k=v,k2=v2"], &["a/b"]);
    }

    #[test]
    fn reserved_expansion() {
        check(
            "https://example.com{+path}",
            &[
                "https://example.com/foo/bar",
                "https://example.com/foo/bar?x=1&y=2#frag",
                "https://example.com/%E2%82%AC/",
                "https://example.com",
                "https://example.com:8080/@!$&'()*+,;=[]",
            ],
            &[
                "https://example.com/a b",
                "https://example.com/<x>",
                "https://example.com/50%",
                "https://example.com/é",
            ],
        );
        check("{+x,y}", &["1024,768", "/a/b,c"], &["a b"]);
    }

    #[test]
    fn fragment_expansion() {
        check(
            "https://example.com/page{#section}",
            &[
                "https://example.com/page",
                "https://example.com/page#intro",
                "https://example.com/page#a/b?c",
            ],
            &[
                "https://example.com/page/intro",
                "https://example.com/pageintro",
                "https://example.com/page#a b",
            ],
        );
    }

    #[test]
    fn label_expansion() {
        check(
            "https://example.com/file{.ext}",
            &[
                "https://example.com/file",
                "https://example.com/file.json",
                "https://example.com/file.tar.gz",
            ],
            &[
                "https://example.com/file/json",
                "https://example.com/filejson",
                "https://example.com/file.a/b",
            ],
        );
        check(
            "X{.x,y}",
            &["X.1024.768", "X.1024", "X"],
            &["X.1024/768", "X1024"],
        );
    }

    #[test]
    fn path_expansion() {
        check(
            "https://example.com/users{/user}",
            &[
                "https://example.com/users",
                "https://example.com/users/kevin",
                "https://example.com/users/a,b",
            ],
            &[
                "https://example.com/users/kevin/pics",
                "https://example.com/userskevin",
                "https://example.com/users/a?b",
            ],
        );
        // Two variables: at most two segments.
        check(
            "https://example.com/users{/user,media}",
            &[
                "https://example.com/users/kevin/pics",
                "https://example.com/users/kevin",
                "https://example.com/users",
            ],
            &["https://example.com/users/kevin/pics/1"],
        );
        // Exploded: any number of segments.
        check(
            "{/list*}",
            &["/red/green/blue", "/red", "", "/k=v/k2=v2"],
            &["red", "/a?b"],
        );
        // An exploded map after a scalar.
        check(
            "{/x,keys*}",
            &["/1024/semi=%3B/dot=.", "/semi=%3B"],
            &["/1024?x"],
        );
    }

    #[test]
    fn path_param_expansion() {
        check(
            "https://example.com/map{;x,y}",
            &[
                "https://example.com/map;x=1024;y=768",
                "https://example.com/map;x=1024",
                "https://example.com/map;x",
                "https://example.com/map",
            ],
            &[
                "https://example.com/map;x=1;y=2;z=3",
                "https://example.com/map?x=1",
                "https://example.com/map;x=a/b",
            ],
        );
        check(
            "{;list*}",
            &[";list=red;list=green;list=blue", ";semi=%3B;dot=."],
            &[";a=b&c=d"],
        );
    }

    #[test]
    fn query_expansion() {
        check(
            "https://example.com/search{?q,lang}",
            &[
                "https://example.com/search?q=a&lang=fr",
                "https://example.com/search?q=a",
                "https://example.com/search?lang=fr",
                "https://example.com/search?q=",
                "https://example.com/search?q=a,b",
                "https://example.com/search",
            ],
            &[
                "https://example.com/search?q=a&lang=fr&x=1",
                "https://example.com/search?q=a/b",
                "https://example.com/search&q=a",
                "https://example.com/searchq=a",
                "https://example.com/search/x",
            ],
        );
        check(
            "https://example.com/foo{?bar}",
            &["https://example.com/foo?bar=1"],
            &["https://example.com/foobaz"],
        );
        check(
            "{?list*}",
            &["?list=red&list=green&list=blue", "?a=1&b=2&c=3"],
            &["?a=1;b=2"],
        );
    }

    #[test]
    fn query_continuation_expansion() {
        check(
            "https://example.com/search?fixed=yes{&x,y}",
            &[
                "https://example.com/search?fixed=yes&x=1024&y=768",
                "https://example.com/search?fixed=yes&x=1024",
                "https://example.com/search?fixed=yes",
            ],
            &[
                "https://example.com/search?fixed=yes&x=1&y=2&z=3",
                "https://example.com/search?fixed=yes?x=1",
            ],
        );
        check("{&keys*}", &["&semi=%3B&dot=.&comma=%2C"], &["&a=b;c"]);
    }

    #[test]
    fn prefix_modifier_is_parsed_but_not_enforced() {
        // As with the reference hub's regex, a prefix does not bound the matched length.
        check(
            "https://example.com/dictionary/{term:1}/{term}",
            &[
                "https://example.com/dictionary/c/cat",
                "https://example.com/dictionary/ca/cat",
            ],
            &["https://example.com/dictionary/c/a/cat"],
        );
        check("{var:9999}", &["value"], &["a/b"]);
    }

    #[test]
    fn rfc_examples_match() {
        // A sample of RFC 6570 §3.2 examples (level 4 variables), template and expansion.
        let cases = [
            ("{var}", "value"),
            ("{hello}", "Hello%20World%21"),
            ("{half}", "50%25"),
            ("O{empty}X", "OX"),
            ("O{undef}X", "OX"),
            ("{x,y}", "1024,768"),
            ("{x,hello,y}", "1024,Hello%20World%21,768"),
            ("?{x,empty}", "?1024,"),
            ("?{x,undef}", "?1024"),
            ("{var:3}", "val"),
            ("{list}", "red,green,blue"),
            ("{list*}", "red,green,blue"),
            ("{keys}", "semi,%3B,dot,.,comma,%2C"),
            ("{keys*}", "semi=%3B,dot=.,comma=%2C"),
            ("{+var}", "value"),
            ("{+hello}", "Hello%20World!"),
            ("{+path}/here", "/foo/bar/here"),
            ("here?ref={+path}", "here?ref=/foo/bar"),
            ("{+path:6}/here", "/foo/b/here"),
            ("{+keys*}", "semi=;,dot=.,comma=,"),
            ("{#var}", "#value"),
            ("{#hello}", "#Hello%20World!"),
            ("{#path:6}/here", "#/foo/b/here"),
            ("{#keys}", "#semi,;,dot,.,comma,,"),
            ("X{.var}", "X.value"),
            ("X{.x,y}", "X.1024.768"),
            ("X{.list*}", "X.red.green.blue"),
            ("X{.keys*}", "X.semi=%3B.dot=..comma=%2C"),
            ("{/var}", "/value"),
            ("{/var,x}/here", "/value/1024/here"),
            ("{/var:1,var}", "/v/value"),
            ("{/list*,path:4}", "/red/green/blue/%2Ffoo"),
            ("{/keys*}", "/semi=%3B/dot=./comma=%2C"),
            ("{;x,y}", ";x=1024;y=768"),
            ("{;x,y,empty}", ";x=1024;y=768;empty"),
            ("{;hello:5}", ";hello=Hello"),
            ("{;list*}", ";list=red;list=green;list=blue"),
            ("{;keys*}", ";semi=%3B;dot=.;comma=%2C"),
            ("{?x,y}", "?x=1024&y=768"),
            ("{?x,y,empty}", "?x=1024&y=768&empty="),
            ("{?var:3}", "?var=val"),
            ("{?list}", "?list=red,green,blue"),
            ("{?keys*}", "?semi=%3B&dot=.&comma=%2C"),
            ("?fixed=yes{&x}", "?fixed=yes&x=1024"),
            ("{&x,y,empty}", "&x=1024&y=768&empty="),
            ("{&list*}", "&list=red&list=green&list=blue"),
            ("{&keys*}", "&semi=%3B&dot=.&comma=%2C"),
            ("{x_1.y%41}", "a"),
        ];
        for (raw, expansion) in cases {
            check(raw, &[expansion], &[]);
        }
    }

    #[test]
    fn malformed_templates_are_rejected() {
        use TemplateError as E;
        let cases: &[(&str, TemplateError)] = &[
            ("https://example.com/{id", E::Unclosed { at: 20 }),
            ("{", E::Unclosed { at: 0 }),
            ("a}b", E::Unopened { at: 1 }),
            ("{id}}", E::Unopened { at: 4 }),
            ("{}", E::EmptyExpression { at: 0 }),
            ("x{+}", E::EmptyExpression { at: 1 }),
            ("{=x}", E::ReservedOperator { op: '=', at: 1 }),
            ("{,x}", E::ReservedOperator { op: ',', at: 1 }),
            ("{!x}", E::ReservedOperator { op: '!', at: 1 }),
            ("{@x}", E::ReservedOperator { op: '@', at: 1 }),
            ("{|x}", E::ReservedOperator { op: '|', at: 1 }),
            ("{a-b}", E::InvalidVarname { at: 1 }),
            ("{a b}", E::InvalidVarname { at: 1 }),
            ("{x,}", E::InvalidVarname { at: 3 }),
            ("{,}", E::ReservedOperator { op: ',', at: 1 }),
            ("{x,,y}", E::InvalidVarname { at: 3 }),
            ("{.}", E::EmptyExpression { at: 0 }),
            ("{..x}", E::InvalidVarname { at: 2 }),
            ("{x.}", E::InvalidVarname { at: 1 }),
            ("{x..y}", E::InvalidVarname { at: 1 }),
            ("{é}", E::InvalidVarname { at: 1 }),
            ("{a{b}", E::InvalidVarname { at: 1 }),
            ("{x%4}", E::InvalidVarname { at: 1 }),
            ("{x%zz}", E::InvalidVarname { at: 1 }),
            ("{x:}", E::InvalidPrefix { at: 2 }),
            ("{x:0}", E::InvalidPrefix { at: 2 }),
            ("{x:01}", E::InvalidPrefix { at: 2 }),
            ("{x:10000}", E::InvalidPrefix { at: 2 }),
            ("{x:3a}", E::InvalidPrefix { at: 2 }),
            ("{x:-1}", E::InvalidPrefix { at: 2 }),
            ("{x:3*}", E::InvalidPrefix { at: 2 }),
            ("{x*:3}", E::UnexpectedAfterVariable { found: ':', at: 3 }),
            ("{x**}", E::UnexpectedAfterVariable { found: '*', at: 3 }),
            ("{x*y}", E::UnexpectedAfterVariable { found: 'y', at: 3 }),
            ("a b{x}", E::InvalidLiteral { ch: ' ', at: 1 }),
            ("a\"{x}", E::InvalidLiteral { ch: '"', at: 1 }),
            ("<{x}", E::InvalidLiteral { ch: '<', at: 0 }),
            ("a\\{x}", E::InvalidLiteral { ch: '\\', at: 1 }),
            ("a^{x}", E::InvalidLiteral { ch: '^', at: 1 }),
            ("a|{x}", E::InvalidLiteral { ch: '|', at: 1 }),
            ("a\n{x}", E::InvalidLiteral { ch: '\n', at: 1 }),
            (
                "a\u{85}{x}",
                E::InvalidLiteral {
                    ch: '\u{85}',
                    at: 1,
                },
            ),
            ("50%{x}", E::InvalidPercentEncoding { at: 2 }),
            ("{x}%4", E::InvalidPercentEncoding { at: 3 }),
            ("%g0{x}", E::InvalidPercentEncoding { at: 0 }),
        ];
        for (raw, want) in cases {
            match UriTemplate::compile(raw) {
                Ok(t) => panic!("{raw:?} should be rejected, compiled to {}", t.pattern()),
                Err(got) => assert_eq!(&got, want, "{raw:?}"),
            }
        }
        // Errors render as readable messages.
        assert_eq!(
            E::Unclosed { at: 20 }.to_string(),
            "unclosed expression starting at byte 20"
        );
        assert_eq!(E::Unopened { at: 1 }.to_string(), "unmatched '}' at byte 1");
    }

    #[test]
    fn valid_literals_are_accepted() {
        check(
            "https://example.com/caf%C3%A9/é/日本/'quoted'/~user;a=1&b=[2]{?x}",
            &["https://example.com/caf%C3%A9/é/日本/'quoted'/~user;a=1&b=[2]?x=1"],
            &["https://example.com/café/é/日本/'quoted'/~user;a=1&b=[2]?x=1"],
        );
    }

    #[test]
    fn size_limits() {
        let long = format!("https://example.com/{}{{x}}", "a".repeat(MAX_TEMPLATE_LEN));
        assert_eq!(
            UriTemplate::compile(&long).err(),
            Some(TemplateError::TooLong {
                max: MAX_TEMPLATE_LEN
            })
        );
        let many = "{x}".repeat(MAX_EXPRESSIONS + 1);
        assert_eq!(
            UriTemplate::compile(&many).err(),
            Some(TemplateError::TooManyExpressions {
                max: MAX_EXPRESSIONS
            })
        );
        // Exactly at the limits is fine.
        t(&"{x}".repeat(MAX_EXPRESSIONS));
        t(&"a".repeat(MAX_TEMPLATE_LEN));
    }

    #[test]
    fn too_many_variables() {
        let vars = vec!["a"; MAX_VARIABLES];
        t(&format!("{{/{}}}", vars.join(",")));
        let vars = vec!["a"; MAX_VARIABLES + 1];
        assert_eq!(
            UriTemplate::compile(&format!("{{/{}}}", vars.join(","))).err(),
            Some(TemplateError::TooManyVariables { max: MAX_VARIABLES })
        );
        // Counted across expressions.
        let two = format!("{{/{}}}{{?x}}", vec!["a"; MAX_VARIABLES].join(","));
        assert_eq!(
            UriTemplate::compile(&two).err(),
            Some(TemplateError::TooManyVariables { max: MAX_VARIABLES })
        );
    }

    /// The largest programs the template bounds allow, for each thing that grows a program.
    fn worst_cases() -> Vec<String> {
        let per_expr = MAX_VARIABLES / MAX_EXPRESSIONS;
        let list = |op: &str, n: usize| format!("{{{op}{}}}", vec!["a"; n].join(","));
        vec![
            // All variables in one counted repetition.
            list("/", MAX_VARIABLES),
            list("?", MAX_VARIABLES),
            // Every expression with a repetition.
            list(";", per_expr).repeat(MAX_EXPRESSIONS),
            "{/a,b*}".repeat(MAX_EXPRESSIONS),
            // The widest class, every expression.
            list("+", per_expr).repeat(MAX_EXPRESSIONS),
            // Long literals, ASCII and not.
            format!("{}{{x}}", "a".repeat(MAX_TEMPLATE_LEN - 3)),
            format!("{}{{x}}", "😀".repeat((MAX_TEMPLATE_LEN - 3) / 4)),
            // Literal and expressions mixed.
            format!(
                "{}{}",
                "a".repeat(MAX_TEMPLATE_LEN - 32 * 7),
                "{/a,b}".repeat(32)
            ),
        ]
    }

    #[test]
    fn worst_case_templates_fit_the_compiled_size_limit() {
        for raw in worst_cases() {
            assert!(raw.len() <= MAX_TEMPLATE_LEN, "{}", raw.len());
            // Each must compile well within the limit: a quarter of it.
            let parts = parse(&raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            let (pattern, _) = to_pattern(&parts);
            assert!(
                RegexBuilder::new(&pattern)
                    .size_limit(REGEX_SIZE_LIMIT / 4)
                    .build()
                    .is_ok(),
                "{raw:?} needs more than a quarter of the size limit"
            );
            let tpl = t(&raw);
            assert!(
                tpl.approx_memory() < 256 * 1024,
                "{raw:?}: {}",
                tpl.approx_memory()
            );
        }
    }

    #[test]
    fn separator_group_is_left_out_only_when_redundant() {
        // Same language either way for `,` and `.` separators.
        check("{x,y,z}", &["a,b,c,d"], &["a/b"]);
        check("X{.x,y}", &["X.a.b.c"], &["X.a/b"]);
        assert!(!t("{x,y,z}").pattern().contains("{0,"));
        assert!(t("{/x,y,z}").pattern().contains("{0,2}"));
    }

    #[test]
    fn memory_estimate_grows_with_the_program() {
        let small = t("https://example.com/books/{id}").approx_memory();
        let big = t(&worst_cases()[0]).approx_memory();
        assert!(small >= BASE_MEMORY && big > 2 * small, "{small} {big}");
    }

    mod properties {
        use std::collections::HashMap;
        use std::fmt::Write as _;

        use proptest::prelude::*;

        use super::super::{UriTemplate, RESERVED};

        /// A variable value as RFC 6570 defines them.
        #[derive(Clone, Debug)]
        enum Value {
            Str(String),
            List(Vec<String>),
            Map(Vec<(String, String)>),
        }

        #[derive(Clone, Debug)]
        struct Var {
            name: String,
            explode: bool,
            prefix: Option<usize>,
        }

        #[derive(Clone, Debug)]
        enum TPart {
            Literal(String),
            Expr(char, Vec<Var>),
        }

        /// Characters values are drawn from: unreserved, reserved, `%`, space, non-ASCII.
        const VALUE_CHARS: &[char] = &[
            'a', 'Z', '0', '9', '-', '.', '_', '~', ':', '/', '?', '#', '[', ']', '@', '!', '$',
            '&', '\'', '(', ')', '*', '+', ',', ';', '=', '%', ' ', '"', '<', '{', '}', 'é', '日',
            '😀',
        ];

        fn value_string() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(VALUE_CHARS), 0..8)
                .prop_map(|cs| cs.into_iter().collect())
        }

        fn value() -> impl Strategy<Value = Option<Value>> {
            prop_oneof![
                Just(None),
                value_string().prop_map(|s| Some(Value::Str(s))),
                prop::collection::vec(value_string(), 0..4).prop_map(|l| Some(Value::List(l))),
                prop::collection::vec((value_string(), value_string()), 0..4)
                    .prop_map(|m| Some(Value::Map(m))),
            ]
        }

        fn literal() -> impl Strategy<Value = String> {
            let pieces = prop::sample::select(
                &[
                    "a",
                    "Z",
                    "0",
                    "/",
                    ":",
                    "?",
                    "#",
                    "&",
                    "=",
                    ".",
                    "'",
                    "~",
                    "[",
                    "]",
                    "%2F",
                    "é",
                    "日",
                    "https://example.com/",
                ][..],
            );
            prop::collection::vec(pieces, 0..4).prop_map(|ps| ps.concat())
        }

        /// Percent-encodes `s` the way RFC 6570 §3.2.1 does for the operator's allowed set.
        fn encode(s: &str, allow_reserved: bool, out: &mut String) {
            let b = s.as_bytes();
            let mut i = 0;
            while i < b.len() {
                let c = b[i];
                let triplet = c == b'%'
                    && i + 2 < b.len()
                    && b[i + 1].is_ascii_hexdigit()
                    && b[i + 2].is_ascii_hexdigit();
                if allow_reserved && triplet {
                    out.push_str(&s[i..i + 3]);
                    i += 3;
                    continue;
                }
                if c.is_ascii_alphanumeric()
                    || b"-._~".contains(&c)
                    || (allow_reserved && RESERVED.contains(&c))
                {
                    out.push(c as char);
                } else {
                    let _ = write!(out, "%{c:02X}");
                }
                i += 1;
            }
        }

        /// A reference RFC 6570 expander, written from the RFC's appendix A algorithm.
        fn expand(parts: &[TPart], values: &HashMap<String, Value>) -> String {
            let mut out = String::new();
            for part in parts {
                match part {
                    TPart::Literal(l) => out.push_str(l),
                    TPart::Expr(op, vars) => expand_expr(*op, vars, values, &mut out),
                }
            }
            out
        }

        fn expand_expr(op: char, vars: &[Var], values: &HashMap<String, Value>, out: &mut String) {
            let (first, sep, named, ifemp, reserved) = match op {
                '+' => ("", ",", false, "", true),
                '#' => ("#", ",", false, "", true),
                '.' => (".", ".", false, "", false),
                '/' => ("/", "/", false, "", false),
                ';' => (";", ";", true, "", false),
                '?' => ("?", "&", true, "=", false),
                '&' => ("&", "&", true, "=", false),
                _ => ("", ",", false, "", false),
            };
            let mut started = false;
            for var in vars {
                let value = match values.get(&var.name) {
                    None => continue,
                    Some(Value::List(l)) if l.is_empty() => continue,
                    Some(Value::Map(m)) if m.is_empty() => continue,
                    Some(v) => v,
                };
                out.push_str(if started { sep } else { first });
                started = true;
                match value {
                    Value::Str(s) => {
                        let s: String = match var.prefix {
                            Some(n) => s.chars().take(n).collect(),
                            None => s.clone(),
                        };
                        if named {
                            out.push_str(&var.name);
                            if s.is_empty() {
                                out.push_str(ifemp);
                                continue;
                            }
                            out.push('=');
                        }
                        encode(&s, reserved, out);
                    }
                    Value::List(items) if !var.explode => {
                        if named {
                            out.push_str(&var.name);
                            out.push('=');
                        }
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            encode(item, reserved, out);
                        }
                    }
                    Value::Map(pairs) if !var.explode => {
                        if named {
                            out.push_str(&var.name);
                            out.push('=');
                        }
                        for (i, (k, v)) in pairs.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            encode(k, reserved, out);
                            out.push(',');
                            encode(v, reserved, out);
                        }
                    }
                    Value::List(items) => {
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                out.push_str(sep);
                            }
                            if named {
                                out.push_str(&var.name);
                                if item.is_empty() {
                                    out.push_str(ifemp);
                                    continue;
                                }
                                out.push('=');
                            }
                            encode(item, reserved, out);
                        }
                    }
                    Value::Map(pairs) => {
                        for (i, (k, v)) in pairs.iter().enumerate() {
                            if i > 0 {
                                out.push_str(sep);
                            }
                            encode(k, reserved, out);
                            if named && v.is_empty() {
                                out.push_str(ifemp);
                                continue;
                            }
                            out.push('=');
                            encode(v, reserved, out);
                        }
                    }
                }
            }
        }

        /// Renders the parsed-form template back to its text.
        fn render(parts: &[TPart]) -> String {
            let mut raw = String::new();
            for part in parts {
                match part {
                    TPart::Literal(l) => raw.push_str(l),
                    TPart::Expr(op, vars) => {
                        raw.push('{');
                        if *op != 's' {
                            raw.push(*op);
                        }
                        for (i, v) in vars.iter().enumerate() {
                            if i > 0 {
                                raw.push(',');
                            }
                            raw.push_str(&v.name);
                            if v.explode {
                                raw.push('*');
                            } else if let Some(n) = v.prefix {
                                let _ = write!(raw, ":{n}");
                            }
                        }
                        raw.push('}');
                    }
                }
            }
            raw
        }

        /// A template of literals and expressions with distinct variables, and values for them.
        fn template_and_values() -> impl Strategy<Value = (Vec<TPart>, HashMap<String, Value>)> {
            let var = (
                0..3usize,
                any::<bool>(),
                prop::option::of(1..6usize),
                value(),
            );
            let expr = (
                prop::sample::select(&['s', '+', '#', '.', '/', ';', '?', '&'][..]),
                prop::collection::vec(var, 1..4),
            );
            prop::collection::vec((literal(), expr), 1..4).prop_map(|chunks| {
                let mut parts = Vec::new();
                let mut values = HashMap::new();
                let mut n = 0;
                for (lit, (op, vars)) in chunks {
                    parts.push(TPart::Literal(lit));
                    let vars = vars
                        .into_iter()
                        .map(|(style, explode, prefix, value)| {
                            n += 1;
                            // Plain, dotted and pct-encoded names.
                            let name = match style {
                                0 => format!("v{n}"),
                                1 => format!("v.{n}"),
                                _ => format!("v%41_{n}"),
                            };
                            if let Some(v) = value {
                                values.insert(name.clone(), v);
                            }
                            Var {
                                name,
                                explode,
                                prefix: if explode { None } else { prefix },
                            }
                        })
                        .collect();
                    parts.push(TPart::Expr(op, vars));
                }
                (parts, values)
            })
        }

        /// Whether `s` is one value of the simple operator: unreserved, `,` or pct-encoded octets.
        fn is_simple_value(s: &str) -> bool {
            let b = s.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    if i + 2 < b.len()
                        && b[i + 1].is_ascii_hexdigit()
                        && b[i + 2].is_ascii_hexdigit()
                    {
                        i += 3;
                        continue;
                    }
                    return false;
                }
                if !(b[i].is_ascii_alphanumeric() || b"-._~,".contains(&b[i])) {
                    return false;
                }
                i += 1;
            }
            true
        }

        fn single(op: &str, value: &str) -> (UriTemplate, String) {
            let raw = format!("https://example.com/x{{{op}var}}/y");
            let tpl = match UriTemplate::compile(&raw) {
                Ok(t) => t,
                Err(e) => panic!("{raw:?}: {e}"),
            };
            let parts = vec![
                TPart::Literal("https://example.com/x".into()),
                TPart::Expr(
                    op.chars().next().unwrap_or('s'),
                    vec![Var {
                        name: "var".into(),
                        explode: false,
                        prefix: None,
                    }],
                ),
                TPart::Literal("/y".into()),
            ];
            let values = HashMap::from([("var".to_string(), Value::Str(value.to_string()))]);
            (tpl, expand(&parts, &values))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn simple_expansion_matches(value in value_string()) {
                let (tpl, topic) = single("", &value);
                prop_assert!(tpl.is_match(&topic), "{topic:?} vs {}", tpl.pattern());
            }

            #[test]
            fn reserved_expansion_matches(value in value_string()) {
                let (tpl, topic) = single("+", &value);
                prop_assert!(tpl.is_match(&topic), "{topic:?} vs {}", tpl.pattern());
            }

            #[test]
            fn path_expansion_matches(value in value_string()) {
                let (tpl, topic) = single("/", &value);
                prop_assert!(tpl.is_match(&topic), "{topic:?} vs {}", tpl.pattern());
            }

            /// Every expansion of every template, whatever the operators, modifiers and values
            /// (strings, lists, maps, undefined), is matched by the compiled template.
            #[test]
            fn every_expansion_matches((parts, values) in template_and_values()) {
                let raw = render(&parts);
                let tpl = UriTemplate::compile(&raw);
                prop_assert!(tpl.is_ok(), "{raw:?}: {:?}", tpl.err());
                let tpl = tpl.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let topic = expand(&parts, &values);
                prop_assert!(tpl.is_match(&topic), "{raw:?} should match {topic:?} (pattern {})", tpl.pattern());
            }

            /// For the simple operator the match is exact: a raw value matches iff it is made of
            /// unreserved characters, commas and pct-encoded octets.
            #[test]
            fn simple_operator_accepts_exactly_its_alphabet(raw_value in value_string()) {
                let tpl = UriTemplate::compile("https://example.com/books/{id}")
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let topic = format!("https://example.com/books/{raw_value}");
                prop_assert_eq!(tpl.is_match(&topic), is_simple_value(&raw_value), "{}", topic);
            }

            /// Arbitrary input never panics the compiler, and whatever compiles can be run.
            #[test]
            fn compile_never_panics(raw in ".{0,64}", topic in ".{0,64}") {
                if let Ok(tpl) = UriTemplate::compile(&raw) {
                    let _ = tpl.is_match(&topic);
                }
            }

            /// Templates built from template syntax characters: still no panic.
            #[test]
            fn compile_never_panics_on_template_syntax(raw in "[{}a,.:*%0-9+#/;?&=!@|]{0,32}") {
                let _ = UriTemplate::compile(&raw);
            }
        }
    }
}
