//! TLS for the connection to PostgreSQL, through rustls (the `ring` provider the rest of the
//! binary uses; no OpenSSL).
//!
//! Two libpq parameters of the connection string decide it:
//!
//! - `sslmode`: `disable` (plain TCP), `prefer` (the default), `require`, `verify-ca`,
//!   `verify-full`. With rustls a TLS session is always **verified**: the server's certificate must
//!   chain to a trusted root and name the host the dispatcher connects to (the `host` of the
//!   connection string, a DNS name or an IP address). So `require` here means what libpq calls
//!   `verify-full`, and `verify-ca` is checked like `verify-full` too (stricter than libpq, never
//!   weaker). `prefer` uses verified TLS when the server offers it and its certificate verifies;
//!   otherwise (no TLS on the server, or a certificate that does not verify, e.g. a self-signed
//!   one) it connects without TLS, as libpq's `prefer` may, and logs a warning saying why. The
//!   choice is made once, when the store opens.
//! - `sslrootcert=<path>`: a PEM file of CA certificates (e.g. mounted from a Secret or
//!   ConfigMap) that replaces the default roots. Without it (or with `sslrootcert=system`) the
//!   roots are the Mozilla roots compiled into the binary (`webpki-roots`), the same the webhook
//!   delivery client trusts. `sslrootcert=system` without `sslmode` means `verify-full`, as in
//!   libpq 16.
//!
//! tokio-postgres parses `sslmode` only up to `require` and not `sslrootcert` at all, so both are
//! taken out of the connection string here ([`split_tls_params`]) before tokio-postgres parses the
//! rest.
use std::borrow::Cow;
use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// `sslmode` as libpq spells it (`allow` is not supported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, TlsError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => return Err(TlsError::UnsupportedSslMode(other.to_owned())),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// A connection string without its TLS parameters, and those parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitConnection {
    /// The connection string for tokio-postgres: everything but `sslmode` and `sslrootcert`,
    /// unchanged otherwise.
    pub rest: String,
    /// The last `sslmode`, if any.
    pub sslmode: Option<SslMode>,
    /// The last `sslrootcert`, decoded (percent-decoding in a URL, quotes and backslashes in a
    /// key=value string), if any.
    pub sslrootcert: Option<String>,
}

/// Errors of the TLS settings and of TLS connections.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "sslmode={0:?} is not supported: use disable, prefer, require, verify-ca or verify-full"
    )]
    UnsupportedSslMode(String),
    #[error("{0} in the connection URL is not percent-encoded UTF-8")]
    BadEncoding(&'static str),
    #[error("sslrootcert {path}: cannot read the CA file: {source}")]
    RootCertUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sslrootcert {path}: not a valid PEM file: {source}")]
    RootCertNotPem {
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "sslrootcert {path}: the file holds no certificate (expected PEM blocks \
         `-----BEGIN CERTIFICATE-----`)"
    )]
    RootCertEmpty { path: String },
    #[error("sslrootcert {path}: none of its {count} certificate(s) can be used as a CA")]
    RootCertUnusable { path: String, count: usize },
    #[error("TLS setup: {0}")]
    Setup(#[source] rustls::Error),
    #[error(
        "the database server's TLS certificate could not be verified against {roots} \
         ({reason}). sslmode={mode} means verified TLS here (like libpq's verify-full): the \
         certificate must chain to a trusted CA and name the host in the connection string; set \
         sslrootcert=<PEM file> to the CA that signed it and connect with a host name or IP \
         address the certificate lists"
    )]
    Unverified {
        roots: String,
        mode: &'static str,
        reason: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("TLS handshake with the database server failed ({reason}) with sslmode={mode}")]
    Handshake {
        mode: &'static str,
        reason: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl TlsError {
    /// As a store error: a bad `sslmode` is the caller's mistake, the rest are backend failures
    /// (a missing file, a server that cannot be verified).
    pub fn into_store_error(self, context: &'static str) -> StoreError {
        match self {
            TlsError::UnsupportedSslMode(_) | TlsError::BadEncoding(_) => {
                StoreError::InvalidArgument(self.to_string())
            }
            other => StoreError::Backend {
                context,
                source: Box::new(other),
            },
        }
    }
}

/// Takes `sslmode` and `sslrootcert` out of a libpq connection string: a URL
/// (`postgres://…?sslmode=require&sslrootcert=/etc/ca.pem`) or a key=value string
/// (`host=… sslmode=require sslrootcert='/etc/ca.pem'`). The rest of the string is returned
/// unchanged for tokio-postgres, whose grammar this follows: a string it cannot parse is returned
/// whole, so that tokio-postgres reports the error.
pub fn split_tls_params(conn: &str) -> Result<SplitConnection, TlsError> {
    let mut sslmode = None;
    let mut sslrootcert = None;
    let rest = if let Some(body) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|prefix| conn.strip_prefix(prefix))
    {
        let prefix_len = conn.len() - body.len();
        // As tokio-postgres: credentials end at the first `@`, the parameters start at the next
        // `?` (host and path cannot hold one).
        let authority = body.find('@').map_or(0, |at| at + 1);
        match body[authority..].find('?') {
            None => conn.to_owned(),
            Some(q) => {
                let query_start = prefix_len + authority + q + 1;
                let mut kept = Vec::new();
                let mut query = &conn[query_start..];
                while !query.is_empty() {
                    let Some(eq) = query.find('=') else {
                        // "unterminated parameter": tokio-postgres says so.
                        kept.push(query);
                        break;
                    };
                    let end = query[eq + 1..]
                        .find('&')
                        .map_or(query.len(), |a| eq + 1 + a);
                    let (raw_key, raw_value) = (&query[..eq], &query[eq + 1..end]);
                    match decode(raw_key).as_deref() {
                        Some("sslmode") => {
                            let value =
                                decode(raw_value).ok_or(TlsError::BadEncoding("sslmode"))?;
                            sslmode = Some(SslMode::parse(&value)?);
                        }
                        Some("sslrootcert") => {
                            let value =
                                decode(raw_value).ok_or(TlsError::BadEncoding("sslrootcert"))?;
                            sslrootcert = Some(value.into_owned());
                        }
                        _ => kept.push(&query[..end]),
                    }
                    query = query.get(end + 1..).unwrap_or("");
                }
                let mut rest = conn[..query_start - 1].to_owned();
                if !kept.is_empty() {
                    rest.push('?');
                    rest.push_str(&kept.join("&"));
                }
                rest
            }
        }
    } else {
        let Some(params) = key_value_params(conn) else {
            return Ok(SplitConnection {
                rest: conn.to_owned(),
                sslmode: None,
                sslrootcert: None,
            });
        };
        let mut rest = String::with_capacity(conn.len());
        let mut copied = 0;
        for param in params {
            match param.key {
                "sslmode" => sslmode = Some(SslMode::parse(&param.value)?),
                "sslrootcert" => sslrootcert = Some(param.value),
                _ => continue,
            }
            rest.push_str(&conn[copied..param.start]);
            copied = param.end;
        }
        rest.push_str(&conn[copied..]);
        rest
    };
    Ok(SplitConnection {
        rest,
        sslmode,
        sslrootcert,
    })
}

fn decode(s: &str) -> Option<Cow<'_, str>> {
    percent_encoding::percent_decode_str(s).decode_utf8().ok()
}

/// One `keyword = value` of a key=value connection string, with its byte span.
struct KeyValue<'a> {
    key: &'a str,
    value: String,
    start: usize,
    end: usize,
}

/// The parameters of a key=value string, parsed as tokio-postgres does (keywords end at
/// whitespace or `=`; values are bare, with `\` escaping the next character, or single-quoted,
/// with `\` escapes); `None` where tokio-postgres would fail.
fn key_value_params(s: &str) -> Option<Vec<KeyValue<'_>>> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut it);
        let Some(&(start, _)) = it.peek() else {
            return Some(out);
        };
        while it
            .next_if(|&(_, c)| !c.is_whitespace() && c != '=')
            .is_some()
        {}
        let key_end = it.peek().map_or(s.len(), |&(i, _)| i);
        if key_end == start {
            // tokio-postgres stops at a `=` without a keyword and ignores the rest.
            return Some(out);
        }
        skip_ws(&mut it);
        it.next_if(|&(_, c)| c == '=')?;
        skip_ws(&mut it);
        let mut value = String::new();
        if it.next_if(|&(_, c)| c == '\'').is_some() {
            loop {
                match it.next()? {
                    (_, '\'') => break,
                    (_, '\\') => value.push(it.next()?.1),
                    (_, c) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|&(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, escaped)) = it.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return None;
            }
        }
        let end = it.peek().map_or(s.len(), |&(i, _)| i);
        out.push(KeyValue {
            key: &s[start..key_end],
            value,
            start,
            end,
        });
    }
}

/// Where the trusted CA certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Roots {
    /// The Mozilla roots compiled in (`webpki-roots`).
    Builtin,
    /// A PEM file (`sslrootcert=<path>`).
    File(PathBuf),
}

impl Roots {
    fn describe(&self) -> String {
        match self {
            Roots::Builtin => {
                "the public (Mozilla) root certificates built into the dispatcher (no sslrootcert)"
                    .to_owned()
            }
            Roots::File(path) => format!("the CA certificate(s) in sslrootcert {}", path.display()),
        }
    }
}

/// The TLS settings of one store: the mode, the roots, and the rustls connector (none with
/// `disable`).
#[derive(Clone)]
pub struct TlsSettings {
    mode: SslMode,
    roots: Roots,
    connector: Option<MakeRustlsConnect>,
}

impl TlsSettings {
    /// Reads the CA file (if any) and builds the connector.
    pub fn new(sslmode: Option<SslMode>, sslrootcert: Option<&str>) -> Result<Self, TlsError> {
        let roots = match sslrootcert {
            None | Some("system") => Roots::Builtin,
            Some(path) => Roots::File(PathBuf::from(path)),
        };
        let mode = sslmode.unwrap_or(if sslrootcert == Some("system") {
            SslMode::VerifyFull
        } else {
            SslMode::Prefer
        });
        let connector = match mode {
            SslMode::Disable => None,
            _ => Some(MakeRustlsConnect::new(client_config(&roots)?)),
        };
        Ok(Self {
            mode,
            roots,
            connector,
        })
    }

    /// What tokio-postgres is told: `prefer` or `require` (the verify modes are `require` with
    /// rustls' verification), or `disable`.
    pub fn tokio_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// The connector for the pool: `None` for plain TCP. With `prefer` one connection is tried
    /// with TLS first; if the server's certificate does not verify, the store connects without
    /// TLS (and says so in the log), as libpq's `prefer` would still connect.
    pub async fn choose_connector(
        &self,
        pg: &tokio_postgres::Config,
    ) -> Result<Option<MakeRustlsConnect>, StoreError> {
        let Some(connector) = &self.connector else {
            return Ok(None);
        };
        if self.mode != SslMode::Prefer {
            return Ok(Some(connector.clone()));
        }
        match pg.connect(connector.clone()).await {
            Ok((client, connection)) => {
                // Dropping the client makes the connection say goodbye and end.
                tokio::spawn(connection);
                drop(client);
                Ok(Some(connector.clone()))
            }
            Err(e) if tls_failure(&e).is_some() => {
                let reason = tls_failure(&e).unwrap_or_default();
                tracing::warn!(
                    roots = %self.roots.describe(),
                    %reason,
                    "sslmode=prefer: the database server offers TLS but its certificate could not \
                     be verified; connecting WITHOUT TLS. Set sslrootcert=<CA file> and \
                     sslmode=require to encrypt, or sslmode=disable to silence this"
                );
                Ok(None)
            }
            Err(e) => Err(self.connect_error("connect to the database", e)),
        }
    }

    /// A failed connection as a store error, explaining a certificate that did not verify.
    pub fn connect_error(&self, context: &'static str, e: tokio_postgres::Error) -> StoreError {
        match classify(&e) {
            Some(Failure::Unverified(reason)) => TlsError::Unverified {
                roots: self.roots.describe(),
                mode: self.mode.as_str(),
                reason,
                source: e,
            }
            .into_store_error(context),
            Some(Failure::Other(reason)) => TlsError::Handshake {
                mode: self.mode.as_str(),
                reason,
                source: e,
            }
            .into_store_error(context),
            None => StoreError::backend(context)(e),
        }
    }

    /// Whether a failure of `e` is one of TLS (rather than of the network or the server).
    pub fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
        classify(e).is_some()
    }
}

enum Failure {
    /// The certificate did not verify (unknown issuer, wrong name, expired, …).
    Unverified(String),
    /// Another TLS error (no common protocol version or cipher, a bad host name for TLS, …).
    Other(String),
}

fn tls_failure(e: &tokio_postgres::Error) -> Option<String> {
    classify(e).map(|f| match f {
        Failure::Unverified(reason) | Failure::Other(reason) => reason,
    })
}

/// Looks for a rustls error in `e`'s sources (tokio-rustls wraps it in an `io::Error`, whose
/// `source()` skips it, so look inside those explicitly).
fn classify(e: &tokio_postgres::Error) -> Option<Failure> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = next {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(err), inner].into_iter().flatten() {
            if let Some(tls) = candidate.downcast_ref::<rustls::Error>() {
                return Some(match tls {
                    rustls::Error::InvalidCertificate(_) => Failure::Unverified(tls.to_string()),
                    other => Failure::Other(other.to_string()),
                });
            }
            if let Some(name) = candidate.downcast_ref::<rustls::pki_types::InvalidDnsNameError>() {
                return Some(Failure::Other(format!("host name for TLS: {name}")));
            }
        }
        next = err.source();
    }
    None
}

fn client_config(roots: &Roots) -> Result<ClientConfig, TlsError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::Builtin => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::File(path) => load_roots(path, &mut store)?,
    }
    let provider = crate::runtime::tls::provider();
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(store)
        .with_no_client_auth())
}

/// Adds the certificates of the PEM file `path` to `store` (at least one, or an error naming the
/// file).
fn load_roots(path: &std::path::Path, store: &mut RootCertStore) -> Result<(), TlsError> {
    let shown = || path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsError::RootCertUnreadable {
        path: shown(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::RootCertNotPem {
            path: shown(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::RootCertEmpty { path: shown() });
    }
    let count = certs.len();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::RootCertUnusable {
            path: shown(),
            count,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> SplitConnection {
        split_tls_params(s).expect("split")
    }

    #[test]
    fn url_parameters_are_taken_out_and_the_rest_kept() {
        let s = split(
            "postgres://u:p%40ss@db.example:5432/app?sslmode=require&application_name=x&sslrootcert=%2Fetc%2Fca%20b.pem",
        );
        assert_eq!(
            s.rest,
            "postgres://u:p%40ss@db.example:5432/app?application_name=x"
        );
        assert_eq!(s.sslmode, Some(SslMode::Require));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/ca b.pem"));

        let s = split("postgresql://db/app?sslrootcert=/ca.pem");
        assert_eq!(s.rest, "postgresql://db/app");
        assert_eq!(
            (s.sslmode, s.sslrootcert.as_deref()),
            (None, Some("/ca.pem"))
        );

        let s = split("postgres://db?sslmode=verify-full");
        assert_eq!(s.rest, "postgres://db");
        assert_eq!(s.sslmode, Some(SslMode::VerifyFull));

        // The last of a repeated parameter wins, as in libpq.
        let s = split("postgres://db/app?sslmode=disable&sslmode=verify-ca");
        assert_eq!(s.sslmode, Some(SslMode::VerifyCa));
    }

    #[test]
    fn a_url_without_tls_parameters_is_unchanged() {
        for url in [
            "postgres://u:p@h:5432/db",
            "postgres://u:p@h/db?application_name=a&connect_timeout=3",
            "postgres://h/db?",
            "postgres://u:pass?word@h/db?options=-c%20x%3Dy",
        ] {
            let s = split(url);
            assert_eq!(s.rest.trim_end_matches('?'), url.trim_end_matches('?'));
            assert_eq!((s.sslmode, s.sslrootcert), (None, None));
        }
        // A `?` in the password (before the `@`) is not the start of the parameters.
        let s = split("postgres://u:a?sslmode=disable@h/db?sslmode=require");
        assert_eq!(s.rest, "postgres://u:a?sslmode=disable@h/db");
        assert_eq!(s.sslmode, Some(SslMode::Require));
    }

    #[test]
    fn key_value_parameters_are_taken_out_and_the_rest_kept() {
        let s = split(
            "host=db.example port=5432 sslmode = require user=u sslrootcert='/etc/my ca\\'s.pem' dbname=app",
        );
        assert_eq!(s.sslmode, Some(SslMode::Require));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/my ca's.pem"));
        let config: tokio_postgres::Config = s.rest.parse().expect("rest parses");
        assert_eq!(config.get_user(), Some("u"));
        assert_eq!(config.get_dbname(), Some("app"));
        assert_eq!(config.get_ports(), [5432]);
        assert!(!s.rest.contains("ssl"));

        let s = split("sslrootcert=/a\\ b.pem host=h");
        assert_eq!(s.sslrootcert.as_deref(), Some("/a b.pem"));
        assert_eq!(s.rest.trim(), "host=h");

        let s = split("host=h user=u");
        assert_eq!(s.rest, "host=h user=u");
        assert_eq!((s.sslmode, s.sslrootcert), (None, None));
    }

    #[test]
    fn unparsable_strings_are_left_for_tokio_postgres() {
        for s in [
            "not a url ://",
            "host=",
            "host='x",
            "postgres://h/db?novalue",
        ] {
            let split = split(s);
            assert_eq!(split.rest, s);
            assert!(split.rest.parse::<tokio_postgres::Config>().is_err(), "{s}");
        }
    }

    #[test]
    fn unsupported_sslmodes_are_refused_by_name() {
        for s in ["postgres://h/db?sslmode=allow", "host=h sslmode=Require"] {
            let err = split_tls_params(s).expect_err(s).to_string();
            assert!(err.contains("is not supported"), "{err}");
            assert!(err.contains("verify-full"), "{err}");
        }
        assert!(matches!(
            split_tls_params("postgres://h/db?sslrootcert=%FF"),
            Err(TlsError::BadEncoding("sslrootcert"))
        ));
    }

    #[test]
    fn modes_and_roots() {
        let settings = TlsSettings::new(None, None).expect("default");
        assert_eq!(
            (settings.mode, &settings.roots),
            (SslMode::Prefer, &Roots::Builtin)
        );
        assert_eq!(
            settings.tokio_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
        let settings = TlsSettings::new(None, Some("system")).expect("system");
        assert_eq!(settings.mode, SslMode::VerifyFull);
        assert_eq!(
            settings.tokio_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let settings = TlsSettings::new(Some(SslMode::Disable), None).expect("disable");
        assert!(settings.connector.is_none());
        assert_eq!(
            settings.tokio_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn bad_ca_files_are_refused_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").expect("write");
        let key_only = dir.path().join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        for (path, expected) in [
            (&missing, "cannot read the CA file"),
            (&empty, "holds no certificate"),
            (&key_only, "holds no certificate"),
            (&garbage, "can be used as a CA"),
        ] {
            let shown = path.display().to_string();
            let err = TlsSettings::new(Some(SslMode::Require), Some(&shown))
                .err()
                .unwrap_or_else(|| panic!("{shown} accepted"))
                .to_string();
            assert!(err.contains(&shown), "{err}");
            assert!(err.contains(expected), "{err}");
        }
    }
}
