/**
 * TLS for NBD: the upgrade of a connected socket after NBD_OPT_STARTTLS was
 * acknowledged, for both ends, and the credentials each end holds. X.509
 * only, TLS 1.2 or later. Files are read once, when the credentials are
 * made, so a reconnection or a new client costs a handshake and no file
 * access. See docs/nbd.md#tls.
 */
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import * as tls from 'tls';

export const TLS_MIN_VERSION = 'TLSv1.2';

/** Why TLS could not be used: bad credentials, a failed handshake, an untrusted peer. Never holds key material. */
export class TlsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsError';
  }
}

/** The short reason of an OpenSSL error ("tlsv13 alert certificate required"), or Node's own message. */
export function tlsReason(e: unknown): string {
  const message = typeof e === 'object' && e !== null && typeof (e as Error).message === 'string' ? (e as Error).message : String(e);
  const openssl = /routines:[^:]*:([^:\n]+)/.exec(message);
  return openssl ? openssl[1] : message.split('\n')[0];
}

function readPem(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new TlsError(`cannot read the ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? tlsReason(e)}`);
  }
}

interface Pem {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** The PEM files read, and checked by making a secure context of them (the key matches the certificate); a bad file is named without its content. */
function readCredentials(files: { ca?: string; cert?: string; key?: string }): { pem: Pem; context: tls.SecureContext } {
  const pem: Pem = {
    ca: files.ca === undefined ? undefined : readPem(files.ca, 'CA certificate'),
    cert: files.cert === undefined ? undefined : readPem(files.cert, 'certificate'),
    key: files.key === undefined ? undefined : readPem(files.key, 'private key'),
  };
  try {
    return { pem, context: tls.createSecureContext({ ...pem, minVersion: TLS_MIN_VERSION }) };
  } catch (e) {
    const named = [files.cert, files.key, files.ca].filter((f) => f !== undefined).join(', ');
    throw new TlsError(`the TLS credentials (${named}) cannot be used: ${tlsReason(e)}`);
  }
}

/** The files of a certificates directory as gnutls, qemu, nbdkit and libnbd name them. */
export function certificatesDirFiles(dir: string, role: 'server' | 'client'): { ca: string; cert: string; key: string } {
  return { ca: path.join(dir, 'ca-cert.pem'), cert: path.join(dir, `${role}-cert.pem`), key: path.join(dir, `${role}-key.pem`) };
}

export interface ServerTlsFiles {
  cert: string;
  key: string;
  /** CA certificates client certificates are checked against (needed for `verifyClient`). */
  ca?: string;
}

/** What a server does with TLS: `on` offers it, `require` refuses everything but STARTTLS and ABORT before it. */
export interface ServerTls {
  mode: 'on' | 'require';
  /** Ask every client for a certificate and refuse one that has none or one the CA did not sign. */
  verifyClient: boolean;
  files: ServerTlsFiles;
}

/** A server's credentials, read once; `upgrade` runs the handshake on an accepted socket. */
export class ServerTlsCredentials {
  readonly mode: 'on' | 'require';
  readonly verifyClient: boolean;
  private readonly options: tls.TlsOptions;

  constructor(config: ServerTls) {
    if (config.verifyClient && config.files.ca === undefined) throw new TlsError('checking client certificates needs a CA certificate');
    // Read and checked here, so bad files are refused before the server listens.
    const { pem } = readCredentials(config.files);
    this.mode = config.mode;
    this.verifyClient = config.verifyClient;
    this.options = {
      ...pem,
      minVersion: TLS_MIN_VERSION,
      requestCert: config.verifyClient,
      // Checked in upgrade() instead, which can then say why a client is refused (no certificate, or which verify error).
      rejectUnauthorized: false,
    };
  }

  /**
   * The server's handshake on `socket`, which must not be read by anyone
   * else meanwhile. A tls.Server that never listens does the work and
   * verifies the client's certificate chain; with `verifyClient` a client
   * whose chain did not verify, or who sent none, is refused here.
   */
  upgrade(socket: net.Socket): Promise<tls.TLSSocket> {
    return new Promise((resolve, reject) => {
      const server = tls.createServer(this.options);
      const done = (e?: Error, s?: tls.TLSSocket) => {
        socket.off('close', closed);
        server.removeAllListeners();
        if (e) {
          socket.destroy();
          reject(e);
        } else resolve(s!);
      };
      const closed = () => done(new TlsError('the client closed the connection during the TLS handshake'));
      socket.on('close', closed);
      server.on('secureConnection', (s: tls.TLSSocket) => {
        if (this.verifyClient && !s.authorized) {
          const sent = Object.keys(s.getPeerCertificate()).length > 0;
          s.destroy();
          done(
            new TlsError(sent ? `the client's certificate is refused (${String(s.authorizationError)})` : 'the client sent no certificate'),
          );
        } else done(undefined, s);
      });
      server.on('tlsClientError', (e: Error) => done(new TlsError(`TLS handshake failed: ${tlsReason(e)}`)));
      server.emit('connection', socket);
    });
  }
}

export interface ClientTlsOptions {
  /** ca-cert.pem (required), client-cert.pem and client-key.pem (both or neither) in a directory; Node's CA list without it. */
  certificatesDir?: string;
  /** The name the server's certificate must hold; none: the chain is checked, the name is not. */
  hostname?: string;
  /** false: the server's certificate is not checked at all. */
  verifyPeer: boolean;
}

/** A client's credentials, read once; `upgrade` runs the handshake and checks the server. */
export class ClientTlsCredentials {
  private readonly context: tls.SecureContext;
  /** Whether the client presents a certificate of its own. */
  readonly hasClientCertificate: boolean = false;

  constructor(private readonly opts: ClientTlsOptions) {
    if (opts.certificatesDir === undefined) {
      this.context = tls.createSecureContext({ minVersion: TLS_MIN_VERSION });
      return;
    }
    const files = certificatesDirFiles(opts.certificatesDir, 'client');
    if (!fs.existsSync(files.ca)) throw new TlsError(`the certificates directory ${opts.certificatesDir} has no ca-cert.pem`);
    const haveCert = fs.existsSync(files.cert);
    if (haveCert !== fs.existsSync(files.key)) {
      throw new TlsError(
        `the certificates directory ${opts.certificatesDir} has ${haveCert ? 'client-cert.pem but no client-key.pem' : 'client-key.pem but no client-cert.pem'}`,
      );
    }
    this.context = readCredentials(haveCert ? files : { ca: files.ca }).context;
    this.hasClientCertificate = haveCert;
  }

  upgrade(socket: net.Socket): Promise<tls.TLSSocket> {
    const { hostname, verifyPeer } = this.opts;
    return new Promise((resolve, reject) => {
      const t = tls.connect({
        socket,
        secureContext: this.context,
        minVersion: TLS_MIN_VERSION,
        // SNI takes names only, never addresses.
        servername: hostname !== undefined && net.isIP(hostname) === 0 ? hostname : undefined,
        rejectUnauthorized: verifyPeer,
        checkServerIdentity: (_host, cert) => (hostname === undefined ? undefined : tls.checkServerIdentity(hostname, cert)),
      });
      const failed = (e: Error) => {
        t.off('close', closed);
        t.destroy();
        reject(new TlsError(`TLS handshake failed: ${tlsReason(e)}`));
      };
      const closed = () => failed(new Error('the server closed the connection during the TLS handshake'));
      t.once('error', failed);
      t.once('close', closed);
      t.once('secureConnect', () => {
        t.off('error', failed);
        t.off('close', closed);
        resolve(t);
      });
    });
  }
}
