import * as fs from 'fs';
import * as path from 'path';
import type { BlockDevice } from '@dmtool/devices';
import { ExportTable, NbdServer } from '@dmtool/nbd';
import { LinearDevice, linearArgs, parseTableLine, TableError } from '@dmtool/targets';
import { z } from 'zod';
import { ArgsOf, defineCommand } from '../util/define-command';
import { CliError } from '../util/errors';
import { ExitCode, EXIT_CODES_HELP } from '../util/exit-codes';
import { resolver } from '../util/open-device';

const SECTOR_BYTES = 512;

const serveOptions = {
  dev: {
    schema: z
      .array(z.string())
      .min(2, 'give at least one export: --dev NAME "TABLE LINE"')
      .refine((a) => a.length % 2 === 0, '--dev takes two values: NAME "TABLE LINE"'),
    type: 'string',
    array: true,
    nargs: 2,
    describe: 'an export: NAME "0 LENGTH linear DEVICE OFFSET" (repeatable)',
  },
  socket: {
    schema: z.string().min(1).optional(),
    type: 'string',
    describe: 'unix socket path (default $XDG_RUNTIME_DIR/dmtool/nbd.sock, else /run/dmtool/nbd.sock)',
  },
  tcp: {
    schema: z
      .string()
      .regex(/^(.+):(\d{1,5})$/, '--tcp takes HOST:PORT')
      .optional(),
    type: 'string',
    describe: 'listen on TCP HOST:PORT instead of a unix socket (no authentication, no TLS)',
  },
  readOnly: {
    schema: z.array(z.string().min(1)).default([]),
    type: 'string',
    array: true,
    describe: 'serve export NAME read-only (repeatable)',
  },
  preferredBlockSize: {
    schema: z.array(z.string().regex(/^[^=]+=\d+$/, '--preferred-block-size takes NAME=BYTES')).default([]),
    type: 'string',
    array: true,
    describe: 'NAME=BYTES: the preferred block size advertised for an export (default 4096)',
  },
  maxConnections: { schema: z.number().int().min(1).max(1024), type: 'number', describe: 'connections served at once', default: 16 },
  handshakeTimeout: {
    schema: z.number().positive().max(3600),
    type: 'number',
    describe: 'seconds a client has to finish the handshake',
    default: 10,
  },
} as const;

const noPositionals = {};
type Options = ArgsOf<typeof noPositionals, typeof serveOptions>;

interface ExportPlan {
  name: string;
  line: string;
  device: string;
  offsetSectors: number;
  lengthSectors: number;
  readOnly: boolean;
  preferredBlockBytes?: number;
}

function plan(o: Options): ExportPlan[] {
  const preferred = new Map(o.preferredBlockSize.map((p) => [p.slice(0, p.indexOf('=')), Number(p.slice(p.indexOf('=') + 1))]));
  const plans: ExportPlan[] = [];
  for (let i = 0; i < o.dev.length; i += 2) {
    const [name, line] = [o.dev[i], o.dev[i + 1]];
    try {
      const t = parseTableLine(line);
      if (t.startSectors !== 0) throw new TableError('a device is one table line starting at sector 0');
      if (t.target !== 'linear') throw new TableError(`target ${t.target} cannot be served yet (linear can)`);
      const a = linearArgs(t);
      plans.push({
        name,
        line,
        device: a.device,
        offsetSectors: a.offsetSectors,
        lengthSectors: t.lengthSectors,
        readOnly: o.readOnly.includes(name),
        preferredBlockBytes: preferred.get(name),
      });
    } catch (e) {
      throw new CliError('usage', `--dev ${name}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  for (const n of [...o.readOnly, ...preferred.keys()]) {
    if (!plans.some((p) => p.name === n)) throw new CliError('usage', `no export named ${n} (give it with --dev)`);
  }
  return plans;
}

/** Each underlying device is opened once, for writing only if some export writes to it. */
async function openBases(plans: ExportPlan[]): Promise<Map<string, BlockDevice>> {
  const byIdentity = new Map<string, { path: string; write: boolean }>();
  const identityOf = new Map<string, string>();
  for (const p of plans) {
    const id = resolver.identify(p.device, `export ${p.name}`);
    identityOf.set(p.name, id);
    const seen = byIdentity.get(id);
    byIdentity.set(id, { path: seen?.path ?? p.device, write: (seen?.write ?? false) || !p.readOnly });
  }
  const opened = new Map<string, BlockDevice>();
  try {
    for (const [id, d] of byIdentity) opened.set(id, await resolver.open(d.path, { write: d.write }));
  } catch (e) {
    closeQuietly([...opened.values()]);
    throw e;
  }
  const byName = new Map<string, BlockDevice>();
  for (const p of plans) byName.set(p.name, opened.get(identityOf.get(p.name)!)!);
  return byName;
}

function closeQuietly(devices: BlockDevice[]): void {
  for (const d of devices) {
    try {
      d.close();
    } catch {
      // closing is best effort once an error is being reported
    }
  }
}

function defaultSocketPath(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_RUNTIME_DIR ? path.join(env.XDG_RUNTIME_DIR, 'dmtool') : '/run/dmtool';
  return path.join(base, 'nbd.sock');
}

function waitForStopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

export const serveCommand = defineCommand({
  command: 'serve',
  describe: 'Serve devices over NBD (unix socket) until SIGINT or SIGTERM',
  positionals: noPositionals,
  options: serveOptions,
  examples: [
    ['$0 serve --dev disk "0 131072 linear disk.img 0"', 'serve the first 64 MiB of disk.img as export "disk"'],
    ['nbdinfo "nbd+unix:///disk?socket=/run/dmtool/nbd.sock"', 'look at it from another shell'],
  ],
  epilog:
    `Each export is one device-mapper table line starting at sector 0; this version serves the linear target. ` +
    `A device named by several exports is opened once (locked exclusively if any export writes to it). ` +
    `SIGINT or SIGTERM stops accepting, answers the requests in flight, flushes every device and exits 0.\n${EXIT_CODES_HELP}`,
  async run(o) {
    const plans = plan(o);
    const bases = await openBases(plans);
    const opened = [...new Set(bases.values())];
    const table = new ExportTable();
    try {
      for (const p of plans) {
        const linear = new LinearDevice(bases.get(p.name)!, p.offsetSectors * SECTOR_BYTES, p.lengthSectors * SECTOR_BYTES, {
          name: p.name,
          readOnly: p.readOnly,
        });
        table.add(p.name, linear, { description: p.line, readOnly: p.readOnly, preferredBlockBytes: p.preferredBlockBytes });
      }
    } catch (e) {
      closeQuietly(opened);
      throw e instanceof RangeError ? new CliError('usage', e.message) : e;
    }
    const server = new NbdServer(table, {
      maxConnections: o.maxConnections,
      handshakeTimeoutMs: o.handshakeTimeout * 1000,
      log: (line) => process.stderr.write(`dmtool serve: ${line}\n`),
    });
    const stopped = waitForStopSignal();
    let where: string;
    try {
      if (o.tcp) {
        const [, host, port] = /^(.+):(\d+)$/.exec(o.tcp)!;
        await server.listen({ host, port: Number(port) });
        where = `nbd://${host.includes(':') ? `[${host}]` : host}:${server.tcpPort}`;
      } else {
        const socketPath = path.resolve(o.socket ?? defaultSocketPath(process.env));
        fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o700 });
        await server.listen({ socketPath });
        where = socketPath;
      }
    } catch (e) {
      closeQuietly(opened);
      const code = (e as { code?: unknown }).code;
      if (code === 'EADDRINUSE' || code === 'EEXIST' || code === 'EACCES')
        throw new CliError('usage', `cannot listen: ${(e as Error).message}`);
      throw e;
    }
    for (const e of table.list()) {
      const uri = o.tcp ? `${where}/${e.name}` : `nbd+unix:///${e.name}?socket=${where}`;
      process.stdout.write(`export ${e.name}: ${e.device.sizeBytes} bytes, ${e.readOnly ? 'read-only' : 'read-write'}: ${uri}\n`);
    }
    process.stdout.write(`listening on ${where} (SIGINT or SIGTERM stops)\n`);
    const sig = await stopped;
    process.stderr.write(`dmtool serve: ${sig}: finishing requests in flight\n`);
    await server.close();
    let failed: unknown;
    for (const d of opened) {
      try {
        if (d.writable) await d.flush();
      } catch (e) {
        failed ??= e;
      }
    }
    closeQuietly(opened);
    if (failed) throw failed;
    process.stdout.write('stopped; every device flushed\n');
    return ExitCode.OK;
  },
});
