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
import { LogInUseError } from './store/wal/index.js';

/**
 * Errors of the machine's setup, for the operator to fix: a port in use, a folder this user cannot
 * write, a folder another node holds. One line each, not a stack trace that reads as a bug.
 */
const SETUP_ERRNOS = new Set(['EADDRINUSE', 'EADDRNOTAVAIL', 'EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'ENOSPC']);
function isSetupError(err: unknown): err is Error {
  return err instanceof LogInUseError || (err instanceof Error && SETUP_ERRNOS.has((err as NodeJS.ErrnoException).code ?? ''));
}

async function main(): Promise<void> {
  if (process.argv.includes('--help')) {
    console.log('usage: main.ts --node-id ID --listen HOST:PORT --peers ID=URL,ID=URL,ID=URL --data-dir DIR');
    console.log('       --cluster-secret S --jwt-secret S [--advertised-url URL] [--partitions N]');
    console.log('       [--tls-cert F --tls-key F --tls-ca F] [--trust-proxy CIDR,...] [--metrics-token T] [--snapshot-every N] [--keep-behind-snapshot N] [--config FILE]   (or MOM_* variables)');
    return;
  }
  let node: MomServer;
  try {
    const cfg = loadConfig(process.argv.slice(2), process.env);
    node = await MomServer.start(cfg, { logger: { level: process.env.MOM_LOG_LEVEL ?? 'info' }, processMetrics: true });
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`mom: bad configuration: ${err.message}`);
      process.exit(2);
    }
    if (isSetupError(err)) {
      console.error(`mom: cannot start: ${err.message}`);
      // Not 2, a bad configuration, which systemd does not restart (mom.service): each of these is
      // mended outside the node (space freed, the other program stopped, a permission given), and
      // the node must then come back by itself.
      process.exit(1);
    }
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

await main();
