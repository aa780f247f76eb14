import { nbdIdentity } from '../src/nbd-device';
import { looksLikeNbdUri, NbdUriError, parseNbdUri, redactUserinfo } from '../src/uri';

describe('parseNbdUri', () => {
  test('nbd+unix with an absolute socket path', () => {
    expect(parseNbdUri('nbd+unix:///disk?socket=/run/nbd.sock')).toEqual({
      exportName: 'disk',
      address: { transport: 'unix', socketPath: '/run/nbd.sock' },
      display: 'nbd+unix:///disk?socket=/run/nbd.sock',
    });
  });

  test('a relative socket path is resolved against cwd, so two spellings give one display', () => {
    const a = parseNbdUri('nbd+unix:///disk?socket=s/../nbd.sock', '/tmp/x');
    const b = parseNbdUri('nbd+unix:///disk?socket=/tmp/x/nbd.sock', '/');
    expect(a.display).toBe('nbd+unix:///disk?socket=/tmp/x/nbd.sock');
    expect(a).toEqual(b);
  });

  test('the default export is the empty name', () => {
    expect(parseNbdUri('nbd+unix://?socket=/s').exportName).toBe('');
    expect(parseNbdUri('nbd+unix:///?socket=/s').display).toBe('nbd+unix:///?socket=/s');
  });

  test('nbd:// with host, port, default port, IPv6 and escapes', () => {
    expect(parseNbdUri('nbd://127.0.0.1:10900/exp')).toEqual({
      exportName: 'exp',
      address: { transport: 'tcp', host: '127.0.0.1', port: 10900 },
      display: 'nbd://127.0.0.1:10900/exp',
    });
    expect(parseNbdUri('NBD://Example.ORG/a%20b/c').display).toBe('nbd://example.org:10809/a%20b/c');
    expect(parseNbdUri('nbd://Example.ORG/a%20b/c').exportName).toBe('a b/c');
    expect(parseNbdUri('nbd://[::1]:99/x').address).toEqual({ transport: 'tcp', host: '::1', port: 99 });
    expect(parseNbdUri('nbd://[::1]:99/x').display).toBe('nbd://[::1]:99/x');
  });

  test('userinfo is dropped, never shown', () => {
    const u = parseNbdUri('nbd://alice:secret@host/exp');
    expect(u.display).toBe('nbd://host:10809/exp');
    expect(JSON.stringify(u)).not.toContain('secret');
    expect(redactUserinfo('nbd://alice:secret@host/exp')).toBe('nbd://host/exp');
  });

  test('nbds:// checks the URI host unless tls-hostname names another; verification is on unless turned off', () => {
    expect(parseNbdUri('nbds://Server.example:10900/exp?tls-certificates=certs', '/etc/pki')).toEqual({
      exportName: 'exp',
      address: { transport: 'tcp', host: 'server.example', port: 10900 },
      tls: { certificatesDir: '/etc/pki/certs', hostname: 'server.example', verifyPeer: true },
      display: 'nbds://server.example:10900/exp',
    });
    expect(parseNbdUri('nbds://127.0.0.1/exp?tls-hostname=proxy.example&tls-verify-peer=0').tls).toEqual({
      hostname: 'proxy.example',
      verifyPeer: false,
    });
    expect(parseNbdUri('nbds://h/x?tls-verify-peer=false').tls).toEqual({ hostname: 'h', verifyPeer: false });
    expect(parseNbdUri('nbds://h/x?tls-verify-peer=true').tls).toEqual({ hostname: 'h', verifyPeer: true });
  });

  test('nbds+unix:// checks no name unless tls-hostname gives one; the TLS parameters are not displayed', () => {
    expect(parseNbdUri('nbds+unix:///d?socket=/run/s&tls-certificates=/c')).toEqual({
      exportName: 'd',
      address: { transport: 'unix', socketPath: '/run/s' },
      tls: { certificatesDir: '/c', verifyPeer: true },
      display: 'nbds+unix:///d?socket=/run/s',
    });
    expect(parseNbdUri('nbds+unix:///d?socket=/run/s&tls-hostname=localhost').tls).toEqual({ hostname: 'localhost', verifyPeer: true });
    expect(parseNbdUri('nbds://alice:secret@h/x').display).toBe('nbds://h:10809/x');
  });

  test('an export has one identity with TLS or without, so it cannot be given twice that way', () => {
    expect(nbdIdentity(parseNbdUri('nbds+unix:///d?socket=/s&tls-certificates=/c'))).toBe(
      nbdIdentity(parseNbdUri('nbd+unix:///d?socket=/s')),
    );
    expect(nbdIdentity(parseNbdUri('nbds://h/d'))).toBe('nbd:nbd://h:10809/d');
  });

  const refused: [string, string, string][] = [
    [
      'nbds://host/exp?tls-psk-file=/k',
      'tls-unsupported',
      'nbds://host/exp?tls-psk-file=/k: TLS with a pre-shared key (tls-psk-file) is not supported; use X.509 (tls-certificates=DIR)',
    ],
    [
      'nbd://h/x?tls-certificates=/c',
      'bad-uri',
      'nbd://h/x?tls-certificates=/c: tls-certificates= needs a TLS URI (nbds:// or nbds+unix://)',
    ],
    [
      'nbd+unix:///x?socket=/s&tls-hostname=h',
      'bad-uri',
      'nbd+unix:///x?socket=/s&tls-hostname=h: tls-hostname= needs a TLS URI (nbds:// or nbds+unix://)',
    ],
    ['nbds://h/x?tls-verify-peer=no', 'bad-uri', 'nbds://h/x?tls-verify-peer=no: tls-verify-peer=no is not 0, 1, false or true'],
    ['nbds://h/x?tls-certificates=', 'bad-uri', 'nbds://h/x?tls-certificates=: tls-certificates= needs a directory'],
    ['nbds+unix:///x', 'bad-uri', 'nbds+unix:///x: nbds+unix:// needs ?socket=PATH'],
    ['nbd+unix:///x', 'bad-uri', 'nbd+unix:///x: nbd+unix:// needs ?socket=PATH'],
    ['nbd+unix://host/x?socket=/s', 'bad-uri', 'nbd+unix://host/x?socket=/s: nbd+unix:// takes no host (nbd+unix:///EXPORT?socket=PATH)'],
    ['nbd:///x', 'bad-uri', 'nbd:///x: nbd:// needs a host (nbd://HOST[:PORT]/EXPORT)'],
    ['nbd://h:0/x', 'bad-uri', 'nbd://h:0/x: port 0 is outside 1-65535'],
    ['nbd://h:70000/x', 'bad-uri', 'nbd://h:70000/x: port 70000 is outside 1-65535'],
    ['nbd://h/x?socket=/s', 'bad-uri', 'nbd://h/x?socket=/s: socket= belongs to nbd+unix:// URIs'],
    [
      'nbd+unix:///x?socket=/s&tls=on',
      'bad-uri',
      'nbd+unix:///x?socket=/s&tls=on: query parameter tls is not supported (socket=, tls-certificates=, tls-hostname=, tls-verify-peer=)',
    ],
    ['nbd+unix:///x?socket=/s&socket=/t', 'bad-uri', 'nbd+unix:///x?socket=/s&socket=/t: query parameter socket is given twice'],
    ['nbd://h/%zz', 'bad-uri', 'nbd://h/%zz: the export name has a malformed %-escape'],
    ['nbd://h/x#frag', 'bad-uri', 'nbd://h/x#frag: an NBD URI has no #fragment'],
    ['nbd+vsock:///x', 'bad-uri', 'nbd+vsock:///x: scheme nbd+vsock:// is not supported (nbd://, nbd+unix://, nbds://, nbds+unix://)'],
  ];
  test.each(refused)('%s is refused', (uri, reason, message) => {
    let err: unknown;
    try {
      parseNbdUri(uri);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NbdUriError);
    expect((err as NbdUriError).reason).toBe(reason);
    expect((err as NbdUriError).kind).toBe('bad-input');
    expect((err as NbdUriError).message).toBe(message);
  });
});

test('looksLikeNbdUri', () => {
  for (const s of ['nbd://h/x', 'nbd+unix:///x?socket=/s', 'NBDS://h', 'nbds+unix://', 'nbd+vsock:///'])
    expect(looksLikeNbdUri(s)).toBe(true);
  for (const s of ['/dev/loop0', 'nbd.img', './nbd:/x', 'nbd:x', 'file:///x']) expect(looksLikeNbdUri(s)).toBe(false);
});
