//! The configuration file (`--config FILE`): a TOML table whose keys are the flag names, turned
//! into the command-line arguments it stands for, so clap parses and validates it exactly like
//! flags and one struct holds the result.
//!
//! A key already set by a layer above the file (a flag, an environment variable, `SERVER_NAME`,
//! `MERCURE_EXTRA_DIRECTIVES`) is skipped: they win over the file. An unknown key refuses the
//! whole file, naming it.

use clap::CommandFactory;

use super::{Config, ConfigError};

/// Turns the settings of a TOML file into command-line arguments, for the keys whose clap id
/// `taken` does not hold; returns the arguments and the ids they set.
pub(super) fn args(
    path: &std::path::Path,
    taken: &dyn Fn(&str) -> bool,
) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string()))?;
    let command = Config::command();
    let mut out = Vec::new();
    let mut ids = Vec::new();
    for (key, value) in table {
        // Policy tables are read by `crate::policies` (and again on each reload).
        if crate::policies::TABLES.contains(&key.as_str()) {
            continue;
        }
        let id = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|a| {
                let long = a.get_long().map(|l| l.replace('-', "_"));
                (a.get_id().as_str() == id || long.as_deref() == Some(id.as_str()))
                    && long.is_some()
                    && id != "config"
            })
            .ok_or_else(|| file_error(format!("unknown key `{key}`")))?;
        // The reference hub's environment is read before the file: in a file, settings go by
        // their own names.
        if matches!(arg.get_id().as_str(), "extra_directives" | "server_name") {
            return Err(file_error(format!(
                "`{key}` is read from the environment only: in this file, give the settings it stands for by their own keys"
            )));
        }
        if taken(arg.get_id().as_str()) {
            continue;
        }
        ids.push(arg.get_id().to_string());
        let flag = format!("--{}", arg.get_long().unwrap_or(&id));
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if b {
                    out.push(flag);
                }
            }
            toml::Value::Array(items) => {
                for item in items {
                    out.push(flag.clone());
                    out.push(scalar(&key, item).map_err(file_error)?);
                }
            }
            other => {
                out.push(flag);
                out.push(scalar(&key, other).map_err(file_error)?);
            }
        }
    }
    Ok((out, ids))
}

fn scalar(key: &str, value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!("key `{key}`: expected a string, number or boolean")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn config_file_with_precedence_and_unknown_keys_refused() {
        let dir = std::env::temp_dir().join(format!("qs-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("quicksilver.toml");
        std::fs::write(
            &file,
            "history-size = 42\nanonymous = true\ncors_origins = [\"https://a.example\", \"https://b.example\"]\nheartbeat = \"5s\"\nlisten = \"127.0.0.1:4000\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let c = Config::from_args([
            "quicksilver",
            "--config",
            path,
            "--listen",
            "127.0.0.1:5000",
        ])
        .unwrap();
        assert_eq!(c.history_size, 42);
        assert!(c.anonymous);
        assert_eq!(
            c.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(c.heartbeat, Duration::from_secs(5));
        assert_eq!(
            c.listen.to_string(),
            "127.0.0.1:5000",
            "a flag beats the file"
        );

        std::fs::write(&file, "history_size = 1\nhistroy_size = 2\n").unwrap();
        let err = Config::from_args(["quicksilver", "--config", path])
            .unwrap_err()
            .to_string();
        assert!(err.contains("histroy_size"), "{err}");
        std::fs::write(&file, "extra_directives = \"anonymous\"\n").unwrap();
        let err = Config::from_args(["quicksilver", "--config", path])
            .unwrap_err()
            .to_string();
        assert!(err.contains("environment only"), "{err}");
        std::fs::write(&file, "history_size = \"many\"\n").unwrap();
        let err = Config::from_args(["quicksilver", "--config", path])
            .unwrap_err()
            .to_string();
        assert!(err.contains("history-size"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
