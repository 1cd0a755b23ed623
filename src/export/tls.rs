//! TLS for the backends: rustls with the ring provider, trusting the system's
//! roots plus an optional `--export-ca` file, so a private CA works without
//! touching the machine's trust store.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The extra CA, read and checked before sampling starts.
#[derive(Debug, Clone, Default)]
pub struct ExtraCa {
    /// The file as read (tonic takes PEM).
    pub pem: Vec<u8>,
    /// Its certificates.
    pub certs: Vec<CertificateDer<'static>>,
}

/// Reads a PEM file that must hold at least one certificate.
pub fn read_ca(path: &Path) -> Result<ExtraCa, String> {
    let shown = || format!("--export-ca {}", path.display());
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", shown()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM: {e}", shown()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", shown()));
    }
    Ok(ExtraCa { pem, certs })
}

/// Makes ring the process's rustls provider, for the libraries that ask for the
/// default (tonic's TLS); harmless when one is installed already.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client configuration for https:// backends.
pub fn client_config(extra: Option<&ExtraCa>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // A machine without a CA bundle can still trust --export-ca alone.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = extra {
        for c in &ca.certs {
            roots
                .add(c.clone())
                .map_err(|e| format!("--export-ca: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "hello\n").unwrap();
        assert!(read_ca(&f).unwrap_err().contains("no certificate"));
        assert!(read_ca(&dir.path().join("none"))
            .unwrap_err()
            .starts_with("--export-ca "));
    }
}
