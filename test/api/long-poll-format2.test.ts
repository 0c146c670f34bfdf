// The long-poll tests (long-poll.test.ts) in a cluster of log format 2: a build before long polls
// parked in the partition's state, as a cluster runs during a rolling upgrade from it. Each poll is
// woken by its node's apply and receives again.
process.env.MOM_LONG_POLL_FORMAT = '2';
await import('./long-poll.test.js');
