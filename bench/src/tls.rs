//! The `-tls` scenarios' client side: a test CA and a server certificate made with openssl,
//! TLS connections that trust that CA, and an HTTP/2 connection for LL-HLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The server's certificate and key, and a connector for `alpn` trusting the CA that
/// signed them (made once in `dir`).
pub(crate) struct Tls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    ca: PathBuf,
}

impl Tls {
    pub(crate) fn make(dir: &Path) -> Result<Tls> {
        std::fs::create_dir_all(dir)?;
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl").current_dir(dir).args(args).output().context("openssl")?;
            if !out.status.success() {
                bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        if !dir.join("server.pem").exists() {
            let ca = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=bench CA"];
            run(&[&ca[..], &["-keyout", "ca.key", "-out", "ca.pem"]].concat())?;
            let csr = ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"];
            run(&[&csr[..], &["-keyout", "server.key", "-out", "server.csr"]].concat())?;
            std::fs::write(
                dir.join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
            )?;
            let sign = ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
            run(&[&sign[..], &["-days", "30", "-extfile", "ext.cnf", "-out", "server.pem"]].concat())?;
        }
        Ok(Tls { cert: dir.join("server.pem"), key: dir.join("server.key"), ca: dir.join("ca.pem") })
    }

    pub(crate) fn connector(&self, alpn: &[u8]) -> Result<TlsConnector> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(&self.ca)? {
            roots.add(cert?)?;
        }
        // AES-128-GCM first, as the browsers that play LL-HLS and HTTP-FLV (Chrome, Firefox,
        // Safari) offer it; rustls, like OpenSSL, would otherwise ask for AES-256-GCM, and
        // the server follows the client's order
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites.sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let provider = Arc::new(provider);
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// A TLS connection to `addr` (as `localhost`).
pub(crate) async fn connect(connector: &TlsConnector, addr: &str) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    Ok(connector.connect(name, tcp).await?)
}

/// An HTTP/2 connection (ALPN `h2`) that GETs one path at a time.
pub(crate) struct H2 {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
}

impl H2 {
    pub(crate) async fn connect(connector: &TlsConnector, addr: &str) -> Result<H2> {
        let io = hyper_util::rt::TokioIo::new(connect(connector, addr).await?);
        let (send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(H2 { send })
    }

    /// GET `path`: (status, the body when `keep`, its length).
    pub(crate) async fn get(&mut self, path: &str, keep: bool) -> Result<(u16, Vec<u8>, usize)> {
        let req = hyper::Request::get(format!("https://localhost{path}")).body(Empty::new())?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let (mut kept, mut n) = (Vec::new(), 0);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                n += data.len();
                if keep {
                    kept.extend_from_slice(&data);
                }
            }
        }
        Ok((status, kept, n))
    }
}
