//! The etcd backend over TLS with client certificates, as
//! `--datastore-cafile/--datastore-certfile/--datastore-keyfile` use it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use tug_store::{Bytes, Config, Error, PutOptions, etcd};

struct TlsEtcd {
    child: Child,
    url: String,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_pair(dir: &Path, name: &str, cert: &rcgen::Certificate, key: &KeyPair) {
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// A CA, a serving certificate for 127.0.0.1 and a client certificate.
fn make_pki(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "test-etcd-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::default();
    server.distinguished_name.push(DnType::CommonName, "etcd");
    server.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    server.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    write_pair(
        dir,
        "server",
        &server.signed_by(&server_key, &issuer).unwrap(),
        &server_key,
    );

    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::default();
    client.distinguished_name.push(DnType::CommonName, "tug");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    write_pair(
        dir,
        "client",
        &client.signed_by(&client_key, &issuer).unwrap(),
        &client_key,
    );
}

fn config(url: &str, dir: &Path, with_client_cert: bool) -> Config {
    Config::Etcd(etcd::Config {
        ca_file: Some(dir.join("ca.crt")),
        cert_file: with_client_cert.then(|| dir.join("client.crt")),
        key_file: with_client_cert.then(|| dir.join("client.key")),
        ..etcd::Config::from_endpoints(url).unwrap()
    })
}

async fn start(dir: &Path) -> TlsEtcd {
    make_pki(dir);
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (client_port, peer_port) = (port(0), port(1));
    let url = format!("https://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let child = Command::new("etcd")
        .arg("--name=tls")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=tls={peer}"))
        .arg(format!("--cert-file={}", dir.join("server.crt").display()))
        .arg(format!("--key-file={}", dir.join("server.key").display()))
        .arg(format!(
            "--trusted-ca-file={}",
            dir.join("ca.crt").display()
        ))
        .arg("--client-cert-auth")
        .arg("--log-level=error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let etcd = TlsEtcd { child, url };
    let deadline = Instant::now() + Duration::from_secs(30);
    while tug_store::open(config(&etcd.url, dir, true)).await.is_err() {
        assert!(Instant::now() < deadline, "etcd with TLS did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    etcd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start(dir.path()).await;
    let store = tug_store::open(config(&etcd.url, dir.path(), true))
        .await
        .unwrap();
    let kv = store
        .create("/tls/k", Bytes::from_static(b"v"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get("/tls/k", None).await.unwrap().kv, Some(kv));

    // Without a client certificate etcd refuses; the error says where.
    match tug_store::open(config(&etcd.url, dir.path(), false)).await {
        Err(Error::Config(message)) => {
            assert!(message.contains("cannot reach etcd at"), "{message}")
        }
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("etcd accepted a client without a certificate"),
    }
    // Half a client identity is a configuration error before any connection.
    let half = Config::Etcd(etcd::Config {
        cert_file: Some(dir.path().join("client.crt")),
        ..etcd::Config::from_endpoints(&etcd.url).unwrap()
    });
    match tug_store::open(half).await {
        Err(Error::Config(message)) => assert!(
            message.contains("both a cert file and a key file"),
            "{message}"
        ),
        other => panic!("expected a configuration error, got {:?}", other.err()),
    }
}
