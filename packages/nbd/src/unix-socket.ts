import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';

/**
 * Listen on a unix socket only its owner can connect to: bind inside a new
 * 0700 directory, where nobody else can connect, make the socket 0600, then
 * link it into place (failing rather than replacing a file that appeared
 * meanwhile). A stale socket file (nobody listening) is replaced, a live one
 * refused (code EADDRINUSE), any other file too (EEXIST). Resolves to the
 * socket file's inode, for removeUnixSocket.
 */
export async function listenOnUnixSocket(server: net.Server, socketPath: string): Promise<number> {
  await removeStaleSocket(socketPath);
  const privateDir = fs.mkdtempSync(path.join(path.dirname(socketPath), '.nbd-'));
  const boundPath = path.join(privateDir, 'socket');
  try {
    await listen(server, { path: boundPath });
    try {
      fs.chmodSync(boundPath, 0o600);
      fs.linkSync(boundPath, socketPath);
    } catch (e) {
      await new Promise((resolve) => server.close(resolve));
      throw e;
    }
  } finally {
    fs.rmSync(privateDir, { recursive: true, force: true });
  }
  return fs.statSync(socketPath).ino;
}

/** Remove the socket file if it is still ours (another server may have replaced it meanwhile). */
export function removeUnixSocket(socketPath: string, ino: number): void {
  try {
    if (fs.statSync(socketPath).ino === ino) fs.unlinkSync(socketPath);
  } catch {
    // already gone
  }
}

function listen(server: net.Server, options: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Remove a socket file nobody listens on; refuse a live socket or any other kind of file. */
async function removeStaleSocket(path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) throw Object.assign(new Error(`${path} exists and is not a socket`), { code: 'EEXIST' });
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw Object.assign(new Error(`another server listens on ${path}`), { code: 'EADDRINUSE' });
  fs.unlinkSync(path);
}
