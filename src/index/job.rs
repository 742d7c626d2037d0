//! Background jobs of the derived indexes: a build (a DiskANN merge, an HNSW compaction, an
//! IVF-PQ training) runs on its own thread while writes and searches go on; the index installs
//! its result later, under its write lock, reconciling what changed meanwhile.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Wait before retrying a background job after its first failure; doubled per further
/// consecutive failure, up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// When a background job that failed (it could not start, or it ended with an error) may be
/// started again: the trigger that started it usually still holds, and retrying at every
/// write would copy the index again and again.
#[derive(Default)]
pub struct RetryAfterFailure {
    /// Consecutive failures, and the moment before which no retry starts.
    state: Mutex<(u32, Option<Instant>)>,
}

impl RetryAfterFailure {
    /// Whether a job may start at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        self.state
            .lock()
            .1
            .is_none_or(|not_before| now >= not_before)
    }

    /// Records a failure at `now`: the next start waits 1 s, then 2 s, 4 s, … up to 5 min.
    pub fn failed(&self, now: Instant) {
        let mut state = self.state.lock();
        let delay = FIRST_RETRY_DELAY
            .saturating_mul(1 << state.0.min(16))
            .min(MAX_RETRY_DELAY);
        state.0 = state.0.saturating_add(1);
        state.1 = now.checked_add(delay);
    }

    /// Records a success: the next failure waits the shortest time again.
    pub fn succeeded(&self) {
        *self.state.lock() = (0, None);
    }
}

/// A build running on its own thread, or its result once it ended.
pub struct Job<T> {
    name: &'static str,
    state: State<T>,
}

enum State<T> {
    Running(JoinHandle<Result<T>>),
    Done(Result<T>),
}

impl<T: Send + 'static> Job<T> {
    /// Starts `work` on a new thread called `name`.
    pub fn start(
        name: &'static str,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<Job<T>> {
        let handle = std::thread::Builder::new().name(name.into()).spawn(work)?;
        Ok(Job {
            name,
            state: State::Running(handle),
        })
    }

    /// Starts `work` on a new thread called `name`, inside a rayon pool of its own with half
    /// the cores: on the global pool, rayon would serve a long job's tasks before the writes and
    /// batch searches queued behind it.
    pub fn start_pooled(
        name: &'static str,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<Job<T>> {
        Job::start(name, move || {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get() / 2);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads.max(1))
                .thread_name(move |i| format!("{name}-{i}"))
                .build()
                .map_err(|e| Error::Internal(format!("{name} threads: {e}")))?;
            pool.install(work)
        })
    }

    /// A job that has already ended with `error`: for tests of the failure paths.
    #[cfg(test)]
    pub fn failed(error: Error) -> Job<T> {
        Job {
            name: "quiver-test-failure",
            state: State::Done(Err(error)),
        }
    }

    /// Whether the work has ended (successfully or not).
    pub fn is_done(&self) -> bool {
        match &self.state {
            State::Running(handle) => handle.is_finished(),
            State::Done(_) => true,
        }
    }

    /// Waits for the work to end.
    pub fn wait(&mut self) {
        if let State::Done(_) = self.state {
            return;
        }
        let name = self.name;
        if let State::Running(handle) = std::mem::replace(&mut self.state, taken(name)) {
            let result = handle
                .join()
                .unwrap_or_else(|_| Err(Error::Internal(format!("{name} panicked"))));
            self.state = State::Done(result);
        }
    }

    /// The work's error, if it ended with one; waits first. The error is taken: the job then
    /// holds nothing to install.
    pub fn take_error(&mut self) -> Option<Error> {
        self.wait();
        match std::mem::replace(&mut self.state, taken(self.name)) {
            State::Done(Err(e)) => Some(e),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Waits, then hands over the result.
    pub fn result(mut self) -> Result<T> {
        self.wait();
        match self.state {
            State::Done(result) => result,
            State::Running(_) => Err(Error::Internal(format!("{} did not end", self.name))),
        }
    }
}

/// The state of a job whose result was taken.
fn taken<T>(name: &str) -> State<T> {
    State::Done(Err(Error::Internal(format!(
        "the result of {name} was already taken"
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_after_failures_and_reset_after_a_success() {
        let retry = RetryAfterFailure::default();
        let t0 = Instant::now();
        assert!(retry.allows(t0));
        let mut now = t0;
        for expected in [1u64, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300] {
            retry.failed(now);
            let wait = Duration::from_secs(expected);
            assert!(
                !retry.allows(now + wait - Duration::from_millis(1)),
                "{expected} s"
            );
            assert!(retry.allows(now + wait), "{expected} s");
            now += wait;
        }
        retry.succeeded();
        assert!(retry.allows(now));
        retry.failed(now);
        assert!(!retry.allows(now + Duration::from_millis(999)));
        assert!(retry.allows(now + FIRST_RETRY_DELAY));
    }

    #[test]
    fn results_errors_and_panics_are_handed_over() {
        let mut ok = Job::start("test-ok", || Ok(41 + 1)).unwrap();
        ok.wait();
        ok.wait();
        assert!(ok.is_done());
        assert_eq!(ok.result().unwrap(), 42, "waiting twice keeps the result");

        let mut failed =
            Job::<u8>::start("test-err", || Err(Error::Internal("no luck".into()))).unwrap();
        let e = failed.take_error().unwrap();
        assert!(e.to_string().contains("no luck"), "{e}");
        assert!(failed.is_done());
        assert!(
            failed.result().is_err(),
            "a taken error leaves nothing to install"
        );

        let mut fine = Job::start("test-fine", || Ok("x")).unwrap();
        assert!(fine.take_error().is_none());
        assert_eq!(fine.result().unwrap(), "x");

        let panicked = Job::<u8>::start("test-panic", || panic!("boom")).unwrap();
        let e = panicked.result().unwrap_err();
        assert!(e.to_string().contains("test-panic panicked"), "{e}");
    }
}
