//! `leakmon-gateway keys`: the fleet key the gateways hold and the node keys derived from it
//! ([`leakmon_protocol::auth`]). `keys new` makes a fleet key from the system's random
//! source; `keys node NAME` prints the key of node NAME, for its agent's `auth.key_file`.

use std::io::Write as _;
use std::path::PathBuf;

use leakmon_common::args::{self, Arg, Command, Stop};
use leakmon_protocol::auth::FleetKey;

use crate::config::{Config, DEFAULT_PATH};
use crate::keyring::Keyring;

pub const USAGE: &str = "\
leakmon-gateway keys: the fleet key and the nodes' keys

Usage: leakmon-gateway keys new [--out FILE]
       leakmon-gateway keys node NAME [--config PATH]
       leakmon-gateway keys bench [--nodes N] [--seconds S]

  new              a new fleet key (32 random bytes), written to FILE (created with mode 600;
                   an existing file is never replaced) or printed. Every gateway of the fleet
                   needs the same one at auth.fleet_key_file.
  node NAME        the key of the node NAME, derived from this gateway's fleet key
                   (auth.fleet_key_file of the config): put it at the agent's auth.key_file
                   on that node (mode 600, owned by the agent's user)
  bench            what checking the nodes' beats costs this machine: N nodes' beats (1000)
                   checked for S seconds (3) as the gateway checks them, with a throwaway key;
                   prints microseconds per beat and the share of one core at 4 beats/s a node
  --config PATH    the gateway config to read auth.fleet_key_file from
                   (default /etc/leakmon/gateway.toml, if it exists)
  --help           print this help and exit";

const COMMAND: Command = Command::subcommand("leakmon-gateway keys", USAGE);

pub enum KeysArgs {
    New {
        out: Option<PathBuf>,
    },
    Node {
        name: String,
        config: Option<PathBuf>,
    },
    Bench {
        nodes: usize,
        seconds: u64,
    },
}

/// `keys`'s arguments (after the word `keys`).
pub fn parse(argv: impl IntoIterator<Item = std::ffi::OsString>) -> Result<KeysArgs, Stop> {
    args::parse(&COMMAND, argv, |f| {
        let mut words = Vec::new();
        let (mut out, mut config) = (None, None);
        let (mut nodes, mut seconds) = (None, None);
        while let Some(arg) = f.next()? {
            match arg {
                Arg::Long("out") => out = Some(f.path()?),
                Arg::Long("nodes") => nodes = Some(f.value()?),
                Arg::Long("seconds") => seconds = Some(f.value()?),
                Arg::Long("config") | Arg::Short('c') => config = Some(f.path()?),
                Arg::Value(v) => words.push(v.to_string_lossy().into_owned()),
                other => return Err(other.unexpected()),
            }
        }
        let bad = |m: &str| Err(args::Error::from(m));
        let is_bench = words.first().is_some_and(|w| w == "bench");
        if (nodes.is_some() || seconds.is_some()) && !is_bench {
            return bad("--nodes and --seconds are for `keys bench`");
        }
        match words.as_slice() {
            [w] if w == "bench" => match (nodes.unwrap_or(1000), seconds.unwrap_or(3)) {
                (n @ 1..=1_000_000, s @ 1..=600) => Ok(KeysArgs::Bench {
                    nodes: n,
                    seconds: s,
                }),
                _ => bad("--nodes 1 to 1000000, --seconds 1 to 600"),
            },
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

/// `keys bench`: every node's beat (as an agent seals it, on its own topic) checked in turn
/// through one [`Keyring`], the gateway's: the node keys are derived on the first round and
/// kept, as in the gateway.
fn bench(nodes: usize, seconds: u64) {
    use leakmon_protocol::{encode, Beat, Channel, Topics, PROTOCOL_VERSION};
    let fleet = FleetKey::from_bytes([0x11; 32]);
    let Ok(topics) = Topics::new(leakmon_protocol::DEFAULT_PREFIX) else {
        return;
    };
    let beats: Vec<(String, String, Vec<u8>)> = (0..nodes)
        .map(|i| {
            let node = format!("node-{i:06}");
            let topic = topics.node(&node, Channel::Beat);
            let beat = Beat {
                v: PROTOCOL_VERSION,
                node: node.clone(),
                run: 12,
                n: 345_678,
                ts: Some(1_796_000_000_000),
                mono: Some(123_456_789),
            };
            let sealed = fleet.node_key(&node).seal(&topic, encode(&beat));
            (node, topic, sealed)
        })
        .collect();
    let mut ring = Keyring::new(fleet, None);
    // this thread's CPU time (the kernel's count, in ns): the machine may be busy meanwhile
    let cpu = || {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |ns| ns / 1e9)
    };
    // the first round derives every key (what a gateway pays once per node after a start)
    // (by the wall clock: the kernel's count moves at scheduler ticks, too coarse for it)
    let wall = std::time::Instant::now();
    let valid = beats
        .iter()
        .filter(|(n, t, p)| ring.check(n, t, p).is_ok())
        .count();
    let first = wall.elapsed().as_secs_f64() / nodes as f64;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let (c1, mut checked) = (cpu(), 0u64);
    while std::time::Instant::now() < end {
        for (n, t, p) in &beats {
            if ring.check(n, t, p).is_ok() {
                checked += 1;
            }
        }
    }
    let per = (cpu() - c1) / checked.max(1) as f64;
    // what an agent pays per message: sealing a report of 16 KiB (20 containers' worth)
    let key = FleetKey::from_bytes([0x11; 32]).node_key("node-000000");
    let report = format!("{{\"v\":1,\"pad\":\"{}\"}}", "x".repeat(16 * 1024 - 18));
    let (c2, rounds) = (cpu(), 20_000u32);
    let mut bytes = 0usize;
    for _ in 0..rounds {
        bytes += key
            .seal(
                "leakmon/v1/nodes/node-000000/containers",
                report.clone().into_bytes(),
            )
            .len();
    }
    let seal = (cpu() - c2) / f64::from(rounds);
    println!("seal_16kib_us={:.2} (bytes sealed {bytes})", seal * 1e6);
    println!(
        "nodes={nodes} beat_bytes={} valid_first_round={valid} first_check_us={:.2} \
         beats_checked={checked} check_us={:.3} core_share_at_4_beats_per_s={:.2}% elapsed_s={:.1}",
        beats.first().map_or(0, |b| b.2.len()),
        first * 1e6,
        per * 1e6,
        per * 4.0 * nodes as f64 * 100.0,
        wall.elapsed().as_secs_f64()
    );
}

pub fn run(a: KeysArgs) -> Result<(), String> {
    match a {
        KeysArgs::Bench { nodes, seconds } => {
            bench(nodes, seconds);
            Ok(())
        }
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
            let path = config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
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
        assert!(matches!(
            p(&["new", "--out", "/x"]),
            Ok(KeysArgs::New { out: Some(_) })
        ));
        assert!(matches!(
            p(&["bench", "--nodes", "10000"]),
            Ok(KeysArgs::Bench {
                nodes: 10000,
                seconds: 3
            })
        ));
        assert!(matches!(
            p(&["node", "pi1", "-c", "/g.toml"]),
            Ok(KeysArgs::Node {
                config: Some(_),
                ..
            })
        ));
        for bad in [
            &[][..],
            &["old"],
            &["node"],
            &["new", "x"],
            &["node", "a", "--out", "f"],
            &["new", "--nodes", "5"],
            &["bench", "--nodes", "0"],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
