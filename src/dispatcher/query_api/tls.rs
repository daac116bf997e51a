//! The query API's TLS: its serving certificate (files, re-read when they change, as cert-manager
//! rotates them) and the front proxy's client CA (from the API server's ConfigMap). A client
//! certificate is optional at the handshake; a request without a verified one gets a 401 that
//! says how the API is meant to be reached.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_cert::der::asn1::{ObjectIdentifier, PrintableStringRef, Utf8StringRef};
use x509_cert::der::Decode;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: not PEM ({message})")]
    NotPem { what: String, message: String },
    #[error("{what}: no certificate in it")]
    Empty { what: String },
    #[error(
        "the front proxy's client CA (requestheader-client-ca-file) has no usable certificate"
    )]
    NoUsableCa,
    #[error("building the TLS configuration: {0}")]
    Rustls(String),
}

/// Where the serving certificate and key are.
#[derive(Clone, Debug)]
pub struct ServingFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        path: path.display().to_string(),
        source,
    })
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: what.to_owned(),
        });
    }
    Ok(certs)
}

/// The server configuration: the serving files, client certificates verified against
/// `client_ca_pem` when presented. HTTP/1.1 only (what the aggregator speaks to it; watches
/// stream as chunked responses).
pub fn server_config(
    files: &ServingFiles,
    client_ca_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&read(&files.cert)?, &files.cert.display().to_string())?;
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NotPem {
        what: files.key.display().to_string(),
        message: e.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    let cas = certificates(client_ca_pem.as_bytes(), "requestheader-client-ca-file")?;
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(TlsError::NoUsableCa);
    }
    let provider = crate::runtime::tls::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The subject common name of a DER certificate (the handshake has verified it already).
pub fn common_name(der: &[u8]) -> Option<String> {
    const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    certificate
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == CN)
        .and_then(|atv| {
            atv.value
                .decode_as::<Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    atv.value
                        .decode_as::<PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_owned())
                })
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "proxies");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            common_name(cert.der()).as_deref(),
            Some("front-proxy-client")
        );
        assert_eq!(common_name(b"not a certificate"), None);
    }

    #[test]
    fn a_ca_without_certificates_is_refused_by_name() {
        // Removed when the test ends (a directory per process id was left behind every run).
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["svc".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = ServingFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        assert!(server_config(&files, &cert.pem()).is_ok());
        let e = server_config(&files, "").unwrap_err();
        assert!(
            e.to_string().contains("requestheader-client-ca-file"),
            "{e}"
        );
        let missing = ServingFiles {
            cert: dir.join("nope.crt"),
            key: files.key.clone(),
        };
        assert!(server_config(&missing, &cert.pem())
            .unwrap_err()
            .to_string()
            .contains("nope.crt"));
    }
}
