//! Builds the bundled platform plugins (every crate in `plugins/` except
//! the SDK) to WebAssembly and puts them in `target/plugins/<id>.wasm`, so
//! that one `cargo run` or `cargo test` builds everything.
//!
//! Set `OUTREACH_SKIP_PLUGIN_BUILD=1` to build the host alone (packaging).

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";
const PLUGINS: [&str; 14] = [
    "x",
    "linkedin",
    "mastodon",
    "bluesky",
    "discord",
    "devto",
    "medium",
    "hackernews",
    "reddit",
    "instagram",
    "facebook",
    "threads",
    "youtube",
    "tiktok",
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    for dir in ["plugins", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-env-changed=OUTREACH_SKIP_PLUGIN_BUILD");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("bundled.rs");
    if std::env::var_os("OUTREACH_SKIP_PLUGIN_BUILD").is_some() {
        write_bundled(&out, &[]);
        return;
    }
    ensure_target();
    let target_dir = root.join("target").join("wasm");
    let out_dir = root.join("target").join("plugins");
    build_plugins(
        &root,
        &target_dir,
        &PLUGINS.map(|p| format!("outreach-{p}")),
        &[],
    );
    std::fs::create_dir_all(&out_dir).unwrap();
    for p in PLUGINS {
        let built = target_dir
            .join(TARGET)
            .join("plugin")
            .join(format!("outreach_{p}.wasm"));
        copy_if_changed(&built, &out_dir.join(format!("{p}.wasm")));
    }
    // The binary carries them: `include_bytes!` of each, by id.
    let files: Vec<(String, PathBuf)> = PLUGINS
        .iter()
        .map(|p| (p.to_string(), out_dir.join(format!("{p}.wasm"))))
        .collect();
    write_bundled(&out, &files);
}

/// `bundled.rs`: the plugins the binary carries, as `(id, bytes)`.
fn write_bundled(out: &Path, files: &[(String, PathBuf)]) {
    let mut text = String::from(
        "/// The platform plugins built into this binary: `(id, component)`.\npub static BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for (id, path) in files {
        text.push_str(&format!(
            "    ({id:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    text.push_str("];\n");
    if std::fs::read_to_string(out).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(out, text).unwrap();
    }
}

/// `cargo build` the given packages for wasm32 with the `plugin` profile.
pub fn build_plugins(root: &Path, target_dir: &Path, packages: &[String], features: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--profile",
            "plugin",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    // Settings meant for the host build must not leak into the plugins'.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo to build the plugins");
    if !status.success() {
        panic!("building the platform plugins failed (see the cargo output above)");
    }
}

/// Install the wasm target with rustup if this toolchain lacks it.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let installed = sysroot
        .as_ref()
        .is_some_and(|s| Path::new(s).join("lib/rustlib").join(TARGET).exists());
    if !installed {
        let toolchain = sysroot
            .as_deref()
            .and_then(|s| Path::new(s).file_name())
            .map(|n| n.to_string_lossy().into_owned());
        let mut cmd = Command::new("rustup");
        cmd.args(["target", "add", TARGET]);
        if let Some(t) = toolchain {
            cmd.args(["--toolchain", &t]);
        }
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            panic!("the {TARGET} target is missing; run `rustup target add {TARGET}`");
        }
    }
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        // Write then rename, so a running daemon never sees half a file.
        let tmp = to.with_extension("wasm.tmp");
        std::fs::write(&tmp, &new).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}
