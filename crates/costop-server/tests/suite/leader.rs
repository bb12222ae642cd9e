//! Lease election against the emulated API server, and the real server's
//! leadership: unique identities, hand-over on shutdown.

use crate::common::*;
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

/// Counts renewals.
#[derive(Default)]
struct Renewals(std::sync::atomic::AtomicU32);

impl leader::Leadership for Renewals {
    fn renewed(&self, _at: u64) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn lost(&self) {}
}

/// The emulator on a runtime of its own thread, so blocking the test's
/// runtime blocks only the test.
fn emu_on_own_thread(name: &str) -> (std::path::PathBuf, std::sync::mpsc::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let name = name.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let emu = emu(&name).await;
            addr_tx.send(emu.kubeconfig.clone()).unwrap();
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            emu.stop();
        });
    });
    (addr_rx.recv().unwrap(), stop_tx)
}

#[test]
fn renewals_go_on_while_response_work_holds_the_servers_runtime() {
    let (kubeconfig, stop_emu) = emu_on_own_thread("busy");
    // The server's runtime: one thread, which the "burst" below holds.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let renewals = std::sync::Arc::new(Renewals::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let config = rt.block_on(KubeCluster::load_config(Some(&kubeconfig))).unwrap();
    let thread = leader::spawn_elect(config, Candidate::new("busy"), renewals.clone(), shutdown).unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while renewals.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "never led");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = renewals.0.load(std::sync::atomic::Ordering::SeqCst);
        // Response work that never yields, for longer than the renew deadline.
        std::thread::sleep(Duration::from_millis(leader::RENEW_DEADLINE_MS + 1_000));
        let during = renewals.0.load(std::sync::atomic::Ordering::SeqCst) - before;
        let want = (leader::RENEW_DEADLINE_MS / leader::RENEW_EVERY.as_millis() as u64) as u32 - 1;
        assert!(during >= want, "{during} renewals while the runtime was held, want at least {want}");
    });
    stop.send(true).unwrap();
    thread.join().unwrap();
    let _ = stop_emu.send(());
}
