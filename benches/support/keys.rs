//! An RSA-2048 signing key for the benches' ARC sets, made at start-up by openssl (no key is
//! committed), and its DNS key record.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}");
    out.stdout
}

/// A new key written to `dir` as PEM PKCS#8: its path, and the `v=DKIM1; p=…` record for it.
pub fn rsa_2048(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("arc-key.pem");
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key.to_str().unwrap()]);
    let spki = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout", "-outform", "DER"]);
    let record = format!("v=DKIM1; p={}", base64::engine::general_purpose::STANDARD.encode(spki));
    (key, record)
}
