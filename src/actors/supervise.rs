//! Supervision helpers shared by every actor (docs/DESIGN.md §2, §7).
//!
//! actix restarts a supervised actor only when it stops itself; a panic would tear its mailbox
//! down for good. So every handler body, and every closure an actor ships to its SQLite thread,
//! runs under [`guarded`]: a panic becomes a [`Fault`], the actor calls `ctx.stop()`, and its
//! `Supervised::restarting` drops in-memory state and reloads it from disk. Restarts are counted
//! per actor here so `/status` (and later `/metrics`) can show them.
//!
//! The actors that own a SQLite connection (log store, applier, readers) each run on an arbiter
//! of their own ([`start_on_own_thread`]) and call SQLite inline: the thread is theirs to block,
//! and a request costs one hand-off there and one back, where a connection thread behind an
//! actor on the shared arbiter cost four (docs/PERFORMANCE.md).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use thiserror::Error;

/// Why an actor could not do what it was asked.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Fault {
    #[error("{actor} panicked: {msg}")]
    Panic { actor: &'static str, msg: String },
    #[error("{actor} storage error: {msg}")]
    Storage { actor: &'static str, msg: String },
    #[error("{0} is restarting, try again")]
    Unavailable(&'static str),
    /// The actor refuses this request until it is recovered (the log store after a failed append).
    #[error("{actor} refused: {msg}")]
    Refused { actor: &'static str, msg: &'static str },
}

impl Fault {
    /// Faults after which the actor must restart (reload from disk) rather than go on.
    pub fn needs_restart(&self) -> bool {
        matches!(self, Fault::Panic { .. } | Fault::Storage { .. })
    }
}

/// Every supervised actor, by the name its restarts are counted under (each file's `ACTOR`).
pub const ACTORS: &[&str] = &[
    "applier",
    "cdc_sender",
    "consensus",
    "http_front",
    "log_store",
    "membership",
    "readers",
    "snapshotter",
    "uploader",
    "write_queue",
];

static RESTARTS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Record one restart of `actor`.
pub fn note_restart(actor: &'static str) {
    tracing::warn!(actor, "actor restarting; state is reloaded from disk");
    if let Ok(mut m) = RESTARTS.lock() {
        *m.entry(actor).or_insert(0) += 1;
    }
    metrics::counter!("raftlite_actor_restarts_total", "actor" => actor).increment(1);
}

/// Restarts so far, by actor.
pub fn restarts() -> BTreeMap<&'static str, u64> {
    RESTARTS.lock().map(|m| m.clone()).unwrap_or_default()
}

/// Run `f`, turning a panic into a [`Fault::Panic`].
pub fn guarded<T>(actor: &'static str, f: impl FnOnce() -> T) -> Result<T, Fault> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(actor, %msg, "panic caught in actor");
        Fault::Panic { actor, msg }
    })
}

/// Evaluate failpoint `point` inside `actor`'s handler; a `panic` action becomes a
/// [`Fault::Panic`] (the caller then stops the actor so its supervisor restarts it).
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub fn trip(actor: &'static str, point: &str) -> Result<(), Fault> {
    guarded(actor, || fail::fail_point!(point))
}

/// Start `A` under a [`Supervisor`](actix::Supervisor) on a new arbiter: an OS thread of its own
/// with a single-threaded runtime, so its handlers may block (SQLite calls, fsync) without
/// holding up any other actor. The arbiter lives until the System stops.
pub fn start_on_own_thread<A>(
    make: impl FnOnce(&mut actix::Context<A>) -> A + Send + 'static,
) -> std::io::Result<actix::Addr<A>>
where
    A: actix::Actor<Context = actix::Context<A>> + actix::Supervised,
{
    let arbiter = actix::Arbiter::try_new()?;
    Ok(actix::Supervisor::start_in_arbiter(&arbiter.handle(), make))
}

/// Stop the actor (its supervisor then restarts it, reloading from disk) when `res` is a fault
/// it must not go on after; the result is passed through.
pub fn stop_on_fault<T, C: actix::ActorContext>(
    ctx: &mut C,
    actor: &'static str,
    res: Result<T, Fault>,
) -> Result<T, Fault> {
    if let Err(f) = &res {
        if f.needs_restart() {
            tracing::error!(actor, fault = %f, "actor failed; restarting it");
            ctx.stop();
        }
    }
    res
}

/// The panic guard every actor's handlers run under: run `f` with the actor's context, turning a
/// panic into a [`Fault::Panic`], and stop the actor (so its supervisor restarts it) on a fault
/// it must not go on after.
pub fn guard<C: actix::ActorContext, T>(
    ctx: &mut C,
    actor: &'static str,
    f: impl FnOnce(&mut C) -> Result<T, Fault>,
) -> Result<T, Fault> {
    let res = guarded(actor, || f(ctx)).and_then(|r| r);
    stop_on_fault(ctx, actor, res)
}

/// Flatten the result of a guarded call made on the actor's own thread.
pub fn settle<T, E: std::fmt::Display>(actor: &'static str, r: Result<Result<T, E>, Fault>) -> Result<T, Fault> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Fault::Storage { actor, msg: e.to_string() }),
        Err(f) => Err(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_faults() {
        let r: Result<(), Fault> = guarded("t", || panic!("boom"));
        assert_eq!(r, Err(Fault::Panic { actor: "t", msg: "boom".into() }));
        assert_eq!(guarded("t", || 5), Ok(5));
    }
}
