//! The one TLS stack: rustls with the ring provider. reqwest is built without a provider of its
//! own, so every client either gets a configuration built here (deliveries:
//! `delivery::client::tls_config`) or uses the process default this installs.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The one rustls provider every TLS configuration here is built on: ring.
///
/// rustls 0.23.48 deprecates ring's provider because it has no post-quantum key exchange
/// (X25519MLKEM768); the provider that has one, aws-lc-rs, needs a C/CMake build of AWS-LC in
/// every build of this crate and its image. ring is kept on purpose, and this is the only place
/// that names it, so moving to another provider is a change to this function alone.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring())
}

fn ring() -> CryptoProvider {
    #[allow(deprecated)]
    rustls::crypto::ring::default_provider()
}

/// Makes [`provider`] the process's default rustls provider; later calls do nothing. Call before
/// building any reqwest client that is not given its own TLS configuration.
pub fn install_default_provider() {
    // An error means a default is installed already (by an earlier call): nothing to do.
    let _ = ring().install_default();
}

/// A reqwest client with the default settings, on the ring provider (tests and tools).
pub fn http_client() -> reqwest::Client {
    install_default_provider();
    reqwest::Client::new()
}
