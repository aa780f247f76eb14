import { SnapshotError } from './errors';
import { DumpHeader, validateDumpHeader } from './dump-format';

/**
 * Read a snapshot dump (docs/snapshot-dump.md) as a stream of events, JSON
 * or XML (told apart by the first character), holding one piece of input
 * and one entry at a time: a dump of millions of entries is never in
 * memory as a whole.
 */
export type DumpEvent = { kind: 'header'; header: DumpHeader } | { kind: 'entry'; oldChunk: number; newChunk: number };

/** Fills `buf` from the start; returns the bytes read, 0 at the end of the input. */
export type ByteSource = (buf: Buffer) => number;

/** Longest string, number or XML tag accepted: a dump holds nothing longer. */
const MAX_TOKEN_BYTES = 4096;
const PIECE_BYTES = 1 << 20;

class Input {
  private buf = Buffer.alloc(PIECE_BYTES);
  private len = 0;
  private pos = 0;
  private ended = false;
  line = 1;

  constructor(private readonly source: ByteSource) {}

  peek(): number {
    if (this.pos >= this.len) {
      if (this.ended) return -1;
      this.len = this.source(this.buf);
      this.pos = 0;
      if (this.len === 0) {
        this.ended = true;
        return -1;
      }
    }
    return this.buf[this.pos];
  }

  take(): number {
    const c = this.peek();
    if (c >= 0) this.pos++;
    if (c === 0x0a) this.line++;
    return c;
  }

  skipSpace(): void {
    for (let c = this.peek(); c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09; c = this.peek()) this.take();
  }

  fail(message: string): never {
    throw new SnapshotError('EINVAL', 'bad-dump', `dump line ${this.line}: ${message}`);
  }
}

export function* readDump(source: ByteSource): Generator<DumpEvent> {
  const input = new Input(source);
  input.skipSpace();
  const first = input.peek();
  if (first === 0x7b) yield* readJson(input);
  else if (first === 0x3c) yield* readXml(input);
  else input.fail(first < 0 ? 'the dump is empty' : 'not a snapshot dump (it starts with neither "{" nor "<")');
}

// ---------------------------------------------------------------- JSON

type Token = { t: 'punct'; v: string } | { t: 'string'; v: string } | { t: 'number'; v: number } | { t: 'literal'; v: boolean | null };

function jsonToken(input: Input): Token {
  input.skipSpace();
  const c = input.take();
  if (c < 0) input.fail('unexpected end of the dump');
  const ch = String.fromCharCode(c);
  if ('{}[]:,'.includes(ch)) return { t: 'punct', v: ch };
  if (ch === '"') return { t: 'string', v: jsonString(input) };
  if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
    let text = ch;
    for (let d = input.peek(); isNumberByte(d); d = input.peek()) {
      text += String.fromCharCode(input.take());
      if (text.length > MAX_TOKEN_BYTES) input.fail('number too long');
    }
    if (!/^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(text)) input.fail(`bad number ${text}`);
    return { t: 'number', v: Number(text) };
  }
  if (/[a-z]/.test(ch)) {
    let word = ch;
    for (let d = input.peek(); d >= 0 && /[a-z]/.test(String.fromCharCode(d)) && word.length < 8; d = input.peek()) {
      word += String.fromCharCode(input.take());
    }
    if (word === 'true' || word === 'false') return { t: 'literal', v: word === 'true' };
    if (word === 'null') return { t: 'literal', v: null };
    input.fail(`unexpected ${word}`);
  }
  return input.fail(`unexpected character ${JSON.stringify(ch)}`);
}

/** Digits, sign, point and exponent: the bytes a JSON number is made of. */
function isNumberByte(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45;
}

function jsonString(input: Input): string {
  const bytes: number[] = [];
  for (;;) {
    const c = input.take();
    if (c < 0 || c === 0x0a) input.fail('unterminated string');
    if (c === 0x22) break;
    if (bytes.length > MAX_TOKEN_BYTES) input.fail('string too long');
    if (c !== 0x5c) {
      bytes.push(c);
      continue;
    }
    const e = String.fromCharCode(input.take());
    const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
    if (e in simple) bytes.push(...Buffer.from(simple[e]));
    else if (e === 'u') {
      let hex = '';
      for (let i = 0; i < 4; i++) hex += String.fromCharCode(input.take());
      if (!/^[0-9a-fA-F]{4}$/.test(hex)) input.fail(`bad escape \\u${hex}`);
      bytes.push(...Buffer.from(String.fromCharCode(parseInt(hex, 16))));
    } else input.fail(`bad escape \\${e}`);
  }
  return Buffer.from(bytes).toString('utf8');
}

function expectPunct(input: Input, tok: Token, v: string): void {
  if (tok.t !== 'punct' || tok.v !== v) input.fail(`expected "${v}"`);
}

/** A small value (the header's fields): depth-limited. */
function jsonValue(input: Input, tok: Token, depth = 0): unknown {
  if (depth > 8) input.fail('nested too deeply');
  if (tok.t !== 'punct') return tok.v;
  if (tok.v === '[') {
    const out: unknown[] = [];
    let t = jsonToken(input);
    if (t.t === 'punct' && t.v === ']') return out;
    for (;;) {
      out.push(jsonValue(input, t, depth + 1));
      if (out.length > 64) input.fail('array too long here');
      t = jsonToken(input);
      if (t.t === 'punct' && t.v === ']') return out;
      expectPunct(input, t, ',');
      t = jsonToken(input);
    }
  }
  if (tok.v === '{') {
    const out: Record<string, unknown> = {};
    let t = jsonToken(input);
    if (t.t === 'punct' && t.v === '}') return out;
    for (;;) {
      if (t.t !== 'string') input.fail('expected a key');
      const key = t.v as string;
      expectPunct(input, jsonToken(input), ':');
      out[key] = jsonValue(input, jsonToken(input), depth + 1);
      if (Object.keys(out).length > 64) input.fail('object too large here');
      t = jsonToken(input);
      if (t.t === 'punct' && t.v === '}') return out;
      expectPunct(input, t, ',');
      t = jsonToken(input);
    }
  }
  return input.fail(`unexpected "${tok.v}"`);
}

function* readJson(input: Input): Generator<DumpEvent> {
  expectPunct(input, jsonToken(input), '{');
  const fields: Record<string, unknown> = {};
  let sawEntries = false;
  let t = jsonToken(input);
  if (t.t === 'punct' && t.v === '}') input.fail('the dump has no "exceptions" array');
  for (;;) {
    if (t.t !== 'string') input.fail('expected a key');
    const key = t.v as string;
    expectPunct(input, jsonToken(input), ':');
    if (key === 'exceptions') {
      if (sawEntries) input.fail('"exceptions" given twice');
      sawEntries = true;
      const header = fields.header;
      if (typeof header !== 'object' || header === null) input.fail('"header" must come before "exceptions"');
      yield { kind: 'header', header: validateDumpHeader({ ...fields, ...(header as object) }, `dump line ${input.line}`) };
      yield* jsonEntries(input);
    } else {
      if (sawEntries) input.fail(`"${key}" after "exceptions"`);
      if (key in fields) input.fail(`"${key}" given twice`);
      fields[key] = jsonValue(input, jsonToken(input));
    }
    t = jsonToken(input);
    if (t.t === 'punct' && t.v === '}') break;
    expectPunct(input, t, ',');
    t = jsonToken(input);
  }
  if (!sawEntries) input.fail('the dump has no "exceptions" array');
  input.skipSpace();
  if (input.peek() >= 0) input.fail('text after the end of the dump');
}

function* jsonEntries(input: Input): Generator<DumpEvent> {
  expectPunct(input, jsonToken(input), '[');
  let t = jsonToken(input);
  if (t.t === 'punct' && t.v === ']') return;
  for (let index = 0; ; index++) {
    if (t.t !== 'punct' || t.v !== '{') input.fail(`exception ${index}: expected { "oldChunk": N, "newChunk": N }`);
    yield jsonEntry(input, index);
    t = jsonToken(input);
    if (t.t === 'punct' && t.v === ']') return;
    expectPunct(input, t, ',');
    t = jsonToken(input);
  }
}

/** One `{ "oldChunk": N, "newChunk": N }` after its "{", the keys in either order. */
function jsonEntry(input: Input, index: number): DumpEvent {
  let oldChunk = -1;
  let newChunk = -1;
  for (let member = 0; ; member++) {
    const key = jsonToken(input);
    if (key.t !== 'string' || (key.v !== 'oldChunk' && key.v !== 'newChunk') || member > 1) {
      input.fail(`exception ${index}: expected exactly "oldChunk" and "newChunk"`);
    }
    expectPunct(input, jsonToken(input), ':');
    const value = chunkNumber(input, jsonToken(input).v, index);
    if (key.v === 'oldChunk') {
      if (oldChunk >= 0) input.fail(`exception ${index}: expected exactly "oldChunk" and "newChunk"`);
      oldChunk = value;
    } else {
      if (newChunk >= 0) input.fail(`exception ${index}: expected exactly "oldChunk" and "newChunk"`);
      newChunk = value;
    }
    const t = jsonToken(input);
    if (t.t === 'punct' && t.v === '}') break;
    expectPunct(input, t, ',');
  }
  if (oldChunk < 0 || newChunk < 0) input.fail(`exception ${index}: expected exactly "oldChunk" and "newChunk"`);
  return { kind: 'entry', oldChunk, newChunk };
}

function chunkNumber(input: Input, v: unknown, index: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    input.fail(`exception ${index}: a chunk number must be a whole number below 2^53`);
  return v as number;
}

// ---------------------------------------------------------------- XML

interface Tag {
  name: string;
  closing: boolean;
  selfClosing: boolean;
  attrs: Record<string, string>;
}

const tagBytes = Buffer.alloc(MAX_TOKEN_BYTES);
/** An entry exactly as snapshot-dump writes it: read without the general attribute parsing. */
const EXCEPTION_TAG = /^exception old_chunk="(\d+)" new_chunk="(\d+)"\/$/;

function endsWithDashes(n: number): boolean {
  return n >= 5 && tagBytes[n - 1] === 0x2d && tagBytes[n - 2] === 0x2d;
}

/** The next tag, skipping the declaration and comments; undefined at the end. Text between tags must be blank. */
function xmlTag(input: Input): Tag | undefined {
  for (;;) {
    input.skipSpace();
    const c = input.take();
    if (c < 0) return undefined;
    if (c !== 0x3c) input.fail('text outside a tag');
    let n = 0;
    for (;;) {
      const d = input.take();
      if (d < 0) input.fail('unterminated tag');
      if (d === 0x3e && !(n >= 3 && tagBytes[0] === 0x21 && tagBytes[1] === 0x2d && tagBytes[2] === 0x2d && !endsWithDashes(n))) break;
      if (n >= MAX_TOKEN_BYTES) input.fail('tag too long');
      tagBytes[n++] = d;
    }
    const text = tagBytes.toString('latin1', 0, n);
    if (text.startsWith('?') || text.startsWith('!--')) continue;
    const entry = EXCEPTION_TAG.exec(text);
    if (entry) return { name: 'exception', closing: false, selfClosing: true, attrs: { old_chunk: entry[1], new_chunk: entry[2] } };
    const closing = text.startsWith('/');
    const selfClosing = text.endsWith('/');
    const body = text.slice(closing ? 1 : 0, selfClosing ? -1 : undefined);
    const m = /^([A-Za-z_][\w.-]*)((?:\s+[A-Za-z_][\w.-]*\s*=\s*"[^"<&]*")*)\s*$/.exec(body);
    if (!m) input.fail(`malformed tag <${text}>`);
    const attrs: Record<string, string> = {};
    for (const a of m[2].matchAll(/([A-Za-z_][\w.-]*)\s*=\s*"([^"]*)"/g)) {
      if (a[1] in attrs) input.fail(`attribute ${a[1]} given twice`);
      attrs[a[1]] = a[2];
    }
    return { name: m[1], closing, selfClosing, attrs };
  }
}

function xmlNumber(input: Input, v: string | undefined, what: string): number {
  if (v === undefined || !/^(0|[1-9]\d{0,15})$/.test(v) || !Number.isSafeInteger(Number(v)))
    input.fail(`${what} must be a whole number below 2^53`);
  return Number(v);
}

function* readXml(input: Input): Generator<DumpEvent> {
  const root = xmlTag(input);
  if (!root || root.name !== 'snapshot_dump' || root.closing || root.selfClosing) input.fail('expected <snapshot_dump ...>');
  const a = root.attrs;
  const num = (k: string) => (a[k] === undefined ? undefined : xmlNumber(input, a[k], k));
  const valid = a.valid === '1' ? true : a.valid === '0' ? false : undefined;
  yield {
    kind: 'header',
    header: validateDumpHeader(
      {
        format: a.format,
        formatVersion: num('format_version'),
        cowSectors: num('cow_sectors'),
        magic: a.magic,
        valid,
        version: num('version'),
        chunkSectors: num('chunk_sectors'),
        exceptionsPerArea: num('exceptions_per_area'),
      },
      `dump line ${input.line}`,
    ),
  };
  for (let index = 0; ; index++) {
    const tag = xmlTag(input);
    if (!tag) input.fail('unterminated <snapshot_dump>');
    if (tag.closing && tag.name === 'snapshot_dump') break;
    if (tag.name !== 'exception' || !tag.selfClosing) input.fail(`expected <exception old_chunk="N" new_chunk="N"/> or </snapshot_dump>`);
    const keys = Object.keys(tag.attrs).sort().join(',');
    if (keys !== 'new_chunk,old_chunk') input.fail(`exception ${index}: expected exactly old_chunk and new_chunk`);
    yield {
      kind: 'entry',
      oldChunk: xmlNumber(input, tag.attrs.old_chunk, `exception ${index}: old_chunk`),
      newChunk: xmlNumber(input, tag.attrs.new_chunk, `exception ${index}: new_chunk`),
    };
  }
  if (xmlTag(input)) input.fail('text after the end of the dump');
}
