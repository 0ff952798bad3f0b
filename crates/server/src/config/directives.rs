//! `MERCURE_EXTRA_DIRECTIVES` (`--extra-directives`): the directives of the reference hub's
//! `mercure` Caddyfile block, as operators of that hub already write them, turned into our own
//! settings.
//!
//! Text enters as the variable's value and leaves as [`Directives`]: flag arguments for clap (each
//! [`Setting`] names the arguments it sets, so a flag or one of our own environment variables can
//! win over it), issuer blocks ([`IssuerSpec`], which no flag can express: per-role keys), and
//! [`Notice`]s, the log lines saying what a directive became or that it is accepted but has no
//! effect here. Nothing here reads the process environment except through the lookup it is given
//! (for `{env.NAME}` placeholders), and nothing is applied: [`super::Config::from_args`] layers the
//! settings between our environment variables and the configuration file.
//!
//! The syntax is the Caddyfile's: one directive per line, arguments separated by spaces,
//! `"quoted"` and `` `raw` `` tokens (which may span lines), `<<MARKER` heredocs, `#` comments, and
//! blocks opened by a `{` ending a line and closed by a `}` on a line of its own. An unknown
//! directive, a missing or extra argument, or a value the reference would refuse stops the hub
//! at start, naming the directive and its line within the variable.

use std::time::Duration;

use super::issuer::{IssuerSpec, RoleKeys};

/// The environment variable (and flag) the directives come from, as errors and notices name it.
pub const SOURCE: &str = "MERCURE_EXTRA_DIRECTIVES";

/// What the directives amount to.
#[derive(Debug, Default)]
pub struct Directives {
    /// Flag arguments, in the order written.
    pub settings: Vec<Setting>,
    /// `issuer` blocks.
    pub issuers: Vec<IssuerSpec>,
    /// `publisher_jwks_url`, `subscriber_jwks_url`.
    pub legacy_jwks: super::LegacyJwks,
    /// What to log once logging is set up.
    pub notices: Vec<Notice>,
}

/// Flag arguments standing for one directive (or one part of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The clap ids of the settings these arguments set; a flag or environment variable given for
    /// any of them wins over the whole setting.
    pub ids: Vec<&'static str>,
    /// `--flag value …`.
    pub args: Vec<String>,
    /// The directive, for notices.
    pub directive: String,
    /// Its line within the variable (1-based).
    pub line: usize,
}

/// A log line about the configuration, emitted at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// How loud.
    pub level: NoticeLevel,
    /// What to say.
    pub message: String,
}

/// The level of a [`Notice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeLevel {
    /// Informational: what a setting became.
    Info,
    /// Something the operator probably wants to change.
    Warn,
}

impl Notice {
    pub(crate) fn info(message: impl Into<String>) -> Self {
        Self {
            level: NoticeLevel::Info,
            message: message.into(),
        }
    }

    pub(crate) fn warn(message: impl Into<String>) -> Self {
        Self {
            level: NoticeLevel::Warn,
            message: message.into(),
        }
    }
}

/// Why the directives were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{SOURCE} line {line}: {reason}")]
pub struct DirectiveError {
    /// The line within the variable (1-based).
    pub line: usize,
    /// What is wrong, naming the directive.
    pub reason: String,
}

fn error<T>(line: usize, reason: impl Into<String>) -> Result<T, DirectiveError> {
    Err(DirectiveError {
        line,
        reason: reason.into(),
    })
}

/// Parses the directives of `text`; `env` answers `{env.NAME}` placeholders in keys, algorithms and
/// JWK Set URLs (as the reference replaces them there).
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Directives, DirectiveError> {
    let tokens = tokenize(text)?;
    let mut cursor = Cursor { tokens, at: 0 };
    let directives = cursor.block(None)?;
    let mut out = Directives::default();
    for directive in &directives {
        apply(directive, env, &mut out)?;
    }
    Ok(out)
}

// --------------------------------------------------------------------------------------------
// Tokens
// --------------------------------------------------------------------------------------------

/// One Caddyfile token.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    text: String,
    /// The line it starts on.
    line: usize,
    /// The line it ends on (a quoted token or heredoc may span lines).
    end_line: usize,
    /// Quoted tokens are never `{` or `}` delimiters, whatever their text.
    quoted: bool,
}

impl Token {
    fn is(&self, delimiter: &str) -> bool {
        !self.quoted && self.text == delimiter
    }
}

/// Splits `text` into tokens the way Caddy's lexer does.
fn tokenize(text: &str) -> Result<Vec<Token>, DirectiveError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let start = line;
        if c == '"' || c == '`' {
            let mut text = String::new();
            i += 1;
            loop {
                let Some(&ch) = chars.get(i) else {
                    return error(start, "unterminated quoted value");
                };
                i += 1;
                if ch == c {
                    break;
                }
                if ch == '\n' {
                    line += 1;
                }
                // Inside double quotes, `\"` is a quote; every other backslash stays as written.
                if c == '"' && ch == '\\' && chars.get(i) == Some(&'"') {
                    text.push('"');
                    i += 1;
                    continue;
                }
                text.push(ch);
            }
            tokens.push(Token {
                text,
                line: start,
                end_line: line,
                quoted: true,
            });
            continue;
        }
        let mut word = String::new();
        while i < chars.len() && !chars[i].is_whitespace() {
            word.push(chars[i]);
            i += 1;
        }
        if let Some(marker) = word.strip_prefix("<<") {
            if !marker.is_empty()
                && marker
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                let (text, consumed, lines) = heredoc(&chars[i..], marker, start)?;
                i += consumed;
                line += lines;
                tokens.push(Token {
                    text,
                    line: start,
                    end_line: line,
                    quoted: true,
                });
                continue;
            }
        }
        tokens.push(Token {
            text: word,
            line: start,
            end_line: start,
            quoted: false,
        });
    }
    Ok(tokens)
}

/// Reads a heredoc body after `<<MARKER` (the rest of the marker's line must be empty): the lines
/// up to one holding only the marker, with that line's indentation taken off each of them.
/// Returns the text, the characters consumed and the newlines crossed.
fn heredoc(
    rest: &[char],
    marker: &str,
    line: usize,
) -> Result<(String, usize, usize), DirectiveError> {
    let rest: String = rest.iter().collect();
    let Some(first_newline) = rest.find('\n') else {
        return error(line, format!("heredoc <<{marker} has no body"));
    };
    if !rest[..first_newline].trim().is_empty() {
        return error(line, format!("heredoc <<{marker} must end its line"));
    }
    let body = &rest[first_newline + 1..];
    let mut lines: Vec<&str> = Vec::new();
    let mut offset = first_newline + 1;
    for raw in body.split_inclusive('\n') {
        let content = raw.trim_end_matches('\n').trim_end_matches('\r');
        let trimmed = content.trim_start();
        let closes = trimmed
            .strip_prefix(marker)
            .is_some_and(|after| after.is_empty() || after.starts_with(char::is_whitespace));
        if closes {
            let indent = &content[..content.len() - trimmed.len()];
            let mut text = String::new();
            for (n, l) in lines.iter().enumerate() {
                let Some(stripped) = l
                    .strip_prefix(indent)
                    .or_else(|| l.trim().is_empty().then_some(""))
                else {
                    return error(
                        line + 1 + n,
                        format!(
                            "heredoc <<{marker}: a line is indented less than its closing marker"
                        ),
                    );
                };
                if n > 0 {
                    text.push('\n');
                }
                text.push_str(stripped);
            }
            // What follows the marker on its line is more arguments of the same directive.
            offset += indent.len() + marker.len();
            let consumed = rest[..offset].chars().count();
            return Ok((text, consumed, lines.len() + 1));
        }
        lines.push(content);
        offset += raw.len();
    }
    error(line, format!("heredoc <<{marker} is never closed"))
}

// --------------------------------------------------------------------------------------------
// Directives and blocks
// --------------------------------------------------------------------------------------------

/// A directive: its name, the arguments on its line, and its block if it opens one.
#[derive(Debug)]
struct Directive {
    name: Token,
    args: Vec<Token>,
    block: Option<Vec<Directive>>,
}

impl Directive {
    fn line(&self) -> usize {
        self.name.line
    }

    fn name(&self) -> &str {
        &self.name.text
    }

    fn arg_texts(&self) -> Vec<String> {
        self.args.iter().map(|t| t.text.clone()).collect()
    }

    /// Refuses arguments beyond `max` and fewer than `min`.
    fn expect_args(&self, min: usize, max: usize) -> Result<(), DirectiveError> {
        let n = self.args.len();
        if n < min || n > max {
            let wanted = match (min, max) {
                (0, 0) => "no argument".to_string(),
                (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
                (a, usize::MAX) => {
                    format!("at least {a} argument{}", if a == 1 { "" } else { "s" })
                }
                (a, b) => format!("{a} to {b} arguments"),
            };
            return error(
                self.line(),
                format!("`{}` takes {wanted}, got {n}", self.name()),
            );
        }
        Ok(())
    }

    fn no_block(&self) -> Result<(), DirectiveError> {
        if self.block.is_some() {
            return error(self.line(), format!("`{}` takes no block", self.name()));
        }
        Ok(())
    }
}

struct Cursor {
    tokens: Vec<Token>,
    at: usize,
}

impl Cursor {
    /// Reads directives up to the `}` closing the block opened on line `opened` (or to the end).
    fn block(&mut self, opened: Option<usize>) -> Result<Vec<Directive>, DirectiveError> {
        let mut out = Vec::new();
        while let Some(name) = self.tokens.get(self.at).cloned() {
            self.at += 1;
            if name.is("}") {
                if opened.is_some() {
                    return Ok(out);
                }
                return error(name.line, "unexpected `}`");
            }
            if name.is("{") {
                return error(name.line, "unexpected `{`: a block belongs to a directive");
            }
            let mut args = Vec::new();
            let mut end = name.end_line;
            while let Some(next) = self.tokens.get(self.at) {
                if next.line != end {
                    break;
                }
                end = next.end_line;
                args.push(next.clone());
                self.at += 1;
            }
            let block = match args.last() {
                Some(last) if last.is("{") => {
                    args.pop();
                    Some(self.block(Some(name.line))?)
                }
                _ => None,
            };
            if let Some(stray) = args.iter().find(|t| t.is("{") || t.is("}")) {
                return error(
                    stray.line,
                    format!(
                        "`{}`: unexpected `{}` inside the line",
                        name.text, stray.text
                    ),
                );
            }
            out.push(Directive { name, args, block });
        }
        match opened {
            Some(line) => error(line, "block opened here is never closed with `}`"),
            None => Ok(out),
        }
    }
}

// --------------------------------------------------------------------------------------------
// Meaning
// --------------------------------------------------------------------------------------------

fn apply(
    d: &Directive,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Directives,
) -> Result<(), DirectiveError> {
    let line = d.line();
    let name = d.name().to_string();
    let mut set = |ids: &[&'static str], args: Vec<String>| {
        out.settings.push(Setting {
            ids: ids.to_vec(),
            args,
            directive: name.clone(),
            line,
        })
    };
    if d.name() != "issuer" && d.name() != "transport" {
        d.no_block()?;
    }
    match d.name() {
        "anonymous" => {
            d.expect_args(0, 0)?;
            set(&["anonymous"], vec!["--anonymous".into()]);
        }
        "subscriptions" => {
            d.expect_args(0, 0)?;
            set(&["subscriptions"], vec!["--subscriptions".into()]);
        }
        "debugger" => {
            d.expect_args(0, 0)?;
            set(&["debug_page"], vec!["--debug-page".into(), "true".into()]);
        }
        "playground" => {
            d.expect_args(0, 0)?;
            set(&["playground"], vec!["--playground".into()]);
        }
        "write_timeout" | "dispatch_timeout" | "heartbeat" => {
            d.expect_args(1, 1)?;
            let value = &d.args[0].text;
            let duration = parse_go_duration(value).map_err(|e| DirectiveError {
                line,
                reason: format!("`{}`: {e}", d.name()),
            })?;
            let flag = format!("--{}", d.name().replace('_', "-"));
            let id: &'static str = match d.name() {
                "write_timeout" => "write_timeout",
                "dispatch_timeout" => "dispatch_timeout",
                _ => "heartbeat",
            };
            set(&[id], vec![flag, format_duration(duration)]);
        }
        "max_request_body_size" => {
            d.expect_args(1, 1)?;
            let value = &d.args[0].text;
            let bytes = parse_bytes(value).ok_or_else(|| DirectiveError {
                line,
                reason: format!("invalid max_request_body_size {value:?}"),
            })?;
            if bytes == 0 {
                out.notices.push(Notice::warn(format!(
                    "{SOURCE} line {line}: `max_request_body_size 0` (no limit in the hub) is not \
                     followed: request bodies stay bounded by --max-body-size"
                )));
            } else {
                set(
                    &["max_body_size"],
                    vec!["--max-body-size".into(), bytes.to_string()],
                );
            }
        }
        "cors_origins" | "publish_origins" => {
            d.expect_args(1, usize::MAX)?;
            let (id, flag) = if d.name() == "cors_origins" {
                ("cors_origins", "--cors-origins")
            } else {
                ("publish_origins", "--publish-origins")
            };
            let args = d
                .arg_texts()
                .into_iter()
                .flat_map(|o| [flag.to_string(), o])
                .collect();
            set(&[id], args);
        }
        "cookie_name" => {
            d.expect_args(1, 1)?;
            set(
                &["access_token_cookie"],
                vec!["--access-token-cookie".into(), d.args[0].text.clone()],
            );
        }
        "resource_identifier" => {
            d.expect_args(1, 1)?;
            set(
                &["resource_identifier"],
                vec!["--resource-identifier".into(), d.args[0].text.clone()],
            );
        }
        "public_urls" => {
            d.expect_args(1, usize::MAX)?;
            let args = d
                .arg_texts()
                .into_iter()
                .flat_map(|url| ["--public-url".to_string(), url])
                .collect();
            set(&["public_url"], args);
        }
        "protocol_version_compatibility" => {
            d.expect_args(1, 1)?;
            match d.args[0].text.parse::<i64>() {
                Ok(7 | 8) => out.notices.push(Notice::info(format!(
                    "{SOURCE} line {line}: `protocol_version_compatibility {}`: the \
                     pre-standardization generation is accepted beside the current one \
                     (--legacy, on by default)",
                    d.args[0].text
                ))),
                Ok(_) => {
                    return error(
                        line,
                        "`protocol_version_compatibility` supports protocol versions 7 and 8 only",
                    )
                }
                Err(_) => {
                    return error(
                        line,
                        format!(
                            "`protocol_version_compatibility`: {:?} is not a number",
                            d.args[0].text
                        ),
                    )
                }
            }
        }
        "publisher_jwt" | "subscriber_jwt" => {
            d.expect_args(1, 2)?;
            let role = if d.name() == "publisher_jwt" {
                "publisher"
            } else {
                "subscriber"
            };
            let key = placeholders(&d.args[0].text, env);
            let alg = d.args.get(1).map(|a| placeholders(&a.text, env));
            let alg = static_key_algorithm(&key, alg.as_deref(), role, line)?;
            let (key_id, alg_id): (&'static str, &'static str) = if role == "publisher" {
                ("publisher_jwt_key", "publisher_jwt_alg")
            } else {
                ("subscriber_jwt_key", "subscriber_jwt_alg")
            };
            set(
                &[key_id, alg_id],
                vec![
                    format!("--{role}-jwt-key={key}"),
                    format!("--{role}-jwt-alg={alg}"),
                ],
            );
        }
        "publisher_jwks_url" | "subscriber_jwks_url" => {
            d.expect_args(1, 1)?;
            let uri = d.args[0].text.clone();
            if !["https://", "http://", "file://"]
                .iter()
                .any(|scheme| uri.starts_with(scheme))
            {
                return error(
                    line,
                    format!(
                        "`{}`: {uri:?} is no https://, http:// or file:// URL",
                        d.name()
                    ),
                );
            }
            let role = d.name().trim_end_matches("_jwks_url");
            out.notices.push(Notice::info(format!(
                "{SOURCE} line {line}: pre-standardization {role} tokens are verified with the JWK \
                 Set {uri} (asymmetric algorithms), not with a {role} key"
            )));
            if role == "publisher" {
                out.legacy_jwks.publisher = Some(uri);
            } else {
                out.legacy_jwks.subscriber = Some(uri);
            }
        }
        "issuer" => out.issuers.push(issuer(d, env)?),
        "transport" => transport(d, out)?,
        "transport_url" => {
            d.expect_args(1, 1)?;
            transport_url(&d.args[0].text, line, out)?;
        }
        "topic_matcher_cache" => {
            d.expect_args(1, 1)?;
            if d.args[0].text.parse::<i64>().is_err() {
                return error(
                    line,
                    format!(
                        "`topic_matcher_cache`: {:?} is not a number",
                        d.args[0].text
                    ),
                );
            }
            out.notices.push(Notice::info(format!(
                "{SOURCE} line {line}: `topic_matcher_cache` has no effect here: compiled matchers \
                 are shared and bounded by the hub itself"
            )));
        }
        "subscriber_list_cache_size" => {
            d.expect_args(1, 1)?;
            match d.args[0].text.parse::<i64>() {
                Ok(n) if n >= 0 => out.notices.push(Notice::info(format!(
                    "{SOURCE} line {line}: `subscriber_list_cache_size` has no effect here: \
                     subscribers are indexed by topic, without a cache"
                ))),
                Ok(n) => {
                    return error(
                        line,
                        format!("`subscriber_list_cache_size` must be >= 0, got {n}"),
                    )
                }
                Err(_) => {
                    return error(
                        line,
                        format!(
                            "`subscriber_list_cache_size`: {:?} is not a number",
                            d.args[0].text
                        ),
                    )
                }
            }
        }
        "name" => {
            d.expect_args(1, 1)?;
            out.notices.push(Notice::info(format!(
                "{SOURCE} line {line}: `name {}` has no effect here: one process serves one hub",
                d.args[0].text
            )));
        }
        "ui" => return error(line, "unknown directive `ui` (renamed `debugger`)"),
        "demo" => return error(line, "unknown directive `demo` (renamed `playground`)"),
        other => return error(line, format!("unknown directive `{other}`")),
    }
    Ok(())
}

/// The algorithm of a static key: the one given, else HS256 for a secret. A PEM key must name
/// its algorithm, and not an HMAC one (the public key would be the shared secret).
fn static_key_algorithm(
    key: &str,
    alg: Option<&str>,
    role: &str,
    line: usize,
) -> Result<String, DirectiveError> {
    let alg = alg.filter(|a| !a.is_empty());
    if key.trim_start().starts_with("-----BEGIN") {
        return match alg {
            None => error(
                line,
                format!("{role} key is PEM-encoded: its algorithm must be given (RS256, ES256, EdDSA, …)"),
            ),
            Some(a) if a.starts_with("HS") => error(
                line,
                format!("{role} key is PEM-encoded but {a} is an HMAC algorithm: anyone holding the public key could sign tokens"),
            ),
            Some(a) => Ok(a.to_string()),
        };
    }
    Ok(alg.unwrap_or("HS256").to_string())
}

/// `issuer ID { authorization_server; publisher { … }; subscriber { … } }`.
fn issuer(
    d: &Directive,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<IssuerSpec, DirectiveError> {
    d.expect_args(1, 1)?;
    let id = d.args[0].text.clone();
    let mut spec = IssuerSpec {
        id: id.clone(),
        authorization_server: false,
        publisher: RoleKeys::Refused,
        subscriber: RoleKeys::Refused,
        algorithms: Vec::new(),
    };
    for sub in d.block.iter().flatten() {
        match sub.name() {
            "authorization_server" => {
                sub.expect_args(0, 0)?;
                sub.no_block()?;
                spec.authorization_server = true;
            }
            "publisher" | "subscriber" => {
                sub.expect_args(0, 0)?;
                let keys = verifier(sub, env)?;
                if sub.name() == "publisher" {
                    spec.publisher = keys;
                } else {
                    spec.subscriber = keys;
                }
            }
            other => {
                return error(
                    sub.line(),
                    format!("issuer {id}: unknown directive `{other}` (expected `authorization_server`, `publisher` or `subscriber`)"),
                )
            }
        }
    }
    if matches!(spec.publisher, RoleKeys::Refused) && matches!(spec.subscriber, RoleKeys::Refused) {
        return error(
            d.line(),
            format!("issuer {id}: neither a `publisher` nor a `subscriber` block: its tokens could never be verified"),
        );
    }
    Ok(spec)
}

/// A `publisher { … }` or `subscriber { … }` block: `jwt KEY [ALG]` or `jwks_uri URL [ALG…]`.
fn verifier(
    d: &Directive,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RoleKeys, DirectiveError> {
    let mut keys = RoleKeys::Refused;
    for sub in d.block.iter().flatten() {
        sub.no_block()?;
        if !matches!(keys, RoleKeys::Refused) {
            return error(
                sub.line(),
                format!(
                    "`{}`: `jwt` and `jwks_uri` are mutually exclusive",
                    d.name()
                ),
            );
        }
        match sub.name() {
            "jwt" => {
                sub.expect_args(1, 2)?;
                let key = placeholders(&sub.args[0].text, env);
                let alg = sub.args.get(1).map(|a| placeholders(&a.text, env));
                if key.is_empty() {
                    return error(
                        sub.line(),
                        format!("`{}`: the `jwt` key is empty", d.name()),
                    );
                }
                let algorithm = static_key_algorithm(&key, alg.as_deref(), d.name(), sub.line())?;
                keys = RoleKeys::Jwt { key, algorithm };
            }
            "jwks_uri" => {
                sub.expect_args(1, usize::MAX)?;
                let uri = placeholders(&sub.args[0].text, env);
                keys = RoleKeys::Jwks {
                    uri,
                    algorithms: sub.args[1..].iter().map(|a| a.text.clone()).collect(),
                };
            }
            other => {
                return error(
                    sub.line(),
                    format!(
                        "`{}`: unknown directive `{other}` (expected `jwt` or `jwks_uri`)",
                        d.name()
                    ),
                )
            }
        }
    }
    if matches!(keys, RoleKeys::Refused) {
        return error(
            d.line(),
            format!("`{}` block without `jwt` nor `jwks_uri`", d.name()),
        );
    }
    Ok(keys)
}

/// `transport bolt { size N … }` (our in-memory transport keeping N updates) or `transport local`
/// (in memory, no history).
fn transport(d: &Directive, out: &mut Directives) -> Result<(), DirectiveError> {
    d.expect_args(1, 1)?;
    let line = d.line();
    match d.args[0].text.as_str() {
        "bolt" => {
            let mut size: Option<u64> = None;
            let mut ignored = Vec::new();
            for sub in d.block.iter().flatten() {
                sub.no_block()?;
                match sub.name() {
                    "size" => {
                        sub.expect_args(1, 1)?;
                        size = Some(sub.args[0].text.parse().map_err(|_| DirectiveError {
                            line: sub.line(),
                            reason: format!("`size`: {:?} is not a number of updates", sub.args[0].text),
                        })?);
                    }
                    "cleanup_frequency" => {
                        sub.expect_args(1, 1)?;
                        if sub.args[0].text.parse::<f64>().is_err() {
                            return error(
                                sub.line(),
                                format!("`cleanup_frequency`: {:?} is not a number", sub.args[0].text),
                            );
                        }
                        ignored.push("cleanup_frequency");
                    }
                    "path" | "bucket_name" => {
                        sub.expect_args(1, 1)?;
                        ignored.push(if sub.name() == "path" { "path" } else { "bucket_name" });
                    }
                    other => out.notices.push(Notice::warn(format!(
                        "{SOURCE} line {}: `transport bolt`: `{other}` means nothing to the Bolt transport and is ignored",
                        sub.line()
                    ))),
                }
            }
            bolt(size, &ignored, line, "transport bolt", out);
        }
        "local" => {
            if d.block.as_ref().is_some_and(|b| !b.is_empty()) {
                return error(line, "`transport local` takes no options");
            }
            local(line, "transport local", out);
        }
        other => {
            return error(
                line,
                format!("unknown transport `{other}` (`bolt` and `local` map to the in-memory transport; Redis is --transport redis)"),
            )
        }
    }
    Ok(())
}

/// `transport_url bolt://PATH?size=N&cleanup_frequency=F` or `local://local`, the reference's
/// pre-0.17 spelling of the transport.
fn transport_url(url: &str, line: usize, out: &mut Directives) -> Result<(), DirectiveError> {
    let parsed = url::Url::parse(url).map_err(|e| DirectiveError {
        line,
        reason: format!("`transport_url`: invalid URL {url:?}: {e}"),
    })?;
    match parsed.scheme() {
        "bolt" => {
            let mut size = None;
            let mut ignored = vec!["path"];
            for (key, value) in parsed.query_pairs() {
                match key.as_ref() {
                    "size" => {
                        size = Some(value.parse().map_err(|_| DirectiveError {
                            line,
                            reason: format!("`transport_url`: size {value:?} is not a number of updates"),
                        })?)
                    }
                    "cleanup_frequency" => ignored.push("cleanup_frequency"),
                    "bucket_name" => ignored.push("bucket_name"),
                    _ => {}
                }
            }
            bolt(size, &ignored, line, "transport_url bolt://…", out);
        }
        "local" => local(line, "transport_url local://…", out),
        other => {
            return error(
                line,
                format!("`transport_url`: unknown transport `{other}` (`bolt` and `local` map to the in-memory transport)"),
            )
        }
    }
    Ok(())
}

fn bolt(size: Option<u64>, ignored: &[&str], line: usize, directive: &str, out: &mut Directives) {
    out.settings.push(Setting {
        ids: vec!["transport"],
        args: vec!["--transport".into(), "memory".into()],
        directive: directive.to_string(),
        line,
    });
    let kept = match size {
        Some(n) if n > 0 => {
            out.settings.push(Setting {
                ids: vec!["history_size"],
                args: vec!["--history-size".into(), n.to_string()],
                directive: directive.to_string(),
                line,
            });
            format!("keeping the last {n} updates for reconnecting subscribers")
        }
        _ => "keeping --history-size updates (a Bolt transport without `size` keeps every update; \
              the in-memory one keeps a bounded history)"
            .to_string(),
    };
    let ignored = if ignored.is_empty() {
        String::new()
    } else {
        format!("; {} do not apply", ignored.join(", "))
    };
    out.notices.push(Notice::info(format!(
        "{SOURCE} line {line}: `{directive}` became the in-memory transport, {kept}{ignored} \
         (several nodes share Redis instead: --transport redis)"
    )));
}

fn local(line: usize, directive: &str, out: &mut Directives) {
    out.settings.push(Setting {
        ids: vec!["transport"],
        args: vec!["--transport".into(), "memory".into()],
        directive: directive.to_string(),
        line,
    });
    out.settings.push(Setting {
        ids: vec!["history_size"],
        args: vec!["--history-size".into(), "0".into()],
        directive: directive.to_string(),
        line,
    });
    out.notices.push(Notice::info(format!(
        "{SOURCE} line {line}: `{directive}` became the in-memory transport without history"
    )));
}

/// Replaces `{env.NAME}` placeholders (an unset variable becomes empty, as in the reference).
fn placeholders(value: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("{env.") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 5..start + len];
        out.push_str(&env(name).unwrap_or_default());
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

// --------------------------------------------------------------------------------------------
// Values
// --------------------------------------------------------------------------------------------

/// A Caddy duration: Go's (`1h30m`, `250ms`, `1.5s`, `0`) plus `d` for days. Negative durations
/// are refused (no setting takes one).
pub(crate) fn parse_go_duration(value: &str) -> Result<Duration, String> {
    let s = value.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err(format!("negative duration {value:?}"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!("invalid duration {value:?}"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("invalid duration {value:?}"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => return Err(format!("missing unit in duration {value:?}")),
            unit => return Err(format!("unknown unit {unit:?} in duration {value:?}")),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("duration {value:?} is out of range"))
}

/// A duration as our own flags read it.
fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        "0".into()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// A size the way the reference reads `max_request_body_size` (go-humanize): a number, then an
/// optional unit, `k`/`kb` for 1000 and `ki`/`kib` for 1024 up to exabytes, case-insensitive.
pub(crate) fn parse_bytes(value: &str) -> Option<u64> {
    let s = value.trim();
    let number_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(s.len());
    let number: f64 = s[..number_len].replace(',', "").parse().ok()?;
    let unit = s[number_len..].trim().to_ascii_lowercase();
    let multiplier: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024f64.powi(2),
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        _ => return None,
    };
    let bytes = number * multiplier;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests;
