//! Lua scripts sent by their SHA-1 (`EVALSHA`), so a call carries the script's 40-character digest
//! rather than its text.
//!
//! A Redis that does not know the script yet (first call, a restart, a failover, another master of
//! a cluster) answers `NOSCRIPT`; the call is then sent once more as `EVAL` with the text, which
//! also caches it there for the next calls.

use redis::{Cmd, FromRedisValue, ToRedisArgs};

use super::connection::CallError;
use super::pool::ConnectionPool;

/// A script and its digest.
#[derive(Debug)]
pub(crate) struct Script {
    body: &'static str,
    sha: String,
}

impl Script {
    pub(crate) fn new(body: &'static str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, body.as_bytes());
        let sha = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Self { body, sha }
    }

    /// The script's command, named `EVALSHA` (by digest) or `EVAL` (with its text).
    fn command<K: ToRedisArgs, A: ToRedisArgs>(&self, by_sha: bool, keys: &[K], args: A) -> Cmd {
        let mut cmd = if by_sha {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&self.sha);
            cmd
        } else {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(self.body);
            cmd
        };
        cmd.arg(keys.len()).arg(keys).arg(args);
        cmd
    }
}

impl ConnectionPool {
    /// Runs `script` with `keys` and `args` (see the module docs).
    pub(crate) async fn eval<T: FromRedisValue, K: ToRedisArgs, A: ToRedisArgs + Clone>(
        &self,
        script: &Script,
        keys: &[K],
        args: A,
    ) -> Result<T, CallError> {
        match self.query(&script.command(true, keys, args.clone())).await {
            Err(CallError::Redis(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.query(&script.command(false, keys, args)).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_redis_own() {
        // `SCRIPT LOAD "return 1"` answers this digest.
        assert_eq!(
            Script::new("return 1").sha,
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
