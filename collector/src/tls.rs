//! TLS for the ingest endpoint: a server certificate, and with `grpc.tls.client_ca_file` mutual
//! TLS (every client presents a certificate signed by that CA).

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::Config;
use crate::error::{Error, Result};

fn read(setting: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::setting_caused(setting, format!("cannot read {}", path.display()), e)
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
        return Err(Error::setting(
            setting,
            format!("{} is not PEM (no -----BEGIN line)", path.display()),
        ));
    }
    Ok(pem)
}

/// The TLS configuration of the ingest server, or `None` for plaintext.
pub fn server_config(config: &Config) -> Result<Option<ServerTlsConfig>> {
    let Some(tls) = &config.grpc.tls else {
        return Ok(None);
    };
    let cert = read("grpc.tls.cert_file", &tls.cert_file)?;
    let key = read("grpc.tls.key_file", &tls.key_file)?;
    let mut c = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca_file {
        let ca = read("grpc.tls.client_ca_file", ca)?;
        c = c
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(false);
    }
    Ok(Some(c))
}
