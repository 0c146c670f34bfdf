// deploy/k8s/mom.yaml: every document valid against the Kubernetes schemas (kubernetes-models, the
// API's OpenAPI schemas compiled for ajv), and the fields that make the cluster work agree with each
// other and with the node: names, ports, probes, volumes, secrets, peers, disruption budget.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { Service } from 'kubernetes-models/v1/Service';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { loadConfig } from '../../src/cluster/index.js';

const file = join(import.meta.dirname, '..', '..', 'deploy', 'k8s', 'mom.yaml');
const docs = parseAllDocuments(readFileSync(file, 'utf8')).map((d) => {
  if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`);
  return d.toJS() as { kind: string; metadata: { name: string } };
});
const byKind = (kind: string): Record<string, unknown>[] => docs.filter((d) => d.kind === kind) as unknown as Record<string, unknown>[];

interface Probe {
  httpGet: { path: string; port: string | number };
}
interface Container {
  name: string;
  ports: { name: string; containerPort: number }[];
  env: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string; optional?: boolean } } }[];
  readinessProbe: Probe;
  livenessProbe: Probe;
  startupProbe: Probe;
  volumeMounts: { name: string; mountPath: string }[];
}
interface Sts {
  metadata: { name: string };
  spec: {
    serviceName: string;
    replicas: number;
    podManagementPolicy: string;
    selector: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string> }; spec: { terminationGracePeriodSeconds: number; containers: Container[] } };
    volumeClaimTemplates: { metadata: { name: string } }[];
  };
}
interface Svc {
  metadata: { name: string };
  spec: { clusterIP?: string; publishNotReadyAddresses?: boolean; selector: Record<string, string>; ports: { port: number; targetPort: string | number }[] };
}

t.test('every document is valid against the Kubernetes schemas', async (t) => {
  t.same(docs.map((d) => d.kind).sort(), ['PodDisruptionBudget', 'Service', 'Service', 'StatefulSet']);
  const models: Record<string, new (o: never) => { validate(): void }> = { Service, StatefulSet, PodDisruptionBudget };
  for (const d of docs) {
    t.doesNotThrow(() => new models[d.kind]!(d as never).validate(), `${d.kind} ${d.metadata.name}`);
  }
  // The validator is not a formality: a wrong type is caught.
  const broken = structuredClone(byKind('StatefulSet')[0]!) as unknown as Sts;
  (broken.spec as { replicas: unknown }).replicas = 'three';
  t.throws(() => new StatefulSet(broken as never).validate(), 'a string replica count is refused');
});

t.test('names, ports, probes, volumes and secrets agree', async (t) => {
  const sts = byKind('StatefulSet')[0] as unknown as Sts;
  const services = byKind('Service') as unknown as Svc[];
  const headless = services.find((s) => s.metadata.name === sts.spec.serviceName);
  t.ok(headless, `the StatefulSet's serviceName (${sts.spec.serviceName}) is a Service here`);
  t.equal(headless!.spec.clusterIP, 'None', 'the peer Service is headless (stable per-pod names)');
  t.equal(headless!.spec.publishNotReadyAddresses, true, 'peers resolve each other before they are ready');
  const client = services.find((s) => s !== headless)!;
  const labels = sts.spec.template.metadata.labels;
  for (const sel of [sts.spec.selector.matchLabels, headless!.spec.selector, client.spec.selector, (byKind('PodDisruptionBudget')[0] as { spec: { selector: { matchLabels: Record<string, string> } } }).spec.selector.matchLabels]) {
    t.ok(Object.entries(sel).every(([k, v]) => labels[k] === v), `selector ${JSON.stringify(sel)} matches the pods`);
  }
  t.equal(sts.spec.replicas, 3);
  t.equal(sts.spec.podManagementPolicy, 'Parallel', 'the three start together (one alone never becomes ready)');
  t.ok(sts.spec.template.spec.terminationGracePeriodSeconds > 15, 'longer than the node’s 15 s shutdown deadline');

  const c = sts.spec.template.spec.containers[0]!;
  const port = c.ports.find((p) => p.name === 'http')!;
  t.equal(port.containerPort, 8080);
  for (const s of services) t.ok(s.spec.ports.every((p) => p.targetPort === 'http' || p.targetPort === port.containerPort), `${s.metadata.name} targets the container's port`);
  t.equal(c.readinessProbe.httpGet.path, '/readyz');
  t.equal(c.livenessProbe.httpGet.path, '/healthz');
  t.equal(c.startupProbe.httpGet.path, '/healthz');
  for (const p of [c.readinessProbe, c.livenessProbe, c.startupProbe]) t.ok(p.httpGet.port === 'http' || p.httpGet.port === port.containerPort, 'probes use the served port');

  const env = new Map(c.env.map((e) => [e.name, e]));
  t.equal(env.get('MOM_NODE_ID')?.valueFrom?.fieldRef?.fieldPath, 'metadata.name', 'the node id is the pod name');
  for (const [name, key] of [['MOM_CLUSTER_SECRET', 'cluster-secret'], ['MOM_JWT_SECRET', 'jwt-secret']] as const) {
    const ref = env.get(name)?.valueFrom?.secretKeyRef;
    t.ok(ref !== undefined && ref.key === key && ref.optional !== true, `${name} comes from a Secret, required`);
    t.notOk(env.get(name)?.value, `${name} is not written in the file`);
  }
  const dataMount = c.volumeMounts.find((m) => m.name === sts.spec.volumeClaimTemplates[0]!.metadata.name);
  t.equal(dataMount?.mountPath, env.get('MOM_DATA_DIR')?.value, 'the data folder is the claimed volume');

  // The node itself accepts this configuration, as pod mom-1 would get it.
  const podEnv: Record<string, string> = { MOM_NODE_ID: `${sts.metadata.name}-1`, MOM_CLUSTER_SECRET: 'x'.repeat(32), MOM_JWT_SECRET: 'y'.repeat(48) };
  for (const e of c.env) if (e.value !== undefined) podEnv[e.name] = e.value;
  const cfg = loadConfig([], podEnv);
  t.same(
    cfg.peers.map((p) => p.id),
    [0, 1, 2].map((i) => `${sts.metadata.name}-${i}`),
    'MOM_PEERS names exactly the StatefulSet’s pods',
  );
  t.ok(
    cfg.peers.every((p) => new URL(p.url).hostname === `${p.id}.${headless!.metadata.name}` && Number(new URL(p.url).port) === port.containerPort),
    'each peer URL is the pod’s stable name under the headless Service, on the served port',
  );
});

t.test('the disruption budget allows one pod down, never two', async (t) => {
  const pdb = byKind('PodDisruptionBudget')[0] as { spec: { maxUnavailable?: number; minAvailable?: number } };
  t.ok(pdb.spec.maxUnavailable === 1 || pdb.spec.minAvailable === 2, JSON.stringify(pdb.spec));
});
