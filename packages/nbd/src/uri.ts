/**
 * NBD URIs in the forms libnbd defines (doc/uri.md of NetworkBlockDevice/nbd):
 * `nbd://host[:port]/export` and `nbd+unix:///export?socket=PATH`, and their
 * TLS forms `nbds://` and `nbds+unix://` with the query parameters
 * `tls-certificates=DIR`, `tls-hostname=NAME` and `tls-verify-peer=0|1`.
 * Pure: a string in, an address out, no I/O.
 */
import { DmtoolError } from '@dmtool/devices';
import { posix } from 'path';

/** The IANA port of NBD, used when a URI gives none. */
export const NBD_DEFAULT_PORT = 10809;

export type NbdUriErrorReason = 'bad-uri' | 'tls-unsupported';

/** A name that looks like an NBD URI but cannot be used; refused before anything is opened. */
export class NbdUriError extends DmtoolError<NbdUriErrorReason> {
  constructor(reason: NbdUriErrorReason, uri: string, detail: string) {
    super('bad-input', reason, 'EINVAL', `${uri}: ${detail}`, { path: uri });
    this.name = 'NbdUriError';
  }
}

export type NbdAddress = { transport: 'tcp'; host: string; port: number } | { transport: 'unix'; socketPath: string };

/** What an `nbds://` or `nbds+unix://` URI asks of TLS. */
export interface NbdUriTls {
  /** ca-cert.pem, and optionally client-cert.pem and client-key.pem; absolute. */
  certificatesDir?: string;
  /** The name the server's certificate must hold: `tls-hostname`, else the URI's host (none for a unix socket). */
  hostname?: string;
  /** `tls-verify-peer=0` turns the check of the server's certificate off. */
  verifyPeer: boolean;
}

export interface NbdUri {
  exportName: string;
  address: NbdAddress;
  /** Present for the TLS schemes: the connection is upgraded with NBD_OPT_STARTTLS, or refused. */
  tls?: NbdUriTls;
  /** The URI as errors print it: userinfo and every query parameter but `socket` left out. */
  display: string;
}

const TLS_PARAMETERS = ['tls-certificates', 'tls-hostname', 'tls-verify-peer'];

/** Whether a device name is meant as an NBD URI (any nbd scheme, supported or not). */
export function looksLikeNbdUri(name: string): boolean {
  return /^nbds?(\+[a-z0-9]+)?:\/\//i.test(name);
}

/** Userinfo (`user:password@`) removed, for messages about a URI that failed to parse. */
export function redactUserinfo(uri: string): string {
  return uri.replace(/^([a-z0-9+]+:\/\/)[^/@?#]*@/i, '$1');
}

/** Percent-decode, refusing a malformed escape. */
function decode(uri: string, what: string, s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new NbdUriError('bad-uri', uri, `the ${what} has a malformed %-escape`);
  }
}

/**
 * Parse an NBD URI. `cwd` resolves a relative `socket=` path, so two
 * spellings of one socket give one `display` (and one device identity).
 */
export function parseNbdUri(uri: string, cwd = '/'): NbdUri {
  const shown = redactUserinfo(uri);
  const m = /^([a-z0-9+]+):\/\/([^/?#]*)(\/[^?#]*)?(\?[^#]*)?(#.*)?$/i.exec(uri);
  if (!m) throw new NbdUriError('bad-uri', shown, 'not an NBD URI (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)');
  const scheme = m[1].toLowerCase();
  const authority = m[2].replace(/^[^@]*@/, '');
  const exportName = decode(shown, 'export name', (m[3] ?? '/').slice(1));
  if (m[5] !== undefined) throw new NbdUriError('bad-uri', shown, 'an NBD URI has no #fragment');
  const query = new Map<string, string>();
  for (const part of (m[4] ?? '?').slice(1).split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = decode(shown, 'query', eq < 0 ? part : part.slice(0, eq));
    if (query.has(key)) throw new NbdUriError('bad-uri', shown, `query parameter ${key} is given twice`);
    query.set(key, decode(shown, 'query', eq < 0 ? '' : part.slice(eq + 1)));
  }
  const tlsScheme = scheme === 'nbds' || scheme === 'nbds+unix';
  if (query.has('tls-psk-file')) {
    throw new NbdUriError(
      'tls-unsupported',
      shown,
      'TLS with a pre-shared key (tls-psk-file) is not supported; use X.509 (tls-certificates=DIR)',
    );
  }
  for (const key of query.keys()) {
    if (TLS_PARAMETERS.includes(key)) {
      if (!tlsScheme) throw new NbdUriError('bad-uri', shown, `${key}= needs a TLS URI (nbds:// or nbds+unix://)`);
    } else if (key !== 'socket') {
      throw new NbdUriError(
        'bad-uri',
        shown,
        `query parameter ${key} is not supported (socket=, ${TLS_PARAMETERS.map((k) => `${k}=`).join(', ')})`,
      );
    }
  }
  const tls = tlsScheme ? tlsOf(shown, query, cwd) : undefined;
  const exportPart = encodeURIComponent(exportName).replace(/%2F/g, '/');
  if (scheme === 'nbd+unix' || scheme === 'nbds+unix') {
    if (authority !== '') throw new NbdUriError('bad-uri', shown, `${scheme}:// takes no host (${scheme}:///EXPORT?socket=PATH)`);
    const socket = query.get('socket');
    if (!socket) throw new NbdUriError('bad-uri', shown, `${scheme}:// needs ?socket=PATH`);
    const socketPath = posix.resolve(cwd, socket);
    return {
      exportName,
      address: { transport: 'unix', socketPath },
      ...(tls && { tls }),
      display: `${scheme}:///${exportPart}?socket=${socketPath}`,
    };
  }
  if (scheme !== 'nbd' && scheme !== 'nbds') {
    throw new NbdUriError('bad-uri', shown, `scheme ${scheme}:// is not supported (nbd://, nbd+unix://, nbds://, nbds+unix://)`);
  }
  if (query.has('socket')) throw new NbdUriError('bad-uri', shown, 'socket= belongs to nbd+unix:// URIs');
  const hp = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/i.exec(authority);
  if (!hp) throw new NbdUriError('bad-uri', shown, 'nbd:// needs a host (nbd://HOST[:PORT]/EXPORT)');
  const port = hp[2] === undefined ? NBD_DEFAULT_PORT : Number(hp[2]);
  if (port < 1 || port > 65535) throw new NbdUriError('bad-uri', shown, `port ${hp[2]} is outside 1-65535`);
  const host = hp[1].startsWith('[') ? hp[1].slice(1, -1) : hp[1].toLowerCase();
  const hostPart = host.includes(':') ? `[${host}]` : host;
  return {
    exportName,
    address: { transport: 'tcp', host, port },
    ...(tls && { tls: { ...tls, hostname: tls.hostname ?? host } }),
    display: `${scheme}://${hostPart}:${port}/${exportPart}`,
  };
}

function tlsOf(shown: string, query: Map<string, string>, cwd: string): NbdUriTls {
  const dir = query.get('tls-certificates');
  if (dir === '') throw new NbdUriError('bad-uri', shown, 'tls-certificates= needs a directory');
  const hostname = query.get('tls-hostname');
  if (hostname === '') throw new NbdUriError('bad-uri', shown, 'tls-hostname= needs a name');
  const verify = query.get('tls-verify-peer') ?? '1';
  if (!['0', '1', 'false', 'true'].includes(verify)) {
    throw new NbdUriError('bad-uri', shown, `tls-verify-peer=${verify} is not 0, 1, false or true`);
  }
  return {
    ...(dir !== undefined && { certificatesDir: posix.resolve(cwd, dir) }),
    ...(hostname !== undefined && { hostname }),
    verifyPeer: verify === '1' || verify === 'true',
  };
}
