//! Credentials and TLS: bearer tokens (fixed and rotated files), OAuth2 client credentials
//! (cached, refreshed before expiry, refetched once on 401), a private CA and mutual TLS against
//! an HTTPS endpoint whose certificates are made here. Basic auth against the real engine is in
//! `resilience.rs`.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use camunda_worker::engine::{
    EngineClient, EngineError, ExternalTask, FetchAndLockRequest, TopicRequest,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::config_for;

fn client_for(url: &str, flags: &[&str]) -> EngineClient {
    EngineClient::new(config_for(url, flags).engine).expect("client builds")
}

/// A client that takes OAuth2 client credentials from `server`'s `/oauth/token`: the OAuth tests
/// differ only in the credentials and scope they send.
fn oauth_client_for(
    server: &MockServer,
    client_id: &str,
    client_secret: &str,
    scope: Option<&str>,
) -> EngineClient {
    let url = format!("{}/engine-rest", server.uri());
    let token_url = format!("{}/oauth/token", server.uri());
    let mut flags = vec![
        "--oauth-token-url",
        &token_url,
        "--oauth-client-id",
        client_id,
        "--oauth-client-secret",
        client_secret,
    ];
    if let Some(scope) = scope {
        flags.extend(["--oauth-scope", scope]);
    }
    client_for(&url, &flags)
}

fn fetch_request() -> FetchAndLockRequest {
    FetchAndLockRequest {
        worker_id: "w".into(),
        max_tasks: 1,
        use_priority: false,
        sorting: Vec::new(),
        async_response_timeout: 0,
        topics: vec![TopicRequest {
            topic_name: "messageSending".into(),
            lock_duration: 1000,
            variables: Some(vec![]),
            filter: Default::default(),
        }],
    }
}

/// One fetch from the client's (only) node.
trait FetchFirstNode {
    async fn fetch_first_node(&self) -> Result<Vec<ExternalTask>, EngineError>;
}

impl FetchFirstNode for EngineClient {
    async fn fetch_first_node(&self) -> Result<Vec<ExternalTask>, EngineError> {
        let node = Arc::clone(&self.nodes()[0]);
        self.fetch_and_lock(&node, &fetch_request()).await
    }
}

async fn mock_fetch_requiring(server: &MockServer, authorization: &str) {
    Mock::given(method("POST"))
        .and(path("/engine-rest/external-task/fetchAndLock"))
        .and(header("authorization", authorization))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/engine-rest/external-task/fetchAndLock"))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(10)
        .mount(server)
        .await;
}

fn authorizations(requests: &[wiremock::Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.url.path().ends_with("fetchAndLock"))
        .map(|r| {
            r.headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn a_bearer_token_is_sent_with_every_call() {
    let server = MockServer::start().await;
    mock_fetch_requiring(&server, "Bearer t0ken").await;
    let url = format!("{}/engine-rest", server.uri());
    let client = client_for(&url, &["--bearer-token", "t0ken"]);
    client.fetch_first_node().await.expect("accepted");
    let refused = client_for(&url, &["--bearer-token", "wrong"])
        .fetch_first_node()
        .await
        .expect_err("refused");
    assert!(refused.is_unauthorized(), "{refused}");
    assert!(
        !refused.to_string().contains("wrong"),
        "the token leaked: {refused}"
    );
}

#[tokio::test]
async fn a_bearer_token_file_is_read_again_when_it_changes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engine-rest/external-task/fetchAndLock"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "first-token").unwrap();
    let url = format!("{}/engine-rest", server.uri());
    let client = client_for(
        &url,
        &["--bearer-token-file", file.path().to_str().unwrap()],
    );
    client.fetch_first_node().await.unwrap();
    client.fetch_first_node().await.unwrap();
    // A rotation: new contents and a new modification time.
    std::fs::write(file.path(), "second-token\n").unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(file.path())
        .unwrap()
        .set_modified(later)
        .unwrap();
    client.fetch_first_node().await.unwrap();
    let seen = authorizations(&server.received_requests().await.unwrap());
    assert_eq!(
        seen,
        [
            "Bearer first-token",
            "Bearer first-token",
            "Bearer second-token"
        ]
    );
}

#[tokio::test]
async fn an_oauth_token_is_cached_and_fetched_again_once_after_a_401() {
    let server = MockServer::start().await;
    let tokens = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&tokens);
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("client_id=worker"))
        .and(body_string_contains("scope=engine"))
        .respond_with(move |_: &wiremock::Request| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(200).set_body_json(
                json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 3600}),
            )
        })
        .mount(&server)
        .await;
    // token-1 is accepted once, then revoked; token-2 is accepted.
    Mock::given(method("POST"))
        .and(path("/engine-rest/external-task/fetchAndLock"))
        .and(header("authorization", "Bearer token-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    mock_fetch_requiring(&server, "Bearer token-2").await;
    let client = oauth_client_for(&server, "worker", "s3cret", Some("engine"));
    client.fetch_first_node().await.unwrap();
    client.fetch_first_node().await.unwrap();
    assert_eq!(tokens.load(Ordering::SeqCst), 1, "cached between calls");
    client
        .fetch_first_node()
        .await
        .expect("refetched after the 401");
    assert_eq!(tokens.load(Ordering::SeqCst), 2);
    let seen = authorizations(&server.received_requests().await.unwrap());
    assert_eq!(
        seen,
        [
            "Bearer token-1",
            "Bearer token-1",
            "Bearer token-1",
            "Bearer token-2"
        ]
    );
}

#[tokio::test]
async fn an_oauth_token_is_refreshed_before_it_expires() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        // Lives 31 s; refreshed 30 s early, so after 1 s it counts as expiring.
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "short", "expires_in": 31})),
        )
        .expect(2)
        .mount(&server)
        .await;
    mock_fetch_requiring(&server, "Bearer short").await;
    let client = oauth_client_for(&server, "w", "s", None);
    client.fetch_first_node().await.unwrap();
    client.fetch_first_node().await.unwrap();
    // Kept: the token must age past its refresh point (1 s); time passing is the point.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    client.fetch_first_node().await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_credentials_error_without_the_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_client"})))
        .mount(&server)
        .await;
    let error = oauth_client_for(&server, "w", "very-secret", None)
        .fetch_first_node()
        .await
        .expect_err("no token, no call");
    assert!(matches!(error, EngineError::Credentials(_)), "{error:?}");
    assert!(error.to_string().contains("invalid_client"), "{error}");
    assert!(!error.to_string().contains("very-secret"));
}

#[test]
fn secrets_from_the_environment_are_not_shown_in_help() {
    let output = crate::support::binary()
        .arg("--help")
        .env("CAMUNDA_WORKER_PASSWORD", "env-secret-1")
        .env("CAMUNDA_WORKER_BEARER_TOKEN", "env-secret-2")
        .env("CAMUNDA_WORKER_OAUTH_CLIENT_SECRET", "env-secret-3")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--password"));
    assert!(!help.contains("env-secret"), "{help}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all made for this test.
struct Pki {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let server_cert =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap()
                .signed_by(&server_key, &issuer)
                .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client_cert = CertificateParams::new(vec!["camunda-worker".to_owned()])
            .unwrap()
            .signed_by(&client_key, &issuer)
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), client_cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
        Pki {
            dir,
            ca_der: ca_cert.der().clone(),
            server_chain: vec![server_cert.der().clone()],
            server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }
}

/// An HTTPS endpoint answering every request with `200 []`; counts the requests it served and
/// those that came with a client certificate.
struct HttpsEngine {
    url: String,
    served: Arc<AtomicUsize>,
    with_client_cert: Arc<AtomicUsize>,
}

async fn https_engine(pki: &Pki, require_client_cert: bool) -> HttpsEngine {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let with_client_cert = Arc::new(AtomicUsize::new(0));
    let (served_count, cert_count) = (Arc::clone(&served), Arc::clone(&with_client_cert));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let (served, certs) = (Arc::clone(&served_count), Arc::clone(&cert_count));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if tls.get_ref().1.peer_certificates().is_some() {
                    certs.fetch_add(1, Ordering::SeqCst);
                }
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                served.fetch_add(1, Ordering::SeqCst);
                let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]";
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    HttpsEngine {
        url: format!("https://127.0.0.1:{port}/engine-rest"),
        served,
        with_client_cert,
    }
}

#[tokio::test]
async fn an_engine_behind_a_private_ca_is_trusted_only_with_ca_cert() {
    let pki = Pki::new();
    let engine = https_engine(&pki, false).await;
    let untrusted = client_for(&engine.url, &[])
        .fetch_first_node()
        .await
        .expect_err("unknown CA");
    assert!(
        matches!(untrusted, EngineError::Unreachable { .. }),
        "{untrusted:?}"
    );
    assert!(
        untrusted.to_string().to_lowercase().contains("certificate"),
        "{untrusted}"
    );
    client_for(&engine.url, &["--ca-cert", &pki.file("ca.pem")])
        .fetch_first_node()
        .await
        .expect("trusted with --ca-cert");
    assert_eq!(engine.served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::new();
    let engine = https_engine(&pki, true).await;
    let ca = pki.file("ca.pem");
    let refused = client_for(&engine.url, &["--ca-cert", &ca])
        .fetch_first_node()
        .await;
    assert!(
        refused.is_err(),
        "a server that requires a client certificate refuses none"
    );
    client_for(
        &engine.url,
        &[
            "--ca-cert",
            &ca,
            "--client-cert",
            &pki.file("client.pem"),
            "--client-key",
            &pki.file("client.key"),
        ],
    )
    .fetch_first_node()
    .await
    .expect("accepted with the client certificate");
    assert_eq!(engine.with_client_cert.load(Ordering::SeqCst), 1);
    assert_eq!(engine.served.load(Ordering::SeqCst), 1);
}

#[test]
fn a_missing_certificate_file_is_rejected_at_start_naming_the_flag() {
    let output = crate::support::binary()
        .args(["--ca-cert", "/nonexistent/ca.pem", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--ca-cert /nonexistent/ca.pem"), "{stderr}");
}
