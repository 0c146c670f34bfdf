// Golden vectors: a name's partition must never change between versions, or data would be lost from
// sight. SHA-1 of the UTF-8 name, first four bytes big-endian, modulo P.
import t from 'tap';
import { DEFAULT_PARTITIONS, partitionOf, userPartition } from '../../src/partition/routing.js';

t.test('golden vectors', async (t) => {
  // sha1('orders') starts 96584038, sha1('payments') 40c47702, sha1('a') 86f7e437.
  t.equal(partitionOf('orders', 16), 0x96584038 % 16);
  t.equal(partitionOf('orders', 16), 8);
  t.equal(partitionOf('payments', 16), 2);
  t.equal(partitionOf('a', 16), 7);
  t.equal(partitionOf('orders', 7), 1);
  t.equal(partitionOf('émoji-ü', 16), 13, 'UTF-8 bytes, not UTF-16 code units');
  t.equal(userPartition('alice', 16), 1, 'users: sha1("user:alice") starts 49a5e271');
  t.equal(DEFAULT_PARTITIONS, 16);
});

t.test('spreads names over partitions', async (t) => {
  const counts = new Array<number>(16).fill(0);
  for (let i = 0; i < 16000; i++) counts[partitionOf(`queue-${i}`, 16)]!++;
  t.ok(Math.min(...counts) > 800 && Math.max(...counts) < 1200, `balanced: ${counts.join(',')}`);
});

t.test('a bad partition count is refused', async (t) => {
  t.throws(() => partitionOf('x', 0), RangeError);
  t.throws(() => partitionOf('x', 1.5), RangeError);
  t.throws(() => partitionOf('x', 5000), RangeError);
});
