// The store's unit suites for users and queues, messages, topics and queries again, at format 3 (the
// format before bodies stayed in the log; unit-kit.ts): a cluster upgraded from an older build
// applies its entries so until the raise, and a rolled-back node would.
import { PARKED_POLLS } from '../../../src/store/broker/index.js';

process.env.KIT_FORMAT = String(PARKED_POLLS);
await import('./users-queues.test.js');
await import('./messages.test.js');
await import('./topics.test.js');
await import('./queries.test.js');
