//! Lease election against the emulated API server.

use costop_emu::{EmuConfig, Emulator};
use costop_kube::KubeCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_keeps_leading() {
    let dir = std::env::temp_dir().join(format!("costop-lease-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let emu = Emulator::start(EmuConfig { kubeconfig: dir.join("kubeconfig"), ..Default::default() })
        .await
        .unwrap();
    let client = KubeCluster::client_from_kubeconfig(&emu.kubeconfig).await.unwrap();
    assert!(costop_server::leader::try_lead(&client, "a").await.unwrap());
    assert!(
        !costop_server::leader::try_lead(&client, "b").await.unwrap(),
        "b must not lead while a's lease is fresh"
    );
    assert!(costop_server::leader::try_lead(&client, "a").await.unwrap(), "a renews");
    assert!(!costop_server::leader::try_lead(&client, "b").await.unwrap());
}
