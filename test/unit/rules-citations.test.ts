import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';

// What the code cites must resolve inside the repository: rule numbers to docs/rules.md, and
// nothing an operator reads (help texts, README, example config) carries a bare code.

const ROOT = join(import.meta.dirname, '..', '..');
const RULES = readFileSync(join(ROOT, 'docs', 'rules.md'), 'utf8');
const DEFINED = new Set([...RULES.matchAll(/^- \*\*R(\d+)\./gm)].map((m) => Number(m[1])));

function filesUnder(dir: string, ext: RegExp): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return filesUnder(path, ext);
    return ext.test(name) ? [path] : [];
  });
}

/** Every `bin/mailgate ...` command with its full help text. */
function helpTexts(): Array<{ name: string; help: string }> {
  const out: Array<{ name: string; help: string }> = [];
  const walk = (cmd: ReturnType<typeof buildProgram>, path: string) => {
    out.push({ name: path, help: cmd.helpInformation() });
    for (const sub of cmd.commands) walk(sub, `${path} ${sub.name()}`);
  };
  walk(buildProgram(), 'mailgate');
  return out;
}

/** A code of the seed notes (S7) or the specification (SPEC 3.3), unexplained. */
const BARE_CODE = /\bS(?:1[0-4]|[1-9])\b|\bSPEC\s*§?\d/;

describe('rule citations', () => {
  it('docs/rules.md defines R1..R14, each once', () => {
    expect([...DEFINED].sort((a, b) => a - b)).toEqual(Array.from({ length: 14 }, (_, i) => i + 1));
  });

  it('every `rules.md R<n>` cited in src/ and test/ is a rule that docs/rules.md defines', () => {
    const cited: string[] = [];
    for (const file of [
      ...filesUnder(join(ROOT, 'src'), /\.ts$/),
      ...filesUnder(join(ROOT, 'test'), /\.ts$/),
    ]) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/rules\.md ((?:R\d+(?:, | and | \+ |\/)?)+)/g)) {
        for (const r of m[1]!.matchAll(/R(\d+)/g)) {
          if (!DEFINED.has(Number(r[1]))) cited.push(`${relative(ROOT, file)}: R${r[1]}`);
        }
      }
    }
    expect(cited).toEqual([]);
  });

  it('no source file cites a document that is not in the repository (S<n>, SPEC x.y)', () => {
    const bare = filesUnder(join(ROOT, 'src'), /\.ts$/).flatMap((file) =>
      readFileSync(file, 'utf8')
        .split('\n')
        .map((line, i) => ({ line, at: `${relative(ROOT, file)}:${i + 1}` }))
        .filter(({ line }) => BARE_CODE.test(line))
        .map(({ at }) => at),
    );
    expect(bare).toEqual([]);
  });

  it('no --help text, README line or example-config comment shows a bare requirement code', () => {
    const offenders = [
      ...helpTexts()
        .filter(({ help }) => BARE_CODE.test(help) || /rules\.md/.test(help))
        .map(({ name }) => `${name} --help`),
      ...['README.md', 'config/example.yaml'].flatMap((f) =>
        readFileSync(join(ROOT, f), 'utf8')
          .split('\n')
          .map((line, i) => ({ line, at: `${f}:${i + 1}` }))
          .filter(({ line }) => BARE_CODE.test(line))
          .map(({ at }) => at),
      ),
    ];
    expect(offenders).toEqual([]);
  });
});
