//! TLS of an `https://` OTLP endpoint: the files of `--otlp-ca-file` and of
//! `--otlp-client-cert-file` / `--otlp-client-key-file`, checked when the agent starts (a bad
//! file stops it once, naming the flag) and read again whenever one of them changes, so that a
//! client certificate renewed in place (cert-manager writing a mounted Secret) is presented from
//! the next export on, without a restart.
//!
//! Without `--otlp-ca-file` the endpoint's certificate is checked against the system's
//! authorities (the image's `/etc/ssl/certs/ca-certificates.crt`, or `SSL_CERT_FILE`).

use super::{ExportError, ExporterArgs};
use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

const CA_FLAG: &str = "--otlp-ca-file (PODTRACE_OTLP_CA_FILE)";
const CERT_FLAG: &str = "--otlp-client-cert-file (PODTRACE_OTLP_CLIENT_CERT_FILE)";
const KEY_FLAG: &str = "--otlp-client-key-file (PODTRACE_OTLP_CLIENT_KEY_FILE)";

/// The TLS files given (none: the system's authorities and no client certificate).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsFiles {
    ca: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
}

/// What the files held when they were read.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    /// PEM of the authorities trusted instead of the system's.
    pub ca: Option<Vec<u8>>,
    /// PEM of the client's certificate chain, and of its private key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    stamp: Stamp,
}

/// Per file, its modification time and size (none when it cannot be read).
type Stamp = Vec<Option<(SystemTime, u64)>>;

impl TlsFiles {
    /// The files of the flags; an error when they are given for an endpoint without TLS, where
    /// they would silently do nothing.
    pub fn new(args: &ExporterArgs, https: bool) -> Result<Self, ExportError> {
        let files = TlsFiles {
            ca: args.otlp_ca_file.clone(),
            client: args.otlp_client_cert_file.clone().zip(args.otlp_client_key_file.clone()),
        };
        if let Some((flag, path)) = files.named().next()
            && !https
        {
            return Err(invalid(flag, path, "needs an https:// --otlp-endpoint".into()));
        }
        Ok(files)
    }

    /// The files with the flag that names each.
    fn named(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        let ca = self.ca.as_deref().map(|p| (CA_FLAG, p));
        let client = self.client.iter().flat_map(|(c, k)| [(CERT_FLAG, &**c), (KEY_FLAG, &**k)]);
        ca.into_iter().chain(client)
    }

    /// Reads and checks the files: the CA file holds at least one certificate, the client's
    /// files a certificate and a private key.
    pub fn read(&self) -> Result<TlsMaterial, ExportError> {
        // Before reading: a change while reading shows as a change at the next check.
        let stamp = self.stamp();
        let ca = match &self.ca {
            Some(path) => {
                let pem = read(CA_FLAG, path)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| invalid(CA_FLAG, path, e.to_string()))?;
                if certs.is_empty() {
                    return Err(invalid(CA_FLAG, path, "holds no PEM certificate".into()));
                }
                Some(pem)
            }
            None => None,
        };
        let identity = match &self.client {
            Some((cert_path, key_path)) => {
                let (cert, key) = (read(CERT_FLAG, cert_path)?, read(KEY_FLAG, key_path)?);
                reqwest::Identity::from_pem(&pem_pair(&cert, &key)).map_err(|e| {
                    let reason = format!("with the key {}: {e}", key_path.display());
                    invalid(CERT_FLAG, cert_path, reason)
                })?;
                Some((cert, key))
            }
            None => None,
        };
        Ok(TlsMaterial { ca, identity, stamp })
    }

    /// Whether a file changed since `material` was read.
    pub fn changed_since(&self, material: &TlsMaterial) -> bool {
        self.stamp() != material.stamp
    }

    fn stamp(&self) -> Stamp {
        self.named()
            .map(|(_, path)| {
                let m = std::fs::metadata(path).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    }
}

/// A certificate chain and its key as the one PEM text reqwest's `Identity` reads.
pub fn pem_pair(cert: &[u8], key: &[u8]) -> Vec<u8> {
    [cert, b"\n", key].concat()
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ExportError> {
    std::fs::read(path).map_err(|e| invalid(flag, path, e.to_string()))
}

fn invalid(flag: &'static str, path: &Path, reason: String) -> ExportError {
    ExportError::TlsFile { flag, path: path.to_owned(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["agent".into()]).unwrap().self_signed(&key).unwrap();
        let paths = (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&paths.0, cert.pem()).unwrap();
        std::fs::write(&paths.1, cert.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        paths
    }

    fn args(ca: &Path, cert: &Path, key: &Path) -> ExporterArgs {
        let mut args = ExporterArgs::disabled();
        args.otlp_ca_file = Some(ca.into());
        args.otlp_client_cert_file = Some(cert.into());
        args.otlp_client_key_file = Some(key.into());
        args
    }

    #[test]
    fn files_are_checked_and_a_change_is_noticed() {
        let dir = std::env::temp_dir().join(format!("podtrace-otlp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = pem_files(&dir);
        let files = TlsFiles::new(&args(&ca, &cert, &key), true).unwrap();
        let material = files.read().unwrap();
        assert!(material.ca.is_some() && material.identity.is_some());
        assert!(!files.changed_since(&material));
        std::fs::write(&cert, [std::fs::read(&cert).unwrap(), b"\n".to_vec()].concat()).unwrap();
        assert!(files.changed_since(&material), "a renewed certificate is read again");

        let err = |files: TlsFiles| files.read().unwrap_err().to_string();
        let says = err(TlsFiles::new(&args(&key, &cert, &key), true).unwrap());
        assert!(says.starts_with(CA_FLAG) && says.contains("no PEM certificate"), "{says}");
        let says = err(TlsFiles::new(&args(&ca, &cert, &cert), true).unwrap());
        assert!(says.starts_with(CERT_FLAG) && says.contains("tls.crt"), "{says}");
        let says = err(TlsFiles::new(&args(&dir.join("gone"), &cert, &key), true).unwrap());
        assert!(says.starts_with(CA_FLAG) && says.contains("No such file"), "{says}");
        let says = TlsFiles::new(&args(&ca, &cert, &key), false).unwrap_err().to_string();
        assert!(says.starts_with(CA_FLAG) && says.contains("needs an https://"), "{says}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
