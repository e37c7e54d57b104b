//! Optional TLS (and mutual TLS) for the admin HTTP server, with certificates reloaded when the
//! files change, so that a Secret renewed by cert-manager takes effect without a restart.
//!
//! rustls with the *ring* provider (the one kube already links) through `axum-server`; the only
//! hand-written part is the reload loop, because neither crate watches files.

use axum_server::tls_rustls::RustlsConfig;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

/// How often the certificate files are checked for a change (kubelet updates mounted Secrets
/// about once a minute, so a renewal is served within about 90 s).
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// TLS flags of the admin server (`/metrics`, `/livez`, `/readyz`).
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// PEM certificate chain for /metrics over HTTPS (with --metrics-tls-key-file); without
    /// it /metrics is plain HTTP. Re-read when the file changes.
    #[arg(long, env = "PODTRACE_METRICS_TLS_CERT_FILE", requires = "metrics_tls_key_file")]
    pub metrics_tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --metrics-tls-cert-file.
    #[arg(long, env = "PODTRACE_METRICS_TLS_KEY_FILE", requires = "metrics_tls_cert_file")]
    pub metrics_tls_key_file: Option<PathBuf>,
    /// PEM CA bundle: when set, clients must present a certificate signed by it (mutual TLS).
    #[arg(long, env = "PODTRACE_METRICS_TLS_CLIENT_CA_FILE", requires = "metrics_tls_cert_file")]
    pub metrics_tls_client_ca_file: Option<PathBuf>,
}

/// Why a TLS configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or held no usable PEM item.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file ("certificate", "private key", "client CA").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle could not build a verifier.
    #[error("client CA {path}: {reason}")]
    ClientCa {
        /// Its path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// The files of a TLS server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates (mutual TLS), if required.
    pub client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, when TLS is asked for.
    pub fn files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.metrics_tls_cert_file.clone()?,
            key: self.metrics_tls_key_file.clone()?,
            client_ca: self.metrics_tls_client_ca_file.clone(),
        })
    }
}

impl TlsFiles {
    /// Reads the files into a rustls server configuration (TLS 1.2 and 1.3, HTTP/1.1 and h2).
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(file_err("certificate", &self.cert))?
            .collect::<Result<_, _>>()
            .map_err(file_err("certificate", &self.cert))?;
        if certs.is_empty() {
            return Err(TlsError::File {
                what: "certificate",
                path: self.cert.clone(),
                reason: "no CERTIFICATE block found".into(),
            });
        }
        let key =
            PrivateKeyDer::from_pem_file(&self.key).map_err(file_err("private key", &self.key))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in
                    CertificateDer::pem_file_iter(path).map_err(file_err("client CA", path))?
                {
                    roots.add(cert.map_err(file_err("client CA", path))?)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::ClientCa {
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// What the files hold now, to notice a change (a Secret update swaps a symlink, so
    /// modification times are not reliable; the files are small).
    fn contents(&self) -> Vec<Option<Vec<u8>>> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .map(|p| p.and_then(|p| std::fs::read(p).ok()))
            .collect()
    }
}

/// Maps a PEM error to [`TlsError::File`] for `what` at `path`.
fn file_err(what: &'static str, path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError {
    let path = path.to_owned();
    move |e| TlsError::File { what, path: path.clone(), reason: e.to_string() }
}

/// A loaded TLS configuration that follows its files.
#[derive(Clone)]
pub struct ReloadingTls {
    files: TlsFiles,
    config: RustlsConfig,
}

impl ReloadingTls {
    /// Loads the files; an error here is a start-up error (the operator asked for TLS and
    /// must not get plain HTTP instead).
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = RustlsConfig::from_config(Arc::new(files.load()?));
        Ok(Self { files, config })
    }

    /// The configuration `axum-server` serves with.
    pub fn config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// Checks the files every `every` and swaps the configuration in when they changed and
    /// load; a broken update is logged and the previous certificate keeps serving.
    pub async fn follow(self, every: Duration) {
        let mut seen = self.files.contents();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = self.files.contents();
            if now == seen {
                continue;
            }
            match self.files.load() {
                Ok(config) => {
                    self.config.reload_from_config(Arc::new(config));
                    tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate");
                    seen = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the TLS files changed but do not load; still serving the previous certificate");
                    seen = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    /// A CA and certificates it signs, written as PEM files into a temporary directory.
    struct Pki {
        ca: CertifiedIssuer<'static, KeyPair>,
    }

    impl Pki {
        fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            Self { ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
        }
        /// (certificate PEM, key PEM) for `san`.
        fn issue(&self, san: &str) -> (String, String) {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![san.to_owned()])
                .unwrap()
                .signed_by(&key, &self.ca)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        }
        fn root(&self) -> rustls::RootCertStore {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.der().clone()).unwrap();
            roots
        }
    }

    fn client(roots: rustls::RootCertStore, identity: Option<(&str, &str)>) -> reqwest::Client {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes()).map(Result::unwrap).collect(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        reqwest::Client::builder().use_preconfigured_tls(config).build().unwrap()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn serve(files: TlsFiles, reload_every: Duration) -> String {
        let tls = ReloadingTls::load(files).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router =
            axum::Router::new().route("/metrics", axum::routing::get(|| async { "up 1\n" }));
        tokio::spawn(crate::admin::serve_tls(
            listener,
            router,
            tls,
            reload_every,
            std::future::pending(),
        ));
        format!("localhost:{port}")
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("podtrace-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn serves_https_with_the_given_certificate_and_refuses_plain_http() {
        let dir = tempdir("https");
        let pki = Pki::new("test CA");
        let (cert, key) = pki.issue("localhost");
        let files = TlsFiles {
            cert: write(&dir, "tls.crt", &cert),
            key: write(&dir, "tls.key", &key),
            client_ca: None,
        };
        let host = serve(files, Duration::from_secs(3600)).await;
        let body = client(pki.root(), None)
            .get(format!("https://{host}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "up 1\n");
        // A client that trusts another CA refuses the server; plain HTTP gets no answer.
        let other = Pki::new("other CA");
        assert!(
            client(other.root(), None).get(format!("https://{host}/metrics")).send().await.is_err()
        );
        let plain = client(pki.root(), None).get(format!("http://{host}/metrics")).send().await;
        assert!(plain.is_err() || !plain.unwrap().status().is_success());
    }

    #[tokio::test]
    async fn mutual_tls_requires_a_client_certificate_of_the_client_ca() {
        let dir = tempdir("mtls");
        let server_pki = Pki::new("server CA");
        let client_pki = Pki::new("client CA");
        let (cert, key) = server_pki.issue("localhost");
        let files = TlsFiles {
            cert: write(&dir, "tls.crt", &cert),
            key: write(&dir, "tls.key", &key),
            client_ca: Some(write(&dir, "ca.crt", &client_pki.ca.pem())),
        };
        let host = serve(files, Duration::from_secs(3600)).await;
        let url = format!("https://{host}/metrics");
        assert!(client(server_pki.root(), None).get(&url).send().await.is_err());
        let stranger = Pki::new("stranger CA").issue("prometheus");
        assert!(
            client(server_pki.root(), Some((&stranger.0, &stranger.1)))
                .get(&url)
                .send()
                .await
                .is_err()
        );
        let (ccert, ckey) = client_pki.issue("prometheus");
        let ok = client(server_pki.root(), Some((&ccert, &ckey))).get(&url).send().await.unwrap();
        assert_eq!(ok.status(), 200);
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_served_without_restart_and_a_broken_one_is_ignored() {
        let dir = tempdir("reload");
        let old = Pki::new("old CA");
        let (cert, key) = old.issue("localhost");
        let files = TlsFiles {
            cert: write(&dir, "tls.crt", &cert),
            key: write(&dir, "tls.key", &key),
            client_ca: None,
        };
        let host = serve(files.clone(), Duration::from_millis(100)).await;
        let url = format!("https://{host}/metrics");
        assert!(client(old.root(), None).get(&url).send().await.is_ok());

        // A half-written update (certificate without its key) keeps the old certificate.
        let new = Pki::new("new CA");
        let (new_cert, new_key) = new.issue("localhost");
        write(&dir, "tls.crt", &new_cert);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(client(old.root(), None).get(&url).send().await.is_ok());

        write(&dir, "tls.key", &new_key);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while client(new.root(), None).get(&url).send().await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the renewed certificate was not served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(client(old.root(), None).get(&url).send().await.is_err());
    }

    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        let dir = tempdir("errors");
        let (cert, key) = Pki::new("CA").issue("localhost");
        let cert = write(&dir, "tls.crt", &cert);
        let key_path = write(&dir, "tls.key", &key);
        let missing =
            TlsFiles { cert: dir.join("nope.crt"), key: key_path.clone(), client_ca: None };
        let e = missing.load().unwrap_err().to_string();
        assert!(e.starts_with("certificate ") && e.contains("nope.crt"), "{e}");
        let not_a_key = TlsFiles { cert: cert.clone(), key: cert.clone(), client_ca: None };
        let e = not_a_key.load().unwrap_err().to_string();
        assert!(e.starts_with("private key ") && e.contains("tls.crt"), "{e}");
        let (_, other_key) = Pki::new("CA2").issue("localhost");
        let mismatched =
            TlsFiles { cert, key: write(&dir, "other.key", &other_key), client_ca: None };
        assert!(mismatched.load().is_err());
    }
}
