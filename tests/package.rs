//! End to end: the Debian packages of scripts/package. The amd64 ones are installed with the
//! real dpkg into this machine (user, config permissions, conffile kept on upgrade, removal
//! and purge), and their binaries run from there; every architecture's package carries a
//! binary for that architecture. Needs `scripts/package` to have run (scripts/test does).

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
        "/lib/systemd/system/leakmon-agent.service",
        "/lib/systemd/system/leakmon-gateway.service",
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
    // A system user of its own, no login, no docker group (the unit adds that group to the
    // daemon only); the config readable by its group, not by the world.
    let pw = ok("getent", &["passwd", "leakmon"]);
    assert!(pw.trim_end().ends_with(":/usr/sbin/nologin"), "{pw}");
    assert_eq!(ok("id", &["-nG", "leakmon"]).trim(), "leakmon");
    let st = ok("stat", &["-c", "%a %U %G", "/etc/leakmon/agent.toml"]);
    assert_eq!(st.trim(), "640 root leakmon");

    // The installed binaries check the installed configs, as the daemon's user.
    let out = ok(
        "runuser",
        &["-u", "leakmon", "--", "leakmon-agent", "--check-config"],
    );
    assert!(out.contains("configuration OK"), "{out}");
    let out = ok(
        "runuser",
        &["-u", "leakmon", "--", "leakmon-gateway", "--check-config"],
    );
    assert!(out.contains("configuration OK"), "{out}");
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
