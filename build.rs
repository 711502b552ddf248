//! Builds the eBPF programs in `ebpf/` (aya-ebpf, target `bpfel-unknown-none`) with the nightly
//! toolchain and bpf-linker, and leaves the object in `OUT_DIR/kube-gw-ebpf.o` for
//! `gateway::steer` to embed. `scripts/setup` installs both tools.
//!
//! `KUBE_GW_EBPF=off` builds without the programs: the daemon then binds one socket per gateway
//! VIP:port and says so in its status. Without that variable a missing toolchain is an error
//! that says what to install: a release binary never loses its eBPF path by accident.
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=ebpf/src");
    println!("cargo:rerun-if-changed=ebpf/Cargo.toml");
    println!("cargo:rerun-if-changed=ebpf/Cargo.lock");
    println!("cargo:rerun-if-env-changed=KUBE_GW_EBPF");
    println!("cargo:rustc-check-cfg=cfg(kube_gw_no_ebpf)");
    // cargo-fuzz builds with --cfg fuzzing (src/lib.rs keeps the system allocator then).
    println!("cargo:rustc-check-cfg=cfg(fuzzing)");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let object = out.join("kube-gw-ebpf.o");
    if env::var("KUBE_GW_EBPF").as_deref() == Ok("off") {
        println!("cargo:rustc-cfg=kube_gw_no_ebpf");
        let _ = fs::write(&object, b"");
        return;
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let target_dir = out.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--manifest-path")
        .arg(manifest.join("ebpf/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer cargo's settings (its toolchain, wrappers, flags, profile) are not the eBPF
    // build's: clear them, keep only where cargo and rustup live.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let outer = (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key == "RUSTFLAGS"
            || key == "RUSTUP_TOOLCHAIN";
        if outer {
            cmd.env_remove(&key);
        }
    }
    if let Some(home) = env::var_os("CARGO_HOME")
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").into_os_string()))
    {
        let bin = PathBuf::from(&home).join("bin");
        let path = env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin];
        paths.extend(env::split_paths(&path));
        if let Ok(joined) = env::join_paths(paths) {
            cmd.env("PATH", joined);
        }
    }
    let status = cmd.status();
    let built = target_dir.join("bpfel-unknown-none/release/kube-gw-ebpf");
    match status {
        Ok(s) if s.success() && fs::copy(&built, &object).is_ok() => {}
        other => {
            eprintln!(
                "error: building the eBPF programs in ebpf/ failed ({other:?}).\n\
                 They need the nightly toolchain with rust-src and bpf-linker: run scripts/setup \
                 (as root), or build without them with KUBE_GW_EBPF=off (the gateway then binds \
                 one socket per VIP:port)."
            );
            std::process::exit(1);
        }
    }
}
