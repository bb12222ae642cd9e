//! A deterministic async runtime in virtual time, so the simulator runs the
//! server's own executor and warm-pool keeper (async code written for
//! tokio) months ahead in seconds.
//!
//! Time moves only when the world says so: [`VirtualClock::sleep`] registers
//! a timer; [`Runtime::fire_due`] wakes the timers due at the world's
//! current time; [`Runtime::run_ready`] polls every woken task until none can
//! move. Tasks are polled in the order they were woken, so a seed fixes a run.

use costop_core::ports::Clock;
use costop_core::time::Millis;
use futures::task::{waker_ref, ArcWake};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One timer: fired once the clock reaches its time.
struct Timer {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

#[derive(Default)]
struct Timers {
    seq: u64,
    heap: BinaryHeap<Reverse<(Millis, u64)>>,
    slots: std::collections::HashMap<u64, Arc<Timer>>,
}

/// The virtual clock: the world's time, shared with the tasks.
#[derive(Clone, Default)]
pub struct VirtualClock {
    now: Arc<AtomicU64>,
    timers: Arc<Mutex<Timers>>,
}

impl VirtualClock {
    /// Move the clock to `t` (never back).
    pub fn set(&self, t: Millis) {
        self.now.fetch_max(t, Ordering::SeqCst);
    }

    /// When the earliest pending timer fires.
    pub fn next_timer(&self) -> Option<Millis> {
        self.lock().heap.peek().map(|Reverse((t, _))| *t)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timers> {
        self.timers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fire every timer due by now; returns how many fired.
    fn fire_due(&self) -> usize {
        let now = self.now_ms();
        let mut due = Vec::new();
        {
            let mut timers = self.lock();
            while let Some(Reverse((t, id))) = timers.heap.peek().copied() {
                if t > now {
                    break;
                }
                timers.heap.pop();
                if let Some(slot) = timers.slots.remove(&id) {
                    due.push(slot);
                }
            }
        }
        for slot in &due {
            slot.fired.store(true, Ordering::SeqCst);
            if let Some(w) = slot.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
                w.wake();
            }
        }
        due.len()
    }
}

/// A sleep in virtual time.
struct Sleep {
    clock: VirtualClock,
    until: Millis,
    timer: Option<Arc<Timer>>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.clock.now_ms() >= self.until {
            return Poll::Ready(());
        }
        match &self.timer {
            Some(t) if t.fired.load(Ordering::SeqCst) => Poll::Ready(()),
            Some(t) => {
                *t.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
                Poll::Pending
            }
            None => {
                let timer = Arc::new(Timer {
                    fired: AtomicBool::new(false),
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                {
                    let mut timers = self.clock.lock();
                    timers.seq += 1;
                    let id = timers.seq;
                    timers.heap.push(Reverse((self.until, id)));
                    timers.slots.insert(id, timer.clone());
                }
                self.timer = Some(timer);
                Poll::Pending
            }
        }
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep(&self, d: std::time::Duration) -> impl Future<Output = ()> + Send {
        Sleep { clock: self.clone(), until: self.now_ms() + d.as_millis() as Millis, timer: None }
    }
}

/// Wakes a task by putting it on the ready queue.
struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<VecDeque<usize>>>,
    queued: AtomicBool,
}

impl ArcWake for TaskWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if !arc_self.queued.swap(true, Ordering::SeqCst) {
            arc_self.ready.lock().unwrap_or_else(|e| e.into_inner()).push_back(arc_self.id);
        }
    }
}

/// The tasks and their ready queue.
#[derive(Default)]
pub struct Runtime {
    clock: VirtualClock,
    tasks: Vec<Option<(Task, Arc<TaskWaker>)>>,
    free: Vec<usize>,
    ready: Arc<Mutex<VecDeque<usize>>>,
}

impl Runtime {
    /// A runtime on this clock.
    pub fn new(clock: VirtualClock) -> Self {
        Self { clock, ..Self::default() }
    }

    /// Start a task; it first runs at the next [`Runtime::run_ready`].
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let id = self.free.pop().unwrap_or_else(|| {
            self.tasks.push(None);
            self.tasks.len() - 1
        });
        let waker = Arc::new(TaskWaker { id, ready: self.ready.clone(), queued: AtomicBool::new(false) });
        self.tasks[id] = Some((Box::pin(task), waker.clone()));
        ArcWake::wake_by_ref(&waker);
    }

    /// Tasks not finished.
    pub fn live(&self) -> usize {
        self.tasks.len() - self.free.len()
    }

    /// Whether a task was woken and waits to be polled.
    pub fn has_ready(&self) -> bool {
        !self.ready.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Fire the timers due now and poll every woken task until none can move.
    pub fn run_ready(&mut self) {
        self.clock.fire_due();
        loop {
            let next = self.ready.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let Some(id) = next else { break };
            let Some((task, waker)) = self.tasks.get_mut(id).and_then(Option::as_mut) else { continue };
            waker.queued.store(false, Ordering::SeqCst);
            let w = waker_ref(waker);
            let mut cx = Context::from_waker(&w);
            if task.as_mut().poll(&mut cx).is_ready() {
                self.tasks[id] = None;
                self.free.push(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sleeps_end_when_the_clock_reaches_them_in_time_order() {
        let clock = VirtualClock::default();
        let mut rt = Runtime::new(clock.clone());
        let log = Arc::new(Mutex::new(Vec::new()));
        for (name, ms) in [("b", 300u64), ("a", 100)] {
            let (c, log) = (clock.clone(), log.clone());
            rt.spawn(async move {
                c.sleep(Duration::from_millis(ms)).await;
                log.lock().unwrap().push((name, c.now_ms()));
            });
        }
        rt.run_ready();
        assert!(log.lock().unwrap().is_empty());
        while let Some(t) = clock.next_timer() {
            clock.set(t);
            rt.run_ready();
        }
        assert_eq!(*log.lock().unwrap(), vec![("a", 100), ("b", 300)]);
        assert_eq!(rt.live(), 0);
    }
}
