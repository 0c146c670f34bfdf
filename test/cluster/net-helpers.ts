// Shared by the cluster tests that start servers on loopback.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { loadConfig, type NodeConfig } from '../../src/cluster/index.js';

/**
 * The kernel's ephemeral range, from which it picks both `listen(0)` ports and the local ports of
 * outgoing connections. A port found free by `listen(0)` and released can be taken by any connection
 * a test makes before the node binds it; ports below that range are never handed out by the kernel.
 */
function ephemeralLow(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    return 32768;
  }
}

const LOW = 10_000;
const HIGH = Math.min(ephemeralLow(), 65_536);
const handedOut = new Set<number>();

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * A port nobody listens on right now, on 127.0.0.1, below the kernel's ephemeral range (chosen at
 * random there, so concurrent test files rarely try the same one) and never twice in one process.
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; HIGH - LOW > 1000 && tries < 200; tries++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    if (await canListen(port)) return port;
  }
  // No room below the ephemeral range on this machine: let the kernel choose.
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * Waits until `pred` holds, polling every 10 ms for a bounded number of rounds (no timing assertion).
 * When it gives up, the error carries `describe()`: what the nodes reported at that moment.
 */
export async function until(pred: () => boolean, what: string, rounds = 2000, describe?: () => string): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`gave up waiting for: ${what}${describe === undefined ? '' : `\n${describe()}`}`);
}

/** Configurations of a three-node cluster on free loopback ports, data folders under `root`. */
export async function threeNodeConfigs(root: string, partitions: number): Promise<NodeConfig[]> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p, i) => `n${i + 1}=http://127.0.0.1:${p}`).join(',');
  return ports.map((p, i) =>
    loadConfig(['--node-id', `n${i + 1}`, '--listen', `127.0.0.1:${p}`, '--peers', peers, '--data-dir', join(root, `${p}-n${i + 1}`), '--cluster-secret', 's'.repeat(24), '--jwt-secret', 'j'.repeat(32), '--partitions', String(partitions)], {}),
  );
}
