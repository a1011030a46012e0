//! TLS, one rustls stack with the `ring` crypto provider for every place
//! Baton speaks it: the HTTP API (server), the `http` action and the CLI
//! (clients), and the database drivers (sqlx's rustls, the same provider).
//! `ring` rather than `aws-lc-rs`: no CMake or C++ toolchain at build
//! time, and a smaller binary.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Makes `ring` the process's rustls provider (once; later calls and a
/// provider installed by the embedding program are left alone).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (`what` names it in errors: a config
/// key or a flag).
pub fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what}: {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The server side of the HTTP API: a certificate chain and its key.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let chain = certificates("http.tls_cert", cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "http.tls_key: {} is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            key.display()
        )
    })?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("http.tls_key does not match http.tls_cert, or is unusable: {e}"))
}

/// The system's trust roots, read once per process (`/etc/ssl/certs` and
/// the like, through `rustls-native-certs`). Unreadable entries are
/// skipped, as every TLS client does.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "a system root certificate could not be read");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system root certificates");
        roots
    })
}

/// A client configuration trusting the system's roots plus the
/// certificates of `extra_ca` (a private CA), for HTTP/1.1.
pub fn client_config(what: &str, extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = system_roots().clone();
    if let Some(path) = extra_ca {
        for cert in certificates(what, path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{what}: {}: not a CA certificate: {e}", path.display()))?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration with the system's roots only, built once.
pub fn default_client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            client_config("TLS", None).unwrap_or_else(|e| {
                // Only a provider without safe protocol versions fails here.
                panic!("the ring provider has no safe protocol versions: {e}")
            })
        })
        .clone()
}
