//! `rediss://`: the store over TLS to a real redis-server serving TLS only,
//! its certificate signed by a CA the client is given (`COSTOP_REDIS_CA_FILE`).

use costop_core::notice::InstanceAction;
use costop_core::ports::StorePort;
use costop_core::{Notice, NoticeKind, NoticeSource};
use costop_store::redis_server::RedisServer;
use costop_store::RedisStore;
use std::process::Command;

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_tls() {
    let dir = std::env::temp_dir().join(format!("costop-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=costop test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
        ],
    );
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "redis.pem",
            "-extfile",
            "ext",
        ],
    );
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let (cert, key, ca) = (path("redis.pem"), path("redis.key"), path("ca.pem"));
    let server = RedisServer::start_with(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "s3cret",
    ])
    .expect("redis-server with TLS");
    // The client trusts the test CA (and only for Redis).
    std::env::set_var(costop_store::redis_store::REDIS_CA_ENV, &ca);
    let url = format!("rediss://:s3cret@127.0.0.1:{}/", server.port);
    let store = RedisStore::connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let notice = Notice {
        instance_id: "i-0aaa".into(),
        kind: NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: 1 },
        received_at: 0,
        source: NoticeSource::Agent,
    };
    store.publish_signed(&notice, Some("t")).await.unwrap();
    let read = store.read_signed("server", 100).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].notice.as_ref().unwrap(), &notice);
    assert!(store.record_notice(&notice).await.unwrap());
    // Plain text to the TLS port gets nowhere.
    let plain = async {
        let s = RedisStore::connect(&format!("redis://:s3cret@127.0.0.1:{}/", server.port)).await?;
        s.record_notice(&notice).await
    };
    assert!(plain.await.is_err());
}
