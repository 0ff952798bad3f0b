//! One test per directive, through [`Config::from_args_and_env`] (what the hub really runs), plus
//! the syntax, precedence and error cases.

use std::time::Duration;

use super::*;
use crate::config::{Config, ConfigError, TransportKind};

fn no_env(_: &str) -> Option<String> {
    None
}

/// The configuration for `directives` (and extra flags).
fn config(directives: &str, flags: &[&str]) -> Config {
    try_config(directives, flags).unwrap_or_else(|e| panic!("{directives:?} refused: {e}"))
}

fn try_config(directives: &str, flags: &[&str]) -> Result<Config, ConfigError> {
    let mut args = vec!["quicksilver", "--extra-directives", directives];
    args.extend_from_slice(flags);
    Config::from_args_and_env(args, &no_env)
}

/// The error for `directives`, as printed.
fn refused(directives: &str) -> String {
    match try_config(directives, &[]) {
        Ok(_) => panic!("{directives:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

fn notices(c: &Config) -> String {
    c.notices
        .iter()
        .map(|n| n.message.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn anonymous() {
    assert!(!config("", &[]).anonymous);
    assert!(config("anonymous", &[]).anonymous);
    assert!(refused("anonymous 0").contains("`anonymous` takes no argument"));
}

#[test]
fn subscriptions() {
    assert!(config("subscriptions", &[]).subscriptions);
}

#[test]
fn cors_origins() {
    let c = config(
        "cors_origins http://127.0.0.1:8000 https://app.example.com",
        &[],
    );
    assert_eq!(
        c.cors_origins,
        vec!["http://127.0.0.1:8000", "https://app.example.com"]
    );
    assert_eq!(config(r#"cors_origins "*""#, &[]).cors_origins, vec!["*"]);
    assert!(refused("cors_origins").contains("`cors_origins` takes at least 1 argument"));
}

#[test]
fn publish_origins() {
    let c = config(
        "publish_origins https://*.example.com https://app.example.org",
        &[],
    );
    assert_eq!(
        c.publish_origins,
        vec!["https://*.example.com", "https://app.example.org"]
    );
}

#[test]
fn heartbeat() {
    assert_eq!(
        config("heartbeat 15s", &[]).heartbeat,
        Duration::from_secs(15)
    );
    assert_eq!(config("heartbeat 0s", &[]).heartbeat, Duration::ZERO);
    assert_eq!(config("heartbeat 0", &[]).heartbeat, Duration::ZERO);
    assert!(refused("heartbeat soon").contains("heartbeat"));
    assert!(refused("heartbeat 10").contains("missing unit"));
}

#[test]
fn write_timeout() {
    assert_eq!(
        config("write_timeout 1h30m", &[]).write_timeout,
        Duration::from_secs(5400)
    );
    assert_eq!(
        config("write_timeout 0s", &[]).write_timeout,
        Duration::ZERO
    );
    assert_eq!(
        config("write_timeout 1d", &[]).write_timeout,
        Duration::from_secs(86400)
    );
}

#[test]
fn dispatch_timeout() {
    assert_eq!(
        config("dispatch_timeout 5s", &[]).dispatch_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(
        config("dispatch_timeout 1.5s", &[]).dispatch_timeout,
        Duration::from_millis(1500)
    );
    assert!(refused("dispatch_timeout -1s").contains("negative"));
}

#[test]
fn max_request_body_size() {
    assert_eq!(
        config("max_request_body_size 512KB", &[]).max_body_size,
        512_000
    );
    assert_eq!(
        config("max_request_body_size 1MiB", &[]).max_body_size,
        1 << 20
    );
    assert_eq!(
        config("max_request_body_size 2048", &[]).max_body_size,
        2048
    );
    assert_eq!(
        config("max_request_body_size \"1.5 kib\"", &[]).max_body_size,
        1536
    );
    let c = config("max_request_body_size 0", &[]);
    assert_eq!(c.max_body_size, 1 << 20, "0 keeps the hub's own limit");
    assert!(notices(&c).contains("stay bounded"));
    assert!(refused("max_request_body_size 1.5 kib").contains("takes 1 argument"));
    assert!(refused("max_request_body_size lots").contains("invalid max_request_body_size"));
}

#[test]
fn cookie_name() {
    let c = config("cookie_name mercure_access_token", &[]);
    assert_eq!(c.access_token_cookie, "mercure_access_token");
    assert_eq!(
        c.cookie_name, "mercureAuthorization",
        "the legacy cookie stays"
    );
}

#[test]
fn public_urls() {
    let c = config(
        "public_urls https://a.example.com https://b.example.com",
        &[],
    );
    assert_eq!(
        c.public_url,
        ["https://a.example.com", "https://b.example.com"]
    );
    assert!(refused("public_urls").contains("public_urls"));
}

#[test]
fn resource_identifier() {
    let c = config(
        "resource_identifier https://hub.example.com/.well-known/mercure",
        &[],
    );
    assert_eq!(
        c.resource_identifier.as_deref(),
        Some("https://hub.example.com/.well-known/mercure")
    );
}

#[test]
fn protocol_version_compatibility() {
    let c = config("protocol_version_compatibility 8", &[]);
    assert!(c.legacy);
    assert!(notices(&c).contains("pre-standardization"));
    config("protocol_version_compatibility 7", &[]);
    assert!(refused("protocol_version_compatibility 9").contains("versions 7 and 8"));
    assert!(refused("protocol_version_compatibility eight").contains("not a number"));
}

#[test]
fn issuer() {
    let c = config(
        "issuer https://a.example {\n\
         \tauthorization_server\n\
         \tpublisher {\n\
         \t\tjwt !ChangeThisSecret! HS256\n\
         \t}\n\
         \tsubscriber {\n\
         \t\tjwks_uri https://a.example/jwks RS256 ES256\n\
         \t}\n\
         }\n\
         issuer https://b.example {\n\
         \tsubscriber {\n\
         \t\tjwt other-secret HS512\n\
         \t}\n\
         }",
        &[],
    );
    assert_eq!(c.issuer_blocks.len(), 2);
    let a = &c.issuer_blocks[0];
    assert_eq!(a.id, "https://a.example");
    assert!(a.authorization_server);
    assert_eq!(
        a.publisher,
        RoleKeys::Jwt {
            key: "!ChangeThisSecret!".into(),
            algorithm: "HS256".into()
        }
    );
    assert_eq!(
        a.subscriber,
        RoleKeys::Jwks {
            uri: "https://a.example/jwks".into(),
            algorithms: vec!["RS256".into(), "ES256".into()]
        }
    );
    let b = &c.issuer_blocks[1];
    assert_eq!(b.publisher, RoleKeys::Refused);
    assert_eq!(
        b.subscriber,
        RoleKeys::Jwt {
            key: "other-secret".into(),
            algorithm: "HS512".into()
        }
    );
    assert!(
        !format!("{a:?}").contains("ChangeThisSecret"),
        "keys stay out of Debug"
    );

    // {env.NAME} placeholders in keys, as the reference replaces them.
    let env = |name: &str| (name == "SUB_KEY").then(|| "from-the-environment".to_string());
    let c = Config::from_args_and_env(
        [
            "quicksilver",
            "--extra-directives",
            "issuer https://b.example {\n subscriber {\n  jwt {env.SUB_KEY}\n }\n}",
        ],
        &env,
    )
    .unwrap();
    assert_eq!(
        c.issuer_blocks[0].subscriber,
        RoleKeys::Jwt {
            key: "from-the-environment".into(),
            algorithm: "HS256".into()
        }
    );

    for (text, error) in [
        ("issuer https://x {\n}", "neither a `publisher` nor a `subscriber`"),
        ("issuer {\n publisher {\n  jwt k\n }\n}", "`issuer` takes 1 argument, got 0"),
        (
            "issuer https://x {\n publisher {\n  jwt k\n  jwks_uri https://x/jwks\n }\n}",
            "mutually exclusive",
        ),
        ("issuer https://x {\n publisher {\n  key k\n }\n}", "unknown directive `key`"),
        ("issuer https://x {\n audience y\n}", "unknown directive `audience`"),
        ("issuer https://x {\n publisher {\n }\n}", "without `jwt` nor `jwks_uri`"),
        ("issuer https://x {\n publisher {\n  jwt {env.UNSET}\n }\n}", "key is empty"),
        (
            "issuer https://x {\n publisher {\n  jwt \"-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\" HS256\n }\n}",
            "HMAC",
        ),
        (
            "issuer https://x {\n publisher {\n  jwt \"-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\"\n }\n}",
            "algorithm must be given",
        ),
        ("issuer https://x {\n publisher {\n  jwt k\n }", "never closed"),
    ] {
        let e = refused(text);
        assert!(e.contains(error), "{text:?}: {e}");
    }
}

#[test]
fn publisher_jwt() {
    let c = config("publisher_jwt !ChangeThisMercureHubJWTSecretKey!", &[]);
    assert_eq!(
        c.publisher_key(),
        Some(("!ChangeThisMercureHubJWTSecretKey!", "HS256"))
    );
    let c = config(
        "publisher_jwt \"-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\" RS256",
        &[],
    );
    assert_eq!(c.publisher_key().map(|k| k.1), Some("RS256"));
    assert!(refused("publisher_jwt a b c").contains("1 to 2 arguments"));
}

#[test]
fn subscriber_jwt() {
    let c = config("subscriber_jwt secret HS512", &[]);
    assert_eq!(c.subscriber_key(), Some(("secret", "HS512")));
    assert_eq!(c.publisher_key(), None);
}

#[test]
fn publisher_and_subscriber_jwks_url() {
    let c = config(
        "publisher_jwks_url https://idp.example/jwks.json\nsubscriber_jwks_url file:///etc/jwks.json",
        &[],
    );
    assert_eq!(
        c.legacy_jwks.publisher.as_deref(),
        Some("https://idp.example/jwks.json")
    );
    assert_eq!(
        c.legacy_jwks.subscriber.as_deref(),
        Some("file:///etc/jwks.json")
    );
    assert!(notices(&c).contains("verified with the JWK Set"));
    let e = refused("publisher_jwks_url idp.example/jwks");
    assert!(e.contains("line 1") && e.contains("no https://"), "{e}");
}

#[test]
fn transport() {
    let c = config(
        "transport bolt {\n\tpath /data/mercure.db\n\tsize 500\n\tcleanup_frequency 0.3\n}",
        &["--transport", "redis"],
    );
    assert_eq!(
        c.transport,
        TransportKind::Redis,
        "the flag wins over the directive"
    );
    assert_eq!(
        c.history_size, 500,
        "while the history size still comes from it"
    );
    assert!(
        notices(&c).contains("in-memory transport"),
        "{}",
        notices(&c)
    );

    let c = config("transport bolt", &[]);
    assert_eq!((c.transport, c.history_size), (TransportKind::Memory, 1000));
    assert!(notices(&c).contains("bounded history"));

    let c = config("transport local", &["--history-size", "7"]);
    assert_eq!((c.transport, c.history_size), (TransportKind::Memory, 7));
    assert_eq!(config("transport local", &[]).history_size, 0);

    assert!(refused("transport postgres {\n url x\n}").contains("unknown transport `postgres`"));
    assert!(refused("transport bolt {\n size many\n}").contains("line 2"));
    assert!(refused("transport").contains("`transport` takes 1 argument"));
}

#[test]
fn transport_url() {
    let c = config(
        "transport_url bolt:///var/run/mercure.db?size=100&cleanup_frequency=0.4",
        &[],
    );
    assert_eq!((c.transport, c.history_size), (TransportKind::Memory, 100));
    assert_eq!(config("transport_url local://local", &[]).history_size, 0);
    assert!(refused("transport_url redis://x").contains("unknown transport"));
}

#[test]
fn topic_matcher_cache() {
    let c = config("topic_matcher_cache 10000", &[]);
    assert!(notices(&c).contains("topic_matcher_cache"));
    config("topic_matcher_cache -1", &[]);
    assert!(refused("topic_matcher_cache big").contains("not a number"));
}

#[test]
fn subscriber_list_cache_size() {
    let c = config("subscriber_list_cache_size 100000", &[]);
    assert!(notices(&c).contains("subscriber_list_cache_size"));
    assert!(refused("subscriber_list_cache_size -1").contains(">= 0"));
}

#[test]
fn debugger() {
    let c = config("debugger", &["--debug-page", "false"]);
    assert!(!c.debug_page, "the flag wins");
    assert!(config("debugger", &[]).debug_page);
}

#[test]
fn playground() {
    let c = config("playground", &[]);
    assert!(c.playground && c.anonymous && c.subscriptions && c.debug_page);
    assert_eq!(c.cors_origins, vec!["*"]);
    assert_eq!(c.publish_origins, vec!["*"]);
    assert_eq!(c.access_token_cookie, "mercure_access_token");
    assert_eq!(c.publisher_key(), Some((crate::config::DEV_KEY, "HS256")));
    assert!(notices(&c).contains("INSECURE"));

    // What the operator sets wins over the playground's defaults.
    let c = config(
        "playground\ncors_origins https://app.example.com\ncookie_name dev_cookie",
        &["--jwt-key", "mine"],
    );
    assert_eq!(c.cors_origins, vec!["https://app.example.com"]);
    assert_eq!(c.publish_origins, vec!["*"]);
    assert_eq!(c.access_token_cookie, "dev_cookie");
    assert_eq!(c.publisher_key(), Some(("mine", "HS256")));
}

#[test]
fn name() {
    let c = config("name default", &[]);
    assert!(notices(&c).contains("`name default` has no effect"));
}

#[test]
fn unknown_directives_are_refused_with_their_line() {
    let e = refused("anonymous\ncors_origin http://127.0.0.1:8000\n");
    assert_eq!(
        e,
        "MERCURE_EXTRA_DIRECTIVES line 2: unknown directive `cors_origin`"
    );
    assert!(refused("\n\nui").contains("line 3: unknown directive `ui` (renamed `debugger`)"));
    assert!(refused("demo").contains("renamed `playground`"));
    assert!(refused("auto_https off").contains("`auto_https`"));
    assert!(refused("anonymous {\n}").contains("takes no block"));
    assert!(refused("}").contains("unexpected `}`"));
}

#[test]
fn syntax_quotes_comments_heredocs_and_lines() {
    let c = config(
        "# the app\n\
         cors_origins \"https://app.example.com\" `https://b.example.com` # and another\n\
         \n\
         subscriber_jwt <<KEY\n\
         \tmulti\n\
         \tline \"secret\"\n\
         \tKEY HS384\n\
         anonymous\n",
        &[],
    );
    assert_eq!(
        c.cors_origins,
        vec!["https://app.example.com", "https://b.example.com"]
    );
    assert_eq!(
        c.subscriber_key(),
        Some(("multi\nline \"secret\"", "HS384"))
    );
    assert!(c.anonymous);
    assert!(refused("cors_origins \"https://a.example").contains("unterminated"));
    assert!(refused("publisher_jwt <<EOF\nabc\n").contains("never closed"));
    // Escaped quotes inside double quotes.
    let c = config(r#"subscriber_jwt "a\"b""#, &[]);
    assert_eq!(c.subscriber_key().map(|k| k.0), Some("a\"b"));
    // Windows line endings are whitespace.
    assert!(config("anonymous\r\nsubscriptions\r\n", &[]).subscriptions);
}

#[test]
fn flags_and_environment_variables_win_over_directives_and_directives_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quicksilver.toml");
    std::fs::write(
        &file,
        "heartbeat = \"1s\"\nhistory_size = 9\nanonymous = false\ncors_origins = [\"https://file.example\"]\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let c = config(
        "heartbeat 2s\ncors_origins https://directive.example\nwrite_timeout 3s",
        &["--config", path, "--write-timeout", "4s"],
    );
    assert_eq!(
        c.write_timeout,
        Duration::from_secs(4),
        "flag over directive"
    );
    assert_eq!(c.heartbeat, Duration::from_secs(2), "directive over file");
    assert_eq!(c.cors_origins, vec!["https://directive.example"]);
    assert_eq!(
        c.history_size, 9,
        "the file still sets what nothing above sets"
    );
    assert!(notices(&c).contains("`write_timeout` is not used"));

    // A later directive replaces an earlier one, as assignments do.
    let c = config("heartbeat 2s\nheartbeat 3s", &[]);
    assert_eq!(c.heartbeat, Duration::from_secs(3));
}

#[test]
fn issuer_blocks_add_to_issuer_flags() {
    let c = config(
        "issuer https://b.example {\n publisher {\n  jwt k\n }\n}",
        &["--issuer", "https://a.example"],
    );
    assert_eq!(c.issuers, vec!["https://a.example"]);
    assert_eq!(c.issuer_blocks.len(), 1);
}

#[test]
fn server_name_sets_the_listen_address_below_listen() {
    let c = Config::from_args(["quicksilver", "--server-name", ":80"]).unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:80");
    let c = Config::from_args([
        "quicksilver",
        "--server-name",
        ":80",
        "--listen",
        "127.0.0.1:4000",
    ])
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:4000");
    assert!(notices(&c).contains("SERVER_NAME=\":80\" is not used"));
    let e = Config::from_args(["quicksilver", "--server-name", ":80 :81"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("several ports"), "{e}");
}

#[test]
fn go_durations_and_sizes() {
    assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
    assert_eq!(parse_go_duration("2h45m"), Ok(Duration::from_secs(9900)));
    assert_eq!(parse_go_duration("1µs"), Ok(Duration::from_micros(1)));
    assert!(parse_go_duration("").is_err());
    assert!(parse_go_duration("5x").is_err());
    assert!(parse_go_duration("s").is_err());
    assert_eq!(parse_bytes("1 GB"), Some(1_000_000_000));
    assert_eq!(parse_bytes("1,000"), Some(1000));
    assert_eq!(parse_bytes("2KiB"), Some(2048));
    assert_eq!(parse_bytes("-1"), None);
    assert_eq!(parse_bytes("12 apples"), None);
}
