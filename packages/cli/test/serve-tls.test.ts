import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { isLoopbackHost, ServeTlsOptions, serveTlsOf } from '../src/util/serve-tls';

test('loopback hosts: 127.0.0.0/8, ::1 in any spelling, localhost; nothing else', () => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '0000::0001', 'localhost'])
    expect([h, isLoopbackHost(h)]).toEqual([h, true]);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '::ffff:127.0.0.1', '::2', 'localhost.example', 'example.com'])
    expect([h, isLoopbackHost(h)]).toEqual([h, false]);
});

describe('serveTlsOf', () => {
  let dir: string;
  const base: ServeTlsOptions = { tlsVerifyClient: false };
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-serve-tls-'));
    for (const f of ['server-cert.pem', 'server-key.pem', 'ca-cert.pem']) fs.writeFileSync(path.join(dir, f), 'x', { mode: 0o600 });
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const refusal = (o: ServeTlsOptions, tcpHost?: string) => {
    try {
      serveTlsOf(o, tcpHost);
    } catch (e) {
      return [(e as { kind: string }).kind, (e as Error).message];
    }
    return undefined;
  };

  test('no TLS options: plaintext on a unix socket and on loopback TCP; refused on any other address', () => {
    expect(serveTlsOf(base, undefined)).toBeUndefined();
    expect(serveTlsOf(base, '127.0.0.1')).toBeUndefined();
    expect(serveTlsOf(base, '::1')).toBeUndefined();
    expect(refusal(base, '0.0.0.0')).toEqual([
      'bad-input',
      '--tcp 0.0.0.0 is reachable from other machines: give certificates (--tls-certificates DIR), or --tls off to serve in plaintext on purpose',
    ]);
    expect(serveTlsOf({ ...base, tls: 'off' }, '0.0.0.0')).toBeUndefined();
  });

  test("certificates make require the default; the directory layout is nbdkit and qemu-nbd's", () => {
    expect(serveTlsOf({ ...base, tlsCertificates: dir }, '0.0.0.0')).toEqual({
      mode: 'require',
      verifyClient: false,
      files: { cert: path.join(dir, 'server-cert.pem'), key: path.join(dir, 'server-key.pem'), ca: path.join(dir, 'ca-cert.pem') },
    });
    fs.rmSync(path.join(dir, 'ca-cert.pem'));
    expect(serveTlsOf({ ...base, tls: 'on', tlsCertificates: dir }, undefined)?.files).toEqual({
      cert: path.join(dir, 'server-cert.pem'),
      key: path.join(dir, 'server-key.pem'),
    });
    expect(refusal({ ...base, tlsCertificates: dir, tlsVerifyClient: true })).toEqual([
      'bad-input',
      '--tls-verify-client needs a CA certificate (--tls-ca FILE, or ca-cert.pem in --tls-certificates DIR)',
    ]);
  });

  test('contradictions are refused', () => {
    const cert = path.join(dir, 'server-cert.pem');
    const key = path.join(dir, 'server-key.pem');
    expect(refusal({ ...base, tls: 'off', tlsCertificates: dir })).toEqual([
      'bad-input',
      '--tls off takes no certificates and no --tls-verify-client',
    ]);
    expect(refusal({ ...base, tls: 'require' })).toEqual([
      'bad-input',
      '--tls require needs --tls-certificates DIR, or --tls-cert FILE and --tls-key FILE',
    ]);
    expect(refusal({ ...base, tlsCertificates: dir, tlsCert: cert })).toEqual([
      'bad-input',
      'give --tls-certificates DIR or --tls-cert FILE --tls-key FILE [--tls-ca FILE], not both',
    ]);
    expect(refusal({ ...base, tlsCert: cert })).toEqual(['bad-input', '--tls-cert and --tls-key go together']);
    fs.chmodSync(key, 0o640);
    expect(refusal({ ...base, tlsCert: cert, tlsKey: key })).toEqual([
      'bad-input',
      `the private key ${key} is open to others than its owner (mode 0640); chmod 600 it`,
    ]);
    fs.chmodSync(key, 0o400);
    expect(serveTlsOf({ ...base, tlsCert: cert, tlsKey: key }, undefined)).toEqual({
      mode: 'require',
      verifyClient: false,
      files: { cert, key },
    });
  });
});
