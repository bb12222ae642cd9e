//! What `COSTOP_DEBUG_SIM=1` prints (at the first step of the run after
//! each `COSTOP_DEBUG_SAMPLE_S` seconds, default 10; no step is added, so
//! the run is the one without it) while a reclaim's incident is open:
//! per zone, where the room is; per workload not whole yet, where its pods
//! are. Read together they show why an incident is slow (pods waiting for
//! room in the zone their volumes pin them to, a budget letting one wave
//! go at a time, pods left on a doomed node).

use super::{NodeState, PodState, World};
use std::collections::BTreeMap;

/// One zone's room, in cores, over its nodes that take pods now.
#[derive(Default)]
struct ZoneRoom {
    /// Ready nodes that take pods.
    taking: u32,
    /// Live nodes that do not: doomed, cordoned or standby-tainted.
    out: u32,
    /// Live nodes not Ready yet (booting, or stopped standbys).
    booting: u32,
    allocatable: u64,
    /// Requests of pods with a volume (pinned to their volume's zone).
    pinned: u64,
    /// Requests of the other workload pods.
    other: u64,
    placeholders: u64,
    /// Requests of pending pods whose volume is in this zone.
    pinned_pending: u64,
}

/// How often `COSTOP_DEBUG_SIM` prints, when it is set.
pub(super) fn print_period() -> Option<u64> {
    std::env::var_os("COSTOP_DEBUG_SIM")?;
    let secs = std::env::var("COSTOP_DEBUG_SAMPLE_S").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(10);
    Some(secs.max(1) * 1000)
}

impl World {
    /// Print the open incidents: every zone's room, then each workload not
    /// whole yet with its pods counted by state and by where they are.
    /// Pinned pods seen Pending are noted on every open incident, for
    /// `COSTOP_DEBUG_INCIDENTS` to print when it ends.
    pub(super) fn debug_open_incidents(&mut self) {
        if self.open_incidents.is_empty() {
            return;
        }
        let t = self.now / 1000;
        let mut pending = 0;
        for (zone, room) in self.zone_rooms() {
            pending += room.pinned_pending;
            let cores = |m: u64| m / 1000;
            let used = room.pinned + room.other + room.placeholders;
            eprintln!(
                "[{}] t={t} zone {zone}: {} nodes take pods, {} out, {} booting; cores {} = pinned {} + other {} + placeholders {} + free {}; pinned pending {}",
                self.strategy.name(),
                room.taking,
                room.out,
                room.booting,
                cores(room.allocatable),
                cores(room.pinned),
                cores(room.other),
                cores(room.placeholders),
                cores(room.allocatable.saturating_sub(used)),
                cores(room.pinned_pending),
            );
        }
        if pending > 0 {
            for &i in &self.open_incidents {
                let waits = &mut self.incidents[i].pinned_waits;
                *waits = Some(waits.map_or((self.now, pending), |(from, most)| (from, most.max(pending))));
            }
        }
        for &i in &self.open_incidents {
            let inc = &self.incidents[i];
            eprintln!("[{}] t={t} incident from {} open", self.strategy.name(), inc.start / 1000);
            for &w in &inc.workloads {
                let wl = &self.workloads[w as usize];
                if wl.ready_safe >= wl.wanted() {
                    continue;
                }
                let mut by_place: BTreeMap<String, u32> = BTreeMap::new();
                for p in self.pods.iter().filter(|p| p.workload == w && p.state != PodState::Free) {
                    let place = match p.node.map(|n| &self.nodes[n as usize]) {
                        None => "unbound",
                        Some(n) if n.doomed => "on a doomed node",
                        Some(_) if p.state == PodState::Ready => continue,
                        Some(_) => "on a safe node",
                    };
                    *by_place.entry(format!("{:?} {place}", p.state)).or_default() += 1;
                }
                eprintln!(
                    "  {} replicas {} ready {} safe {} active {}: {:?}",
                    wl.name, wl.replicas, wl.ready, wl.ready_safe, wl.active, by_place
                );
            }
        }
    }

    fn zone_rooms(&self) -> Vec<(&str, ZoneRoom)> {
        let mut rooms: Vec<ZoneRoom> = self.zones.iter().map(|_| ZoneRoom::default()).collect();
        for &i in &self.live {
            let n = &self.nodes[i as usize];
            let room = &mut rooms[n.zone];
            if n.state != NodeState::Ready {
                room.booting += 1;
                continue;
            }
            if n.doomed || n.unschedulable || n.standby_taint {
                room.out += 1;
                continue;
            }
            room.taking += 1;
            room.allocatable += n.alloc.cpu_millis;
            for &p in &n.pods {
                let pod = &self.pods[p as usize];
                let wl = &self.workloads[pod.workload as usize];
                let into = if wl.placeholder {
                    &mut room.placeholders
                } else if pod.volume.is_some() {
                    &mut room.pinned
                } else {
                    &mut room.other
                };
                *into += wl.requests.cpu_millis;
            }
        }
        for p in self.pods.iter().filter(|p| p.state == PodState::Pending) {
            if let Some(v) = p.volume {
                rooms[self.volumes[v as usize].zone].pinned_pending +=
                    self.workloads[p.workload as usize].requests.cpu_millis;
            }
        }
        self.zones.iter().map(|z| &**z).zip(rooms).collect()
    }
}
