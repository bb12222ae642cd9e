//! Lease election against the emulated API server, and the real server's
//! leadership: unique identities, hand-over on shutdown.

mod common;
use common::*;
use costop_emu::{EmuConfig, Emulator};
use costop_kube::KubeCluster;
use costop_server::leader::{self, Candidate};
use k8s_openapi::api::coordination::v1::Lease;
use std::time::{Duration, Instant};

async fn emu(name: &str) -> Emulator {
    let dir = std::env::temp_dir().join(format!("costop-lease-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Emulator::start(EmuConfig { kubeconfig: dir.join("kubeconfig"), ..Default::default() }).await.unwrap()
}

async fn lease(client: &kube::Client) -> Lease {
    kube::Api::<Lease>::namespaced(client.clone(), costop_kube::COSTOP_NAMESPACE)
        .get(leader::LEASE)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_keeps_leading() {
    let emu = emu("one").await;
    let client = KubeCluster::client_from_kubeconfig(&emu.kubeconfig).await.unwrap();
    let (a, b) = (Candidate::new("a"), Candidate::new("b"));
    assert!(leader::try_lead(&client, &a).await.unwrap());
    assert!(!leader::try_lead(&client, &b).await.unwrap(), "b must not lead while a's lease is fresh");
    assert!(leader::try_lead(&client, &a).await.unwrap(), "a renews");
    assert!(!leader::try_lead(&client, &b).await.unwrap());
    // Another process with a's identity is another holder.
    assert!(!leader::try_lead(&client, &Candidate::new("a")).await.unwrap(), "same identity, other process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_the_acquire_time_and_a_release_hands_over_at_once() {
    let emu = emu("acquire").await;
    let client = KubeCluster::client_from_kubeconfig(&emu.kubeconfig).await.unwrap();
    let (a, b) = (Candidate::new("a"), Candidate::new("b"));
    assert!(leader::try_lead(&client, &a).await.unwrap());
    let first = lease(&client).await.spec.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(leader::try_lead(&client, &a).await.unwrap());
    }
    let renewed = lease(&client).await.spec.unwrap();
    assert_eq!(renewed.acquire_time, first.acquire_time, "acquireTime is the acquisition's");
    assert!(renewed.renew_time.unwrap().0 > first.renew_time.unwrap().0);
    assert_eq!(renewed.lease_transitions, Some(0));

    assert!(leader::release(&client, &a).await.unwrap());
    assert!(!leader::release(&client, &b).await.unwrap(), "b holds nothing to release");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(leader::try_lead(&client, &b).await.unwrap(), "a released Lease is free at once");
    let taken = lease(&client).await.spec.unwrap();
    assert_eq!(taken.holder_identity.as_deref(), Some("b"));
    assert!(taken.acquire_time.unwrap().0 > first.acquire_time.unwrap().0, "a new acquisition");
    assert_eq!(taken.lease_transitions, Some(1));
    assert!(!leader::try_lead(&client, &a).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_with_a_live_servers_identity_refuses_to_start() {
    let (emu, _dir) = start_emu("lease-same-identity").await;
    let first = start_server(&emu, None, "twin").await;
    first.wait_leading().await;
    let started = Instant::now();
    let second = start_server(&emu, None, "twin").await;
    let refused = tokio::time::timeout(Duration::from_secs(10), second.task).await.expect("refused in time");
    let err = refused.unwrap().expect_err("the second server must not start");
    assert!(err.to_string().contains("another live server holds"), "{err}");
    println!("refused after {:?}", started.elapsed());
    assert_eq!(first.role().await, "leader", "the first keeps leading");
    first.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_of_the_same_identity_does_not_stop_a_restart() {
    let (emu, _dir) = start_emu("lease-crashed").await;
    let client = KubeCluster::client_from_kubeconfig(&emu.kubeconfig).await.unwrap();
    // A predecessor took the Lease and died without renewing or releasing it.
    assert!(leader::try_lead(&client, &Candidate::new("phoenix")).await.unwrap());
    let server = start_server(&emu, None, "phoenix").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!server.task.is_finished(), "the restart runs");
    assert_eq!(server.role().await, "follower", "the predecessor's Lease is not expired yet");
    until("the restart leads once the Lease expires", Duration::from_secs(20), async || {
        server.role().await == "leader"
    })
    .await;
    server.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_lease_and_the_next_server_leads_within_two_seconds() {
    let (emu, _dir) = start_emu("lease-handover").await;
    let a = start_server(&emu, None, "a").await;
    a.wait_leading().await;
    let b = start_server(&emu, None, "b").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.role().await, "follower");
    let stopped = Instant::now();
    a.stop.send(true).unwrap();
    until("b leads", Duration::from_secs(10), async || b.role().await == "leader").await;
    let handover = stopped.elapsed();
    println!("hand-over took {handover:?}");
    assert!(handover <= Duration::from_secs(2), "hand-over took {handover:?}");
    tokio::time::timeout(Duration::from_secs(5), a.task).await.expect("a stops").unwrap().unwrap();
    b.stop.send(true).unwrap();
}
