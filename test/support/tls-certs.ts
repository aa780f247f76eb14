/**
 * X.509 material for the TLS tests, made with openssl in a test's own
 * folder: a CA, a server certificate (localhost, 127.0.0.1) and a client
 * certificate, laid out as gnutls, qemu and nbdkit name them. Keys are
 * mode 0600, as `dmtool serve` demands.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export interface CertDirs {
  /** ca-cert.pem, server-cert.pem, server-key.pem: `--tls-certificates` of a server (nbdkit, qemu, dmtool serve). */
  server: string;
  /** ca-cert.pem, client-cert.pem, client-key.pem: `tls-certificates=` of a client (libnbd, qemu, dmtool). */
  client: string;
  /** ca-cert.pem only: a client without a certificate of its own. */
  caOnly: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: 30000 });
}

/** A CA and its key in `dir` (ca-cert.pem, ca-key.pem). */
function makeCa(dir: string, name: string): void {
  openssl(
    [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
      '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-subj', `/CN=${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  ); // prettier-ignore
}

/** A key and a certificate signed by the CA in `caDir`, written as `<prefix>-key.pem` and `<prefix>-cert.pem` in `dir`. */
function makeLeaf(dir: string, caDir: string, prefix: string, cn: string, purpose: 'serverAuth' | 'clientAuth', san?: string): void {
  const ext = [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage=${purpose}`,
    ...(san ? [`subjectAltName=${san}`] : []),
  ].join('\n');
  fs.writeFileSync(path.join(dir, `${prefix}.ext`), `${ext}\n`);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${prefix}-key.pem`, '-out', `${prefix}.csr`, '-subj', `/CN=${cn}`], dir);
  openssl(
    [
      'x509', '-req', '-in', `${prefix}.csr`, '-sha256', '-days', '2', '-CA', path.join(caDir, 'ca-cert.pem'),
      '-CAkey', path.join(caDir, 'ca-key.pem'), '-set_serial', String(Date.now()), '-extfile', `${prefix}.ext`,
      '-out', `${prefix}-cert.pem`,
    ],
    dir,
  ); // prettier-ignore
  fs.rmSync(path.join(dir, `${prefix}.csr`));
  fs.rmSync(path.join(dir, `${prefix}.ext`));
  fs.chmodSync(path.join(dir, `${prefix}-key.pem`), 0o600);
}

/** Certificates for server and client under `root`, signed by one CA (named `caName`). */
export function makeCerts(root: string, caName = 'dmtool test CA'): CertDirs {
  const ca = path.join(root, 'ca');
  const dirs: CertDirs = { server: path.join(root, 'server'), client: path.join(root, 'client'), caOnly: path.join(root, 'ca-only') };
  for (const d of [ca, ...Object.values(dirs)]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  makeCa(ca, caName);
  makeLeaf(dirs.server, ca, 'server', 'localhost', 'serverAuth', 'DNS:localhost,IP:127.0.0.1');
  makeLeaf(dirs.client, ca, 'client', 'dmtool-test-client', 'clientAuth');
  for (const d of Object.values(dirs)) fs.copyFileSync(path.join(ca, 'ca-cert.pem'), path.join(d, 'ca-cert.pem'));
  return dirs;
}
