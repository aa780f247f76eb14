/**
 * What nbdkit's log filter (`--filter=log logfile=FILE`) recorded: the
 * writes and flushes a server took, in order, with their outcome. Tests use
 * it to count the bytes a client wrote and to check that what a mirror log
 * records clean was written and flushed on the server.
 */
import * as fs from 'fs';

export interface NbdkitRequest {
  connection: number;
  id: number;
  kind: 'Read' | 'Write' | 'Flush' | 'Zero' | 'Trim';
  byteOffset: number;
  bytes: number;
}

export interface NbdkitLog {
  /** Requests in the order the server started them. */
  started: NbdkitRequest[];
  /** Requests the plugin finished with success (return=0), in the order they finished. */
  succeeded: NbdkitRequest[];
  /**
   * Per 512-byte sector of the export: 1 when a write covering it finished
   * with success before a flush was started that then also succeeded.
   */
  flushedSectors(sizeBytes: number): Uint8Array;
}

const START = /connection=(\d+) (Read|Write|Flush|Zero|Trim) id=(\d+)(?: offset=0x([0-9a-f]+) count=0x([0-9a-f]+))?/;
const RETURN = /connection=(\d+) \.\.\.(Read|Write|Flush|Zero|Trim) id=(\d+) return=(-?\d+)/;

export function readNbdkitLog(file: string): NbdkitLog {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const started: NbdkitRequest[] = [];
  const succeeded: NbdkitRequest[] = [];
  const open = new Map<string, NbdkitRequest>();
  // Each event in log order: a write finishing, or a flush starting or finishing.
  const events: { type: 'written' | 'flush-start' | 'flush-ok'; req: NbdkitRequest }[] = [];
  for (const line of text.split('\n')) {
    const r = RETURN.exec(line);
    if (r) {
      const req = open.get(`${r[1]}/${r[3]}`);
      if (req && r[4] === '0') {
        succeeded.push(req);
        if (req.kind === 'Write' || req.kind === 'Zero') events.push({ type: 'written', req });
        if (req.kind === 'Flush') events.push({ type: 'flush-ok', req });
      }
      continue;
    }
    const s = START.exec(line);
    if (!s) continue;
    const req: NbdkitRequest = {
      connection: Number(s[1]),
      kind: s[2] as NbdkitRequest['kind'],
      id: Number(s[3]),
      byteOffset: s[4] ? parseInt(s[4], 16) : 0,
      bytes: s[5] ? parseInt(s[5], 16) : 0,
    };
    started.push(req);
    open.set(`${req.connection}/${req.id}`, req);
    if (req.kind === 'Flush') events.push({ type: 'flush-start', req });
  }
  return {
    started,
    succeeded,
    flushedSectors(sizeBytes) {
      const written = new Uint8Array(Math.ceil(sizeBytes / 512));
      const flushed = new Uint8Array(written.length);
      // The sectors written when each flush started; copied to `flushed` when that flush succeeds.
      const covers = new Map<NbdkitRequest, Uint8Array>();
      for (const e of events) {
        if (e.type === 'written') written.fill(1, e.req.byteOffset / 512, (e.req.byteOffset + e.req.bytes) / 512);
        else if (e.type === 'flush-start') covers.set(e.req, written.slice());
        else {
          const c = covers.get(e.req);
          if (c) for (let i = 0; i < c.length; i++) flushed[i] |= c[i];
        }
      }
      return flushed;
    },
  };
}

/** Bytes of the requests of one kind a server took (started), in total. */
export function requestBytes(log: NbdkitLog, kind: NbdkitRequest['kind'] = 'Write'): number {
  return log.started.filter((r) => r.kind === kind).reduce((n, r) => n + r.bytes, 0);
}
