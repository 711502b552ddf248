//! The configuration parser and validator on arbitrary text: a configuration or
//! diagnostics, never a panic; every diagnostic names the file and a position inside the
//! text (line 0 only for a whole-file finding), so `kube-gw check-config` always points
//! somewhere real.
#![no_main]
use std::path::Path;

use kube_gw::config::{parse_with, FileChecks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/kube-gw/config.toml");
    let lines = text.lines().count().max(1);
    let check = |d: &kube_gw::config::Diagnostic| {
        assert_eq!(d.file, path);
        assert!(d.line <= lines + 1, "line {} of {lines}: {d}", d.line);
        assert!(d.to_string().starts_with("/etc/kube-gw/config.toml"), "{d}");
    };
    match parse_with(path, text, FileChecks::Skip) {
        Ok(loaded) => loaded.warnings.iter().for_each(check),
        Err(e) => {
            assert!(!e.diagnostics.is_empty(), "an error without a diagnostic");
            e.diagnostics.iter().for_each(check);
        }
    }
});
