//! The kubelet's timing: when a pod bound to a node turns Ready, and how
//! long a deleted pod takes to go.

use costop_core::time::Millis;
use costop_facts::timings::{ms, Timings};

/// What decides a bound pod's start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodStart {
    /// Its images are already on the node (pulled by an earlier pod, or
    /// baked into the AMI like the pause image): no pull.
    pub image_present: bool,
    /// It has a readiness probe: Ready waits for the application to start.
    /// Without one the kubelet reports Ready once the containers run
    /// (kubernetes `pkg/kubelet/status`, `GeneratePodReadyCondition`).
    pub readiness_probe: bool,
}

/// When a pod bound at `bound_at` turns Ready, on the caller's clock.
///
/// The kubelet mounts its volumes first (the attach finishes at
/// `volumes_at`; 0 when it has none), pulls missing images
/// (`image_pull_s`), creates and starts the containers
/// (`container_start_s`), then waits for the readiness probe
/// (`app_ready_s`). It sees the change on its next PLEG relist
/// (`pleg_relist_s`, 1 s): Ready falls on the first relist tick after
/// `bound_at` and not before the containers are ready.
pub fn ready_at(t: &Timings, pod: PodStart, bound_at: Millis, volumes_at: Millis) -> Millis {
    let mut at = bound_at.max(volumes_at);
    if !pod.image_present {
        at += ms(t.image_pull_s);
    }
    at += ms(t.container_start_s);
    if pod.readiness_probe {
        at += ms(t.app_ready_s);
    }
    let relist = ms(t.pleg_relist_s).max(1);
    let first_tick = (bound_at / relist + 1) * relist;
    (at.div_ceil(relist) * relist).max(first_tick)
}

/// How long a deleted pod takes to go once its deletion reaches the
/// kubelet: the application's shutdown (`pod_shutdown_s`), cut at the
/// grace period (`terminationGracePeriodSeconds`, 30 s unless set), after
/// which the kubelet kills the containers.
pub fn shutdown_ms(t: &Timings, grace_s: Option<f64>) -> Millis {
    ms(t.pod_shutdown_s.min(grace_s.unwrap_or(DEFAULT_GRACE_S)))
}

/// The default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_S: f64 = 30.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_pod_pulls_starts_and_waits_for_its_probe() {
        let t = Timings::default();
        let cold = PodStart { image_present: false, readiness_probe: true };
        // 10 s pull + 1 s start + 5 s app, on a 1 s relist grid.
        assert_eq!(ready_at(&t, cold, 0, 0), 16_000);
        assert_eq!(ready_at(&t, cold, 1_200, 0), 18_000, "rounded up to the next relist");
        let warm = PodStart { image_present: true, ..cold };
        assert_eq!(ready_at(&t, warm, 0, 0), 6_000);
        let pause = PodStart { image_present: true, readiness_probe: false };
        assert_eq!(ready_at(&t, pause, 0, 0), 1_000);
    }

    #[test]
    fn volumes_come_first() {
        let t = Timings::default();
        let pod = PodStart { image_present: true, readiness_probe: true };
        assert_eq!(ready_at(&t, pod, 0, 15_000), 21_000);
        assert_eq!(ready_at(&t, pod, 20_000, 15_000), 26_000, "an attached volume does not wait");
    }

    #[test]
    fn ready_is_never_before_the_next_relist() {
        let t = Timings { image_pull_s: 0.0, container_start_s: 0.0, app_ready_s: 0.0, ..Timings::default() };
        let pod = PodStart { image_present: true, readiness_probe: false };
        assert_eq!(ready_at(&t, pod, 0, 0), 1_000);
        assert_eq!(ready_at(&t, pod, 1_000, 0), 2_000);
    }

    #[test]
    fn shutdown_is_cut_at_the_grace_period() {
        let t = Timings::default();
        assert_eq!(shutdown_ms(&t, None), 5_000);
        assert_eq!(shutdown_ms(&t, Some(2.0)), 2_000);
        assert_eq!(shutdown_ms(&t, Some(0.0)), 0);
    }
}
