//! Evicting a set of pods within their disruption budgets.
//!
//! Each request is one attempt ([`ClusterPort::evict`]); when a budget
//! refuses, the pod's next attempt is kept as data (a time in a queue),
//! not as a future sleeping between attempts. A whole pool's pods (51,000
//! in the full-size burst of `costop bench burst`) may be refused at once
//! and wait for their budgets; each then costs a few words, and no more
//! than [`ASKED_AT_ONCE`] requests of one set are on their way at a time.
//!
//! The rules (which the simulator runs too, as it runs the executor):
//! - a refused pod is asked again after 250 ms, then twice as long each
//!   time up to 5 s (client-go's eviction helpers and `kubectl drain` retry
//!   a 429 after 5 s; a pool's notice has 120 s, so the first retries come
//!   sooner), never later than its give-up time;
//! - a pod its workload replaces (a lead is given) and not evicted by its
//!   give-up time (`lead` before the deadline) is deleted then, while the
//!   deadline is ahead, whether its last eviction was refused, failed or
//!   is still unanswered (in a burst it may wait for its turn to be sent
//!   longer than that), or its turn came only then (its wave waited for
//!   its surge); a delete whose turn comes only at the deadline is not
//!   sent (the pod goes with its node) and the pod is reported left;
//! - a pod without a lead is asked until the deadline and then left;
//! - an error that is not a budget's refusal before the give-up time ends
//!   the pod's attempts;
//! - no request is waited for past the deadline (nor an eviction of a pod
//!   with a lead past its give-up time): a stuck one would hold one of its
//!   set's turns.

use costop_core::ports::{Clock, ClusterPort, Evicted};
use costop_core::time::Millis;
use futures::stream::{FuturesUnordered, StreamExt};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// How soon a refused eviction is asked again the first time.
pub(crate) const FIRST_RETRY: Millis = 250;

/// The longest wait between two attempts of one pod.
pub(crate) const LONGEST_RETRY: Millis = 5_000;

/// Requests of one set of pods on their way at once. The adapter bounds
/// the requests in flight across every response (the Kubernetes client's
/// own limit); this bounds what one set holds while it waits its turn, so
/// a burst of a thousand responses holds thousands of small futures, not
/// one per pod.
pub(crate) const ASKED_AT_ONCE: usize = 8;

/// What became of the pods a set of evictions asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EvictionTally {
    pub evicted: usize,
    pub gone: usize,
    /// Deleted near the deadline: not evicted by their give-up time.
    pub deleted: usize,
    /// Not evicted (nor deleted): each pod with why.
    pub refused: Vec<(String, String)>,
}

impl EvictionTally {
    pub fn plus(mut self, other: EvictionTally) -> EvictionTally {
        self.evicted += other.evicted;
        self.gone += other.gone;
        self.deleted += other.deleted;
        self.refused.extend(other.refused);
        self
    }
}

/// What a pod is asked for next. Deletes first among requests due at
/// one time: their pods' deadline is nearest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ask {
    Delete,
    Evict,
}

/// One pod's attempts so far.
#[derive(Debug, Clone, Copy)]
struct Attempts {
    refused: u32,
    next_wait: Millis,
    /// When evictions stop being asked (`deadline - lead`).
    give_up: Millis,
    /// Whether it is deleted if not evicted by `give_up`.
    deletes: bool,
}

/// Every pod's next request and when it is due: the pure half of
/// [`evict_pods`], fed the answers and the time.
#[derive(Debug)]
pub(crate) struct Schedule {
    deadline: Millis,
    pods: Vec<Attempts>,
    /// (due, what, pod): the earliest first, deletes first, then by pod order.
    due: BinaryHeap<Reverse<(Millis, Ask, usize)>>,
    tally: EvictionTally,
}

impl Schedule {
    /// Pods with their leads (0: never deleted), all due `now`.
    pub fn new(now: Millis, deadline: Millis, leads: impl IntoIterator<Item = Millis>) -> Self {
        let pods: Vec<Attempts> = leads
            .into_iter()
            .map(|lead| Attempts {
                refused: 0,
                next_wait: FIRST_RETRY,
                give_up: deadline.saturating_sub(lead),
                deletes: lead > 0,
            })
            .collect();
        let mut schedule = Self { deadline, pods, due: BinaryHeap::new(), tally: EvictionTally::default() };
        for i in 0..schedule.pods.len() {
            // Past the give-up time already (its wave waited for its surge
            // until then): an eviction would be asked only to be refused.
            let ask = if schedule.delete_now(i, now) { Ask::Delete } else { Ask::Evict };
            schedule.due.push(Reverse((now, ask, i)));
        }
        schedule
    }

    fn delete_now(&self, i: usize, now: Millis) -> bool {
        let p = &self.pods[i];
        p.deletes && (p.give_up..self.deadline).contains(&now)
    }

    /// The next request due at `now`, taken off the schedule. An eviction
    /// whose turn comes at or past its pod's give-up time (the last retry
    /// is due then; a burst's requests may wait longer for their turn) is a
    /// delete by then; a delete whose turn comes at the deadline is not sent.
    pub fn next_due(&mut self, now: Millis, pods: &[&String]) -> Option<(usize, Ask)> {
        loop {
            let Reverse((at, ask, i)) = self.due.peek().copied()?;
            if at > now {
                return None;
            }
            self.due.pop();
            match ask {
                Ask::Delete if now >= self.deadline => {
                    let why = "its delete's turn came only at the deadline: it goes with its node";
                    self.tally.refused.push((pods[i].to_string(), why.to_string()));
                }
                Ask::Evict if self.delete_now(i, now) => return Some((i, Ask::Delete)),
                _ => return Some((i, ask)),
            }
        }
    }

    /// Until when a request asked at `now` is waited for, and what its
    /// time is called: an eviction of a pod to be deleted at its give-up
    /// time, until then (in a burst a request may wait its turn in the
    /// adapter longer than that, and its answer would come too late for
    /// the delete); any other, until the deadline, after which its answer
    /// changes nothing (a stuck request would otherwise hold one of the
    /// set's turns for as long as the client waits); one asked at the
    /// deadline (the last eviction of a pod without a lead), until answered.
    pub fn answer_by(&self, i: usize, ask: Ask, now: Millis) -> Option<(Millis, &'static str)> {
        let p = &self.pods[i];
        if ask == Ask::Evict && p.deletes {
            Some((p.give_up, "the give-up time"))
        } else {
            (now < self.deadline).then_some((self.deadline, "the deadline"))
        }
    }

    /// When the next request not yet taken is due.
    pub fn wakes_at(&self) -> Option<Millis> {
        self.due.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The answer to pod `i`'s request `ask`, come at `now`.
    pub fn answered(&mut self, i: usize, pod: &str, ask: Ask, answer: Result<Evicted, String>, now: Millis) {
        let refused = |p: &Attempts| -> String {
            match p.refused {
                0 => String::new(),
                n => format!("a disruption budget refused {n} evictions; then "),
            }
        };
        match (ask, answer) {
            (Ask::Evict, Ok(Evicted::Accepted)) => self.tally.evicted += 1,
            (Ask::Delete, Ok(Evicted::Accepted)) => self.tally.deleted += 1,
            (_, Ok(Evicted::AlreadyGone)) => self.tally.gone += 1,
            (Ask::Evict, Ok(Evicted::Refused)) => {
                let delete_now = self.delete_now(i, now);
                let p = &mut self.pods[i];
                p.refused += 1;
                if now < p.give_up {
                    let at = now.saturating_add(p.next_wait).min(p.give_up);
                    p.next_wait = (p.next_wait * 2).min(LONGEST_RETRY);
                    self.due.push(Reverse((at, Ask::Evict, i)));
                } else if delete_now {
                    self.due.push(Reverse((now, Ask::Delete, i)));
                } else {
                    let why =
                        format!("a disruption budget refused {} evictions until the time allowed", p.refused);
                    self.tally.refused.push((pod.to_string(), why));
                }
            }
            (Ask::Evict, Err(x)) if self.delete_now(i, now) => {
                tracing::debug!(pod, error = %x, "eviction failed at its give-up time; deleting");
                self.due.push(Reverse((now, Ask::Delete, i)));
            }
            (Ask::Evict, Err(x)) => {
                let why = format!("{}{x}", refused(&self.pods[i]));
                self.tally.refused.push((pod.to_string(), why));
            }
            (Ask::Delete, Ok(Evicted::Refused)) => {
                let why = format!("{}the delete before the deadline was refused", refused(&self.pods[i]));
                self.tally.refused.push((pod.to_string(), why));
            }
            (Ask::Delete, Err(x)) => {
                let why = format!("{}the delete before the deadline failed: {x}", refused(&self.pods[i]));
                self.tally.refused.push((pod.to_string(), why));
            }
        }
    }

    /// Whether every pod has its answer.
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.due.is_empty()
    }

    /// What came of every pod.
    pub fn into_tally(self) -> EvictionTally {
        self.tally
    }
}

/// Evict `pods` (each with its lead, see [`Schedule::new`]) by `deadline`
/// under the rules in this module's doc. Pods are asked in their order;
/// refused ones again when due, [`ASKED_AT_ONCE`] requests at a time.
pub(crate) async fn evict_pods<K: ClusterPort, C: Clock>(
    cluster: &K,
    clock: &C,
    pods: &[(&String, Millis)],
    deadline: Millis,
) -> EvictionTally {
    let mut schedule = Schedule::new(clock.now_ms(), deadline, pods.iter().map(|(_, lead)| *lead));
    let names: Vec<&String> = pods.iter().map(|(pod, _)| *pod).collect();
    let pods = names.as_slice();
    let mut asked = FuturesUnordered::new();
    loop {
        let now = clock.now_ms();
        while asked.len() < ASKED_AT_ONCE {
            let Some((i, ask)) = schedule.next_due(now, pods) else { break };
            let pod: &str = pods[i];
            let answer_by = schedule.answer_by(i, ask, now);
            asked.push(async move { (i, ask, ask_once(cluster, clock, pod, ask, answer_by).await) });
        }
        let wake = if asked.len() < ASKED_AT_ONCE { schedule.wakes_at() } else { None };
        let answer = match (asked.is_empty(), wake) {
            (true, None) => return schedule.into_tally(),
            (true, Some(at)) => {
                clock.sleep(Duration::from_millis(at.saturating_sub(now))).await;
                None
            }
            (false, None) => asked.next().await,
            (false, Some(at)) => {
                let sleep = std::pin::pin!(clock.sleep(Duration::from_millis(at.saturating_sub(now))));
                match futures::future::select(asked.next(), sleep).await {
                    futures::future::Either::Left((answer, _)) => answer,
                    futures::future::Either::Right(((), _)) => None,
                }
            }
        };
        if let Some((i, ask, answer)) = answer {
            schedule.answered(i, pods[i], ask, answer, clock.now_ms());
        }
    }
}

/// Send one request for `pod`, waited for until `answer_by` at most (a
/// time and its name, for the error).
/// Every request of a burst waiting its turn is one of these (27,000 at
/// once at full size, 8 for each of 3,400 sets): the delete's own state is
/// boxed, so that the evictions, nearly all of them, do not hold room for
/// it (a request and an Event, 3.4 KB in the Kubernetes adapter).
pub(crate) async fn ask_once<K: ClusterPort, C: Clock>(
    cluster: &K,
    clock: &C,
    pod: &str,
    ask: Ask,
    answer_by: Option<(Millis, &'static str)>,
) -> Result<Evicted, String> {
    let request = async {
        match ask {
            Ask::Evict => cluster.evict(pod).await,
            Ask::Delete => Box::pin(cluster.delete_doomed_pod(pod)).await,
        }
    };
    let Some((by, name)) = answer_by else { return request.await.map_err(|e| e.to_string()) };
    let late = clock.sleep(Duration::from_millis(by.saturating_sub(clock.now_ms())));
    match futures::future::select(std::pin::pin!(request), std::pin::pin!(late)).await {
        futures::future::Either::Left((answer, _)) => answer.map_err(|e| e.to_string()),
        futures::future::Either::Right(((), _)) => Err(format!("no answer by {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Result<Evicted, String> {
        Ok(Evicted::Refused)
    }

    /// Pods `default/p0`, `default/p1`, ….
    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("default/p{i}")).collect()
    }

    #[test]
    fn a_refused_pod_is_asked_again_sooner_first_then_every_five_seconds_until_it_gives_up() {
        let names = names(1);
        let pods: Vec<&String> = names.iter().collect();
        let mut s = Schedule::new(0, 30_000, [0]);
        let mut asked_at = Vec::new();
        let mut now = 0;
        while let Some(at) = s.wakes_at() {
            now = at;
            let (i, ask) = s.next_due(now, &pods).unwrap();
            assert_eq!((i, ask), (0, Ask::Evict));
            asked_at.push(now);
            s.answered(i, pods[i], ask, refused(), now);
        }
        assert_eq!(asked_at, [0, 250, 750, 1_750, 3_750, 7_750, 12_750, 17_750, 22_750, 27_750, 30_000]);
        assert_eq!(now, 30_000);
        let tally = s.into_tally();
        assert_eq!(tally.refused.len(), 1);
        assert!(tally.refused[0].1.contains("refused 11 evictions"), "{:?}", tally.refused);
    }

    #[test]
    fn a_pod_with_a_lead_not_evicted_by_its_give_up_time_is_deleted_then() {
        let names = names(2);
        let pods: Vec<&String> = names.iter().collect();
        // Give-up at 15 s: the retry due then is a delete.
        let mut s = Schedule::new(0, 20_000, [5_000]);
        let mut evictions = Vec::new();
        loop {
            let now = s.wakes_at().unwrap();
            let (i, ask) = s.next_due(now, &pods).unwrap();
            if ask == Ask::Delete {
                assert_eq!(now, 15_000);
                s.answered(i, pods[i], ask, Ok(Evicted::Accepted), now);
                break;
            }
            evictions.push(now);
            s.answered(i, pods[i], ask, refused(), now);
        }
        assert_eq!(evictions, [0, 250, 750, 1_750, 3_750, 7_750, 12_750]);
        assert!(s.is_done());
        assert_eq!(s.into_tally(), EvictionTally { deleted: 1, ..Default::default() });

        // A pod asked past its give-up time is deleted (first: deletes go
        // first); an error answered at or past its give-up time leaves a
        // pod without a lead as it is.
        let mut s = Schedule::new(15_000, 20_000, [0, 5_000]);
        assert_eq!(s.next_due(15_000, &pods), Some((1, Ask::Delete)), "asked past give-up");
        assert_eq!(s.next_due(15_000, &pods), Some((0, Ask::Evict)));
        s.answered(0, pods[0], Ask::Evict, Err("the API server is busy".into()), 15_050);
        s.answered(1, pods[1], Ask::Delete, Ok(Evicted::Accepted), 15_100);
        assert!(s.is_done());
        let tally = s.into_tally();
        assert_eq!(tally.deleted, 1);
        assert_eq!(tally.refused, [(names[0].clone(), "the API server is busy".to_string())]);

        let names = ["default/a".to_string()];
        let pods: Vec<&String> = names.iter().collect();
        let mut s = Schedule::new(0, 20_000, [5_000]);
        s.next_due(0, &pods).unwrap();
        s.answered(0, pods[0], Ask::Evict, refused(), 50);
        s.next_due(300, &pods).unwrap();
        s.answered(0, pods[0], Ask::Evict, Err("timed out".into()), 15_500);
        assert_eq!(s.next_due(15_500, &pods), Some((0, Ask::Delete)), "an error at give-up deletes");
        let mut s = Schedule::new(0, 20_000, [5_000]);
        s.next_due(0, &pods).unwrap();
        s.answered(0, pods[0], Ask::Evict, refused(), 15_200);
        assert_eq!(s.next_due(15_200, &pods), Some((0, Ask::Delete)), "so does a refusal");
        assert_eq!(s.answer_by(0, Ask::Evict, 0), Some((15_000, "the give-up time")));
        assert_eq!(s.answer_by(0, Ask::Delete, 15_000), Some((20_000, "the deadline")));
        let s = Schedule::new(0, 20_000, [0]);
        assert_eq!(s.answer_by(0, Ask::Evict, 0), Some((20_000, "the deadline")), "no lead");
        assert_eq!(s.answer_by(0, Ask::Evict, 20_000), None, "the last one, at the deadline");

        // Refused (or failing) only once the deadline has passed: left.
        let mut s = Schedule::new(20_000, 20_000, [5_000]);
        let (i, ask) = s.next_due(20_000, &pods).unwrap();
        assert_eq!(ask, Ask::Evict, "past the deadline a pod is not deleted");
        s.answered(i, pods[i], ask, Err("boom".into()), 20_000);
        assert!(s.is_done());
        assert_eq!(s.into_tally().refused, [("default/a".to_string(), "boom".to_string())]);
    }

    #[test]
    fn a_pod_asked_past_its_give_up_time_is_deleted_at_once_and_an_early_error_ends_its_attempts() {
        let names = names(3);
        let pods: Vec<&String> = names.iter().collect();
        let mut s = Schedule::new(16_000, 20_000, [5_000, 0, 5_000]);
        let mut asks = Vec::new();
        while let Some(next) = s.next_due(16_000, &pods) {
            asks.push(next);
        }
        assert_eq!(asks, [(0, Ask::Delete), (2, Ask::Delete), (1, Ask::Evict)], "deletes first");
        s.answered(0, pods[0], Ask::Delete, Ok(Evicted::AlreadyGone), 16_050);
        s.answered(1, pods[1], Ask::Evict, Err("the API server is down".into()), 16_050);
        s.answered(2, pods[2], Ask::Delete, Err("forbidden".into()), 16_050);
        assert!(s.is_done());
        let tally = s.into_tally();
        assert_eq!((tally.gone, tally.deleted), (1, 0));
        assert_eq!(
            tally.refused,
            [
                (names[1].clone(), "the API server is down".to_string()),
                (names[2].clone(), "the delete before the deadline failed: forbidden".to_string())
            ]
        );

        // An error before the give-up time deletes nothing, even with a lead.
        let mut s = Schedule::new(0, 20_000, [5_000]);
        let (i, ask) = s.next_due(0, &pods).unwrap();
        s.answered(i, pods[i], ask, refused(), 50);
        let (i, ask) = s.next_due(300, &pods).unwrap();
        s.answered(i, pods[i], ask, Err("boom".into()), 350);
        assert!(s.is_done());
        let why = &s.into_tally().refused[0].1;
        assert_eq!(why, "a disruption budget refused 1 evictions; then boom");
    }

    #[test]
    fn an_eviction_whose_turn_comes_past_the_give_up_time_is_a_delete_and_a_delete_past_the_deadline_is_not_sent(
    ) {
        let names = names(2);
        let pods: Vec<&String> = names.iter().collect();
        let mut s = Schedule::new(0, 20_000, [5_000, 0]);
        assert_eq!(s.next_due(15_000, &pods), Some((0, Ask::Delete)), "its pod is replaced: deleted");
        assert_eq!(s.next_due(15_000, &pods), Some((1, Ask::Evict)), "a bare pod is only evicted");

        let mut s = Schedule::new(16_000, 20_000, [5_000]);
        assert_eq!(s.next_due(20_000, &pods), None, "the delete came too late to be sent");
        assert!(s.is_done());
        let tally = s.into_tally();
        assert_eq!(tally.refused.len(), 1);
        assert!(tally.refused[0].1.contains("only at the deadline"), "{:?}", tally.refused);
    }

    #[test]
    fn pods_are_asked_in_order_and_a_later_retry_waits_behind_what_is_due() {
        let names = names(3);
        let pods: Vec<&String> = names.iter().collect();
        let mut s = Schedule::new(0, 60_000, [0, 0, 0]);
        assert_eq!(s.next_due(0, &pods), Some((0, Ask::Evict)));
        s.answered(0, pods[0], Ask::Evict, refused(), 10);
        assert_eq!(s.next_due(10, &pods), Some((1, Ask::Evict)));
        assert_eq!(s.next_due(10, &pods), Some((2, Ask::Evict)));
        assert_eq!(s.next_due(10, &pods), None, "the refused one is due at 260 ms");
        assert_eq!(s.wakes_at(), Some(260));
        assert_eq!(s.next_due(260, &pods), Some((0, Ask::Evict)));
    }
}
