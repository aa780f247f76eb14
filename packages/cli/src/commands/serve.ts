import * as fs from 'fs';
import * as path from 'path';
import { exceptionsContext, ExportTable, MAXIMUM_PAYLOAD_BYTES, MetaContext, NbdServer, ServerTlsCredentials, TlsError } from '@dmtool/nbd';
import {
  MirrorDevice,
  SnapshotDevice,
  SnapshotMergeDevice,
  SnapshotOriginDevice,
  SuspendableDevice,
  TargetDevice,
  TargetSet,
  TargetSpec,
  TargetSpecError,
} from '@dmtool/targets';
import { z } from 'zod';
import { ControlServer } from '../serve-control/control-server';
import { ServedDevices } from '../serve-control/served-devices';
import { ArgsOf, defineCommand } from '../util/define-command';
import { CliError } from '../util/errors';
import { ExitCode, EXIT_CODES_HELP } from '../util/exit-codes';
import { resolver } from '../util/open-device';
import { flag } from '../util/options';
import { parseBytes, rateLimitSchema } from '../util/units';
import { readServeConfig } from '../util/serve-config';
import { serveTlsOf } from '../util/serve-tls';

const SECTOR_BYTES = 512;

/** The port of a HOST:PORT, `[IPv6]:PORT` included. */
function tcpPort(address: string): number {
  return Number(/:(\d+)$/.exec(address)?.[1] ?? NaN);
}

/** --buffer-limit: a size no smaller than the largest request a client may send (32 MiB). */
const bufferLimitSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  try {
    const bytes = parseBytes(String(v));
    if (bytes < 32 * 1024 * 1024) throw new Error(`${String(v)} is below 32M, the largest request a client may send`);
    return bytes;
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
    return z.NEVER;
  }
});

const serveOptions = {
  dev: {
    schema: z
      .array(z.string())
      .refine((a) => a.length % 2 === 0, '--dev takes two values: NAME "TABLE LINE"')
      .default([]),
    type: 'string',
    array: true,
    nargs: 2,
    describe: 'a device: NAME "0 LENGTH TARGET ARGS..." (linear, snapshot-origin, snapshot, snapshot-merge, mirror; repeatable)',
  },
  config: {
    schema: z.string().min(1).optional(),
    type: 'string',
    describe: 'a JSON file of devices: {"devices":[{"name":..,"table":..,"readOnly":bool}]}',
  },
  socket: {
    schema: z.string().min(1).optional(),
    type: 'string',
    describe: 'unix socket path (default $XDG_RUNTIME_DIR/dmtool/nbd.sock, else /run/dmtool/nbd.sock)',
  },
  ctl: {
    schema: z.string().min(1).optional(),
    type: 'string',
    describe:
      'the control socket for dmtool ctl (a unix socket, mode 0600; default SOCKET.ctl beside the NBD socket, none with --tcp or socket activation)',
  },
  tcp: {
    schema: z
      .string()
      .regex(/^(.+):(\d+)$/, '--tcp takes HOST:PORT')
      .refine(
        (v) => tcpPort(v) >= 1 && tcpPort(v) <= 65535,
        (v) => ({ message: `port ${tcpPort(v)} is not a TCP port (1..65535)` }),
      )
      .optional(),
    type: 'string',
    describe: 'listen on TCP HOST:PORT instead of a unix socket (a non-loopback HOST needs TLS, or --tls off)',
  },
  tls: {
    schema: z.enum(['off', 'on', 'require']).optional(),
    type: 'string',
    describe: 'NBD_OPT_STARTTLS: off, on (offered) or require (nothing else before it); default require with certificates, else off',
  },
  tlsCertificates: {
    schema: z.string().min(1).optional(),
    type: 'string',
    describe: 'a directory with server-cert.pem, server-key.pem and ca-cert.pem (for --tls-verify-client), as nbdkit and qemu use',
  },
  tlsCert: { schema: z.string().min(1).optional(), type: 'string', describe: "the server's certificate (PEM)" },
  tlsKey: { schema: z.string().min(1).optional(), type: 'string', describe: "the server's private key (PEM, mode 0600 or stricter)" },
  tlsCa: {
    schema: z.string().min(1).optional(),
    type: 'string',
    describe: 'CA certificates (PEM) that client certificates are checked against',
  },
  tlsVerifyClient: flag('refuse a client without a certificate signed by the CA'),
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
  resyncRate: {
    schema: rateLimitSchema.optional(),
    type: 'string',
    describe: "cap each mirror's background resync at this many bytes per second (e.g. 50M; changeable with dmtool ctl message)",
  },
  mergeRate: {
    schema: rateLimitSchema.optional(),
    type: 'string',
    describe: 'cap each snapshot-merge copy at this many bytes per second (e.g. 50M; changeable with dmtool ctl message)',
  },
  maxConnections: { schema: z.number().int().min(1).max(1024), type: 'number', describe: 'connections served at once', default: 16 },
  bufferLimit: {
    schema: bufferLimitSchema.optional(),
    type: 'string',
    describe:
      'request data held for all clients together (write payloads received, read data not yet sent), e.g. 256M; at least 32M, the largest request (default 64M)',
  },
  handshakeTimeout: {
    schema: z.number().positive().max(3600),
    type: 'number',
    describe: 'seconds a client has to finish the handshake',
    default: 10,
  },
} as const;

const noPositionals = {};
type Options = ArgsOf<typeof noPositionals, typeof serveOptions>;

/** The devices to serve, from --dev pairs and --config, with --read-only applied. */
function specsOf(o: Options): TargetSpec[] {
  const specs: TargetSpec[] = [];
  for (let i = 0; i < o.dev.length; i += 2) specs.push({ name: o.dev[i], table: o.dev[i + 1], readOnly: false });
  if (o.config !== undefined) specs.push(...readServeConfig(o.config));
  if (specs.length === 0) throw new CliError('usage', 'give at least one device: --dev NAME "TABLE LINE" or --config FILE');
  for (const n of o.readOnly) {
    const spec = specs.find((s) => s.name === n);
    if (!spec) throw new CliError('usage', `no device named ${n} (give it with --dev or --config)`);
    spec.readOnly = true;
  }
  return specs;
}

function preferredSizes(o: Options, specs: TargetSpec[]): Map<string, number> {
  const preferred = new Map(o.preferredBlockSize.map((p) => [p.slice(0, p.indexOf('=')), Number(p.slice(p.indexOf('=') + 1))]));
  for (const n of preferred.keys()) {
    if (!specs.some((s) => s.name === n)) throw new CliError('usage', `no device named ${n} (give it with --dev or --config)`);
  }
  return preferred;
}

/** The block size a client should prefer: the chunk of a snapshot, the region of a mirror (kernel io_min hints). */
function naturalBlockBytes(d: TargetDevice): number | undefined {
  if (d instanceof SnapshotDevice) return d.snapshot.chunkSectors * SECTOR_BYTES;
  if (d instanceof SnapshotMergeDevice) return d.chunkSectors * SECTOR_BYTES;
  if (d instanceof SnapshotOriginDevice) {
    const chunks = d.origin.snapshots.map((s) => s.chunkSectors);
    return chunks.length > 0 ? Math.min(...chunks) * SECTOR_BYTES : undefined;
  }
  if (d instanceof MirrorDevice) return Math.min(d.mirror.regionSize * SECTOR_BYTES, MAXIMUM_PAYLOAD_BYTES);
  return undefined;
}

/** Contexts beside base:allocation: a snapshot export says which chunks it holds (dmtool:exceptions). */
function metaContextsOf(d: TargetDevice): MetaContext[] {
  return d instanceof SnapshotDevice ? [exceptionsContext((byteOffset, bytes) => d.heldExtents(byteOffset, bytes))] : [];
}

async function openTargets(specs: TargetSpec[], o: Options): Promise<TargetSet> {
  try {
    return await TargetSet.open(specs, resolver, {
      mirror: { resyncRateBytesPerSecond: o.resyncRate },
      mergeRateBytesPerSecond: o.mergeRate,
    });
  } catch (e) {
    if (e instanceof TargetSpecError) throw new CliError('usage', `device ${e.exportName}: ${e.message}`);
    throw e;
  }
}

function tcpAddress(address: string): { host: string; port: number } {
  const [, bracketed, port] = /^(.+):(\d+)$/.exec(address)!;
  return { host: bracketed.replace(/^\[(.*)\]$/, '$1'), port: Number(port) };
}

/** The TLS options checked and the files read, before any device is opened. */
function tlsCredentials(o: Options, tcpHost: string | undefined): ServerTlsCredentials | undefined {
  const config = serveTlsOf(o, tcpHost);
  try {
    return config && new ServerTlsCredentials(config);
  } catch (e) {
    if (e instanceof TlsError) throw new CliError('usage', e.message);
    throw e;
  }
}

/** systemd's first passed descriptor (SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3;

/**
 * systemd socket activation: LISTEN_PID names this process and LISTEN_FDS
 * is at least 1, so the listening socket is descriptor 3. The variables
 * are removed either way, so no child inherits them.
 */
function activationFd(env: NodeJS.ProcessEnv, pid: number): number | undefined {
  const activated = env.LISTEN_PID === String(pid) && Number(env.LISTEN_FDS) >= 1;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  return activated ? LISTEN_FDS_START : undefined;
}

function defaultSocketPath(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_RUNTIME_DIR ? path.join(env.XDG_RUNTIME_DIR, 'dmtool') : '/run/dmtool';
  return path.join(base, 'nbd.sock');
}

/** An inherited socket: its path or TCP URI when the system says, else the descriptor. */
function activatedWhere(bound: string | { host: string; port: number } | undefined, fd: number, tls: boolean): string {
  if (typeof bound === 'string') return bound;
  if (bound === undefined) return `descriptor ${fd} (socket activation)`;
  return `${tls ? 'nbds' : 'nbd'}://${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}`;
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
    [
      '$0 serve --dev data "0 131072 snapshot-origin origin.img" --dev snap "0 131072 snapshot origin.img cow.img P 8"',
      'serve an origin and a snapshot of it: writes to data copy old chunks into cow.img first',
    ],
    [
      '$0 serve --dev data "0 131072 snapshot-merge origin.img cow.img P 8" --merge-rate 20M',
      'serve the origin as the snapshot shows it while cow.img is merged into it in the background',
    ],
    ['$0 serve --dev m "0 2097152 mirror disk 2 log.img 1024 2 leg0.img 0 leg1.img 0"', 'serve a two-leg mirror with a disk log'],
    ['$0 ctl /run/dmtool/nbd.sock.ctl status', 'from another shell: the status line of every device, as dmsetup status prints them'],
    ['$0 serve --config devices.json', 'the devices from a JSON file: {"devices":[{"name":..,"table":..,"readOnly":bool}]}'],
    [
      '$0 serve --tcp 192.0.2.10:10809 --tls-certificates /etc/pki/dmtool --tls-verify-client --dev disk "0 131072 linear disk.img 0"',
      'serve over the network with TLS required, to clients holding a certificate signed by ca-cert.pem',
    ],
    [
      'nbdcopy "nbds://192.0.2.10/disk?tls-certificates=/etc/pki/libnbd" copy.img',
      'copy it from another machine (ca-cert.pem, client-cert.pem and client-key.pem in that folder)',
    ],
    [
      'systemd-socket-activate -l /run/dmtool/nbd.sock $0 serve --dev disk "0 131072 linear disk.img 0"',
      'socket activation: started on the first connection, serving on the socket passed as descriptor 3',
    ],
  ],
  epilog:
    `Each export is one device-mapper table line starting at sector 0: linear, snapshot-origin, snapshot, snapshot-merge or mirror. ` +
    `A device named by several exports is opened once (locked exclusively if any export writes to it), and the ` +
    `snapshot-origin and snapshot lines of one origin share it, so origin writes copy into every snapshot. ` +
    `TLS (X.509, TLS 1.2 or later) is negotiated with NBD_OPT_STARTTLS: with --tls require every other option before it is ` +
    `refused with NBD_REP_ERR_TLS_REQD; plaintext on a --tcp address other than loopback needs an explicit --tls off. ` +
    `Under systemd socket activation (LISTEN_PID is this process, LISTEN_FDS at least 1) it serves on the socket passed ` +
    `as descriptor 3, unix or TCP, and refuses --socket and --tcp; the variables are removed so no child inherits them. ` +
    `The control socket (--ctl) takes dmtool ctl's requests: status, table, suspend, resume, message, remove. ` +
    `SIGINT or SIGTERM stops accepting, answers the requests in flight (cutting connections still busy after 10 s), ` +
    `prints each device's status line, flushes every device and exits 0.\n${EXIT_CODES_HELP}`,
  async run(o) {
    const inheritedFd = activationFd(process.env, process.pid);
    if (inheritedFd !== undefined && (o.socket !== undefined || o.tcp !== undefined)) {
      throw new CliError(
        'usage',
        `--${o.socket !== undefined ? 'socket' : 'tcp'} cannot be used with systemd socket activation (LISTEN_FDS): the socket is passed in`,
      );
    }
    const specs = specsOf(o);
    const preferred = preferredSizes(o, specs);
    const tcp = o.tcp === undefined ? undefined : tcpAddress(o.tcp);
    const tls = tlsCredentials(o, tcp?.host);
    const targets = await openTargets(specs, o);
    const table = new ExportTable();
    const gates = new Map<string, SuspendableDevice>();
    try {
      for (const spec of specs) {
        const device = targets.devices.get(spec.name)!;
        const gate = new SuspendableDevice(device);
        gates.set(spec.name, gate);
        table.add(spec.name, gate, {
          description: spec.table,
          readOnly: spec.readOnly,
          preferredBlockBytes: preferred.get(spec.name) ?? naturalBlockBytes(device),
          metaContexts: metaContextsOf(device),
        });
      }
    } catch (e) {
      await targets.close().catch(() => undefined);
      throw e instanceof RangeError ? new CliError('usage', e.message) : e;
    }
    const server = new NbdServer(table, {
      maxConnections: o.maxConnections,
      serverBudgetBytes: o.bufferLimit,
      handshakeTimeoutMs: o.handshakeTimeout * 1000,
      tls,
      log: (line) => process.stderr.write(`dmtool serve: ${line}\n`),
    });
    const served = new ServedDevices(targets, table, gates, () => server);
    const control = new ControlServer(served.handle);
    const stopped = waitForStopSignal();
    let where: string;
    let ctlPath: string | undefined;
    // The control socket sits beside an NBD socket of our own; with TCP or an inherited socket only where --ctl says.
    let defaultCtlPath: string | undefined;
    try {
      if (inheritedFd !== undefined) {
        await server.listen({ fd: inheritedFd });
        where = activatedWhere(server.boundAddress, inheritedFd, tls !== undefined);
      } else if (tcp) {
        await server.listen(tcp);
        where = `${tls ? 'nbds' : 'nbd'}://${tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host}:${server.tcpPort}`;
      } else {
        const socketPath = path.resolve(o.socket ?? defaultSocketPath(process.env));
        fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o700 });
        await server.listen({ socketPath });
        where = socketPath;
        defaultCtlPath = `${socketPath}.ctl`;
      }
      ctlPath = o.ctl !== undefined ? path.resolve(o.ctl) : defaultCtlPath;
      if (ctlPath !== undefined) await control.listen(ctlPath);
    } catch (e) {
      await server.close().catch(() => undefined);
      await targets.close().catch(() => undefined);
      const code = (e as { code?: unknown }).code;
      if (code === 'EADDRINUSE' || code === 'EEXIST' || code === 'EACCES')
        throw new CliError('usage', `cannot listen: ${(e as Error).message}`);
      throw e;
    }
    for (const e of table.list()) {
      // A socket passed in whose address the system does not tell (a unix socket's path) has no URI to print.
      const uri = where.startsWith('/')
        ? `: ${tls ? 'nbds' : 'nbd'}+unix:///${e.name}?socket=${where}`
        : where.startsWith('nbd')
          ? `: ${where}/${e.name}`
          : '';
      process.stdout.write(`export ${e.name}: ${e.device.sizeBytes} bytes, ${e.readOnly ? 'read-only' : 'read-write'}${uri}\n`);
    }
    if (tls) process.stdout.write(`tls ${tls.mode}: ${tls.verifyClient ? 'client certificates checked' : 'no client certificate asked'}\n`);
    if (ctlPath !== undefined) process.stdout.write(`control socket ${ctlPath}\n`);
    process.stdout.write(`listening on ${where} (SIGINT or SIGTERM stops)\n`);
    const sig = await stopped;
    process.stderr.write(`dmtool serve: ${sig}: finishing requests in flight\n`);
    await control.close();
    // Requests held by a suspended device are answered too, not cut.
    served.resumeAll();
    await server.close();
    let stopFailed: unknown;
    await targets.stop().catch((e: unknown) => (stopFailed = e));
    // What dmsetup status would print, as the devices stand when serving ends.
    for (const line of targets.statusLines()) process.stdout.write(`status ${line}\n`);
    const failedLegs = targets.failedLegIdentities().length;
    await targets.close();
    if (stopFailed !== undefined) throw stopFailed;
    process.stdout.write(failedLegs > 0 ? 'stopped; every device flushed but the failed mirror legs\n' : 'stopped; every device flushed\n');
    return ExitCode.OK;
  },
});
