//! Links the agent's release binary with its code in the order a running agent executes it,
//! where this target has an order file (`link-order/<target>.txt`) and lld is installed.
//!
//! Why: the kernel maps 64 KiB of a binary around each page the process touches, and the code
//! a steady agent runs was spread over nearly every 64 KiB stretch of its 2.7 MiB of code, so
//! most of the binary stayed resident. Put together (lld's `--symbol-ordering-file`), the
//! executed functions fill a few stretches: the static agent's resident memory fell from 4.1
//! to 2.8 MiB (docs/benchmarks.md). The file lists symbol names, which hold a hash of the crate
//! and target; a name the build no longer has is skipped, so a stale file costs memory, never
//! a failed build. `scripts/link-order` writes the file again from a callgrind run of the
//! release build (the names' hashes depend on the profile, so only that build's names do);
//! `LEAKMON_LINK_ORDER=0` links without it.

use std::path::{Path, PathBuf};

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let order = Path::new("link-order").join(format!("{target}.txt"));
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LEAKMON_LINK_ORDER");
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    // Only targets with an order file are linked by lld (scripts/link-order starts a target's
    // file empty); the others keep their usual linker.
    if !order.exists() {
        return;
    }
    let use_order = std::env::var("LEAKMON_LINK_ORDER").as_deref() != Ok("0");
    if !on_path("ld.lld") {
        if use_order {
            println!(
                "cargo:warning=ld.lld not found: leakmon-agent is linked without its code order \
                 (link-order/{target}.txt), so about 1.3 MiB more of it stays resident; \
                 `apt install lld` (scripts/cross does)"
            );
        }
        return;
    }
    let arg = |a: String| println!("cargo:rustc-link-arg-bin=leakmon-agent={a}");
    arg("-fuse-ld=lld".into());
    // The linker's map (every symbol's address, stripped binary or not): what
    // scripts/link-order turns a callgrind run's addresses into names with.
    if let Ok(out) = std::env::var("OUT_DIR") {
        arg(format!(
            "-Wl,-Map={}",
            Path::new(&out).join("leakmon-agent.map").display()
        ));
        // mangled, as the order file needs them
        arg("-Wl,--no-demangle".into());
    }
    if use_order {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        let file = PathBuf::from(dir).join(&order);
        arg(format!("-Wl,--symbol-ordering-file={}", file.display()));
        arg("-Wl,--no-warn-symbol-ordering".into());
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}
