// A partition's clock, the largest stamp applied: from log format 8 one entry moves it at most
// MAX_CLOCK_STEP_MS, so a leader whose clock is a day ahead cannot freeze leases for the day.
import t from 'tap';
import { BOUNDED_CLOCK_STEP, KEYED_RECEIVE_WITHOUT_BODIES, MAX_CLOCK_STEP_MS, stateHash, type ReceivedMessage } from '../../../src/store/broker/index.js';
import { iso } from '../../../src/store/broker/context.js';
import { TestStore, queue, receive, send } from './helpers.js';

const DAY = 86_400_000;

/** alice's queue 'jobs' (30 s leases) holding one message, in `format`. */
async function jobs(t: { teardown(fn: () => unknown): void }, format: number): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format);
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
  s.must('alice', queue('jobs', { visibilityTimeoutSeconds: 30 }));
  s.must('alice', send('jobs', 'work'));
  return s;
}

/** Applies one entry stamped `ms` from the store's time, as a leader whose clock is that far off would. */
function stampedOff(s: TestStore, ms: number): void {
  s.time += ms;
  s.must('alice', send('jobs', 'from the wrong clock'));
  s.time -= ms;
}

t.test('an entry stamped a day ahead moves the clock one step; leases run again once correct stamps pass it', async (t) => {
  const s = await jobs(t, BOUNDED_CLOCK_STEP);
  const before = s.sm.clock();
  stampedOff(s, DAY);
  t.equal(s.sm.clock(), before + MAX_CLOCK_STEP_MS, 'one step, not a day');
  // A correct leader takes over: its stamps are behind the clock until real time passes it.
  const [m] = (s.must('alice', receive('jobs', 1)) as { messages: ReceivedMessage[] }).messages;
  t.equal(m!.body, 'work');
  let waited = 0;
  for (; waited < DAY; waited += 5_000) {
    s.advance(5);
    const r = s.must('alice', receive('jobs', 1)) as { messages: ReceivedMessage[] };
    if (r.messages.some((x) => x.messageId === m!.messageId)) break;
  }
  t.ok(waited <= MAX_CLOCK_STEP_MS + 30_000, `the 30 s lease ended after ${waited / 1000} s of real time: its 30 s, plus at most the one step`);
});

t.test('many entries from a clock a day ahead move it one step each, and correct stamps move it as before', async (t) => {
  const s = await jobs(t, BOUNDED_CLOCK_STEP);
  const before = s.sm.clock();
  for (let i = 0; i < 3; i++) stampedOff(s, DAY);
  t.equal(s.sm.clock(), before + 3 * MAX_CLOCK_STEP_MS);
  s.time += 2 * 60_000;
  s.must('alice', send('jobs', 'behind'));
  t.equal(s.sm.clock(), before + 3 * MAX_CLOCK_STEP_MS, 'a stamp behind the clock leaves it');
  s.time += 2 * 60_000;
  s.must('alice', send('jobs', 'now'));
  t.equal(s.sm.clock(), s.time, 'a stamp within a step of the clock sets it');
  s.time += 10 * 60_000; // quiet, and no leader keeping the clock (TestStore.advance would, as host.ts does)
  s.must('alice', send('jobs', 'later'));
  t.equal(s.sm.clock(), s.time - 10 * 60_000 + MAX_CLOCK_STEP_MS, 'after 10 quiet minutes, one step');
  s.advance(10 * 60);
  s.must('alice', send('jobs', 'kept'));
  t.equal(s.sm.clock(), s.time, 'with the clock kept, the present');
});

t.test('before format 8 a stamp sets the clock however far ahead, as an older build applies it', async (t) => {
  const s = await jobs(t, KEYED_RECEIVE_WITHOUT_BODIES);
  const before = s.sm.clock();
  stampedOff(s, DAY);
  t.equal(s.sm.clock(), before + DAY);
});

t.test('times as text: each the ISO 8601 of its own millisecond, however they follow each other', async (t) => {
  // iso() keeps the last text it made (a receive's messages often share a millisecond).
  const times = [0, 1_700_000_000_000, 1_700_000_000_000, 1_700_000_000_001, 0, -1, 8.64e15, 1_700_000_000_001, 1_700_000_000_000];
  for (const ms of times) t.equal(iso(ms), new Date(ms).toISOString(), `${ms}`);
  t.throws(() => iso(Number.NaN), RangeError, 'an invalid time is refused, as before');
  t.equal(iso(8.64e15), new Date(8.64e15).toISOString());
  t.throws(() => iso(8.64e15 + 1), RangeError);
  t.throws(() => iso(8.64e15 + 1), RangeError, 'again: a refused time is not kept');
  t.equal(iso(8.64e15), new Date(8.64e15).toISOString(), 'nor does it change the last one kept');
});

t.test('a message sent past what a time can be: its receive fails alike where it is answered and where it is not', async (t) => {
  // Before format 8 a leader's stamp set the clock as it came: a message could be sent "at" a time a
  // Date cannot hold. A replica that answers the receive makes its time's text; one that does not
  // answer it must still fail it the same way, or the two would lease different rows.
  const replicas = await Promise.all([0, 1].map(() => TestStore.open(0, undefined, BOUNDED_CLOCK_STEP - 1)));
  t.teardown(() => Promise.all(replicas.map((s) => s.close())));
  const receiveEntry = replicas.map((s) => {
    s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
    s.must('alice', queue('jobs'));
    s.time = 8.64e15 + 1;
    s.must('alice', send('jobs', 'from past the end of time'));
    s.index++;
    return { index: s.index, term: 1, kind: 0, data: s.encode({ time: s.time, actor: 'alice', command: receive('jobs', 1) }) };
  });
  const [answered] = replicas[0]!.sm.apply([receiveEntry[0]!]);
  const [unanswered] = replicas[1]!.sm.apply([receiveEntry[1]!], { answered: () => false });
  t.same(answered!.result, { ok: false, code: 'validation_failed', detail: 'malformed command' });
  t.same(unanswered!.result, answered!.result, 'the replica that does not answer refuses it too');
  t.equal(stateHash(replicas[1]!.sm.sqlite), stateHash(replicas[0]!.sm.sqlite), 'and leases nothing either');
});
