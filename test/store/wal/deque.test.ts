// Deque, the queue of entries a partition keeps in memory: answers like an array through pushes,
// shifts past the point where it gives its front back, truncations and clears.
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
    for (let step = 0; step < 20_000; step++) {
      const op = rnd(100);
      if (op < 55) {
        d.push(next);
        model.push(next++);
      } else if (op < 97) {
        if (d.shift() !== model.shift()) mismatches++;
      } else if (op < 99) {
        const k = rnd(model.length + 2) - 1;
        if (JSON.stringify(d.truncate(k)) !== JSON.stringify(model.splice(Math.max(0, k)))) mismatches++;
      } else {
        d.clear();
        model.length = 0;
      }
      const k = rnd(model.length + 2) - 1;
      if (d.length !== model.length || d.at(k) !== model[k] || d.at(0) !== model[0]) mismatches++;
    }
    t.equal(mismatches, 0, `seed ${seed}: length, at(), shift() and truncate() as an array's at every step`);
  }
});
