/**
 * `dmtool serve`'s TLS options, checked as a whole before anything is
 * opened: which files, which mode, and whether serving in plaintext is
 * what the operator asked for. See docs/nbd.md#tls.
 */
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { certificatesDirFiles, ServerTls, ServerTlsFiles } from '@dmtool/nbd';
import { CliError } from './errors';

export type TlsMode = 'off' | 'on' | 'require';

export interface ServeTlsOptions {
  tls?: TlsMode;
  tlsCertificates?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsVerifyClient: boolean;
}

/** Whether a --tcp host is this machine only (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  return net.isIPv6(host) && /^(0*:)*:?0*1$/.test(host);
}

function filesOf(o: ServeTlsOptions): ServerTlsFiles | undefined {
  const explicit = o.tlsCert !== undefined || o.tlsKey !== undefined || o.tlsCa !== undefined;
  if (o.tlsCertificates !== undefined) {
    if (explicit) throw new CliError('usage', 'give --tls-certificates DIR or --tls-cert FILE --tls-key FILE [--tls-ca FILE], not both');
    const f = certificatesDirFiles(path.resolve(o.tlsCertificates), 'server');
    for (const file of [f.cert, f.key]) {
      if (!fs.existsSync(file)) throw new CliError('usage', `--tls-certificates ${o.tlsCertificates}: ${path.basename(file)} is missing`);
    }
    return { cert: f.cert, key: f.key, ...(fs.existsSync(f.ca) && { ca: f.ca }) };
  }
  if (!explicit) return undefined;
  if (o.tlsCert === undefined || o.tlsKey === undefined) throw new CliError('usage', '--tls-cert and --tls-key go together');
  return { cert: path.resolve(o.tlsCert), key: path.resolve(o.tlsKey), ...(o.tlsCa !== undefined && { ca: path.resolve(o.tlsCa) }) };
}

/** A private key others than its owner may read or change is refused, as ssh refuses one. */
function checkKeyPrivate(keyFile: string): void {
  let mode: number;
  try {
    mode = fs.statSync(keyFile).mode & 0o777;
  } catch (e) {
    throw new CliError('usage', `cannot read the private key ${keyFile}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  if (mode & 0o077) {
    throw new CliError('usage', `the private key ${keyFile} is open to others than its owner (mode 0${mode.toString(8)}); chmod 600 it`);
  }
}

/**
 * The server's TLS from the options: undefined for plaintext. Certificates
 * without --tls mean `require`; `--tls on|require` without them, `--tls off`
 * with them, and plaintext on a non-loopback --tcp address without an
 * explicit `--tls off` are refused.
 */
export function serveTlsOf(o: ServeTlsOptions, tcpHost: string | undefined): ServerTls | undefined {
  const files = filesOf(o);
  const mode: TlsMode = o.tls ?? (files ? 'require' : 'off');
  if (mode === 'off') {
    if (files || o.tlsVerifyClient) throw new CliError('usage', '--tls off takes no certificates and no --tls-verify-client');
    if (tcpHost !== undefined && o.tls === undefined && !isLoopbackHost(tcpHost)) {
      throw new CliError(
        'usage',
        `--tcp ${tcpHost} is reachable from other machines: give certificates (--tls-certificates DIR), or --tls off to serve in plaintext on purpose`,
      );
    }
    return undefined;
  }
  if (!files) throw new CliError('usage', `--tls ${mode} needs --tls-certificates DIR, or --tls-cert FILE and --tls-key FILE`);
  if (o.tlsVerifyClient && files.ca === undefined) {
    throw new CliError('usage', '--tls-verify-client needs a CA certificate (--tls-ca FILE, or ca-cert.pem in --tls-certificates DIR)');
  }
  checkKeyPrivate(files.key);
  return { mode, verifyClient: o.tlsVerifyClient, files };
}
