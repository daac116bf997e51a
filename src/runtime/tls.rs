//! The one TLS stack: rustls with the ring provider. reqwest is built without a provider of its
//! own, so every client either gets a configuration built here (deliveries:
//! `delivery::client::tls_config`) or uses the process default this installs.

/// Makes ring the process's default rustls provider; later calls do nothing. Call before building
/// any reqwest client that is not given its own TLS configuration.
pub fn install_default_provider() {
    // An error means a default is installed already (by an earlier call): nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client with the default settings, on the ring provider (tests and tools).
pub fn http_client() -> reqwest::Client {
    install_default_provider();
    reqwest::Client::new()
}
