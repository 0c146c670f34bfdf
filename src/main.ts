// One node of a mom cluster. Configuration by flags, MOM_* environment variables or a JSON file (see
// src/cluster/config.ts); `node --import tsx src/main.ts --help` lists the settings.
//
//   node --import tsx src/main.ts --node-id n1 --listen 0.0.0.0:8080 \
//     --peers n1=http://10.0.0.1:8080,n2=http://10.0.0.2:8080,n3=http://10.0.0.3:8080 \
//     --data-dir /var/lib/mom --cluster-secret ... --jwt-secret ...
//
// SIGTERM or SIGINT: hand leadership over, finish requests in flight, close the databases, exit 0.
import { MomServer } from './server.js';
import { ConfigError, loadConfig } from './cluster/index.js';
import { RestoreRefusedError, restoreCluster } from './cluster/restore.js';
import { LogInUseError } from './store/wal/index.js';
import { MallocTrimmer } from './native/malloc-trimmer.js';
import { native, nativeMissing, olderAddon } from './native/native.js';

/**
 * Errors of the machine's setup, for the operator to fix: a port in use, a folder this user cannot
 * write or make (ENOENT: a data folder where no folder can be made, as under /proc), a folder another
 * node holds. One line each, not a stack trace that reads as a bug.
 */
const SETUP_ERRNOS = new Set(['EADDRINUSE', 'EADDRNOTAVAIL', 'EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'ENOSPC', 'EDQUOT', 'ENOENT']);
function isSetupError(err: unknown): err is Error {
  return err instanceof LogInUseError || (err instanceof Error && SETUP_ERRNOS.has((err as NodeJS.ErrnoException).code ?? ''));
}

async function main(): Promise<void> {
  if (process.argv.includes('--help')) {
    console.log('usage: main.ts --node-id ID --listen HOST:PORT --peers ID=URL,ID=URL,ID=URL --data-dir DIR');
    console.log('       --cluster-secret S --jwt-secret S [--advertised-url URL] [--partitions N]');
    console.log('       [--tls-cert F --tls-key F --tls-ca F] [--trust-proxy CIDR,...] [--metrics-token T] [--snapshot-every N] [--keep-behind-snapshot N] [--log-segment-bytes SIZE]');
    console.log('       [--disk-free-limit SIZE] [--rejoin] [--config FILE]   (or MOM_* variables)');
    console.log('   or: main.ts restore-cluster --from COPY [the same settings, with a new cluster secret]');
    console.log('       makes --data-dir (new or empty) this node\'s folder of a cluster restored from COPY, one node\'s');
    console.log('       data folder; run it on all three nodes with the same COPY, then start them (docs/operations.md)');
    return;
  }
  if (process.argv[2] === 'restore-cluster') return restore(process.argv.slice(3));
  let node: MomServer;
  try {
    const cfg = loadConfig(process.argv.slice(2), process.env);
    node = await MomServer.start(cfg, { logger: { level: process.env.MOM_LOG_LEVEL ?? 'info' }, processMetrics: true });
    new MallocTrimmer().start();
    const lacks = native === null ? [] : olderAddon(native);
    if (native === null) node.log.warn({ why: nativeMissing }, 'the native addon (build/Release/mom_native.node, made by npm ci) is not loaded: memory malloc holds free is not given back to the system, and the log is held by its LOCK file alone; `npm rebuild` in the installation builds it');
    else if (lacks.length > 0) node.log.warn({ lacks }, 'the native addon (build/Release/mom_native.node) is older than this build: without trimMallocAsync memory malloc holds free is not given back, without lockFile the log is held by its LOCK file alone; `npm rebuild` in the installation builds it again');
  } catch (err) {
    exitIfMendable(err, 'start');
    throw err;
  }
  let stopping = false;
  const stop = (signal: string): void => {
    // A second signal, or a shutdown stuck past its deadline, stops at once.
    if (stopping) process.exit(1);
    stopping = true;
    setTimeout(() => {
      console.error('mom: shutdown took longer than 15 s; exiting');
      process.exit(1);
    }, 15_000).unref();
    node.log.info({ signal }, 'shutting down: handing leadership over');
    node
      .shutdown()
      .then(() => process.exit(0))
      .catch((err: unknown) => {
        console.error('mom: shutdown failed', err);
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** `restore-cluster --from COPY [settings]`: restoreCluster, then exit; the node is not started. */
async function restore(argv: string[]): Promise<void> {
  const at = argv.findIndex((a) => a === '--from' || a.startsWith('--from='));
  const from = at < 0 ? undefined : argv[at]!.startsWith('--from=') ? argv[at]!.slice('--from='.length) : argv[at + 1];
  if (from === undefined || from === '' || from.startsWith('--')) {
    console.error('mom: restore-cluster needs --from COPY: a copy of one node\'s data folder');
    process.exit(2);
  }
  try {
    const cfg = loadConfig(argv.filter((_, i) => i !== at && (i !== at + 1 || argv[at]!.startsWith('--from='))), process.env);
    const done = await restoreCluster(cfg, from);
    const mb = (done.bytes / 1e6).toFixed(1);
    console.log(`mom: ${cfg.dataDir} is now node ${cfg.nodeId}'s folder of the cluster restored from ${from} (${cfg.partitions} partitions, ${done.files} files, ${mb} MB)`);
    console.log(`mom: the copy's fingerprint is ${done.fingerprint}: restore the other two nodes from the same copy (each must print this fingerprint), then start all three`);
  } catch (err) {
    exitIfMendable(err, 'restore');
    throw err;
  }
}

/**
 * Ends the process with one line for an error the operator mends, or returns (a bug, whose stack
 * trace follows): exit 2 for a bad configuration or a refused restore, 1 for the machine's setup.
 */
function exitIfMendable(err: unknown, doing: 'start' | 'restore'): void {
  if (err instanceof ConfigError) {
    console.error(`mom: bad configuration: ${err.message}`);
    process.exit(2);
  }
  if (err instanceof RestoreRefusedError) {
    console.error(`mom: restore refused: ${err.message}`);
    process.exit(2);
  }
  if (isSetupError(err)) {
    console.error(`mom: cannot ${doing}: ${err.message}`);
    // Not 2, a bad configuration, which systemd does not restart (mom.service): each of these is
    // mended outside the node (space freed, the other program stopped, a permission given), and
    // the node must then come back by itself.
    process.exit(1);
  }
}

await main();
