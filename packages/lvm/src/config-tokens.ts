import { LvmError } from './errors';

export type TokenType = 'word' | 'string' | 'number' | '{' | '}' | '[' | ']' | '=' | ',' | 'end';

export interface Token {
  type: TokenType;
  /** The word, the unescaped string, or the number's text. */
  text: string;
  line: number;
  column: number;
}

const PUNCTUATION = new Set(['{', '}', '[', ']', '=', ',']);
/** What ends a bare word: white space, a comment, punctuation, a quote. */
const WORD_END = new Set([' ', '\t', '\n', '\r', '\f', '\v', '#', '"', "'", ...PUNCTUATION]);
const NUMBER = /^[+-]?(\d+(\.\d+)?|\.\d+)$/;

/**
 * Split LVM2's configuration text (the grammar of libdm's config reader)
 * into tokens: `#` comments to the end of the line are dropped, strings are
 * double- or single-quoted with backslash escapes, and a bare run of other
 * characters is a number when it reads as one and a word otherwise.
 */
export function tokenize(text: string, source = 'metadata'): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const fail = (message: string, at: number, atLine = line, atLineStart = lineStart): never => {
    throw new LvmError('syntax', `${source} line ${atLine} column ${at - atLineStart + 1}: ${message}`);
  };
  while (i < text.length) {
    const c = text[i];
    if (c === '\n') {
      line++;
      lineStart = ++i;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v') {
      i++;
      continue;
    }
    if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
      continue;
    }
    const column = i - lineStart + 1;
    if (PUNCTUATION.has(c)) {
      tokens.push({ type: c as TokenType, text: c, line, column });
      i++;
      continue;
    }
    if (c === '"' || c === "'") {
      const startLine = line;
      const startLineStart = lineStart;
      const start = i;
      let value = '';
      i++;
      for (;;) {
        if (i >= text.length) fail('string is not closed', start, startLine, startLineStart);
        const d = text[i];
        if (d === c) break;
        if (d === '\\') {
          if (i + 1 >= text.length) fail('string is not closed', start, startLine, startLineStart);
          value += text[i + 1];
          i += 2;
          continue;
        }
        if (d === '\n') {
          line++;
          lineStart = i + 1;
        }
        value += d;
        i++;
      }
      i++;
      tokens.push({ type: 'string', text: value, line: startLine, column });
      continue;
    }
    const start = i;
    while (i < text.length && !WORD_END.has(text[i])) i++;
    const word = text.slice(start, i);
    tokens.push({ type: NUMBER.test(word) ? 'number' : 'word', text: word, line, column });
  }
  tokens.push({ type: 'end', text: '', line, column: i - lineStart + 1 });
  return tokens;
}
