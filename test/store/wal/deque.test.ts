// Deque, the queue of entries a partition keeps in memory: answers like an array through pushes,
// shifts, truncations and clears, including across the points where it gives its front back.
import t from 'tap';
import { Deque } from '../../../src/store/wal/deque.js';
import { seededRandom } from '../../raft/helpers.js';

t.test('a deque answers like an array, through front compactions', async (t) => {
  for (const seed of [1, 2]) {
    const rnd = seededRandom(seed);
    const d = new Deque<number>();
    const model: number[] = [];
    let next = 0;
    let mismatches = 0;
    let compactions = 0;
    for (let step = 0; step < 60_000; step++) {
      const op = rnd(1000);
      const before = d.length;
      if (op < 520) {
        // Runs of pushes and of shifts, so the front passes 1,024 and half the array again and again.
        for (let k = rnd(8); k >= 0; k--) {
          d.push(next);
          model.push(next++);
        }
      } else if (op < 990) {
        for (let k = rnd(8); k >= 0; k--) if (d.shift() !== model.shift()) mismatches++;
      } else if (op < 999) {
        const k = rnd(model.length + 2) - 1;
        if (JSON.stringify(d.truncate(k)) !== JSON.stringify(model.splice(Math.max(0, k)))) mismatches++;
      } else {
        d.clear();
        model.length = 0;
      }
      // A compaction leaves the length as it was and the front at 0 (private, read for the count).
      if ((d as unknown as { head: number }).head === 0 && before > 0 && op >= 520 && op < 990 && d.length > 0) compactions++;
      const k = rnd(model.length + 2) - 1;
      if (d.length !== model.length || d.at(k) !== model[k] || d.at(0) !== model[0] || d.at(model.length - 1) !== model[model.length - 1]) mismatches++;
    }
    t.ok(compactions > 0, `seed ${seed}: the deque gave its front back ${compactions} times`);
    t.equal(mismatches, 0, `seed ${seed}: length, at(), shift() and truncate() as an array's at every step`);
  }
});
