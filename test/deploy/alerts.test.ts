// deploy/prometheus/alerts.yml: valid rules (promtool check rules), each alert fires on synthetic
// series of the situation it is for and stays quiet otherwise (promtool test rules), and every metric
// it reads is one the node exports. promtool comes with Debian's prometheus package (.ci/run installs
// it); without it the tests that run it are skipped (test/tools.ts).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parse, stringify } from 'yaml';
import { needTool } from '../tools.js';

const root = join(import.meta.dirname, '..', '..');
const RULES = join(root, 'deploy', 'prometheus', 'alerts.yml');

interface Rule {
  alert: string;
  expr: string;
  annotations: Record<string, string>;
}
const rules = (parse(readFileSync(RULES, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

/** Runs promtool (the binary `bin`): its exit code and everything it printed. */
function promtool(bin: string, args: string[]): { code: number; out: string } {
  const r = spawnSync(bin, args, { encoding: 'utf8' });
  if (r.error !== undefined) throw r.error;
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** An alert's annotations as Prometheus renders them for these labels and value. */
function annotations(alert: string, labels: Record<string, string>, value: string): Record<string, string> {
  // A rule that is missing fires nothing: promtool then reports the alert expected and not found.
  const rule = rules.find((r) => r.alert === alert);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(rule?.annotations ?? {})) {
    out[k] = v.replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, name: string) => labels[name] ?? '').replace(/\{\{ \$value \}\}/g, value);
  }
  return out;
}

const fires = (alert: string, labels: Record<string, string>, value: string) => ({ exp_labels: labels, exp_annotations: annotations(alert, labels, value) });

t.test('promtool accepts the rules', async (t) => {
  const bin = needTool(t, 'promtool');
  if (bin === null) return;
  const r = promtool(bin, ['check', 'rules', RULES]);
  t.equal(r.code, 0, r.out);
  t.same(rules.map((r) => r.alert).sort(), [
    'MomApplyLag',
    'MomCertificateExpiring',
    'MomClockSkew',
    'MomDiskFilling',
    'MomDiskShort',
    'MomLeaderFlapping',
    'MomLogIndexHigh',
    'MomNodeDown',
    'MomNodeFlapping',
    'MomNodeMissing',
    'MomOldestMessageAgeGrowing',
    'MomPartitionHalted',
    'MomPartitionWithoutLeader',
    'MomServerErrors',
  ]);
});

t.test('each alert fires in its situation and not otherwise', async (t) => {
  const bin = needTool(t, 'promtool');
  if (bin === null) return;
  const tests = [
    {
      interval: '1m',
      input_series: [
        { series: 'up{job="mom",instance="n1"}', values: '1 1 0 0 0 0 0' },
        { series: 'up{job="mom",instance="n2"}', values: '1 1 1 1 1 1 1' },
        // partition 0 loses its leader at 2m; partition 1 keeps one
        { series: 'mom_raft_is_leader{job="mom",instance="n1",partition="0"}', values: '1 1 0 0 0 0 0' },
        { series: 'mom_raft_is_leader{job="mom",instance="n2",partition="0"}', values: '0 0 0 0 0 0 0' },
        { series: 'mom_raft_is_leader{job="mom",instance="n2",partition="1"}', values: '1 1 1 1 1 1 1' },
      ],
      alert_rule_test: [
        { eval_time: '2m', alertname: 'MomNodeDown', exp_alerts: [] },
        { eval_time: '5m', alertname: 'MomNodeDown', exp_alerts: [fires('MomNodeDown', { job: 'mom', instance: 'n1', severity: 'page' }, '0')] },
        { eval_time: '2m', alertname: 'MomPartitionWithoutLeader', exp_alerts: [] },
        { eval_time: '5m', alertname: 'MomPartitionWithoutLeader', exp_alerts: [fires('MomPartitionWithoutLeader', { partition: '0', severity: 'page' }, '0')] },
      ],
    },
    {
      interval: '1m',
      input_series: [
        // partition 2 commits 50 entries a minute; n3 stopped applying at 100 (cut off: its own commit
        // index stops with its log, so its commit minus applied stays 0); n2's scrape runs 5 entries late
        { series: 'mom_raft_commit_index{job="mom",instance="n1",partition="2"}', values: '100+50x14' },
        { series: 'mom_raft_applied_index{job="mom",instance="n1",partition="2"}', values: '100+50x14' },
        { series: 'mom_raft_commit_index{job="mom",instance="n2",partition="2"}', values: '95+50x14' },
        { series: 'mom_raft_applied_index{job="mom",instance="n2",partition="2"}', values: '95+50x14' },
        { series: 'mom_raft_commit_index{job="mom",instance="n3",partition="2"}', values: '100x14' },
        { series: 'mom_raft_applied_index{job="mom",instance="n3",partition="2"}', values: '100x14' },
        { series: 'mom_raft_apply_lag{job="mom",instance="n3",partition="2"}', values: '0x14' },
      ],
      alert_rule_test: [
        { eval_time: '3m', alertname: 'MomApplyLag', exp_alerts: [] },
        { eval_time: '10m', alertname: 'MomApplyLag', exp_alerts: [fires('MomApplyLag', { instance: 'n3', partition: '2', severity: 'warn' }, '400')] },
      ],
    },
    {
      interval: '1m',
      input_series: [
        // n3's target is gone from service discovery at 2m (its pod Pending without an address): no
        // `up` at all from then on, where a failed scrape would have written 0
        { series: 'up{job="mom",instance="n1"}', values: '1x8' },
        { series: 'up{job="mom",instance="n2"}', values: '1x8' },
        { series: 'up{job="mom",instance="n3"}', values: '1 1 stale' },
      ],
      alert_rule_test: [
        { eval_time: '2m', alertname: 'MomNodeMissing', exp_alerts: [] },
        { eval_time: '5m', alertname: 'MomNodeDown', exp_alerts: [] },
        { eval_time: '5m', alertname: 'MomNodeMissing', exp_alerts: [fires('MomNodeMissing', { severity: 'page' }, '2')] },
      ],
    },
    {
      interval: '1m',
      input_series: [
        // partition 1: nobody consumes, the oldest message ages a minute a minute
        { series: 'mom_partition_oldest_message_age_seconds{job="mom",instance="n1",partition="1"}', values: '0+60x45' },
        // partition 2: old messages, but consumers keep the age from growing
        { series: 'mom_partition_oldest_message_age_seconds{job="mom",instance="n2",partition="2"}', values: '1200x45' },
      ],
      alert_rule_test: [
        { eval_time: '20m', alertname: 'MomOldestMessageAgeGrowing', exp_alerts: [] },
        { eval_time: '40m', alertname: 'MomOldestMessageAgeGrowing', exp_alerts: [fires('MomOldestMessageAgeGrowing', { partition: '1', severity: 'warn' }, '2400')] },
      ],
    },
    {
      interval: '1m',
      input_series: [
        // n1's clock runs 30 s ahead from 2m on: both others see it; n2 and n3 agree within 50 ms
        { series: 'mom_peer_clock_offset_seconds{job="mom",instance="n2",peer="n1"}', values: '0 0 30x12' },
        { series: 'mom_peer_clock_offset_seconds{job="mom",instance="n1",peer="n2"}', values: '0 0 -30x12' },
        { series: 'mom_peer_clock_offset_seconds{job="mom",instance="n2",peer="n3"}', values: '0.05x14' },
      ],
      alert_rule_test: [
        { eval_time: '4m', alertname: 'MomClockSkew', exp_alerts: [] },
        {
          eval_time: '10m',
          alertname: 'MomClockSkew',
          exp_alerts: [fires('MomClockSkew', { instance: 'n1', peer: 'n2', severity: 'warn' }, '30'), fires('MomClockSkew', { instance: 'n2', peer: 'n1', severity: 'warn' }, '30')],
        },
      ],
    },
    {
      interval: '1m',
      input_series: [
        // partition 3 is past 2^36 on two nodes (one a little behind), partition 1 far below it
        { series: 'mom_raft_last_index{job="mom",instance="n1",partition="3"}', values: '68719476800+100x90' },
        { series: 'mom_raft_last_index{job="mom",instance="n2",partition="3"}', values: '68719476700+100x90' },
        { series: 'mom_raft_last_index{job="mom",instance="n1",partition="1"}', values: '1000000+100x90' },
      ],
      alert_rule_test: [
        { eval_time: '30m', alertname: 'MomLogIndexHigh', exp_alerts: [] },
        { eval_time: '80m', alertname: 'MomLogIndexHigh', exp_alerts: [fires('MomLogIndexHigh', { partition: '3', severity: 'warn' }, '6.87194848e+10')] },
      ],
    },
    {
      interval: '1m',
      input_series: [
        // n1's certificate expires 10 days after the epoch, n2's after 60 (promtool's clock starts there)
        { series: 'mom_tls_certificate_expiry_timestamp_seconds{job="mom",instance="n1"}', values: `${10 * 86400}x5` },
        { series: 'mom_tls_certificate_expiry_timestamp_seconds{job="mom",instance="n2"}', values: `${60 * 86400}x5` },
      ],
      alert_rule_test: [{ eval_time: '5m', alertname: 'MomCertificateExpiring', exp_alerts: [fires('MomCertificateExpiring', { job: 'mom', instance: 'n1', severity: 'warn' }, '')] }],
    },
    {
      // A 1 GB limit. n1 fills by 100 MB a minute from 5 GB, n2 holds 10 GB, n3 watches nothing (limit
      // 0), n4 holds a steady 1.5 GB (within twice its limit), n5's free space is not known yet (NaN).
      interval: '1m',
      input_series: [
        { series: 'mom_disk_free_bytes{job="mom",instance="n1"}', values: '5000000000-100000000x59' },
        { series: 'mom_disk_free_limit_bytes{job="mom",instance="n1"}', values: '1000000000x59' },
        { series: 'mom_disk_free_bytes{job="mom",instance="n2"}', values: '10000000000x59' },
        { series: 'mom_disk_free_limit_bytes{job="mom",instance="n2"}', values: '1000000000x59' },
        { series: 'mom_disk_free_bytes{job="mom",instance="n3"}', values: '100x59' },
        { series: 'mom_disk_free_limit_bytes{job="mom",instance="n3"}', values: '0x59' },
        { series: 'mom_disk_free_bytes{job="mom",instance="n4"}', values: '1500000000x59' },
        { series: 'mom_disk_free_limit_bytes{job="mom",instance="n4"}', values: '1000000000x59' },
        { series: 'mom_disk_free_bytes{job="mom",instance="n5"}', values: Array(50).fill('NaN').join(' ') },
        { series: 'mom_disk_free_limit_bytes{job="mom",instance="n5"}', values: '1000000000x59' },
      ],
      alert_rule_test: [
        { eval_time: '5m', alertname: 'MomDiskFilling', exp_alerts: [] },
        // n1: from its first minutes, the slope puts it under 1 GB within six hours (pending, then firing
        // 10 minutes later); n4 from the start, by the first test.
        {
          eval_time: '25m',
          alertname: 'MomDiskFilling',
          exp_alerts: [fires('MomDiskFilling', { job: 'mom', instance: 'n1', severity: 'warn' }, '2.5e+09'), fires('MomDiskFilling', { job: 'mom', instance: 'n4', severity: 'warn' }, '1.5e+09')],
        },
        { eval_time: '39m', alertname: 'MomDiskShort', exp_alerts: [] },
        { eval_time: '43m', alertname: 'MomDiskShort', exp_alerts: [fires('MomDiskShort', { job: 'mom', instance: 'n1', severity: 'page' }, '7e+08')] },
      ],
    },
  ];
  const dir = mkdtempSync(join(tmpdir(), 'mom-alerts-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'alerts.test.yml');
  writeFileSync(file, stringify({ rule_files: [RULES], evaluation_interval: '1m', tests }));
  const r = promtool(bin, ['test', 'rules', file]);
  t.equal(r.code, 0, r.out);
});

t.test('a node in a crash loop is alerted', async (t) => {
  const bin = needTool(t, 'promtool');
  if (bin === null) return;
  // Scrapes and rule evaluations every 15 s. n1 crashes on its first write after each start (a full
  // disk) and systemd starts it again 2 s later (deploy/systemd/mom.service): it answers one scrape in
  // three, so MomNodeDown, which wants a minute of failed scrapes, never fires.
  const tests = [
    {
      interval: '15s',
      input_series: [
        { series: 'up{job="mom",instance="n1"}', values: `1 1 1 1 ${'0 0 1 '.repeat(40)}` },
        { series: 'up{job="mom",instance="n2"}', values: '1x124' },
      ],
      alert_rule_test: [
        ...[5, 10, 15, 20, 25, 30].map((m) => ({ eval_time: `${m}m`, alertname: 'MomNodeDown', exp_alerts: [] })),
        { eval_time: '1m', alertname: 'MomNodeFlapping', exp_alerts: [] },
        { eval_time: '10m', alertname: 'MomNodeFlapping', exp_alerts: [fires('MomNodeFlapping', { job: 'mom', instance: 'n1', severity: 'page' }, '')] },
      ],
    },
  ];
  const dir = mkdtempSync(join(tmpdir(), 'mom-alerts-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'alerts.test.yml');
  writeFileSync(file, stringify({ rule_files: [RULES], evaluation_interval: '15s', tests }));
  const r = promtool(bin, ['test', 'rules', file]);
  t.equal(r.code, 0, r.out);
});

t.test('every alert has its runbook entry in docs/operations.md', async (t) => {
  const docs = readFileSync(join(root, 'docs', 'operations.md'), 'utf8');
  for (const r of rules) {
    t.ok(docs.includes(`- **${r.alert}** —`), `${r.alert} has an entry under "Alerts"`);
    const anchor = /docs\/operations\.md#([\w-]+)/.exec(r.annotations.description ?? '')?.[1];
    t.ok(anchor !== undefined && docs.includes(`<a id="${anchor}"></a>`), `${r.alert}'s description links an anchor of docs/operations.md (#${anchor})`);
  }
});

t.test('every metric the rules read is one the node exports', async (t) => {
  const exported = readFileSync(join(root, 'src', 'api', 'metrics.ts'), 'utf8');
  const used = new Set(rules.flatMap((r) => [...r.expr.matchAll(/\b(mom_[a-z_]+)\b/g)].map((m) => m[1]!)));
  t.ok(used.size >= 3, [...used].join(', '));
  for (const name of used) t.ok(exported.includes(`'${name}'`), `${name} is exported (src/api/metrics.ts)`);
});
