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

  const refused: [string, string, string][] = [
    ['nbds://host/exp', 'tls-unsupported', 'nbds://host/exp: TLS is not supported yet (use nbd:// or nbd+unix://)'],
    ['nbds+unix:///x?socket=/s', 'tls-unsupported', 'nbds+unix:///x?socket=/s: TLS is not supported yet (use nbd:// or nbd+unix://)'],
    ['nbds://u:pw@host/exp', 'tls-unsupported', 'nbds://host/exp: TLS is not supported yet (use nbd:// or nbd+unix://)'],
    ['nbd+unix:///x', 'bad-uri', 'nbd+unix:///x: nbd+unix:// needs ?socket=PATH'],
    ['nbd+unix://host/x?socket=/s', 'bad-uri', 'nbd+unix://host/x?socket=/s: nbd+unix:// takes no host (nbd+unix:///EXPORT?socket=PATH)'],
    ['nbd:///x', 'bad-uri', 'nbd:///x: nbd:// needs a host (nbd://HOST[:PORT]/EXPORT)'],
    ['nbd://h:0/x', 'bad-uri', 'nbd://h:0/x: port 0 is outside 1-65535'],
    ['nbd://h:70000/x', 'bad-uri', 'nbd://h:70000/x: port 70000 is outside 1-65535'],
    ['nbd://h/x?socket=/s', 'bad-uri', 'nbd://h/x?socket=/s: socket= belongs to nbd+unix:// URIs'],
    ['nbd+unix:///x?socket=/s&tls=on', 'bad-uri', 'nbd+unix:///x?socket=/s&tls=on: query parameter tls is not supported (only socket=)'],
    ['nbd+unix:///x?socket=/s&socket=/t', 'bad-uri', 'nbd+unix:///x?socket=/s&socket=/t: query parameter socket is given twice'],
    ['nbd://h/%zz', 'bad-uri', 'nbd://h/%zz: the export name has a malformed %-escape'],
    ['nbd://h/x#frag', 'bad-uri', 'nbd://h/x#frag: an NBD URI has no #fragment'],
    ['nbd+vsock:///x', 'bad-uri', 'nbd+vsock:///x: scheme nbd+vsock:// is not supported (nbd:// or nbd+unix://)'],
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
