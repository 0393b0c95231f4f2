//! End to end: the arm64 and armv7 images of scripts/images (saved by scripts/test into
//! target/images/leakmon-images-<arch>.tar) load into a real engine with their platform, and
//! run there through qemu-user (binfmt_misc, registered by scripts/test): the agent publishes
//! its birth, naming its architecture, to a real mosquitto, and the gateway answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leakmon_e2e::{docker, Broker, Subscriber};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn tar(arch: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/images")
        .join(format!("leakmon-images-{arch}.tar"));
    assert!(
        p.exists(),
        "{} is missing: run `scripts/images --arch {arch} --save {}` (scripts/test does)",
        p.display(),
        p.display()
    );
    p
}

/// Puts back the engine's own images under the plain tags when dropped (loading an ARM tar
/// takes them over).
struct OwnTags(Vec<(String, Option<String>)>);

impl OwnTags {
    fn keep() -> OwnTags {
        OwnTags(
            ["agent", "gateway"]
                .iter()
                .map(|b| {
                    let tag = format!("leakmon/{b}:{VERSION}");
                    let id = std::process::Command::new("docker")
                        .args(["image", "inspect", "-f", "{{.Id}}", &tag])
                        .output()
                        .ok()
                        .filter(|o| o.status.success())
                        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
                    (tag, id)
                })
                .collect(),
        )
    }
}

impl Drop for OwnTags {
    fn drop(&mut self) {
        for (tag, id) in &self.0 {
            let _ = match id {
                Some(id) => std::process::Command::new("docker")
                    .args(["tag", id, tag])
                    .output(),
                None => std::process::Command::new("docker")
                    .args(["rmi", tag])
                    .output(),
            };
        }
    }
}

#[test]
fn arm64_and_armv7_images_run_their_platform_binaries() {
    assert!(
        docker::available(),
        "no Docker engine: scripts/test starts one"
    );
    let _own = OwnTags::keep();
    for (arch, platform, rust_arch) in [
        ("arm64", "linux/arm64", "aarch64"),
        ("armv7", "linux/arm/v7", "arm"),
    ] {
        docker::run(&["load", "-q", "-i", tar(arch).to_str().expect("path")]);
        let agent = format!("leakmon/agent:{VERSION}");
        let gateway = format!("leakmon/gateway:{VERSION}");
        for image in [&agent, &gateway] {
            let p = docker::run(&[
                "image",
                "inspect",
                "-f",
                "{{.Os}}/{{.Architecture}}{{if .Variant}}/{{.Variant}}{{end}}",
                image,
            ]);
            assert_eq!(p, platform, "{image} from the {arch} tar");
        }
        let v = docker::run(&["run", "--rm", "--platform", platform, &gateway, "--version"]);
        assert!(v.contains(VERSION), "{arch} gateway: {v}");

        // the agent, emulated, reaches a real broker by name and says who it is
        let broker = Broker::start();
        let node = format!("image-{arch}");
        let sub = Subscriber::start(
            broker.port,
            &format!("leakmon/v1/nodes/{node}/status"),
            false,
        );
        let name = format!("e2e-image-{arch}-{}", std::process::id());
        // the node's key, as deploy/stack.yml mounts it
        let key = format!(
            "{}:/run/leakmon/node.key:ro",
            leakmon_e2e::node_key_file(&node).display()
        );
        let container = docker::Container::run(
            &name,
            &[
                "--platform",
                platform,
                "--network",
                "host",
                "-v",
                &key,
                "-e",
                "LEAKMON_AGENT__AUTH__KEY_FILE=/run/leakmon/node.key",
                "-e",
                &format!("LEAKMON_AGENT__NODE={node}"),
                "-e",
                &format!("LEAKMON_AGENT__MQTT__URL=mqtt://localhost:{}", broker.port),
                "-e",
                "LEAKMON_AGENT__DOCKER__ENABLED=false",
                &agent,
            ],
        );
        let birth = sub.wait_json("status", Duration::from_secs(60), |v| {
            v["state"] == "online"
        });
        let logs = docker::run(&["logs", &name]);
        drop(container);
        let birth = birth.unwrap_or_else(|| panic!("no birth from the {arch} agent:\n{logs}"));
        assert_eq!(birth.json()["arch"], rust_arch, "{arch}");
    }
}
