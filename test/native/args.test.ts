// The addon's numeric arguments are checked, not coerced: N-API's conversions turned NaN and the
// infinities into 0 (lockFile(NaN) locked standard input and answered 0, "held"), cut fractions, and
// wrapped a descriptor of 2**32 + n to n (review of 2026-12-07).
import { closeSync, openSync } from 'node:fs';
import t from 'tap';
import { native } from '../../src/native/native.js';

const notBuilt = native?.lockFile === undefined ? 'the native addon is not built' : false;

t.test('lockFile refuses what is not a descriptor', { skip: notBuilt }, async (t) => {
  t.throws(() => native!.lockFile!(NaN), /a file descriptor/, 'NaN is refused (napi turns it into fd 0)');
  const fd = openSync('/tmp', 'r');
  try {
    t.throws(() => native!.lockFile!(2 ** 32 + fd), /a file descriptor/, '2**32 + fd is refused (napi wraps it to fd)');
    t.throws(() => native!.lockFile!(fd + 0.5), /a file descriptor/, 'a fraction is refused');
  } finally {
    closeSync(fd);
  }
});

t.test('advise refuses what is not a descriptor, an offset or a length', { skip: notBuilt }, async (t) => {
  t.throws(() => native!.advise(NaN, 0, 0, 4), /non-negative integers/, 'a NaN descriptor is refused');
  t.throws(() => native!.advise(0, Infinity, 0, 4), /non-negative integers/, 'an infinite offset is refused');
  t.throws(() => native!.advise(0, 0, 1.5, 4), /non-negative integers/, 'a fractional length is refused');
  t.throws(() => native!.advise(0, -1, 0, 4), /non-negative integers/, 'a negative offset is refused');
});
