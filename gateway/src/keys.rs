//! `leakmon-gateway keys`: the fleet key the gateways hold and the node keys derived from it
//! ([`leakmon_protocol::auth`]). `keys new` makes a fleet key from the system's random
//! source; `keys node NAME` prints the key of node NAME, for its agent's `auth.key_file`.

use std::io::Write as _;
use std::path::PathBuf;

use leakmon_common::args::{self, Arg, Command, Stop};
use leakmon_protocol::auth::FleetKey;

use crate::config::{Config, DEFAULT_PATH};

pub const USAGE: &str = "\
leakmon-gateway keys: the fleet key and the nodes' keys

Usage: leakmon-gateway keys new [--out FILE]
       leakmon-gateway keys node NAME [--config PATH]

  new              a new fleet key (32 random bytes), written to FILE (created with mode 600;
                   an existing file is never replaced) or printed. Every gateway of the fleet
                   needs the same one at auth.fleet_key_file.
  node NAME        the key of the node NAME, derived from this gateway's fleet key
                   (auth.fleet_key_file of the config): put it at the agent's auth.key_file
                   on that node (mode 600, owned by the agent's user)
  --config PATH    the gateway config to read auth.fleet_key_file from
                   (default /etc/leakmon/gateway.toml, if it exists)
  --help           print this help and exit";

const COMMAND: Command = Command::subcommand("leakmon-gateway keys", USAGE);

pub enum KeysArgs {
    New { out: Option<PathBuf> },
    Node { name: String, config: Option<PathBuf> },
}

/// `keys`'s arguments (after the word `keys`).
pub fn parse(argv: impl IntoIterator<Item = std::ffi::OsString>) -> Result<KeysArgs, Stop> {
    args::parse(&COMMAND, argv, |f| {
        let mut words = Vec::new();
        let (mut out, mut config) = (None, None);
        while let Some(arg) = f.next()? {
            match arg {
                Arg::Long("out") => out = Some(f.path()?),
                Arg::Long("config") | Arg::Short('c') => config = Some(f.path()?),
                Arg::Value(v) => words.push(v.to_string_lossy().into_owned()),
                other => return Err(other.unexpected()),
            }
        }
        let bad = |m: &str| Err(args::Error::from(m));
        match words.as_slice() {
            [w] if w == "new" => match config {
                Some(_) => bad("`keys new` takes no --config"),
                None => Ok(KeysArgs::New { out }),
            },
            [w, name] if w == "node" => match out {
                Some(_) => bad("`keys node` prints the key; redirect it (> node.key)"),
                None => Ok(KeysArgs::Node {
                    name: name.clone(),
                    config,
                }),
            },
            _ => bad("expected `new` or `node NAME`"),
        }
    })
}

pub fn run(a: KeysArgs) -> Result<(), String> {
    match a {
        KeysArgs::New { out } => {
            let mut bytes = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| "the system's random source failed".to_owned())?;
            let text = FleetKey::from_bytes(bytes).to_text();
            match out {
                None => print!("{text}"),
                Some(path) => {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                    f.write_all(text.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                }
            }
            Ok(())
        }
        KeysArgs::Node { name, config } => {
            leakmon_protocol::topics::validate_node(&name)
                .map_err(|e| format!("node name `{}`: {e}", name.escape_debug()))?;
            let path = config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
            let cfg = Config::load(&path, config.is_some())
                .map_err(|e| format!("invalid configuration: {e}"))?;
            let file = &cfg.auth.fleet_key_file;
            let text = leakmon_common::config::read_key_file(
                file,
                "auth.fleet_key_file",
                "run this on a gateway's host, as a user that can read the fleet key",
            )
            .map_err(|e| e.to_string())?;
            let fleet = FleetKey::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            print!("{}", fleet.node_key(&name).to_text());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<KeysArgs, Stop> {
        parse(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn words_and_flags() {
        assert!(matches!(p(&["new"]), Ok(KeysArgs::New { out: None })));
        assert!(matches!(p(&["new", "--out", "/x"]), Ok(KeysArgs::New { out: Some(_) })));
        assert!(matches!(
            p(&["node", "pi1", "-c", "/g.toml"]),
            Ok(KeysArgs::Node { config: Some(_), .. })
        ));
        for bad in [&[][..], &["old"], &["node"], &["new", "x"], &["node", "a", "--out", "f"]] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
