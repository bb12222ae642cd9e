//! [`Batches`]: changes to one object, applied a batch at a time.
//!
//! A whole pool's reclaim opens 1,700 responses within seconds, and each
//! changes the same few objects: the placeholder Deployment (scaled down
//! by the placeholders it claims) and the Deployments it surges (about 17
//! responses each at full size). Each change sent on its own (a read and a
//! patch naming the version read) conflicts with the others: at full size
//! 1,048 of 1,053 placeholder claims failed after five conflicts, and the
//! surges took 3 minutes through the client's requests per second. Here
//! the changes to one object queue up while one request for it is under
//! way, and the next request applies every change queued meanwhile: no
//! conflict among costop's own changes, and one read and one patch for
//! many of them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Semaphore};

/// Changes waiting for one object, each with where to answer it.
type Queued<C, R> = Vec<(C, oneshot::Sender<R>)>;

/// Objects whose changes are applied at once, by default: four times the
/// requests the client sends at once by default
/// ([`crate::ClientLimits::max_in_flight`], 64), so that its queue stays
/// full while each batch waits for its read before it patches. At 64 a
/// burst's surges came slower, and its evictions later.
pub const DEFAULT_APPLYING: usize = 256;

/// Changes of type `C` to objects named by a string key, each answered
/// with an `R`.
pub struct Batches<C, R> {
    /// The changes waiting for each object. An object is present while a
    /// task applies its changes.
    pending: Mutex<HashMap<String, Queued<C, R>>>,
    /// Turns to apply an object's batches. In a burst every Deployment of
    /// the pool is surged at once (5,000 at full size): each waits for a
    /// turn as a small task, and only those with a turn hold a batch's
    /// requests (3.8 KB each; 19 MB for 5,000).
    applying: Arc<Semaphore>,
}

impl<C, R> Default for Batches<C, R> {
    fn default() -> Self {
        Self::new(DEFAULT_APPLYING)
    }
}

impl<C, R> Batches<C, R> {
    /// Batches of which at most `applying` objects' are applied at once
    /// (at least one).
    pub fn new(applying: usize) -> Self {
        Self { pending: Mutex::new(HashMap::new()), applying: Arc::new(Semaphore::new(applying.max(1))) }
    }
}

impl<C: Send + 'static, R: Send + 'static> Batches<C, R> {
    /// Queue `change` to the object `key` now, and wait for what came of
    /// it (`None` if the batch gave no answer for it). If no task applies
    /// changes to `key` now, one starts: when its turn comes it calls
    /// `apply` with every change queued for `key` (in the order they came;
    /// one answer each, in that order) until none is left. The task is
    /// not the caller's: a caller that stops waiting does not stop a batch
    /// others wait on. The future returned holds only the answer's
    /// receiver: in a burst 51,000 of them wait at once.
    pub fn submit<F, Fut>(
        self: &Arc<Self>,
        key: &str,
        change: C,
        apply: F,
    ) -> impl Future<Output = Option<R>> + Send + 'static
    where
        F: Fn(Vec<C>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut pending = self.lock();
            match pending.get_mut(key) {
                Some(queued) => {
                    queued.push((change, answer));
                    false
                }
                None => {
                    pending.insert(key.to_string(), vec![(change, answer)]);
                    true
                }
            }
        };
        if start {
            let (batches, key) = (Arc::clone(self), key.to_string());
            tokio::spawn(async move {
                // Should the task end before its turn (the runtime shutting
                // down), `key` is made idle and its callers answered `None`.
                let waiting = IdleOnDrop { batches: &batches, key: &key };
                let Ok(_turn) = batches.applying.clone().acquire_owned().await else { return };
                std::mem::forget(waiting);
                batches.drain(&key, apply).await
            });
        }
        async move { answered.await.ok() }
    }

    /// Apply the changes queued for `key`, a batch at a time, until none
    /// is left; then `key` is idle (the next change starts a task). A
    /// change whose caller stopped waiting (its response was stopped, as
    /// when leadership is lost) is not applied. Should `apply` panic, or
    /// the task be dropped, `key` is made idle all the same and the
    /// changes queued for it are answered `None`: no caller waits forever.
    async fn drain<F, Fut>(&self, key: &str, apply: F)
    where
        F: Fn(Vec<C>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let idle_on_drop = IdleOnDrop { batches: self, key };
        loop {
            let batch = {
                let mut pending = self.lock();
                match pending.get_mut(key) {
                    Some(queued) if !queued.is_empty() => std::mem::take(queued),
                    _ => {
                        pending.remove(key);
                        drop(pending);
                        std::mem::forget(idle_on_drop);
                        return;
                    }
                }
            };
            let (changes, answers): (Vec<C>, Vec<oneshot::Sender<R>>) =
                batch.into_iter().filter(|(_, answer)| !answer.is_closed()).unzip();
            if changes.is_empty() {
                continue;
            }
            // Boxed: a task waiting for its turn does not hold room for
            // the batch's requests.
            let results = Box::pin(apply(changes)).await;
            for (answer, result) in answers.into_iter().zip(results) {
                // A caller that stopped waiting meanwhile needs no answer.
                let _ = answer.send(result);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queued<C, R>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes `key` idle when a drain ends other than by finding nothing left.
struct IdleOnDrop<'a, C, R> {
    batches: &'a Batches<C, R>,
    key: &'a str,
}

impl<C, R> Drop for IdleOnDrop<'_, C, R> {
    fn drop(&mut self) {
        self.batches.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A batch as the test's `apply` makes it.
    type Applied = futures::future::BoxFuture<'static, Vec<u32>>;

    /// An `apply` that notes each batch it is given (in `calls`) and holds
    /// it until `release` is set to `true`; it answers each change `c` with
    /// `c * factor`.
    struct Held<F> {
        apply: F,
        calls: Arc<Mutex<Vec<Vec<u32>>>>,
        release: tokio::sync::watch::Sender<bool>,
    }

    fn held_apply(factor: u32) -> Held<impl Fn(Vec<u32>) -> Applied + Clone + Send + 'static> {
        let calls = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let (release, released) = tokio::sync::watch::channel(false);
        let noted = calls.clone();
        let apply = move |changes: Vec<u32>| -> Applied {
            let (calls, mut released) = (noted.clone(), released.clone());
            Box::pin(async move {
                calls.lock().unwrap().push(changes.clone());
                let _ = released.wait_for(|r| *r).await;
                changes.iter().map(|c| c * factor).collect()
            })
        };
        Held { apply, calls, release }
    }

    /// `batches.submit("d", change, apply)` on a task of its own.
    fn spawn_submit<F, Fut>(
        batches: &Arc<Batches<u32, u32>>,
        change: u32,
        apply: F,
    ) -> tokio::task::JoinHandle<Option<u32>>
    where
        F: Fn(Vec<u32>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<u32>> + Send + 'static,
    {
        let batches = batches.clone();
        tokio::spawn(async move { batches.submit("d", change, apply).await })
    }

    /// Changes that come while a batch is under way are applied together
    /// in the next one, each caller gets its own answer, and the object
    /// goes idle afterwards.
    #[tokio::test]
    async fn changes_queued_during_a_batch_go_together_in_the_next() {
        let batches: Arc<Batches<u32, u32>> = Arc::default();
        let Held { apply, calls, release } = held_apply(10);
        // The first batch waits until the others are queued.
        let first = spawn_submit(&batches, 1, apply.clone());
        within(|| !calls.lock().unwrap().is_empty()).await;
        let later: Vec<_> = (2..=5).map(|c| spawn_submit(&batches, c, apply.clone())).collect();
        // Every later change is queued behind the first batch.
        within(|| batches.lock().get("d").map_or(0, Vec::len) == 4).await;
        release.send_replace(true);
        assert_eq!(first.await.unwrap(), Some(10));
        let answers: Vec<Option<u32>> =
            futures::future::join_all(later).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, vec![Some(20), Some(30), Some(40), Some(50)]);
        assert_eq!(*calls.lock().unwrap(), vec![vec![1], vec![2, 3, 4, 5]]);
        within(|| !batches.lock().contains_key("d")).await;
    }

    /// Wait until `ok`, failing the test after 5 s.
    async fn within(ok: impl Fn() -> bool) {
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("timed out");
    }

    /// A batch that panics answers its changes `None` and leaves the
    /// object idle: the next change is applied by a new task.
    #[tokio::test]
    async fn a_panicking_batch_leaves_no_caller_waiting() {
        let batches: Arc<Batches<u32, u32>> = Arc::default();
        let apply = |changes: Vec<u32>| async move {
            assert!(changes != vec![13], "unlucky");
            changes
        };
        let answer =
            tokio::time::timeout(std::time::Duration::from_secs(5), batches.submit("d", 13, apply)).await;
        assert_eq!(answer.expect("answered"), None);
        within(|| !batches.lock().contains_key("d")).await;
        assert_eq!(batches.submit("d", 7, apply).await, Some(7));
    }

    /// A change whose caller stopped waiting before its batch ran is not
    /// applied.
    #[tokio::test]
    async fn a_change_nobody_waits_for_is_not_applied() {
        let batches: Arc<Batches<u32, u32>> = Arc::default();
        let Held { apply, calls, release } = held_apply(1);
        let first = spawn_submit(&batches, 1, apply.clone());
        within(|| !calls.lock().unwrap().is_empty()).await;
        let gone = spawn_submit(&batches, 2, apply.clone());
        within(|| batches.lock().get("d").map_or(0, Vec::len) == 1).await;
        gone.abort();
        let _ = gone.await;
        let kept = spawn_submit(&batches, 3, apply.clone());
        within(|| batches.lock().get("d").map_or(0, Vec::len) == 2).await;
        release.send_replace(true);
        assert_eq!(first.await.unwrap(), Some(1));
        assert_eq!(kept.await.unwrap(), Some(3));
        assert_eq!(*calls.lock().unwrap(), vec![vec![1], vec![3]]);
    }

    /// No more objects are applied at once than the batches allow: the
    /// others' changes wait queued, and are applied when a turn frees.
    #[tokio::test]
    async fn objects_beyond_the_turns_wait_for_one() {
        let batches: Arc<Batches<u32, u32>> = Arc::new(Batches::new(1));
        let Held { apply, calls, release } = held_apply(2);
        let a = tokio::spawn(batches.submit("a", 1, apply.clone()));
        within(|| !calls.lock().unwrap().is_empty()).await;
        let b = tokio::spawn(batches.submit("b", 2, apply.clone()));
        let also_b = tokio::spawn(batches.submit("b", 3, apply.clone()));
        within(|| batches.lock().get("b").map_or(0, Vec::len) == 2).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*calls.lock().unwrap(), vec![vec![1]], "b was applied while a held the only turn");
        release.send_replace(true);
        assert_eq!(a.await.unwrap(), Some(2));
        assert_eq!((b.await.unwrap(), also_b.await.unwrap()), (Some(4), Some(6)));
        assert_eq!(*calls.lock().unwrap(), vec![vec![1], vec![2, 3]]);
    }

    /// A task that ends before its turn comes (its runtime shut down)
    /// leaves its object idle and its callers answered `None`, like one
    /// that ends in the middle of a batch.
    #[test]
    fn a_change_waiting_for_a_turn_is_answered_when_its_task_ends() {
        let batches: Arc<Batches<u32, u32>> = Arc::new(Batches::new(1));
        let Held { apply, calls, release: _release } = held_apply(1);
        let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let first = runtime();
        let (a, b) = first.block_on(async {
            let a = batches.submit("a", 1, apply.clone());
            let b = batches.submit("b", 2, apply.clone());
            // a holds the only turn; b's task waits for it.
            within(|| !calls.lock().unwrap().is_empty()).await;
            (a, b)
        });
        assert!(batches.lock().contains_key("b"));
        drop(first);
        assert!(batches.lock().is_empty(), "both objects idle once their tasks are gone");
        let second = runtime();
        assert_eq!(second.block_on(b), None);
        assert_eq!(second.block_on(a), None);
        assert_eq!(*calls.lock().unwrap(), vec![vec![1]]);
    }

    /// What waits for an answer holds only the answer's receiver, however
    /// large the batch's requests: a burst's 51,000 surges wait at once.
    #[tokio::test]
    async fn a_waiting_change_is_small() {
        let batches: Arc<Batches<u32, u32>> = Arc::default();
        let big = [0u8; 4096];
        let apply = move |changes: Vec<u32>| async move {
            let held = big;
            tokio::task::yield_now().await;
            changes.into_iter().map(|c| c + u32::from(held[0])).collect()
        };
        let waiting = batches.submit("d", 1, apply);
        let size = std::mem::size_of_val(&waiting);
        assert!(size < 64, "a waiting change's future is {size} bytes");
        assert_eq!(waiting.await, Some(1));
    }

    /// Objects are batched apart; a batch that answers fewer changes than
    /// it was given leaves the rest answered with `None`, not waiting.
    #[tokio::test]
    async fn objects_are_apart_and_a_short_answer_is_none() {
        let batches: Arc<Batches<u32, u32>> = Arc::default();
        let applied = Arc::new(AtomicUsize::new(0));
        let apply = {
            let applied = applied.clone();
            move |changes: Vec<u32>| {
                applied.fetch_add(1, Ordering::SeqCst);
                async move { changes.into_iter().take(0).collect() }
            }
        };
        let (a, b) = futures::join!(batches.submit("a", 1, apply.clone()), batches.submit("b", 2, apply));
        assert_eq!((a, b), (None, None));
        assert_eq!(applied.load(Ordering::SeqCst), 2);
    }
}
