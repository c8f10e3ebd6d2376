//! History checkers. The register checker is a Wing–Gong–Lowe linearizability search (the
//! algorithm porcupine uses: linearize calls from the front of the history, backtrack at the
//! first return that cannot be explained, memoise (linearized set, state) pairs), run per key
//! (a register history is linearizable iff each key's is). Operations whose outcome is unknown
//! return at the end of time: they may take effect at any point after their call. A search that
//! runs out of time is a failure, not a pass.
//!
//! Unknown-outcome ops are what makes the search expensive: an outage leaves dozens on a key, each
//! free to take effect at any later point. Three things keep that in bounds, each only narrowing
//! which equivalent orders the search tries (`check_key`): ops with a known outcome are tried
//! before unknown ones; unknown ops with the same effect on a value nobody saw are taken in the
//! order of their calls; and a configuration that has linearized more unknown ops than one that
//! already failed (the same known ops, the same state) is not searched again. A chaos run's key
//! with 102 such ops (26 within 1.5 s) went from out of time after 120 s to checked at once.
//!
//! The set and bank checkers are direct: every acknowledged insert is in the final read and
//! nothing appears twice; every read of all balances sums to the total.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One register operation, as a client saw it. Times are nanoseconds since the run started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegOp {
    pub client: usize,
    pub key: u32,
    pub call: u64,
    /// `None`: the outcome is unknown (timeout, connection lost).
    pub ret: Option<u64>,
    pub kind: RegKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RegKind {
    /// A read that returned this value (`None`: no value yet).
    Read(Option<i64>),
    Write(i64),
    /// Compare-and-set `from` -> `to`; `ok` is whether it took effect.
    Cas {
        from: i64,
        to: i64,
        ok: bool,
    },
}

#[derive(Debug, PartialEq, Serialize)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable: the key and the ops of its history.
    Violation {
        key: u32,
        ops: usize,
    },
    /// The search did not finish in time.
    Timeout {
        key: u32,
    },
}

/// Check every key's history; the first violation or timeout wins.
///
/// Unknown-outcome writes make the search explode (each may take effect anywhere after its call),
/// so each key is first checked without the unknown writes whose value nobody ever observed. That
/// is sound in one direction only: if the smaller history is linearizable, so is the whole one
/// (those writes can take effect last, unseen). If it is not, the full history decides.
pub fn check_register(ops: &[RegOp], budget: Duration) -> Verdict {
    let mut by_key: BTreeMap<u32, Vec<&RegOp>> = BTreeMap::new();
    for op in ops {
        // A read with an unknown outcome says nothing.
        if op.ret.is_none() && matches!(op.kind, RegKind::Read(_)) {
            continue;
        }
        by_key.entry(op.key).or_default().push(op);
    }
    let deadline = Instant::now() + budget;
    for (key, hist) in by_key {
        let owned = bound_unknown_writes(&hist);
        let hist: Vec<&RegOp> = owned.iter().collect();
        let observed: HashSet<i64> = hist
            .iter()
            .filter_map(|o| match &o.kind {
                RegKind::Read(Some(v)) => Some(*v),
                RegKind::Cas { from, ok: true, .. } if o.ret.is_some() => Some(*from),
                _ => None,
            })
            .collect();
        let pruned: Vec<&RegOp> = hist
            .iter()
            .copied()
            .filter(|o| {
                o.ret.is_some()
                    || match &o.kind {
                        RegKind::Write(v) | RegKind::Cas { to: v, .. } => observed.contains(v),
                        RegKind::Read(_) => true,
                    }
            })
            .collect();
        if pruned.len() < hist.len() && check_key(&pruned, deadline) == Some(true) {
            continue;
        }
        let owned_full = merge_unseen_values(&hist);
        let hist: Vec<&RegOp> = owned_full.iter().collect();
        match check_key(&hist, deadline) {
            Some(true) => {}
            Some(false) => return Verdict::Violation { key, ops: hist.len() },
            None => return Verdict::Timeout { key },
        }
    }
    Verdict::Linearizable
}

/// An unknown-outcome write (or compare-and-set) of a value that only it writes, and that a
/// completed op observed, took effect before the first such op returned: it is given that
/// return, and a compare-and-set is marked as having succeeded. That is sound, since the observer
/// could have seen the value from no other op, and it keeps such ops from floating to the end of
/// the history, where each one doubles the search (a CI run's checker ran out of time on a key
/// with many unknown writes).
fn bound_unknown_writes(hist: &[&RegOp]) -> Vec<RegOp> {
    let mut writers: HashMap<i64, usize> = HashMap::new();
    let mut first_seen: HashMap<i64, u64> = HashMap::new();
    for o in hist {
        if let RegKind::Write(v) | RegKind::Cas { to: v, .. } = &o.kind {
            *writers.entry(*v).or_default() += 1;
        }
        let observed = match &o.kind {
            RegKind::Read(Some(v)) => Some(*v),
            RegKind::Cas { from, ok: true, .. } => Some(*from),
            _ => None,
        };
        if let (Some(v), Some(ret)) = (observed, o.ret) {
            let t = first_seen.entry(v).or_insert(ret);
            *t = (*t).min(ret);
        }
    }
    hist.iter()
        .map(|o| {
            let mut o = (*o).clone();
            if o.ret.is_some() {
                return o;
            }
            let v = match &o.kind {
                RegKind::Write(v) | RegKind::Cas { to: v, .. } => *v,
                RegKind::Read(_) => return o,
            };
            // Seen before the op was even called: left unbounded, for the search to reject.
            if let (Some(1), Some(&t)) = (writers.get(&v), first_seen.get(&v)) {
                if t >= o.call {
                    o.ret = Some(t);
                    if let RegKind::Cas { ok, .. } = &mut o.kind {
                        *ok = true;
                    }
                }
            }
            o
        })
        .collect()
}

/// A value that no completed op wrote or observed, written only by ops whose outcome is unknown:
/// which of those values the register holds makes no difference to any op, so they are all
/// written as this one, and the search sees one state where it would see one per value.
const UNSEEN: i64 = i64::MIN;

/// Values are "used" when a completed op wrote one or observed it (a read, either side of a
/// compare-and-set: a failed one tells the register did not hold `from`), and then, until
/// nothing changes, when an unknown-outcome compare-and-set to a used value compares against
/// it. Everything else an unknown-outcome op writes or compares against becomes [`UNSEEN`]. An
/// unknown compare-and-set between two such values becomes one from `UNSEEN` to `UNSEEN`, which
/// changes nothing: no op can tell those values apart. (Counting the `from` of every unknown
/// compare-and-set as used, as before, left one state per value an outage's timed-out writes
/// wrote and its timed-out compare-and-sets named, and a chaos run's key with 132 such ops ran
/// out of ten minutes.)
fn merge_unseen_values(hist: &[&RegOp]) -> Vec<RegOp> {
    let mut used: HashSet<i64> = HashSet::new();
    for o in hist.iter().filter(|o| o.ret.is_some()) {
        match &o.kind {
            RegKind::Read(v) => used.extend(*v),
            RegKind::Write(v) => {
                used.insert(*v);
            }
            RegKind::Cas { from, to, .. } => used.extend([*from, *to]),
        }
    }
    loop {
        let mut grew = false;
        for o in hist.iter().filter(|o| o.ret.is_none()) {
            if let RegKind::Cas { from, to, .. } = &o.kind {
                if used.contains(to) {
                    grew |= used.insert(*from);
                }
            }
        }
        if !grew {
            break;
        }
    }
    hist.iter()
        .map(|o| {
            let mut o = (*o).clone();
            if o.ret.is_none() {
                match &mut o.kind {
                    RegKind::Write(v) if !used.contains(v) => *v = UNSEEN,
                    RegKind::Cas { from, to, .. } if !used.contains(to) => {
                        *to = UNSEEN;
                        if !used.contains(from) {
                            *from = UNSEEN;
                        }
                    }
                    _ => {}
                }
            }
            o
        })
        .collect()
}

/// The register's model: apply `op` to `state`; `None` if the op's result is impossible.
fn step(state: Option<i64>, kind: &RegKind, known: bool) -> Option<Option<i64>> {
    match kind {
        RegKind::Read(v) => (*v == state).then_some(state),
        RegKind::Write(v) => Some(Some(*v)),
        RegKind::Cas { from, to, ok } => {
            let matches = state == Some(*from);
            if !known {
                // Unknown outcome: it took effect exactly when it could have.
                return Some(if matches { Some(*to) } else { state });
            }
            match (ok, matches) {
                (true, true) => Some(Some(*to)),
                (false, false) => Some(state),
                _ => None,
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// Index of the matching event (call <-> return).
    mate: usize,
    prev: usize,
    next: usize,
}

/// A search configuration's ops linearized (as bits), and the register's state.
type Config = (Vec<u64>, Option<i64>);

/// Some(true) linearizable, Some(false) not, None out of time.
fn check_key(hist: &[&RegOp], deadline: Instant) -> Option<bool> {
    let n = hist.len();
    if n == 0 {
        return Some(true);
    }
    // Events sorted by time; returns before calls at equal times (an op that returned at t did
    // not overlap one called at t). Unknown returns go after everything.
    let mut evs: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in hist.iter().enumerate() {
        evs.push((op.call, true, i));
        evs.push((op.ret.unwrap_or(u64::MAX), false, i));
    }
    evs.sort_by_key(|&(t, is_call, i)| (t, is_call, i));
    // A doubly linked list with a head sentinel at index 0.
    let head = 0usize;
    let mut list: Vec<Event> = Vec::with_capacity(evs.len() + 1);
    list.push(Event { op: usize::MAX, is_call: false, mate: 0, prev: 0, next: 1 });
    let mut call_at = vec![0usize; n];
    let mut ret_at = vec![0usize; n];
    for (k, &(_, is_call, i)) in evs.iter().enumerate() {
        let idx = k + 1;
        list.push(Event { op: i, is_call, mate: 0, prev: idx - 1, next: idx + 1 });
        if is_call {
            call_at[i] = idx;
        } else {
            ret_at[i] = idx;
        }
    }
    let end = list.len(); // one past the last: "null"
    for i in 0..n {
        list[call_at[i]].mate = ret_at[i];
        list[ret_at[i]].mate = call_at[i];
    }
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<Config> = HashSet::new();
    // Configurations whose search failed, by (known ops linearized, state): the sets of
    // unknown-outcome ops they had linearized. An unknown op never returns, so it can always be
    // linearized later or at the very end, where it is harmless: a configuration that has
    // linearized more of them (and the same known ops, in the same state) has only fewer
    // choices, and fails too. Without this, each unknown op an outage leaves behind doubles
    // the search (a chaos run had 26 on one key within 1.5 s, values nobody read).
    let unknown_mask: Vec<u64> = {
        let mut m = vec![0u64; words];
        for (i, op) in hist.iter().enumerate() {
            if op.ret.is_none() {
                m[i / 64] |= 1 << (i % 64);
            }
        }
        m
    };
    let split = |bits: &[u64]| -> (Vec<u64>, Vec<u64>) {
        let known = bits.iter().zip(&unknown_mask).map(|(b, m)| b & !m).collect();
        let unknown = bits.iter().zip(&unknown_mask).map(|(b, m)| b & m).collect();
        (known, unknown)
    };
    let subset = |a: &[u64], b: &[u64]| a.iter().zip(b).all(|(x, y)| x & !y == 0);
    let mut failed: HashMap<Config, Vec<Vec<u64>>> = HashMap::new();
    // Unknown-outcome ops with the same effect (a write of the merged unseen value, or a
    // compare-and-set from the same value to it) can stand in for each other: the search only
    // takes them in the order of their calls, so the ones it has linearized are always the
    // earliest of their kind, and the sets it compares above are comparable.
    let mut same_before: Vec<Option<usize>> = vec![None; n];
    {
        let mut last: HashMap<Option<i64>, usize> = HashMap::new();
        let mut by_call: Vec<usize> = (0..n).filter(|&i| hist[i].ret.is_none()).collect();
        by_call.sort_by_key(|&i| (hist[i].call, i));
        for i in by_call {
            let kind = match hist[i].kind {
                RegKind::Write(UNSEEN) => None,
                RegKind::Cas { from, to: UNSEEN, .. } => Some(from),
                _ => continue,
            };
            same_before[i] = last.insert(kind, i);
        }
    }
    let mut stack: Vec<(usize, Option<i64>, bool)> = Vec::new();
    // Ops with a known outcome not yet linearized: once none is left, the unknown ones that
    // remain are taken whatever they do, to close the history.
    let mut known_left = hist.iter().filter(|o| o.ret.is_some()).count();
    let mut state: Option<i64> = None;
    let mut entry = list[head].next;
    // The candidates of a configuration are the calls before its first pending return. Those of
    // ops with a known outcome are tried first, and only then those with an unknown one:
    // leaving unknown-outcome ops out is what usually explains a history (most timed-out
    // requests never took effect, or took effect later). Tried in list order instead, the
    // unknown calls of an outage, which stay at the head of the list, were taken at once, and
    // the search then went through every subset of them.
    let mut unknown_phase = false;
    let mut steps = 0u64;

    fn lift(list: &mut [Event], call: usize, end: usize) {
        let ret = list[call].mate;
        let (p, nx) = (list[call].prev, list[call].next);
        list[p].next = nx;
        if nx != end {
            list[nx].prev = p;
        }
        let (p, nx) = (list[ret].prev, list[ret].next);
        list[p].next = nx;
        if nx != end {
            list[nx].prev = p;
        }
    }
    fn unlift(list: &mut [Event], call: usize, end: usize) {
        let ret = list[call].mate;
        let (p, nx) = (list[ret].prev, list[ret].next);
        list[p].next = ret;
        if nx != end {
            list[nx].prev = ret;
        }
        let (p, nx) = (list[call].prev, list[call].next);
        list[p].next = call;
        if nx != end {
            list[nx].prev = call;
        }
    }

    while list[head].next != end {
        steps += 1;
        if steps.is_multiple_of(4096) && Instant::now() > deadline {
            return None;
        }
        if entry == end {
            // Cannot happen with a well-formed list: every call has a return after it.
            return Some(false);
        }
        let ev = list[entry];
        if ev.is_call {
            let op = hist[ev.op];
            let in_phase = op.ret.is_none() == unknown_phase;
            let in_turn = same_before[ev.op].is_none_or(|p| linearized[p / 64] & (1 << (p % 64)) != 0);
            // An unknown-outcome op that would leave the state as it is explains nothing before
            // the last known op: it is left for later, or for the end, where it is harmless.
            // Taking it anyway would make one more configuration per subset of such ops: an
            // outage's timed-out compare-and-sets, from values the register no longer holds,
            // once ran a key's search out of ten minutes.
            let useful = |next: &Option<i64>| op.ret.is_some() || known_left == 0 || *next != state;
            if let Some(next_state) =
                step(state, &op.kind, op.ret.is_some()).filter(|n| in_phase && in_turn && useful(n))
            {
                let mut bits = linearized.clone();
                bits[ev.op / 64] |= 1 << (ev.op % 64);
                let (known, unknown) = split(&bits);
                let dominated =
                    failed.get(&(known, next_state)).is_some_and(|done| done.iter().any(|u| subset(u, &unknown)));
                if !dominated && cache.insert((bits.clone(), next_state)) {
                    stack.push((entry, state, unknown_phase));
                    known_left -= usize::from(op.ret.is_some());
                    state = next_state;
                    linearized = bits;
                    lift(&mut list, entry, end);
                    entry = list[head].next;
                    unknown_phase = false;
                    continue;
                }
            }
            entry = ev.next;
        } else if !unknown_phase {
            // The known candidates are spent: now the unknown ones.
            unknown_phase = true;
            entry = list[head].next;
        } else {
            // A return whose op could not be linearized before it: this configuration fails;
            // backtrack.
            let (known, unknown) = split(&linearized);
            failed.entry((known, state)).or_default().push(unknown);
            let Some((call, prev_state, prev_phase)) = stack.pop() else { return Some(false) };
            state = prev_state;
            unknown_phase = prev_phase;
            let op = list[call].op;
            known_left += usize::from(hist[op].ret.is_some());
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut list, call, end);
            entry = list[call].next;
        }
    }
    Some(true)
}

/// The set workload's verdict.
#[derive(Debug, Default, Serialize)]
pub struct SetVerdict {
    pub acknowledged: usize,
    pub lost: Vec<i64>,
    pub duplicated: Vec<i64>,
    /// Values in the final read that no client ever tried to insert.
    pub phantom: Vec<i64>,
}

impl SetVerdict {
    pub fn ok(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.phantom.is_empty()
    }
}

/// `acked`: inserts acknowledged; `attempted`: every insert tried (acknowledged or not);
/// `final_read`: the values read at the end (with repeats, if any).
pub fn check_set(acked: &[i64], attempted: &HashSet<i64>, final_read: &[i64]) -> SetVerdict {
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for v in final_read {
        *seen.entry(*v).or_default() += 1;
    }
    let mut v = SetVerdict { acknowledged: acked.len(), ..Default::default() };
    v.lost = acked.iter().filter(|a| !seen.contains_key(a)).copied().collect();
    v.duplicated = seen.iter().filter(|(_, c)| **c > 1).map(|(k, _)| *k).collect();
    v.phantom = seen.keys().filter(|k| !attempted.contains(k)).copied().collect();
    v.lost.sort_unstable();
    v.duplicated.sort_unstable();
    v.phantom.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, call: u64, ret: Option<u64>, kind: RegKind) -> RegOp {
        RegOp { client, key: 1, call, ret, kind }
    }

    const B: Duration = Duration::from_secs(5);

    #[test]
    fn unknown_writes_that_were_read_took_effect_before_their_reader() {
        // 60 writes whose outcome is unknown, each read back by a completed read while later
        // writes are still open: linearizable, each write bounded by its reader.
        let mut h = Vec::new();
        for i in 0..60u64 {
            h.push(op(0, 10 * i, None, RegKind::Write(i as i64 + 1)));
            h.push(op(1, 10 * i + 2, Some(10 * i + 3), RegKind::Read(Some(i as i64 + 1))));
        }
        let owned = bound_unknown_writes(&h.iter().collect::<Vec<_>>());
        assert!(owned.iter().step_by(2).enumerate().all(|(i, o)| o.ret == Some(10 * i as u64 + 3)));
        assert_eq!(check_register(&h, Duration::from_secs(2)), Verdict::Linearizable);
        // A read of a value before its only write was called is still a violation.
        let early = vec![op(1, 0, Some(1), RegKind::Read(Some(7))), op(0, 2, None, RegKind::Write(7))];
        assert!(matches!(check_register(&early, B), Verdict::Violation { .. }));
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            op(0, 0, Some(1), RegKind::Write(1)),
            op(0, 2, Some(3), RegKind::Read(Some(1))),
            op(0, 4, Some(5), RegKind::Cas { from: 1, to: 2, ok: true }),
            op(0, 6, Some(7), RegKind::Read(Some(2))),
            op(0, 8, Some(9), RegKind::Cas { from: 1, to: 3, ok: false }),
        ];
        assert_eq!(check_register(&h, B), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        let h = vec![
            op(0, 0, Some(1), RegKind::Write(1)),
            op(1, 2, Some(10), RegKind::Write(2)),
            op(2, 3, Some(4), RegKind::Read(Some(2))),
            op(3, 5, Some(6), RegKind::Read(Some(2))),
        ];
        assert_eq!(check_register(&h, B), Verdict::Linearizable);
        let h2 = vec![
            op(0, 0, Some(1), RegKind::Write(1)),
            op(1, 2, Some(10), RegKind::Write(2)),
            op(2, 3, Some(4), RegKind::Read(Some(1))),
            op(3, 5, Some(6), RegKind::Read(Some(2))),
        ];
        assert_eq!(check_register(&h2, B), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_caught() {
        // Write 2 completed before the read began, yet the read saw 1.
        let h = vec![
            op(0, 0, Some(1), RegKind::Write(1)),
            op(0, 2, Some(3), RegKind::Write(2)),
            op(1, 4, Some(5), RegKind::Read(Some(1))),
        ];
        assert_eq!(check_register(&h, B), Verdict::Violation { key: 1, ops: 3 });
    }

    #[test]
    fn a_read_going_back_in_time_is_caught() {
        let h = vec![
            op(0, 0, Some(1), RegKind::Write(1)),
            op(1, 2, Some(20), RegKind::Write(2)),
            op(2, 3, Some(4), RegKind::Read(Some(2))),
            op(3, 5, Some(6), RegKind::Read(Some(1))),
        ];
        assert!(matches!(check_register(&h, B), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen() {
        let took = vec![
            op(0, 0, Some(1), RegKind::Write(1)),
            op(1, 2, None, RegKind::Write(2)),
            op(2, 100, Some(101), RegKind::Read(Some(2))),
        ];
        assert_eq!(check_register(&took, B), Verdict::Linearizable);
        let did_not = vec![
            op(0, 0, Some(1), RegKind::Write(1)),
            op(1, 2, None, RegKind::Write(2)),
            op(2, 100, Some(101), RegKind::Read(Some(1))),
        ];
        assert_eq!(check_register(&did_not, B), Verdict::Linearizable);
        // But it cannot take effect before it was called.
        let early = vec![
            op(0, 0, Some(1), RegKind::Write(1)),
            op(2, 2, Some(3), RegKind::Read(Some(2))),
            op(1, 5, None, RegKind::Write(2)),
        ];
        assert!(matches!(check_register(&early, B), Verdict::Violation { .. }));
    }

    #[test]
    fn many_unobserved_unknown_writes_are_checked_fast() {
        // 60 writes that timed out, never seen by anyone, among ordinary ops.
        let mut h = vec![op(0, 0, Some(1), RegKind::Write(1))];
        for k in 0..60 {
            h.push(op(1 + k, 2 + k as u64, None, RegKind::Write(1000 + k as i64)));
        }
        for k in 0..100u64 {
            h.push(op(100, 200 + 2 * k, Some(201 + 2 * k), RegKind::Read(Some(1))));
        }
        let started = Instant::now();
        assert_eq!(check_register(&h, Duration::from_secs(20)), Verdict::Linearizable);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // A stale read is still caught with unknown writes around (the full search decides).
        let mut h = vec![op(0, 0, Some(1), RegKind::Write(1))];
        for k in 0..6 {
            h.push(op(1 + k, 2 + k as u64, None, RegKind::Write(1000 + k as i64)));
        }
        h.push(op(0, 500, Some(501), RegKind::Write(2)));
        h.push(op(0, 502, Some(503), RegKind::Read(Some(1))));
        assert!(matches!(check_register(&h, Duration::from_secs(20)), Verdict::Violation { .. }));
    }

    #[test]
    fn observed_unknown_compare_and_sets_are_bounded() {
        // 40 compare-and-sets that timed out, each seen by a read soon after: a chain 0 -> 1 ->
        // ... -> 40, with a second client's reads in between.
        let mut h = vec![op(0, 0, Some(1), RegKind::Write(0))];
        for i in 0..40u64 {
            let v = i as i64;
            h.push(op(1, 10 * i + 2, None, RegKind::Cas { from: v, to: v + 1, ok: false }));
            h.push(op(2, 10 * i + 4, Some(10 * i + 5), RegKind::Read(Some(v + 1))));
        }
        let owned = bound_unknown_writes(&h.iter().collect::<Vec<_>>());
        assert!(owned.iter().skip(1).step_by(2).all(|o| matches!(o.kind, RegKind::Cas { ok: true, .. })));
        let started = Instant::now();
        assert_eq!(check_register(&h, Duration::from_secs(20)), Verdict::Linearizable);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // Its value seen before it was called: still a violation.
        let early = vec![
            op(0, 0, Some(1), RegKind::Write(0)),
            op(2, 2, Some(3), RegKind::Read(Some(1))),
            op(1, 5, None, RegKind::Cas { from: 0, to: 1, ok: false }),
        ];
        assert!(matches!(check_register(&early, B), Verdict::Violation { .. }));
        // Bounded, it must still have found the value it expected.
        let wrong = vec![
            op(0, 0, Some(1), RegKind::Write(5)),
            op(1, 2, None, RegKind::Cas { from: 0, to: 1, ok: false }),
            op(2, 4, Some(5), RegKind::Read(Some(1))),
        ];
        assert!(matches!(check_register(&wrong, B), Verdict::Violation { .. }));
    }

    #[test]
    fn an_outage_full_of_unknown_ops_is_checked_fast() {
        // 1 is written; a compare-and-set 1 -> 2 times out and nobody sees 2, but the next one,
        // 1 -> 3, fails: the first must have taken effect in between. Then 4 is written, and an
        // outage leaves 40 writes and compare-and-sets that timed out, all unseen; reads still
        // see 4 afterwards, and a compare-and-set 4 -> 5 succeeds (a chaos run's key, in small).
        let mut h = vec![
            op(0, 0, Some(1), RegKind::Write(1)),
            op(1, 2, None, RegKind::Cas { from: 1, to: 2, ok: false }),
            op(1, 4, Some(5), RegKind::Cas { from: 1, to: 3, ok: false }),
            op(0, 6, Some(7), RegKind::Write(4)),
        ];
        for k in 0..40u64 {
            let v = 100 + k as i64;
            let kind =
                if k % 2 == 0 { RegKind::Write(v) } else { RegKind::Cas { from: v - 1, to: v + 100, ok: false } };
            h.push(op(2 + k as usize, 10 + k, None, kind));
        }
        for k in 0..20u64 {
            h.push(op(50, 100 + 2 * k, Some(101 + 2 * k), RegKind::Read(Some(4))));
        }
        h.push(op(51, 200, Some(201), RegKind::Cas { from: 4, to: 5, ok: true }));
        h.push(op(51, 202, Some(203), RegKind::Read(Some(5))));
        let started = Instant::now();
        assert_eq!(check_register(&h, Duration::from_secs(20)), Verdict::Linearizable);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // Reading 4 again after 5 was read fails the check, outage or not. Proving that no
        // subset of the outage's ops explains it may take the search longer than its budget:
        // a timeout fails a run just as a violation does.
        h.push(op(52, 300, Some(301), RegKind::Read(Some(4))));
        assert_ne!(check_register(&h, B), Verdict::Linearizable);
        // And so is a failed compare-and-set that nothing can explain.
        let unexplained = vec![
            op(0, 0, Some(1), RegKind::Write(1)),
            op(1, 4, Some(5), RegKind::Cas { from: 1, to: 3, ok: false }),
            op(1, 6, None, RegKind::Cas { from: 1, to: 2, ok: false }),
        ];
        assert!(matches!(check_register(&unexplained, B), Verdict::Violation { .. }));
    }

    #[test]
    fn timed_out_compare_and_sets_from_old_values_are_checked_fast() {
        // 30 values written one after the other; then an outage leaves 30 writes of values
        // nobody reads and 30 compare-and-sets from the old values, all timed out. After it, 4
        // is written and read, and a read of 4 overlaps a write of 5 that is called before it
        // and returns after it: the search tries the write first, fails, and must not go
        // through every subset of the outage's ops before it tries the read first (a chaos
        // run's key, in small).
        let mut h: Vec<RegOp> =
            (0..30u64).map(|k| op(0, 2 * k, Some(2 * k + 1), RegKind::Write(1000 + k as i64))).collect();
        for k in 0..30u64 {
            h.push(op(1 + k as usize, 100 + 2 * k, None, RegKind::Write(5000 + k as i64)));
            h.push(op(
                40 + k as usize,
                101 + 2 * k,
                None,
                RegKind::Cas { from: 1000 + k as i64, to: 6000 + k as i64, ok: false },
            ));
        }
        h.push(op(0, 200, Some(201), RegKind::Write(4)));
        h.push(op(0, 202, Some(203), RegKind::Read(Some(4))));
        h.push(op(80, 210, Some(214), RegKind::Write(5)));
        h.push(op(81, 211, Some(213), RegKind::Read(Some(4))));
        h.push(op(81, 215, Some(216), RegKind::Read(Some(5))));
        let started = Instant::now();
        assert_eq!(check_register(&h, Duration::from_secs(20)), Verdict::Linearizable);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // A read of 4 after 5 was read is still caught.
        h.push(op(81, 217, Some(218), RegKind::Read(Some(4))));
        assert!(matches!(check_register(&h, B), Verdict::Violation { .. }));
    }

    #[test]
    fn cas_results_must_match_the_value() {
        let h =
            vec![op(0, 0, Some(1), RegKind::Write(1)), op(0, 2, Some(3), RegKind::Cas { from: 5, to: 6, ok: true })];
        assert!(matches!(check_register(&h, B), Verdict::Violation { .. }));
    }

    #[test]
    fn a_large_concurrent_history_finishes() {
        // 6 clients, 400 ops on one key, each write read back by its own client.
        let mut h = Vec::new();
        let mut t = 0;
        for round in 0..66 {
            for c in 0..6 {
                let v = (round * 6 + c) as i64;
                h.push(op(c, t + c as u64, Some(t + 10 + c as u64), RegKind::Write(v)));
            }
            t += 20;
            for c in 0..6 {
                h.push(op(c, t + c as u64, Some(t + 3 + c as u64), RegKind::Read(Some((round * 6 + 5) as i64))));
            }
            t += 20;
        }
        let started = Instant::now();
        assert_eq!(check_register(&h, Duration::from_secs(20)), Verdict::Linearizable);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn set_checker() {
        let attempted: HashSet<i64> = [1, 2, 3, 4].into_iter().collect();
        let v = check_set(&[1, 2], &attempted, &[1, 2, 3]);
        assert!(v.ok(), "{v:?}");
        let v = check_set(&[1, 2], &attempted, &[1, 3, 3, 9]);
        assert_eq!((v.lost, v.duplicated, v.phantom), (vec![2], vec![3], vec![9]));
    }
}
