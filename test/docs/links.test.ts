// The repository stands on its own: every relative link of its Markdown files leads to a file of the
// repository, and no file names a path outside it (a user's clone has nothing beside it).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The files git tracks, and those it would track (new, not ignored), relative to the root. */
function repositoryFiles(): string[] {
  const out = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], { cwd: ROOT, encoding: 'utf8' });
  return out.split('\0').filter((f) => f !== '' && existsSync(join(ROOT, f)));
}

const files = repositoryFiles();
const inside = (abs: string): boolean => !relative(ROOT, abs).startsWith('..');

t.test('relative links of the Markdown files lead to files of the repository', async (t) => {
  const broken: string[] = [];
  let links = 0;
  for (const file of files.filter((f) => f.endsWith('.md'))) {
    const text = readFileSync(join(ROOT, file), 'utf8');
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1]!;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) continue;
      links++;
      const abs = resolve(dirname(join(ROOT, file)), decodeURIComponent(target.split('#')[0]!));
      if (!inside(abs) || !existsSync(abs)) broken.push(`${file}: ${target}`);
    }
  }
  t.same(broken, [], 'no link leads outside the repository or to a missing file');
  t.ok(links > 10, `the links were found (${links})`);
});

t.test('no file refers to the folders beside the repository', async (t) => {
  // The workplace keeps a shared/ folder beside the project's; a user's clone has none.
  const beside = new RegExp(['\\.\\.', 'shared'].join('/'));
  const text = files.filter((f) => (!f.endsWith('package-lock.json') && /\.(md|ts|mjs|cjs|js|json|ya?ml|sh|conf|txt)$/.test(f)) || f === '.ci/run');
  const naming = text.filter((f) => beside.test(readFileSync(join(ROOT, f), 'utf8')));
  t.same(naming, [], 'no file names the shared folder beside the repository');
  t.ok(text.length > 100, `the files were read (${text.length})`);
});
