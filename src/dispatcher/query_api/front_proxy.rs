//! Who is asking, as the API server's aggregation layer says: it connects with its front-proxy
//! client certificate (verified during the TLS handshake against `requestheader-client-ca-file`)
//! and names the user in headers (`X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-*`). The
//! settings come from ConfigMap `kube-system/extension-apiserver-authentication`, which the API
//! server publishes. Pure: parsing that ConfigMap and reading a request's identity.
use std::collections::BTreeMap;

use http::HeaderMap;
use percent_encoding::percent_decode_str;

use crate::runtime::access::Identity;

/// Where the settings are published.
pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
pub const CONFIG_MAP_NAME: &str = "extension-apiserver-authentication";

/// The request-header authentication settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontProxy {
    /// PEM: the CAs a front proxy's client certificate must chain to.
    pub client_ca_pem: String,
    /// Common names a front proxy's certificate may have; empty: any the CA signed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "ConfigMap {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME} has no `requestheader-client-ca-file`: \
         the API server runs without --requestheader-client-ca-file, so it cannot proxy to \
         aggregated APIs"
    )]
    NoClientCa,
    #[error("ConfigMap {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME}: `{key}` is not a JSON list of strings: {message}")]
    NotAList { key: String, message: String },
}

fn list(data: &BTreeMap<String, String>, key: &str) -> Result<Vec<String>, ConfigError> {
    match data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json).map_err(|e| ConfigError::NotAList {
            key: key.to_owned(),
            message: e.to_string(),
        }),
    }
}

impl FrontProxy {
    /// The settings from the ConfigMap's data.
    pub fn from_config_map(data: &BTreeMap<String, String>) -> Result<FrontProxy, ConfigError> {
        let client_ca_pem = data
            .get("requestheader-client-ca-file")
            .filter(|pem| !pem.trim().is_empty())
            .ok_or(ConfigError::NoClientCa)?
            .clone();
        let mut uid_headers = list(data, "requestheader-uid-headers")?;
        if uid_headers.is_empty() {
            uid_headers.push("X-Remote-Uid".to_owned());
        }
        Ok(FrontProxy {
            client_ca_pem,
            allowed_names: list(data, "requestheader-allowed-names")?,
            username_headers: list(data, "requestheader-username-headers")?,
            uid_headers,
            group_headers: list(data, "requestheader-group-headers")?,
            extra_prefixes: list(data, "requestheader-extra-headers-prefix")?,
        })
    }

    /// The user a request is made for. `client_cn` is the common name of the client certificate
    /// the TLS handshake verified against [`FrontProxy::client_ca_pem`] (`None`: no certificate).
    pub fn identify(
        &self,
        client_cn: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Identity, Refused> {
        let cn = client_cn.ok_or(Refused::NoClientCertificate)?;
        if !self.allowed_names.is_empty() && !self.allowed_names.iter().any(|n| n == cn) {
            return Err(Refused::NameNotAllowed(cn.to_owned()));
        }
        let first = |names: &[String]| {
            names.iter().find_map(|name| {
                headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            })
        };
        let username = first(&self.username_headers).ok_or(Refused::NoUser)?;
        let groups = self
            .group_headers
            .iter()
            .flat_map(|name| headers.get_all(name.as_str()).iter())
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            let name = name.as_str();
            let key = self.extra_prefixes.iter().find_map(|prefix| {
                let prefix = prefix.to_ascii_lowercase();
                name.strip_prefix(prefix.as_str())
            });
            if let (Some(key), Ok(value)) = (key, value.to_str()) {
                // Keys are percent-encoded by the proxy (RFC 3986), and compared lower case.
                let key = percent_decode_str(key).decode_utf8_lossy().to_lowercase();
                extra.entry(key).or_default().push(value.to_owned());
            }
        }
        Ok(Identity {
            username,
            uid: first(&self.uid_headers),
            groups,
            extra: extra.into_iter().collect(),
        })
    }
}

/// Why a request's identity was not accepted (401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error(
        "no verified client certificate: this API is reached through the Kubernetes API server \
         (kubectl get webhookdeliveries), which presents its front-proxy certificate"
    )]
    NoClientCertificate,
    #[error("client certificate `{0}` is not one of the front-proxy names allowed by requestheader-allowed-names")]
    NameNotAllowed(String),
    #[error("the front proxy named no user (no username header)")]
    NoUser,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "requestheader-client-ca-file".into(),
                "-----BEGIN CERTIFICATE-----\n...".into(),
            ),
            (
                "requestheader-allowed-names".into(),
                r#"["front-proxy-client"]"#.into(),
            ),
            (
                "requestheader-username-headers".into(),
                r#"["X-Remote-User"]"#.into(),
            ),
            (
                "requestheader-group-headers".into(),
                r#"["X-Remote-Group"]"#.into(),
            ),
            (
                "requestheader-extra-headers-prefix".into(),
                r#"["X-Remote-Extra-"]"#.into(),
            ),
        ])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_the_user_groups_and_extra() {
        let proxy = FrontProxy::from_config_map(&data()).unwrap();
        let id = proxy
            .identify(
                Some("front-proxy-client"),
                &headers(&[
                    ("X-Remote-User", "alice"),
                    ("X-Remote-Group", "dev"),
                    ("X-Remote-Group", "system:authenticated"),
                    ("X-Remote-Extra-Scopes%2Fa", "one"),
                    ("X-Remote-Extra-Scopes%2Fa", "two"),
                    ("X-Remote-Uid", "u-1"),
                ]),
            )
            .unwrap();
        assert_eq!(id.username, "alice");
        assert_eq!(id.uid.as_deref(), Some("u-1"));
        assert_eq!(id.groups, vec!["dev", "system:authenticated"]);
        assert_eq!(
            id.extra,
            vec![(
                "scopes/a".to_owned(),
                vec!["one".to_owned(), "two".to_owned()]
            )]
        );
    }

    #[test]
    fn refuses_without_a_proxy_certificate_or_a_user() {
        let proxy = FrontProxy::from_config_map(&data()).unwrap();
        let user = headers(&[("X-Remote-User", "alice")]);
        assert_eq!(
            proxy.identify(None, &user),
            Err(Refused::NoClientCertificate)
        );
        assert_eq!(
            proxy.identify(Some("someone-else"), &user),
            Err(Refused::NameNotAllowed("someone-else".into()))
        );
        assert_eq!(
            proxy.identify(Some("front-proxy-client"), &headers(&[])),
            Err(Refused::NoUser)
        );
    }

    #[test]
    fn config_errors_say_what_to_fix() {
        let mut d = data();
        d.remove("requestheader-client-ca-file");
        let e = FrontProxy::from_config_map(&d).unwrap_err();
        assert!(e.to_string().contains("--requestheader-client-ca-file"));
        let mut d = data();
        d.insert(
            "requestheader-allowed-names".into(),
            "front-proxy-client".into(),
        );
        assert!(matches!(
            FrontProxy::from_config_map(&d),
            Err(ConfigError::NotAList { .. })
        ));
        let mut d = data();
        d.insert("requestheader-allowed-names".into(), "".into());
        assert!(FrontProxy::from_config_map(&d)
            .unwrap()
            .allowed_names
            .is_empty());
    }
}
