//! `cargo xtask web`: builds the browser package into `target/web`.
//!
//! The wasm is built with the `wasm-release` profile, bound with the
//! `wasm-bindgen` CLI of exactly the version in Cargo.lock (installed with
//! cargo when missing), shrunk with `wasm-opt -Oz` from the npm `binaryen`
//! package when it is installed (scripts/web), and written with a
//! package.json, a README and the pages the server serves.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Builds the package; returns its directory.
pub(crate) fn build(root: &Path) -> Result<PathBuf> {
    let version = wasm_bindgen_version(root)?;
    ensure_wasm_target()?;
    run(Command::new("cargo").current_dir(root).args([
        "build",
        "--package",
        "petchat-web",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm-release",
        "--locked",
    ]))?;
    let bindgen = ensure_wasm_bindgen(&version)?;
    let out = root.join("target/web");
    let pkg = out.join("pkg");
    let _ = fs::remove_dir_all(&pkg);
    let wasm = root.join("target/wasm32-unknown-unknown/wasm-release/petchat_web.wasm");
    run(Command::new(&bindgen).arg("--target").arg("web").arg("--out-dir").arg(&pkg).arg(&wasm))?;
    let bound = pkg.join("petchat_web_bg.wasm");
    let wasm_opt = root.join("scripts/web/node_modules/.bin/wasm-opt");
    if wasm_opt.exists() {
        run(Command::new(&wasm_opt)
            .arg("-Oz")
            .arg("--enable-bulk-memory")
            .arg("--enable-nontrapping-float-to-int")
            .arg(&bound)
            .arg("-o")
            .arg(&bound))?;
    } else {
        println!("wasm-opt not installed (npm ci in scripts/web): the package is not shrunk");
    }
    write_package(root, &pkg)?;
    copy_pages(root, &out)?;
    gzip_beside(&out)?;
    let (raw, gzipped) = (
        size(&bound)? + size(&pkg.join("petchat_web.js"))?,
        gzip_size(&bound)? + gzip_size(&pkg.join("petchat_web.js"))?,
    );
    println!("package: {} (wasm + glue: {raw} bytes, {gzipped} bytes gzipped)", pkg.display());
    Ok(out)
}

/// The wasm-bindgen version Cargo.lock pins.
fn wasm_bindgen_version(root: &Path) -> Result<String> {
    let lock = fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\""
            && let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = \""))
        {
            return Ok(version.trim_end_matches('"').to_owned());
        }
    }
    bail!("Cargo.lock has no wasm-bindgen")
}

/// Adds the wasm32 target with rustup when it is missing (a fresh machine).
fn ensure_wasm_target() -> Result<()> {
    let Ok(installed) = Command::new("rustup").args(["target", "list", "--installed"]).output() else {
        return Ok(()); // No rustup: the toolchain's owner provides the target.
    };
    if !String::from_utf8_lossy(&installed.stdout).lines().any(|t| t == "wasm32-unknown-unknown") {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    Ok(())
}

/// The `wasm-bindgen` CLI of `version`, installed with cargo if the one on PATH differs.
fn ensure_wasm_bindgen(version: &str) -> Result<PathBuf> {
    let installed = Command::new("wasm-bindgen").arg("--version").output().ok().filter(|o| o.status.success());
    let matches =
        installed.is_some_and(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1) == Some(version));
    if !matches {
        println!("installing wasm-bindgen-cli {version} (once; a few minutes)");
        // No --locked: its lock file pins a crate version the registry no longer serves.
        run(Command::new("cargo").args(["install", "wasm-bindgen-cli", "--version", version]))?;
    }
    Ok(PathBuf::from("wasm-bindgen"))
}

fn write_package(root: &Path, pkg: &Path) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let package = serde_json::json!({
        "name": "petchat-web",
        "version": version,
        "description": "The petchat browser client: support chat over WebSocket, with reconnects, an offline outbox and resume.",
        "license": "MIT OR Apache-2.0",
        "type": "module",
        "main": "petchat_web.js",
        "types": "petchat_web.d.ts",
        "files": ["petchat_web.js", "petchat_web.d.ts", "petchat_web_bg.wasm", "petchat_web_bg.wasm.d.ts", "README.md"],
        "sideEffects": false,
    });
    fs::write(pkg.join("package.json"), serde_json::to_string_pretty(&package)? + "\n")?;
    let readme = fs::read_to_string(root.join("crates/web/README.md")).context("reading crates/web/README.md")?;
    fs::write(pkg.join("README.md"), readme)?;
    Ok(())
}

/// The pages (crates/web/pages) go beside the package: `target/web/index.html`…
fn copy_pages(root: &Path, out: &Path) -> Result<()> {
    for entry in fs::read_dir(root.join("crates/web/pages")).context("reading crates/web/pages")? {
        let entry = entry?;
        fs::copy(entry.path(), out.join(entry.file_name()))?;
    }
    Ok(())
}

/// Writes `FILE.gz` beside every text or wasm file under `dir`, so the server
/// sends the package gzip-encoded to browsers that accept it (a 328 KB wasm
/// is about 130 KB on the wire).
fn gzip_beside(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            gzip_beside(&path)?;
            continue;
        }
        let compressible = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "wasm" | "js" | "css" | "html" | "svg" | "ts" | "json"));
        if compressible {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(&fs::read(&path)?)?;
            let mut gz = path.clone().into_os_string();
            gz.push(".gz");
            fs::write(&gz, encoder.finish()?)?;
        }
    }
    Ok(())
}

fn size(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path).with_context(|| format!("{}", path.display()))?.len())
}

fn gzip_size(path: &Path) -> Result<u64> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&fs::read(path)?)?;
    Ok(encoder.finish()?.len() as u64)
}

fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}
