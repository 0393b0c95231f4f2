//! End to end: the Debian packages of scripts/package. lintian finds no error in any; the
//! amd64 ones are installed with the real dpkg into this machine (user, config permissions,
//! conffile kept on upgrade, removal and purge; with a stand-in for systemd, the unit's
//! enable/start/disable/upgrade/mask/purge rules and policy-rc.d), and their binaries run from
//! there; every architecture's package carries a binary for that architecture. Needs
//! `scripts/package` to have run (scripts/test does).

use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn deb(name: &str, arch: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/debian")
        .join(format!("{name}_{VERSION}_{arch}.deb"));
    assert!(
        p.exists(),
        "{} is missing: run `scripts/package` first (scripts/test does)",
        p.display()
    );
    p
}

/// Runs a command; (success, stdout + stderr).
fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let (success, out) = run(cmd, args);
    assert!(success, "{cmd} {args:?} failed:\n{out}");
    out
}

fn installed(name: &str) -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", name])
        .1
        .contains("install ok installed")
}

fn purge_all() {
    for p in ["leakmon-agent", "leakmon-gateway"] {
        let _ = run("dpkg", &["--purge", p]);
    }
}

#[test]
fn amd64_packages_install_run_upgrade_and_purge() {
    let _turn = dpkg_turn();
    let agent = deb("leakmon-agent", "amd64");
    let gateway = deb("leakmon-gateway", "amd64");
    purge_all();

    ok(
        "dpkg",
        &[
            "-i",
            agent.to_str().expect("path"),
            gateway.to_str().expect("path"),
        ],
    );
    assert!(installed("leakmon-agent") && installed("leakmon-gateway"));
    for f in [
        "/usr/bin/leakmon-agent",
        "/usr/bin/leakmon-gateway",
        "/usr/lib/systemd/system/leakmon-agent.service",
        "/usr/lib/systemd/system/leakmon-gateway.service",
        "/usr/share/doc/leakmon-agent/copyright",
    ] {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    // Conffiles, so dpkg keeps an operator's edits.
    for (p, conf) in [
        ("leakmon-agent", "/etc/leakmon/agent.toml"),
        ("leakmon-gateway", "/etc/leakmon/gateway.toml"),
    ] {
        let c = ok("dpkg-query", &["-W", "-f=${Conffiles}", p]);
        assert!(c.contains(conf), "{conf} is not a conffile of {p}: {c}");
    }
    // Each daemon a system user of its own (they share no state and no secret), no login, no
    // docker group (the unit adds that group to the daemon only); each config readable by its
    // daemon's group, not by the world, nor by the other daemon.
    for (user, conf) in [
        ("leakmon", "/etc/leakmon/agent.toml"),
        ("leakmon-gateway", "/etc/leakmon/gateway.toml"),
    ] {
        let pw = ok("getent", &["passwd", user]);
        assert!(pw.trim_end().ends_with(":/usr/sbin/nologin"), "{pw}");
        assert_eq!(ok("id", &["-nG", user]).trim(), user);
        let st = ok("stat", &["-c", "%a %U %G", conf]);
        assert_eq!(st.trim(), format!("640 root {user}"));
    }
    // The keys: the fleet key made by the gateway's package, this host's node key derived
    // from it; root's alone (systemd hands each to its daemon as a credential).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    for key in ["/etc/leakmon/fleet.key", "/etc/leakmon/node.key"] {
        let st = ok("stat", &["-c", "%a %U", key]);
        assert_eq!(st.trim(), "600 root", "{key}");
    }
    let node_key = std::fs::read_to_string("/etc/leakmon/node.key").expect("node key");
    assert!(
        node_key.starts_with(&format!("leakmon-node-key v1 {} ", host.trim())),
        "{node_key}"
    );

    // The installed binaries check the installed configs, as the daemon's user, with its key
    // handed over as the unit does (a copy only that user reads).
    let creds = tempfile::tempdir().expect("tempdir");
    for (user, binary, key, var) in [
        (
            "leakmon",
            "leakmon-agent",
            "node.key",
            "LEAKMON_AGENT__AUTH__KEY_FILE",
        ),
        (
            "leakmon-gateway",
            "leakmon-gateway",
            "fleet.key",
            "LEAKMON_GATEWAY__AUTH__FLEET_KEY_FILE",
        ),
    ] {
        let dir = creds.path().join(user);
        std::fs::create_dir(&dir).expect("credentials dir");
        let copy = dir.join(key);
        std::fs::copy(format!("/etc/leakmon/{key}"), &copy).expect("copy key");
        ok("chmod", &["0400", copy.to_str().expect("path")]);
        ok("chmod", &["0755", creds.path().to_str().expect("path")]);
        ok("chown", &["-R", user, dir.to_str().expect("path")]);
        let set = format!("{var}={}", copy.display());
        let out = ok(
            "runuser",
            &["-u", user, "--", "env", &set, binary, "--check-config"],
        );
        assert!(out.contains("configuration OK"), "{out}");
        // and the other daemon's user cannot read it
        let other = if user == "leakmon" {
            "leakmon-gateway"
        } else {
            "leakmon"
        };
        let (read, _) = run(
            "runuser",
            &["-u", other, "--", "cat", copy.to_str().expect("path")],
        );
        assert!(!read, "{other} reads {user}'s key");
    }
    let v = ok("/usr/bin/leakmon-agent", &["--version"]);
    assert!(v.contains(VERSION), "{v}");

    // An edited config and its permissions survive reinstalling (an upgrade).
    let mut conf = std::fs::read_to_string("/etc/leakmon/agent.toml").expect("config");
    conf.push_str("\n# edited by the operator\n");
    std::fs::write("/etc/leakmon/agent.toml", &conf).expect("edit config");
    ok("chmod", &["0600", "/etc/leakmon/agent.toml"]);
    ok("dpkg", &["-i", agent.to_str().expect("path")]);
    let after = std::fs::read_to_string("/etc/leakmon/agent.toml").expect("config");
    assert!(after.contains("# edited by the operator"), "edit lost");
    let st = ok("stat", &["-c", "%a", "/etc/leakmon/agent.toml"]);
    assert_eq!(st.trim(), "600", "permissions reset by the upgrade");
    // A broken edit is named by the installed binary.
    std::fs::write("/etc/leakmon/agent.toml", "interval = 5\n").expect("break config");
    let (success, out) = run("/usr/bin/leakmon-agent", &["--check-config"]);
    assert!(!success && out.contains("interval"), "{out}");
    std::fs::write("/etc/leakmon/agent.toml", &conf).expect("restore config");

    // Remove keeps the config; purge deletes it.
    ok("dpkg", &["-r", "leakmon-agent"]);
    assert!(!Path::new("/usr/bin/leakmon-agent").exists());
    assert!(
        Path::new("/etc/leakmon/agent.toml").exists(),
        "remove deleted the config"
    );
    ok("dpkg", &["--purge", "leakmon-agent"]);
    assert!(
        !Path::new("/etc/leakmon/agent.toml").exists(),
        "purge kept the config"
    );
    assert!(
        !Path::new("/etc/leakmon/node.key").exists(),
        "purge kept the node key"
    );
    assert!(
        Path::new("/etc/leakmon/fleet.key").exists(),
        "purge took the gateway's fleet key"
    );
    assert!(
        Path::new("/etc/leakmon/gateway.toml").exists(),
        "purge took the other's config"
    );
    purge_all();
    assert!(!installed("leakmon-gateway"));
}

/// e_machine of an ELF file.
fn elf_machine(path: &Path) -> u16 {
    let b = std::fs::read(path).expect("binary");
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", path.display());
    u16::from_le_bytes([b[18], b[19]])
}

#[test]
fn every_architecture_has_its_packages() {
    // EM_X86_64, EM_AARCH64, EM_ARM
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183), ("armhf", 40)] {
        for name in ["leakmon-agent", "leakmon-gateway"] {
            let p = deb(name, arch);
            let info = ok(
                "dpkg-deb",
                &["--field", p.to_str().expect("path"), "Architecture"],
            );
            assert_eq!(info.trim(), arch, "{}", p.display());
            let dir = tempfile::tempdir().expect("tempdir");
            ok(
                "dpkg-deb",
                &[
                    "-x",
                    p.to_str().expect("path"),
                    dir.path().to_str().expect("path"),
                ],
            );
            let bin = dir.path().join("usr/bin").join(name);
            assert_eq!(
                elf_machine(&bin),
                machine,
                "{} carries a binary for another machine",
                p.display()
            );
            let conffiles = ok(
                "dpkg-deb",
                &["--info", p.to_str().expect("path"), "conffiles"],
            );
            assert!(conffiles.contains("/etc/leakmon/"), "{conffiles}");
        }
    }
}

/// The tests that run dpkg take turns: it holds a lock, and they share /etc.
static DPKG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn dpkg_turn() -> std::sync::MutexGuard<'static, ()> {
    DPKG.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn lintian_finds_no_error_in_any_package() {
    let mut debs = Vec::new();
    for arch in ["amd64", "arm64", "armhf"] {
        for name in ["leakmon-agent", "leakmon-gateway"] {
            debs.push(deb(name, arch).to_string_lossy().into_owned());
        }
    }
    let mut args = vec!["--allow-root", "--no-tag-display-limit"];
    args.extend(debs.iter().map(String::as_str));
    let (_, out) = run("lintian", &args);
    eprintln!("lintian:\n{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    // it did look at every package: each has its warnings listed, or none
    assert!(
        !out.contains("cannot") && !out.contains("internal error"),
        "lintian did not run cleanly:\n{out}"
    );
}

/// A copy of `deb` as `version` whose config file changed upstream: what an upgrade brings.
fn upgrade_of(deb: &Path, dir: &Path, version: &str) -> PathBuf {
    let tree = dir.join("tree");
    let s = |p: &Path| p.to_str().expect("path").to_owned();
    ok("dpkg-deb", &["-R", &s(deb), &s(&tree)]);
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).expect("control");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version: ") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&control, text).expect("control");
    let conf = tree.join("etc/leakmon/agent.toml");
    let mut c = std::fs::read_to_string(&conf).expect("config");
    c.push_str("\n# a new default of the upgrade\n");
    std::fs::write(&conf, c).expect("config");
    let sums = ok(
        "sh",
        &[
            "-c",
            &format!(
                "cd {} && find . -path ./DEBIAN -prune -o -type f -printf '%P\\n' | sort | xargs md5sum",
                s(&tree)
            ),
        ],
    );
    std::fs::write(tree.join("DEBIAN/md5sums"), sums).expect("md5sums");
    let out = dir.join(format!("leakmon-agent_{version}_amd64.deb"));
    ok(
        "dpkg-deb",
        &["--root-owner-group", "-b", &s(&tree), &s(&out)],
    );
    out
}

/// A stand-in for systemd as PID 1: /run/systemd/system exists, and `systemctl` (first in
/// PATH) logs each call, does enable/disable/preset/is-enabled on the unit files as the real
/// one does offline, and starts nothing. Removed on drop.
struct FakeSystemd {
    dir: tempfile::TempDir,
    /// /run/systemd itself was made here (else only its `system` directory).
    made_run_systemd: bool,
    /// The machine's own policy-rc.d, put back on drop.
    policy: Option<Vec<u8>>,
}

impl FakeSystemd {
    fn new() -> FakeSystemd {
        assert!(
            !Path::new("/run/systemd/system").exists(),
            "/run/systemd/system exists: systemd runs here (or a killed run of this test left \
             it: remove it); this test stands in for systemd, run it where systemd does not"
        );
        let made_run_systemd = !Path::new("/run/systemd").exists();
        std::fs::create_dir_all("/run/systemd/system").expect("/run/systemd/system");
        let policy = std::fs::read("/usr/sbin/policy-rc.d").ok();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("calls");
        std::fs::write(
            dir.path().join("systemctl"),
            format!(
                "#!/bin/sh\necho \"$*\" >> {log}\ncase \" $* \" in\n\
                 *\" is-enabled \"*|*\" enable \"*|*\" disable \"*|*\" preset \"*) exec /usr/bin/systemctl --root=/ \"$@\" ;;\n\
                 esac\nexit 0\n",
                log = log.display()
            ),
        )
        .expect("fake systemctl");
        let fake = dir.path().join("systemctl");
        ok("chmod", &["0755", fake.to_str().expect("path")]);
        FakeSystemd {
            dir,
            made_run_systemd,
            policy,
        }
    }

    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The calls made since the last look.
    fn calls(&self) -> String {
        let p = self.dir.path().join("calls");
        let c = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        c
    }

    /// dpkg with this systemctl first in PATH.
    fn dpkg(&self, args: &[&str]) -> String {
        let out = Command::new("dpkg")
            .args(args)
            .env("PATH", self.path())
            .output()
            .expect("dpkg");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "dpkg {args:?}:\n{text}");
        text
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir("/run/systemd/system");
        if self.made_run_systemd {
            let _ = std::fs::remove_dir("/run/systemd");
        }
        match &self.policy {
            Some(p) => {
                let _ = std::fs::write("/usr/sbin/policy-rc.d", p);
            }
            None => {
                let _ = std::fs::remove_file("/usr/sbin/policy-rc.d");
            }
        }
    }
}

const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/leakmon-agent.service";
const MASK: &str = "/etc/systemd/system/leakmon-agent.service";

fn statoverride() -> String {
    run("dpkg-statoverride", &["--list", "/etc/leakmon/agent.toml"]).1
}

/// Debian's rules for a daemon's package, step by step: enabled and started on the first
/// install (unless policy-rc.d forbids starting), an admin's `systemctl disable` kept across
/// an upgrade, a new upstream config keeping its group and mode, stopped and masked on
/// removal, nothing left after purge.
#[test]
fn the_agent_package_follows_debian_rules_from_install_to_purge() {
    let _turn = dpkg_turn();
    let agent = deb("leakmon-agent", "amd64");
    let agent = agent.to_str().expect("path");
    purge_all();
    let work = tempfile::tempdir().expect("tempdir");
    let next = upgrade_of(Path::new(agent), work.path(), &format!("{VERSION}+1"));
    let sd = FakeSystemd::new();

    // First install while policy-rc.d forbids starting services (as in a chroot build).
    std::fs::write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n").expect("policy-rc.d");
    ok("chmod", &["0755", "/usr/sbin/policy-rc.d"]);
    sd.dpkg(&["-i", agent]);
    let calls = sd.calls();
    assert!(
        Path::new("/usr/lib/systemd/system/leakmon-agent.service").exists(),
        "the unit is not under /usr/lib/systemd/system"
    );
    assert!(
        Path::new(WANTS).exists(),
        "not enabled on the first install"
    );
    assert!(calls.contains("daemon-reload"), "{calls}");
    assert!(
        !calls
            .lines()
            .any(|l| l.starts_with("start") || l.contains(" start ")),
        "started although policy-rc.d forbids it:\n{calls}"
    );
    assert!(
        statoverride().contains("root leakmon 640 /etc/leakmon/agent.toml"),
        "{}",
        statoverride()
    );
    let st = ok("stat", &["-c", "%a %U %G", "/etc/leakmon/agent.toml"]);
    assert_eq!(st.trim(), "640 root leakmon");
    let _ = std::fs::remove_file("/usr/sbin/policy-rc.d");

    // The admin disables it; the upgrade (with a new upstream config) leaves it disabled and
    // the new config readable by the daemon's group only.
    ok(
        "/usr/bin/systemctl",
        &["--root=/", "disable", "leakmon-agent.service"],
    );
    assert!(!Path::new(WANTS).exists());
    sd.dpkg(&["-i", next.to_str().expect("path")]);
    let calls = sd.calls();
    assert!(
        !Path::new(WANTS).exists(),
        "the upgrade re-enabled a unit the admin disabled:\n{calls}"
    );
    let conf = std::fs::read_to_string("/etc/leakmon/agent.toml").expect("config");
    assert!(
        conf.contains("# a new default of the upgrade"),
        "not upgraded"
    );
    let st = ok("stat", &["-c", "%a %U %G", "/etc/leakmon/agent.toml"]);
    assert_eq!(
        st.trim(),
        "640 root leakmon",
        "the upgraded config lost its group"
    );

    // Removal stops and masks the unit; the config and the override stay.
    sd.dpkg(&["-r", "leakmon-agent"]);
    let calls = sd.calls();
    assert!(calls.contains("stop leakmon-agent.service"), "{calls}");
    assert_eq!(
        std::fs::read_link(MASK).ok().as_deref(),
        Some(Path::new("/dev/null")),
        "not masked on removal"
    );
    assert!(Path::new("/etc/leakmon/agent.toml").exists());

    // Purge leaves nothing: no mask, no state, no override, no config.
    sd.dpkg(&["--purge", "leakmon-agent"]);
    for gone in [
        MASK,
        WANTS,
        "/etc/leakmon",
        "/var/lib/leakmon",
        "/var/lib/systemd/deb-systemd-helper-enabled/leakmon-agent.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-masked/leakmon-agent.service",
    ] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} left after purge"
        );
    }
    assert!(
        !statoverride().contains("leakmon"),
        "override left: {}",
        statoverride()
    );

    // Installed again with no policy-rc.d: enabled and started.
    sd.dpkg(&["-i", agent]);
    let calls = sd.calls();
    assert!(Path::new(WANTS).exists(), "not enabled after a purge");
    assert!(calls.contains("start leakmon-agent.service"), "{calls}");
    sd.dpkg(&["--purge", "leakmon-agent"]);
}
