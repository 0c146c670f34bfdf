// The leader's per-follower bookkeeping: the in-flight window and the Probe/Replicate/Snapshot states.
import t from 'tap';
import { Inflights, InvariantError, Progress, ProgressState } from '../../src/raft/index.js';

t.test('Inflights', async (t) => {
  t.test('a window must hold at least one append', async (t) => {
    t.throws(() => new Inflights(0, 0), InvariantError);
  });

  t.test('add and full by count', async (t) => {
    const w = new Inflights(3, 0);
    t.equal(w.full(), false, 'empty window is not full');
    w.add(1, 10);
    w.add(2, 10);
    t.equal(w.full(), false, 'two of three');
    w.add(5, 10);
    t.equal(w.full(), true, 'three of three');
    t.equal(w.count(), 3);
    t.equal(w.bytes(), 30);
  });

  t.test('indexes must grow', async (t) => {
    const w = new Inflights(5, 0);
    w.add(4, 1);
    t.throws(() => w.add(4, 1), InvariantError, 'same index again');
    t.throws(() => w.add(3, 1), InvariantError, 'smaller index');
    t.equal(w.count(), 1, 'the refused adds left nothing behind');
  });

  t.test('full by bytes', async (t) => {
    const w = new Inflights(10, 100);
    w.add(1, 60);
    t.equal(w.full(), false, '60 of 100 bytes');
    w.add(2, 39);
    t.equal(w.full(), false, '99 of 100 bytes');
    w.add(3, 1);
    t.equal(w.full(), true, '100 of 100 bytes');
    t.equal(w.count(), 3, 'far below the count limit');
    w.freeLE(1);
    t.equal(w.bytes(), 40);
    t.equal(w.full(), false, 'freeing the first append makes room');
    // A single append larger than the byte limit fills the window on its own.
    const big = new Inflights(10, 100);
    big.add(7, 500);
    t.equal(big.full(), true, 'one oversized append fills it');
  });

  t.test('maxBytes 0 means no byte limit', async (t) => {
    const w = new Inflights(2, 0);
    w.add(1, 1_000_000_000);
    t.equal(w.full(), false);
    w.add(2, 1);
    t.equal(w.full(), true, 'the count limit still applies');
  });

  t.test('freeLE', async (t) => {
    const w = new Inflights(10, 0);
    w.add(5, 1);
    w.add(10, 2);
    w.add(15, 4);
    w.add(20, 8);
    w.freeLE(4);
    t.equal(w.count(), 4, 'below the first index frees nothing');
    t.equal(w.bytes(), 15);
    w.freeLE(12);
    t.equal(w.count(), 2, 'frees every append whose last index <= 12');
    t.equal(w.bytes(), 12);
    w.freeLE(15);
    t.equal(w.count(), 1, 'the boundary is inclusive');
    t.equal(w.bytes(), 8);
    w.freeLE(100);
    t.equal(w.count(), 0);
    t.equal(w.bytes(), 0);
    w.freeLE(200);
    t.equal(w.count(), 0, 'freeing an empty window is a no-op');
    w.add(21, 3);
    t.equal(w.count(), 1, 'adds continue after freeing');
  });

  t.test('freeFirst', async (t) => {
    const w = new Inflights(2, 0);
    w.freeFirst();
    t.equal(w.count(), 0, 'no-op on an empty window');
    w.add(3, 5);
    w.add(6, 7);
    t.equal(w.full(), true);
    w.freeFirst();
    t.equal(w.count(), 1);
    t.equal(w.bytes(), 7);
    t.equal(w.full(), false);
    w.add(9, 1);
    t.equal(w.full(), true);
    w.freeFirst();
    w.freeFirst();
    t.equal(w.count(), 0);
    t.equal(w.bytes(), 0);
  });

  t.test('reset', async (t) => {
    const w = new Inflights(2, 10);
    w.add(1, 5);
    w.add(2, 5);
    w.reset();
    t.equal(w.count(), 0);
    t.equal(w.bytes(), 0);
    t.equal(w.full(), false);
    w.add(1, 1);
    t.equal(w.count(), 1, 'after a reset, indexes may start over');
  });
});

function progress(opts: { match: number; next: number; state?: ProgressState; maxInflight?: number }): Progress {
  const pr = new Progress(opts.next, opts.maxInflight ?? 4, 0);
  pr.match = opts.match;
  if (opts.state === ProgressState.Replicate) {
    pr.state = ProgressState.Replicate;
  } else if (opts.state === ProgressState.Snapshot) {
    pr.state = ProgressState.Snapshot;
  }
  return pr;
}

t.test('Progress', async (t) => {
  t.test('a new progress probes', async (t) => {
    const pr = new Progress(5, 4, 0);
    t.equal(pr.state, ProgressState.Probe);
    t.equal(pr.match, 0);
    t.equal(pr.next, 5);
    t.equal(pr.paused(), false);
  });

  t.test('maybeUpdate', async (t) => {
    const cases: { update: number; wantOk: boolean; wantMatch: number; wantNext: number }[] = [
      { update: 0, wantOk: false, wantMatch: 3, wantNext: 6 }, // stale
      { update: 2, wantOk: false, wantMatch: 3, wantNext: 6 }, // stale
      { update: 3, wantOk: false, wantMatch: 3, wantNext: 6 }, // duplicate
      { update: 4, wantOk: true, wantMatch: 4, wantNext: 6 }, // news, next already past it
      { update: 5, wantOk: true, wantMatch: 5, wantNext: 6 },
      { update: 6, wantOk: true, wantMatch: 6, wantNext: 7 }, // next moves past the ack
      { update: 20, wantOk: true, wantMatch: 20, wantNext: 21 },
    ];
    for (const c of cases) {
      const pr = progress({ match: 3, next: 6 });
      t.equal(pr.maybeUpdate(c.update), c.wantOk, `maybeUpdate(${c.update}) result`);
      t.equal(pr.match, c.wantMatch, `maybeUpdate(${c.update}) match`);
      t.equal(pr.next, c.wantNext, `maybeUpdate(${c.update}) next`);
    }
  });

  t.test('maybeUpdate clears probeSent only on news', async (t) => {
    const pr = progress({ match: 3, next: 4 });
    pr.sentEntries(5, 2, 2);
    t.equal(pr.paused(), true, 'a probe is out');
    pr.maybeUpdate(2);
    t.equal(pr.paused(), true, 'a stale ack does not unpause');
    pr.maybeUpdate(5);
    t.equal(pr.paused(), false, 'a fresh ack unpauses');
  });

  t.test('maybeDecrTo in Replicate', async (t) => {
    const cases: { rejected: number; hint: number; wantOk: boolean; wantNext: number; wantState: ProgressState }[] = [
      // Stale: rejections of appends at or before the known match.
      { rejected: 5, hint: 5, wantOk: false, wantNext: 10, wantState: ProgressState.Replicate },
      { rejected: 3, hint: 0, wantOk: false, wantNext: 10, wantState: ProgressState.Replicate },
      // Real: back to Probe, next from the hint but never at or below match.
      { rejected: 9, hint: 7, wantOk: true, wantNext: 8, wantState: ProgressState.Probe },
      { rejected: 9, hint: 2, wantOk: true, wantNext: 6, wantState: ProgressState.Probe },
      { rejected: 9, hint: 20, wantOk: true, wantNext: 9, wantState: ProgressState.Probe },
      { rejected: 7, hint: 6, wantOk: true, wantNext: 7, wantState: ProgressState.Probe },
    ];
    for (const c of cases) {
      const pr = progress({ match: 5, next: 10, state: ProgressState.Replicate });
      pr.inflights.add(7, 1);
      pr.inflights.add(9, 1);
      const d = `rejected ${c.rejected} hint ${c.hint}`;
      t.equal(pr.maybeDecrTo(c.rejected, c.hint), c.wantOk, `${d}: result`);
      t.equal(pr.next, c.wantNext, `${d}: next`);
      t.equal(pr.state, c.wantState, `${d}: state`);
      t.equal(pr.match, 5, `${d}: match untouched`);
      if (c.wantOk) t.equal(pr.inflights.count(), 0, `${d}: window emptied on the way to Probe`);
      else t.equal(pr.inflights.count(), 2, `${d}: window untouched by a stale rejection`);
    }
  });

  t.test('maybeDecrTo in Probe', async (t) => {
    const cases: { rejected: number; hint: number; wantOk: boolean; wantNext: number }[] = [
      // Only the answer to the probe just sent (prevIndex = next - 1 = 9) counts.
      { rejected: 8, hint: 3, wantOk: false, wantNext: 10 },
      { rejected: 10, hint: 3, wantOk: false, wantNext: 10 },
      { rejected: 5, hint: 0, wantOk: false, wantNext: 10 },
      { rejected: 9, hint: 7, wantOk: true, wantNext: 8 },
      { rejected: 9, hint: 3, wantOk: true, wantNext: 6 }, // clamped to match + 1
      { rejected: 9, hint: 0, wantOk: true, wantNext: 6 },
      { rejected: 9, hint: 50, wantOk: true, wantNext: 9 }, // a hint past the rejection: one step back
    ];
    for (const c of cases) {
      const pr = progress({ match: 5, next: 10 });
      pr.sentEntries(12, 3, 3); // a probe is out
      const d = `rejected ${c.rejected} hint ${c.hint}`;
      t.equal(pr.maybeDecrTo(c.rejected, c.hint), c.wantOk, `${d}: result`);
      t.equal(pr.next, c.wantNext, `${d}: next`);
      t.equal(pr.state, ProgressState.Probe, `${d}: still probing`);
      t.equal(pr.paused(), !c.wantOk, `${d}: a real rejection allows the next probe at once`);
    }
  });

  t.test('paused() per state', async (t) => {
    const probe = progress({ match: 1, next: 2 });
    t.equal(probe.paused(), false, 'probe, nothing sent');
    probe.sentEntries(2, 0, 0);
    t.equal(probe.paused(), true, 'probe, one append (even empty) out');

    const repl = progress({ match: 1, next: 2, state: ProgressState.Replicate, maxInflight: 2 });
    t.equal(repl.paused(), false, 'replicate, empty window');
    repl.sentEntries(3, 2, 2);
    t.equal(repl.next, 4, 'replicate advances next optimistically');
    t.equal(repl.paused(), false, 'replicate, one of two in flight');
    repl.sentEntries(4, 0, 0);
    t.equal(repl.inflights.count(), 1, 'an empty append does not take a slot');
    t.equal(repl.next, 4);
    repl.sentEntries(6, 2, 2);
    t.equal(repl.paused(), true, 'replicate, window full');
    repl.maybeUpdate(3);
    repl.inflights.freeLE(3);
    t.equal(repl.paused(), false, 'an ack frees the window');

    const snap = progress({ match: 1, next: 2 });
    snap.becomeSnapshot(10);
    t.equal(snap.state, ProgressState.Snapshot);
    t.equal(snap.pendingSnapshot, 10);
    t.equal(snap.paused(), true, 'snapshot in flight always pauses');
  });

  t.test('sentEntries in Probe does not move next', async (t) => {
    const pr = progress({ match: 1, next: 2 });
    pr.sentEntries(9, 8, 8);
    t.equal(pr.next, 2);
    t.equal(pr.inflights.count(), 0);
  });

  t.test('becomeProbe', async (t) => {
    t.test('from Snapshot: next after the snapshot', async (t) => {
      const pr = progress({ match: 3, next: 4 });
      pr.becomeSnapshot(10);
      pr.becomeProbe();
      t.equal(pr.state, ProgressState.Probe);
      t.equal(pr.next, 11);
      t.equal(pr.pendingSnapshot, 0);
      t.equal(pr.paused(), false);
    });
    t.test('from Snapshot with match already past it: next after match', async (t) => {
      const pr = progress({ match: 3, next: 4 });
      pr.becomeSnapshot(10);
      pr.maybeUpdate(12);
      pr.becomeProbe();
      t.equal(pr.next, 13);
    });
    t.test('from Replicate: next after match, window reset', async (t) => {
      const pr = progress({ match: 5, next: 9, state: ProgressState.Replicate });
      pr.inflights.add(8, 1);
      pr.becomeProbe();
      t.equal(pr.state, ProgressState.Probe);
      t.equal(pr.next, 6);
      t.equal(pr.inflights.count(), 0);
    });
  });

  t.test('becomeReplicate', async (t) => {
    const pr = progress({ match: 5, next: 9 });
    pr.sentEntries(9, 1, 1);
    pr.becomeReplicate();
    t.equal(pr.state, ProgressState.Replicate);
    t.equal(pr.next, 6);
    t.equal(pr.probeSent, false);
    t.equal(pr.paused(), false);
  });

  t.test('becomeSnapshot resets the window and snapshotTicks', async (t) => {
    const pr = progress({ match: 5, next: 9, state: ProgressState.Replicate });
    pr.inflights.add(8, 1);
    pr.snapshotTicks = 7;
    pr.becomeSnapshot(20);
    t.equal(pr.inflights.count(), 0);
    t.equal(pr.snapshotTicks, 0);
    t.equal(pr.pendingSnapshot, 20);
  });

  t.test('canBumpCommit: only a commit the follower may not have learned, up to what it was sent', async (t) => {
    const pr = progress({ match: 5, next: 6, state: ProgressState.Replicate });
    t.equal(pr.canBumpCommit(5), true, 'never sent a commit, and it holds entries up to 5');
    pr.sentEntries(8, 3, 30);
    pr.sentCommit = 5;
    t.equal(pr.canBumpCommit(5), false, 'the commit it was sent');
    t.equal(pr.canBumpCommit(7), true, 'a later commit, within what it was sent');
    pr.sentCommit = 8;
    t.equal(pr.canBumpCommit(9), false, 'it was sent a commit covering every entry it was sent: the next append carries more');
    // A rejection: it is probed again from its match; it learned at most that much.
    pr.becomeProbe();
    t.equal(pr.sentCommit, 5, 'capped at next - 1 when probing again');
    t.equal(pr.canBumpCommit(8), false, 'nothing to tell it beyond its match');
    pr.match = 8;
    pr.becomeReplicate();
    t.equal(pr.sentCommit, 5, 'kept when it replicates again');
    t.equal(pr.canBumpCommit(8), true, 'entries 6 to 8 are acknowledged and committed, and it was told only 5');
  });
});
