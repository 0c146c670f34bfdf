// ESLint flat config. typescript-eslint "recommended" (NOT type-aware, so it
// stays fast; `tsc --noEmit` does the type checking) plus two architectural
// rules for src/:
//
//   1. Purity of src/raft: the Raft core is a pure state machine. It imports
//      nothing but its own files and touches no clock, timer, randomness, I/O
//      or process state; those are injected by the caller.
//   2. Layering: src/raft <- src/store <- src/partition <- src/cluster <- src/api
//      <- src/main.ts. A file may import from its own layer or inner ones only.
//
// Both are enforced with `no-restricted-imports` regex patterns matched against
// the import specifier. ESLint replaces (does not merge) a rule's options when
// several config objects match a file, so one config object is generated per
// (layer, folder depth) and carries the complete pattern list for that case.
// The depth matters: from src/store/a.ts `../partition/x.js` leaves the layer,
// from src/store/sub/a.ts it takes `../../partition/x.js`.
// tests (test/**), bench and scripts may import anything.

import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Innermost first. src/main.ts sits outside all of them. */
const LAYERS = ['raft', 'store', 'partition', 'cluster', 'api'];
/** Deepest sub-folder level inside a layer that gets a generated config. */
const MAX_DEPTH = 8;

const PURITY =
  'the Raft core is a pure state machine: inject time and randomness (and I/O) through its inputs';

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/**
 * no-restricted-imports patterns for a file in src/<layer>/ that sits
 * `depth` folders below the layer folder.
 */
function importPatterns(layer, depth) {
  const i = LAYERS.indexOf(layer);
  const outer = LAYERS.slice(i + 1);
  // `./`* then exactly n `../`
  const up = (n) => `^(\\./)*(\\.\\./){${n}}`;
  const patterns = [
    {
      // './a/../../x' style paths would dodge the checks below.
      regex: '^(\\.\\.?/)*[^.][^/]*/(.*/)?\\.\\.(/|$)',
      message: 'Use a normalized relative import path (no "/../" in the middle).',
    },
    {
      regex: `${up(depth + 2)}`,
      message: 'src/ must not import from outside src/ (test, bench, scripts, ...).',
    },
  ];
  if (layer === 'raft') {
    patterns.push(
      {
        regex: '^(?!\\.\\.?/)',
        message: `src/raft may only import files inside src/raft (no node: builtins, no packages): ${PURITY}.`,
      },
      {
        regex: `${up(depth + 1)}`,
        message: `src/raft must not import from outside src/raft (it is the innermost layer): ${PURITY}.`,
      },
    );
  }
  // (for src/raft the rule above already covers every other layer)
  for (const o of layer === 'raft' ? [] : outer) {
    patterns.push({
      regex: `${up(depth + 1)}${esc(o)}(/|$)`,
      message: `Layering: src/${layer} must not import from src/${o} (allowed direction: raft <- store <- partition <- cluster <- api <- main).`,
    });
  }
  if (layer !== 'raft') {
    patterns.push({
      regex: `${up(depth + 1)}main(\\.js|\\.ts)?$`,
      message: `Layering: src/${layer} must not import src/main.ts (it is the outermost layer).`,
    });
  }
  return patterns;
}

const layerConfigs = LAYERS.flatMap((layer) => [
  ...Array.from({ length: MAX_DEPTH + 1 }, (_, depth) => ({
    name: `mom/layer/${layer}/depth-${depth}`,
    files: [`src/${layer}/${'*/'.repeat(depth)}*.ts`],
    rules: {
      'no-restricted-imports': ['error', { patterns: importPatterns(layer, depth) }],
    },
  })),
  {
    // Deeper than MAX_DEPTH: the depth-specific patterns do not exist, so
    // fail closed rather than silently allowing anything.
    name: `mom/layer/${layer}/too-deep`,
    files: [`src/${layer}/${'*/'.repeat(MAX_DEPTH + 1)}**/*.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: layer === 'raft' ? '.*' : '^(\\./)*\\.\\./',
              message: `Folder nesting deeper than ${MAX_DEPTH} levels under src/${layer} is not covered by the layering lint: flatten it or raise MAX_DEPTH in eslint.config.js.`,
            },
          ],
        },
      ],
    },
  },
]);

const RAFT_FORBIDDEN_GLOBALS = [
  'Date',
  'setTimeout',
  'setInterval',
  'setImmediate',
  'clearTimeout',
  'clearInterval',
  'clearImmediate',
  'queueMicrotask',
  'process',
  'performance',
  'fetch',
  'require',
  'crypto',
  'global',
  'globalThis',
];

const raftPurity = {
  name: 'mom/raft-purity',
  files: ['src/raft/**/*.ts'],
  rules: {
    'no-restricted-globals': [
      'error',
      ...RAFT_FORBIDDEN_GLOBALS.map((name) => ({
        name,
        message: `Do not use ${name} in src/raft: ${PURITY}.`,
      })),
    ],
    'no-restricted-properties': [
      'error',
      {
        object: 'Math',
        property: 'random',
        message: `Do not use Math.random in src/raft: ${PURITY} (take a seeded RNG as a parameter).`,
      },
    ],
    'no-restricted-syntax': [
      'error',
      {
        selector: 'ImportExpression',
        message: `Do not use dynamic import() in src/raft: ${PURITY}.`,
      },
    ],
  },
};

const nodeGlobals = {
  process: 'readonly',
  console: 'readonly',
  URL: 'readonly',
  Buffer: 'readonly',
  setTimeout: 'readonly',
  clearTimeout: 'readonly',
};

export default tseslint.config(
  {
    name: 'mom/ignores',
    ignores: ['node_modules/', 'data/', 'coverage/', '.tap/', 'bench/results/', 'dist/', 'tmp-*/'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    name: 'mom/base',
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_' },
      ],
    },
  },
  {
    name: 'mom/js-scripts',
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    languageOptions: { globals: nodeGlobals },
  },
  ...layerConfigs,
  raftPurity,
);
