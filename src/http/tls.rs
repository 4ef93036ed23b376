//! TLS for `https://` URLs: rustls, with the system's CA store or the
//! certificates of `--cacert FILE` instead of it, as curl's option does.
//!
//! The system store is read with `rustls-native-certs`, which reads what
//! the distribution installs (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` when set), so a CA the administrator added with
//! `update-ca-certificates` is trusted and a removed one is not; a list
//! compiled into the binary (`webpki-roots`) would ignore both and age with
//! the build. It is read once, before the run, and only when the URL is
//! `https://`. The crypto provider is `ring` (no C toolchain beyond what
//! `ring` itself needs, no cmake).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::display::quoted;
use crate::exit::Fatal;

/// A CA file larger than this is refused: the system bundle is about
/// 200 KiB.
const MAX_CA_FILE: u64 = 16 << 20;

/// The client configuration every connection of the run shares.
pub fn config(cacert: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match cacert {
        Some(path) => {
            let pem = read_bounded(path)?;
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|err| {
                    Fatal::usage(format!(
                        "--cacert {}: not a PEM certificate file: {err}",
                        quoted(path)
                    ))
                })?;
                roots.add(cert).map_err(|err| {
                    Fatal::usage(format!(
                        "--cacert {}: a certificate cannot be used: {err}",
                        quoted(path)
                    ))
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(Fatal::usage(format!(
                    "--cacert {}: no certificate in it",
                    quoted(path)
                ))
                .hint("give a PEM file with -----BEGIN CERTIFICATE----- blocks")
                .into());
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                let why = native
                    .errors
                    .first()
                    .map_or("no certificate found".to_string(), |e| e.to_string());
                return Err(Fatal::usage(format!(
                    "https: cannot load the system's CA certificates: {why}"
                ))
                .hint("install the ca-certificates package, or pass --cacert FILE")
                .into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads the CA file: a regular file, opened without blocking on a FIFO,
/// at most [`MAX_CA_FILE`].
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|err| {
            Fatal::usage(format!(
                "--cacert {}: {}",
                quoted(path),
                crate::display::error_text(&err)
            ))
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("--cacert {}", quoted(path)))?;
    if !meta.is_file() {
        return Err(Fatal::usage(format!("--cacert {}: not a regular file", quoted(path))).into());
    }
    if meta.len() > MAX_CA_FILE {
        bail!(Fatal::usage(format!(
            "--cacert {}: larger than {}",
            quoted(path),
            crate::display::size(MAX_CA_FILE)
        )));
    }
    let mut out = Vec::new();
    file.take(MAX_CA_FILE)
        .read_to_end(&mut out)
        .with_context(|| format!("--cacert {}", quoted(path)))?;
    Ok(out)
}
