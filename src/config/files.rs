//! The files the configuration names — the config file, password and secret files, certificates
//! and keys — read with care: a regular file, at most [`MAX_FILE_SIZE`], and what it claims to be.
//!
//! Why: reading a FIFO blocks until someone writes to it, so `--config /some/fifo` would hang the
//! start; a directory or `/dev/zero` gives an error far from the flag or no end at all; and a CA
//! file with no certificate in it, or a key that does not belong to its certificate, would only
//! fail at the first TLS handshake, as an outage. Each is one line at start instead, naming the
//! flag, exit 2.

use std::io::Read;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ConfigError;

/// The largest file the configuration reads: far above any config, secret or certificate chain.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// The contents of the regular file `path`, at most [`MAX_FILE_SIZE`]; `what` names it in the
/// error (a flag, or `config file`).
pub(super) fn read_bounded(what: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let shown = path.display();
    let fail = |why: String| ConfigError::Invalid(format!("{what} {shown}: {why}"));
    // `metadata` follows symlinks (a Kubernetes secret is one) and does not open the file, so a
    // FIFO is refused before anything could block on it.
    let metadata = std::fs::metadata(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    if !metadata.is_file() {
        let kind = if metadata.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(fail(format!("is {kind}")));
    }
    let too_big = || fail(format!("is larger than {} KiB", MAX_FILE_SIZE / 1024));
    if metadata.len() > MAX_FILE_SIZE {
        return Err(too_big());
    }
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Checks that `pem` (the file `path` of `--ca-cert`) holds at least one certificate.
pub(super) fn check_ca_cert(path: &Path, pem: &[u8]) -> Result<(), ConfigError> {
    let fail = |why: String| ConfigError::Invalid(format!("--ca-cert {}: {why}", path.display()));
    let certificates = certificates(pem).map_err(&fail)?;
    if certificates.is_empty() {
        return Err(fail(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(())
}

/// Checks that the client certificate (`cert_pem`) holds a certificate and the key (`key_pem`) a
/// private key, and that the key is the certificate's.
pub(super) fn check_client_identity(
    (cert_path, cert_pem): (&Path, &[u8]),
    (key_path, key_pem): (&Path, &[u8]),
) -> Result<(), ConfigError> {
    let cert_fail =
        |why: String| ConfigError::Invalid(format!("--client-cert {}: {why}", cert_path.display()));
    let key_fail =
        |why: String| ConfigError::Invalid(format!("--client-key {}: {why}", key_path.display()));
    let chain = certificates(cert_pem).map_err(&cert_fail)?;
    if chain.is_empty() {
        return Err(cert_fail(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| key_fail(format!("holds no PEM private key ({e})")))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_fail(format!("not a usable private key ({e})")))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        // The key's public half could not be compared (an algorithm the provider cannot
        // derive it for): left to the handshake.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => Err(key_fail(format!(
            "does not belong to the certificate of --client-cert {} ({e})",
            cert_path.display()
        ))),
    }
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM ({e})"))
}
