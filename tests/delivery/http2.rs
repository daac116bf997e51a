//! HTTP/2 when the server offers it: a TLS receiver on loopback (a certificate from a CA made
//! up by the test, trusted through `ClientConfig::extra_roots_pem`) that offers `h2` and
//! `http/1.1` through ALPN, served by hyper's automatic HTTP/1 + HTTP/2 connection builder.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use webhook_operator::delivery::client::{ClientConfig, ClientError, DeliveryClient};
use webhook_operator::delivery::signing::SigningScheme;

use super::support::{self, loopback_policy};

/// Answers every request with the HTTP version it arrived with, over TLS with the given ALPN
/// protocols. Returns the address and the certificate (PEM) to trust.
async fn tls_receiver(alpn: &[&[u8]]) -> (SocketAddr, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let mut config =
        ServerConfig::builder_with_provider(webhook_operator::runtime::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(certified.cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der())),
            )
            .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let version = format!("{:?}", request.version());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(version))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, cert_pem)
}

fn client_trusting(cert_pem: &str) -> DeliveryClient {
    DeliveryClient::new(ClientConfig {
        egress: loopback_policy(),
        static_hosts: [("localhost".to_string(), vec!["127.0.0.1".parse().unwrap()])]
            .into_iter()
            .collect(),
        extra_roots_pem: Some(cert_pem.as_bytes().to_vec()),
        ..ClientConfig::default()
    })
    .unwrap()
}

async fn delivered_version(alpn: &[&[u8]]) -> (Option<u16>, Option<String>, String) {
    let (addr, cert_pem) = tls_receiver(alpn).await;
    let client = client_trusting(&cert_pem);
    let url = format!("https://localhost:{}/webhooks", addr.port())
        .parse()
        .unwrap();
    let event = support::event(SigningScheme::Pitchey);
    let result = support::send(&client, url, &event, 1, Duration::from_secs(5)).await;
    assert_eq!(result.error, None, "{result:?}");
    (result.status, result.http_version, result.body_snippet)
}

#[tokio::test]
async fn speaks_http2_when_the_server_offers_it() {
    let (status, version, seen_by_server) = delivered_version(&[b"h2", b"http/1.1"]).await;
    assert_eq!(status, Some(200));
    assert_eq!(version.as_deref(), Some("HTTP/2.0"));
    assert_eq!(seen_by_server, "HTTP/2.0");
}

#[tokio::test]
async fn falls_back_to_http1_when_the_server_offers_only_that() {
    let (status, version, seen_by_server) = delivered_version(&[b"http/1.1"]).await;
    assert_eq!(status, Some(200));
    assert_eq!(version.as_deref(), Some("HTTP/1.1"));
    assert_eq!(seen_by_server, "HTTP/1.1");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_failure_not_a_delivery() {
    let (addr, _) = tls_receiver(&[b"h2"]).await;
    let (_, other_ca) = tls_receiver(&[b"h2"]).await;
    let client = client_trusting(&other_ca);
    let url = format!("https://localhost:{}/webhooks", addr.port())
        .parse()
        .unwrap();
    let event = support::event(SigningScheme::Pitchey);
    let result = support::send(&client, url, &event, 1, Duration::from_secs(5)).await;
    assert_eq!(result.status, None);
    assert!(result.error.is_some(), "{result:?}");
}

#[test]
fn a_ca_bundle_without_certificates_is_refused_with_a_reason() {
    let err = DeliveryClient::new(ClientConfig {
        extra_roots_pem: Some(b"not a certificate".to_vec()),
        ..ClientConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, ClientError::CaBundle(_)), "{err}");
    assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");
}
