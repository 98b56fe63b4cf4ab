//! The files the configuration reads: a config, secret or certificate file must be a regular file
//! of at most 1 MiB (a FIFO must not hang the start), a CA file must hold a certificate, a client
//! key must be its certificate's — else exit 2, one line naming the flag and the file.

use std::time::{Duration, Instant};

use crate::cli::rejects;
use crate::support::binary;

/// A self-signed certificate and its key, as PEM.
fn certificate(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn a_ca_file_without_a_certificate_or_a_client_key_of_another_certificate_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key) = certificate("camunda-worker");
    let (_, other_key) = certificate("someone-else");
    let (cert, key, other_key) = (
        write("client.pem", &cert),
        write("client.key", &key),
        write("other.key", &other_key),
    );
    let empty = write("empty.pem", "");
    let text = write("text.pem", "not a certificate\n");
    let only_key = write("only-key.pem", &std::fs::read_to_string(&key).unwrap());
    for ca in [&empty, &text, &only_key] {
        rejects(
            binary().args(["--ca-cert", ca, "--print-config"]),
            &["--ca-cert", ca, "no PEM certificate"],
        );
    }
    rejects(
        binary().args([
            "--client-cert",
            &cert,
            "--client-key",
            &other_key,
            "--print-config",
        ]),
        &["--client-key", &other_key, "does not belong", &cert],
    );
    rejects(
        binary().args([
            "--client-cert",
            &key,
            "--client-key",
            &key,
            "--print-config",
        ]),
        &["--client-cert", "no PEM certificate"],
    );
    rejects(
        binary().args([
            "--client-cert",
            &cert,
            "--client-key",
            &cert,
            "--print-config",
        ]),
        &["--client-key", "no PEM private key"],
    );
    // The same files, as they belong together, are accepted; a certificate is a CA file.
    for args in [
        &["--client-cert", &cert, "--client-key", &key][..],
        &["--ca-cert", &cert],
    ] {
        let output = binary().args(args).arg("--print-config").output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn a_config_or_secret_file_that_is_no_regular_file_or_too_large_exits_2_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("worker.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    let directory = dir.path().to_str().unwrap();
    let large = dir.path().join("large.toml");
    let line = "# padding padding padding padding padding padding padding padding padding\n";
    std::fs::write(&large, line.repeat(1024 * 1024 / line.len() + 1)).unwrap();
    let large = large.to_str().unwrap();
    for (flag, path, needle) in [
        ("--config", fifo, "not a regular file"),
        ("--config", directory, "a directory"),
        ("--config", large, "larger than 1024 KiB"),
        ("--config", "/dev/zero", "not a regular file"),
        ("--ca-cert", fifo, "not a regular file"),
        ("--ca-cert", large, "larger than"),
        ("--bearer-token-file", fifo, "not a regular file"),
        ("--bearer-token-file", directory, "a directory"),
    ] {
        // A FIFO nobody writes to would block a reader for good: the worker must not open it.
        let mut child = binary()
            .args([flag, path, "--print-config"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                child.kill().unwrap();
                panic!("{flag} {path}: the worker did not exit within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {path}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{flag} {path}: {stderr}");
        for wanted in [flag.trim_start_matches("--config"), path, needle] {
            assert!(
                lines[0].contains(wanted),
                "{flag} {path}: `{wanted}` missing: {stderr}"
            );
        }
    }
}
