import { execFile } from 'child_process';
import * as path from 'path';

/**
 * dmtool(1), generated from the --help of dmtool and of every command, so
 * the manual says exactly what the help says (`npm run man` writes
 * packages/cli/man/dmtool.1; a test checks the committed page is current).
 */
export interface HelpTexts {
  version: string;
  /** `dmtool --help`. */
  main: string;
  /** `dmtool NAME --help` for each command, in the order the main help lists them. */
  commands: { name: string; help: string }[];
}

/** The help texts of the CLI at `entry` (bin/dmtool.js), read by running it. */
export async function collectHelp(entry: string, version: string): Promise<HelpTexts> {
  const help = (args: string[]) =>
    new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [entry, ...args, '--help'], { encoding: 'utf8', maxBuffer: 1 << 20 }, (e, stdout) =>
        e ? reject(e) : resolve(stdout),
      ),
    );
  const main = await help([]);
  const names = commandNames(main);
  const commands = await Promise.all(names.map(async (name) => ({ name, help: await help([name]) })));
  // `completion --help` prints the completion script itself: the main help's line is its entry.
  return { version, main, commands: commands.filter((c) => c.help.startsWith(`dmtool ${c.name}`)) };
}

/** The command names of the main help's "Commands:" section. */
export function commandNames(mainHelp: string): string[] {
  return sections(mainHelp)
    .filter((s) => s.title === 'Commands:')
    .flatMap((s) => s.lines.map((l) => /^\s+dmtool (\S+)/.exec(l)?.[1]).filter((n): n is string => n !== undefined));
}

/** The page in groff -man. */
export function renderManPage(h: HelpTexts): string {
  const out: string[] = [
    `.\\" Generated from dmtool --help by packages/cli/src/man/man-page.ts (npm run man); do not edit.`,
    `.TH DMTOOL 1 "" "dmtool ${escape(h.version)}" "User Commands"`,
    '.SH NAME',
    `dmtool \\- ${escape(firstParagraph(h.main, 1))}`,
    '.SH SYNOPSIS',
    '.B dmtool',
    '.I command',
    '[\\fIoptions\\fR]',
    '.SH DESCRIPTION',
  ];
  const main = sections(h.main);
  for (const s of main) {
    if (s.title === 'Commands:') {
      for (const line of s.lines) {
        const m = /^\s+(dmtool \S+.*?)\s{2,}(\S.*)$/.exec(line);
        if (!m) continue;
        out.push('.TP', `.B ${escape(m[1])}`, escape(m[2]));
      }
    } else if (s.title === undefined) {
      for (const line of s.lines.slice(s === main[0] ? 1 : 0)) out.push('.PP', escape(line));
    }
  }
  out.push('.SH COMMANDS');
  for (const c of h.commands) out.push(...renderCommand(c.name, c.help));
  out.push('.SH SEE ALSO', 'README.md and docs/ of the dmtool sources.', '');
  return out.join('\n');
}

function renderCommand(name: string, help: string): string[] {
  const out: string[] = [];
  const [usage, ...rest] = sections(help);
  out.push(`.SS ${quoted(usage.lines[0] ?? `dmtool ${name}`)}`);
  for (const line of usage.lines.slice(1)) out.push('.PP', escape(line));
  for (const s of rest) {
    if (s.title === 'Examples:') {
      out.push('.PP', 'Examples:', '.RS');
      for (let i = 0; i < s.lines.length; i++) {
        const cmd = s.lines[i].trim();
        const what = s.lines[i + 1]?.startsWith('      ') ? s.lines[++i].trim() : '';
        out.push('.PP', '.nf', `\\f(CR${escape(cmd)}\\fR`, '.fi', ...(what ? [escape(what)] : []));
      }
      out.push('.RE');
    } else if (s.title !== undefined) {
      out.push('.PP', escape(s.title), '.RS');
      for (const line of s.lines) {
        const m = /^\s+(\S.*?)\s{2,}(\S.*)$/.exec(line);
        if (m) out.push('.TP', `.B ${escape(m[1])}`, escape(m[2]));
        else out.push('.PP', escape(line.trim()));
      }
      out.push('.RE');
    } else {
      for (const line of s.lines) out.push('.PP', escape(line));
    }
  }
  return out;
}

interface Section {
  /** "Options:", "Examples:" ...; undefined for plain text. */
  title?: string;
  lines: string[];
}

/** Help text cut at blank lines; a block whose first line ends with ":" is a titled section. */
function sections(help: string): Section[] {
  return help
    .trimEnd()
    .split(/\n\s*\n/)
    .map((block) => block.split('\n').filter((l) => l.trim() !== ''))
    .filter((lines) => lines.length > 0)
    .map((lines) => (/^[A-Z][A-Za-z ]*:$/.test(lines[0]) ? { title: lines[0], lines: lines.slice(1) } : { lines }));
}

function firstParagraph(help: string, index: number): string {
  return sections(help)[index]?.lines.join(' ') ?? '';
}

/** Text for groff: backslashes and hyphens escaped, anything beyond ASCII as \[uXXXX], no line starting as a request. */
export function escape(text: string): string {
  const t = text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/[^\t -~]/gu, (c) => `\\[u${(c.codePointAt(0) as number).toString(16).toUpperCase().padStart(4, '0')}]`);
  return /^[.']/.test(t) ? `\\&${t}` : t;
}

function quoted(text: string): string {
  return `"${escape(text).replace(/"/g, '\\(dq')}"`;
}

/** Where the page lives in the package. */
export const MAN_PAGE_PATH = path.join(__dirname, '..', '..', 'man', 'dmtool.1');
