//! TLS trusts the system's certificate store, not only the roots built into the binary and
//! `--ca-cert`: an operator mounts a corporate CA into the image's store and expects the worker to
//! trust it. The worker binary finds the store where OpenSSL would; `SSL_CERT_FILE` (a bundle, as
//! `/etc/ssl/certs/ca-certificates.crt` in the image) and `SSL_CERT_DIR` (a directory of PEM
//! files, as `/etc/ssl/certs` with a CA mounted into it) point a test at a store of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{binary, engine::free_port, eventually, SHUTDOWN_LIMIT};

/// An HTTPS engine on loopback whose certificate a fresh private CA signed, answering every
/// request `200 []`; the CA's PEM, and a count of the requests served (after a handshake the
/// client accepted).
async fn engine_behind_a_private_ca() -> (String, String, Arc<AtomicUsize>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![server_cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/engine-rest", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                // A pause standing in for a long poll, so an empty fetch does not spin.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]";
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, ca_pem, served)
}

/// The worker binary against `url` with the system store given by `store` (`SSL_CERT_FILE` or
/// `SSL_CERT_DIR` and its path), its log in a file; killed by pid when dropped.
struct Worker {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
}

impl Worker {
    fn spawn(url: &str, store: (&str, &std::path::Path)) -> Worker {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = binary()
            .args(["--engine-url", url, "--reconcile-interval", "0"])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .env(store.0, store.1)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    /// SIGTERM by pid, then the exit code (bounded).
    fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + SHUTDOWN_LIMIT;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the worker did not exit after SIGTERM; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// Multi-threaded: the HTTPS engine must go on answering while the test blocks on the worker's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_in_the_system_store_is_trusted_without_ca_cert() {
    let (url, ca_pem, served) = engine_behind_a_private_ca().await;
    let dir = tempfile::tempdir().unwrap();

    // A store without the CA: the handshake is refused, and the worker says why.
    let elsewhere = dir.path().join("other.pem");
    let (_, other_pem, _) = engine_behind_a_private_ca().await;
    std::fs::write(&elsewhere, other_pem).unwrap();
    let mut refused = Worker::spawn(&url, ("SSL_CERT_FILE", &elsewhere));
    eventually(Duration::from_secs(60), "a certificate error", || {
        let log = refused.log();
        async move { log.to_lowercase().contains("certificate").then_some(()) }
    })
    .await;
    assert_eq!(refused.terminate(), Some(0));
    assert_eq!(served.load(Ordering::SeqCst), 0, "{}", refused.log());

    // The CA in the system's bundle, or as a file of its own in the store's directory: trusted.
    let bundle = dir.path().join("ca-certificates.crt");
    std::fs::write(&bundle, &ca_pem).unwrap();
    let store_dir = dir.path().join("certs");
    std::fs::create_dir(&store_dir).unwrap();
    std::fs::write(store_dir.join("corporate-ca.pem"), &ca_pem).unwrap();
    for store in [("SSL_CERT_FILE", &bundle), ("SSL_CERT_DIR", &store_dir)] {
        let before = served.load(Ordering::SeqCst);
        let mut trusted = Worker::spawn(&url, (store.0, store.1.as_path()));
        eventually(Duration::from_secs(60), "a request served over TLS", || {
            let count = served.load(Ordering::SeqCst);
            async move { (count > before).then_some(()) }
        })
        .await;
        assert_eq!(trusted.terminate(), Some(0), "{}", trusted.log());
    }
}
