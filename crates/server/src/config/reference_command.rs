//! The reference hub's image's command line, `caddy run --config /etc/caddy/Caddyfile` (or
//! `mercure run …`, or the development `dev.Caddyfile`), accepted so that a compose file written
//! for that image starts this one unchanged: the Symfony Mercure recipe's service says
//! `command: /usr/bin/caddy run --config /etc/caddy/dev.Caddyfile`, which an image whose entry point
//! is `quicksilver` receives as arguments.
//!
//! Only the Caddyfiles shipped in the reference image are understood, as what they configure: the
//! default one is the hub configured from the environment (nothing to add), the development one is
//! the default plus a permissive development setup, which is the playground here (`--playground`).
//! Any other Caddyfile cannot be read here and stops the hub, saying where its settings go.

use std::ffi::OsString;
use std::path::Path;

use super::directives::Notice;

/// A reference command line, translated.
#[derive(Debug)]
pub struct Translated {
    /// The arguments to run the hub with (the program name first).
    pub args: Vec<OsString>,
    /// What to log about it.
    pub notice: Notice,
}

/// `Ok(None)` when `args` (the program name first) is not a reference command line; the
/// translation when it is one this hub can run; why not otherwise.
pub fn translate(args: &[OsString]) -> Result<Option<Translated>, String> {
    let words: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let rest = match words.first().map(String::as_str) {
        Some("run") => &words[1..],
        Some(program)
            if matches!(
                Path::new(program).file_name().and_then(|n| n.to_str()),
                Some("caddy" | "mercure" | "frankenphp")
            ) && words.get(1).map(String::as_str) == Some("run") =>
        {
            &words[2..]
        }
        _ => return Ok(None),
    };
    let mut config = None;
    let mut i = 0;
    while i < rest.len() {
        let word = rest[i].as_str();
        let (name, inline) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (word, None),
        };
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => {
                    i += 1;
                    rest.get(i)
                        .cloned()
                        .ok_or_else(|| format!("`{name}` needs a value"))
                }
            }
        };
        match name {
            "--config" | "-c" => config = Some(value()?),
            "--adapter" | "-a" => {
                let adapter = value()?;
                if adapter != "caddyfile" {
                    return Err(format!(
                        "the reference hub's command line names the {adapter:?} adapter: only its own Caddyfiles are understood here"
                    ));
                }
            }
            "--watch" | "-w" | "--resume" | "-r" | "--environ" | "-e" => {}
            other => {
                return Err(format!(
                    "the reference hub's command line has {other:?}, which this hub cannot honour: configure it with environment variables (MERCURE_EXTRA_DIRECTIVES, QUICKSILVER_*) or flags instead"
                ))
            }
        }
        i += 1;
    }
    let config = config.unwrap_or_else(|| "/etc/caddy/Caddyfile".to_string());
    let file = Path::new(&config)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let in_image = config.starts_with("/etc/caddy/") || config.starts_with("/etc/frankenphp/");
    let mut translated = vec![args[0].clone()];
    let notice = match (in_image, file) {
        (true, "Caddyfile") => Notice::info(format!(
            "`run --config {config}`: the reference image's Caddyfile configures the hub from the environment, as here"
        )),
        (true, "dev.Caddyfile" | "Caddyfile.dev") => {
            translated.push("--playground".into());
            Notice::warn(format!(
                "`run --config {config}`: the reference image's development Caddyfile (permissive CORS, anonymous subscribers, subscription events, the debugging UI) is --playground here: never in production"
            ))
        }
        _ => {
            return Err(format!(
                "a Caddyfile ({config}) cannot be read here: give its `mercure` directives in MERCURE_EXTRA_DIRECTIVES and its site address in SERVER_NAME"
            ))
        }
    };
    Ok(Some(Translated {
        args: translated,
        notice,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(line: &[&str]) -> Result<Option<Vec<String>>, String> {
        let args: Vec<OsString> = line.iter().map(OsString::from).collect();
        translate(&args).map(|t| {
            t.map(|t| {
                t.args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect()
            })
        })
    }

    #[test]
    fn the_reference_images_command_lines() {
        let q = "quicksilver";
        assert_eq!(
            translated(&[
                q,
                "/usr/bin/caddy",
                "run",
                "--config",
                "/etc/caddy/dev.Caddyfile"
            ]),
            Ok(Some(vec![q.into(), "--playground".into()]))
        );
        assert_eq!(
            translated(&[
                q,
                "caddy",
                "run",
                "--config",
                "/etc/caddy/Caddyfile",
                "--adapter",
                "caddyfile"
            ]),
            Ok(Some(vec![q.into()]))
        );
        assert_eq!(
            translated(&[q, "mercure", "run", "-config=/etc/caddy/Caddyfile.dev"]).map(|t| t.is_some()),
            Err("the reference hub's command line has \"-config\", which this hub cannot honour: configure it with environment variables (MERCURE_EXTRA_DIRECTIVES, QUICKSILVER_*) or flags instead".into())
        );
        assert_eq!(translated(&[q, "run"]), Ok(Some(vec![q.into()])));
        assert_eq!(translated(&[q, "--anonymous"]), Ok(None));
        assert_eq!(translated(&[q]), Ok(None));
        assert_eq!(translated(&[q, "caddy", "version"]), Ok(None));
        assert!(translated(&[q, "run", "--config", "/srv/app/Caddyfile"])
            .unwrap_err()
            .contains("MERCURE_EXTRA_DIRECTIVES"));
        assert!(translated(&[q, "run", "--config"]).is_err());
        assert!(translated(&[q, "run", "--adapter", "json"]).is_err());
    }
}
