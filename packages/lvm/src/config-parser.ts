import { LvmError } from './errors';
import { Token, tokenize } from './config-tokens';

export type ConfigScalar = string | number;
export type ConfigValue = ConfigScalar | ConfigScalar[];

/** A `name { ... }` section: its settings and subsections, each in file order. */
export interface ConfigSection {
  name: string;
  line: number;
  values: Map<string, ConfigValue>;
  sections: Map<string, ConfigSection>;
}

function section(name: string, line: number): ConfigSection {
  return { name, line, values: new Map(), sections: new Map() };
}

/**
 * Parse LVM2's configuration text into a tree. The grammar:
 *
 *     file     = item*
 *     item     = word '=' value | word '{' item* '}'
 *     value    = string | number | '[' [scalar (',' scalar)*] ']'
 *
 * A name set twice in one section is refused, as lvm2 would read only one of them.
 */
export function parseConfig(text: string, source = 'metadata'): ConfigSection {
  const tokens = tokenize(text, source);
  let p = 0;
  const fail = (t: Token, message: string): never => {
    throw new LvmError('syntax', `${source} line ${t.line} column ${t.column}: ${message}`);
  };
  const describe = (t: Token) => (t.type === 'end' ? 'the end of the text' : `${JSON.stringify(t.text)}`);
  const expect = (type: Token['type'], what: string): Token => {
    const t = tokens[p];
    if (t.type !== type) fail(t, `expected ${what}, found ${describe(t)}`);
    p++;
    return t;
  };
  const scalar = (): ConfigScalar => {
    const t = tokens[p];
    if (t.type === 'string') {
      p++;
      return t.text;
    }
    if (t.type === 'number') {
      p++;
      const n = Number(t.text);
      if (!t.text.includes('.') && !Number.isSafeInteger(n)) fail(t, `number ${t.text} is too large`);
      return n;
    }
    return fail(t, `expected a string or a number, found ${describe(t)}`);
  };
  const value = (): ConfigValue => {
    if (tokens[p].type !== '[') return scalar();
    p++;
    const list: ConfigScalar[] = [];
    if (tokens[p].type === ']') {
      p++;
      return list;
    }
    for (;;) {
      list.push(scalar());
      const t = tokens[p];
      if (t.type === ']') {
        p++;
        return list;
      }
      if (t.type !== ',') fail(t, `expected ',' or ']' in a list, found ${describe(t)}`);
      p++;
    }
  };
  const items = (into: ConfigSection, closing: '}' | 'end'): void => {
    for (;;) {
      const t = tokens[p];
      if (t.type === closing) {
        p++;
        return;
      }
      const name = expect('word', closing === 'end' ? 'a name' : "a name or '}'");
      const op = tokens[p];
      if (into.values.has(name.text) || into.sections.has(name.text))
        fail(name, `${JSON.stringify(name.text)} is set twice in ${into.name || 'the file'}`);
      if (op.type === '=') {
        p++;
        into.values.set(name.text, value());
      } else if (op.type === '{') {
        p++;
        const sub = section(name.text, name.line);
        items(sub, '}');
        into.sections.set(name.text, sub);
      } else {
        fail(op, `expected '=' or '{' after ${JSON.stringify(name.text)}, found ${describe(op)}`);
      }
    }
  };
  const root = section('', 1);
  items(root, 'end');
  return root;
}
