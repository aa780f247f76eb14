/**
 * Boot the host's Debian kernel under qemu (TCG) with a tiny initramfs
 * (busybox-static, dmsetup and its libraries, the device-mapper modules; lvm2
 * when a scenario asks for it) and
 * run one shell scenario against image files, or NBD exports on a host unix
 * socket, attached as virtio disks.
 *
 * The guest prints the scenario's output between @@DMT-BEGIN@@ and
 * @@DMT-END rc=N@@ on the serial console and powers off.
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';

export interface VmTools {
  qemu: string;
  kernel: string;
  kernelRelease: string;
  modulesDir: string;
  busybox: string;
  dmsetup: string;
  /** Debian's lvm2 binary, for scenarios that run lvm2 in the guest; undefined when not installed. */
  lvm?: string;
}

/** Modules the scenarios need, each after its dependencies (resolved from modules.dep). */
const WANTED_MODULES = ['virtio_pci', 'virtio_blk', 'dm-mod', 'dm-bufio', 'dm-snapshot', 'dm-log', 'dm-region-hash', 'dm-mirror'];

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  const p = r.stdout.trim();
  return r.status === 0 && p.startsWith('/') ? p : undefined;
}

function firstExisting(paths: string[]): string | undefined {
  return paths.find((p) => fs.existsSync(p));
}

/** Find qemu, a kernel with its modules, busybox-static and dmsetup; the reasons any is missing otherwise. */
export function findVmTools(): { tools?: VmTools; missing: string[] } {
  const missing: string[] = [];
  const qemu = process.env.DMTOOL_VM_QEMU ?? which('qemu-system-x86_64');
  if (!qemu || !fs.existsSync(qemu)) missing.push('qemu-system-x86_64 (Debian package qemu-system-x86)');

  let kernel = process.env.DMTOOL_VM_KERNEL;
  let kernelRelease = '';
  if (!kernel && fs.existsSync('/boot')) {
    const found = fs
      .readdirSync('/boot')
      .filter((f) => /^vmlinuz-/.test(f))
      .map((f) => f.slice('vmlinuz-'.length))
      .filter((rel) => fs.existsSync(path.join('/lib/modules', rel, 'modules.dep')))
      .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    if (found.length > 0) {
      kernelRelease = found[found.length - 1];
      kernel = `/boot/vmlinuz-${kernelRelease}`;
    }
  } else if (kernel) {
    kernelRelease = path.basename(kernel).replace(/^vmlinuz-/, '');
  }
  const modulesDir = path.join('/lib/modules', kernelRelease);
  if (!kernel || !fs.existsSync(kernel) || !fs.existsSync(path.join(modulesDir, 'modules.dep'))) {
    missing.push('a kernel /boot/vmlinuz-<release> with /lib/modules/<release> (Debian package linux-image-amd64)');
  } else {
    try {
      fs.accessSync(kernel, fs.constants.R_OK);
    } catch {
      missing.push(`${kernel} is not readable`);
    }
  }

  const busybox = firstExisting(['/bin/busybox', '/usr/bin/busybox']);
  if (!busybox || !isStatic(busybox)) missing.push('a static busybox (Debian package busybox-static)');
  const dmsetup = which('dmsetup') ?? firstExisting(['/sbin/dmsetup', '/usr/sbin/dmsetup']);
  if (!dmsetup) missing.push('dmsetup (Debian package dmsetup)');

  if (missing.length > 0) return { missing };
  const lvm = firstExisting(['/sbin/lvm', '/usr/sbin/lvm']);
  return { tools: { qemu: qemu!, kernel: kernel!, kernelRelease, modulesDir, busybox: busybox!, dmsetup: dmsetup!, lvm }, missing };
}

/** The guest's lvm2 binary, or one clear error naming the package to install. */
export function requireLvm(tools: VmTools): string {
  if (!tools.lvm) throw new Error('kernel interoperability tests with lvm2 need /sbin/lvm (Debian package lvm2)');
  return tools.lvm;
}

/**
 * lvm.conf of the guest: no udev, no lvmpolld, no dmeventd monitoring, no backups
 * (the root file system is the initramfs), only the virtio disks scanned.
 */
export const GUEST_LVM_CONF = `devices {
  filter = [ "a|^/dev/vd|", "r|.*|" ]
  global_filter = [ "a|^/dev/vd|", "r|.*|" ]
  obtain_device_list_from_udev = 0
  external_device_info_source = "none"
  use_devicesfile = 0
  hints = "none"
}
global {
  use_lvmpolld = 0
  use_lvmlockd = 0
  event_activation = 0
  locking_dir = "/run/lock/lvm"
}
activation {
  udev_sync = 0
  udev_rules = 0
  monitoring = 0
}
backup {
  backup = 0
  archive = 0
}
`;

function isStatic(file: string): boolean {
  const r = spawnSync('ldd', [file], { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.includes('not a dynamic executable') || `${r.stdout}`.includes('statically linked');
}

// ---------------------------------------------------------------- initramfs

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  rdevMajor?: number;
  rdevMinor?: number;
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** An uncompressed cpio archive in the "newc" format the kernel unpacks. */
function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  let ino = 1;
  const push = (e: CpioEntry) => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const header =
      '070701' + [ino++, e.mode, 0, 0, 1, 0, data.length, 0, 0, e.rdevMajor ?? 0, e.rdevMinor ?? 0, name.length, 0].map(hex).join('');
    parts.push(Buffer.from(header, 'ascii'), name, Buffer.alloc(pad4(110 + name.length)), data, Buffer.alloc(pad4(data.length)));
  };
  entries.forEach(push);
  push({ name: 'TRAILER!!!', mode: 0 });
  return Buffer.concat(parts);
}

/** Module file paths (relative to modulesDir) in load order: every module after its dependencies. */
export function moduleLoadOrder(modulesDir: string, wanted: string[] = WANTED_MODULES): string[] {
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of fs.readFileSync(path.join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    deps.set(m[1], m[2].split(/\s+/).filter(Boolean));
    const base = path
      .basename(m[1])
      .replace(/\.ko(\.(xz|zst|gz))?$/, '')
      .replace(/_/g, '-');
    byName.set(base, m[1]);
  }
  const order: string[] = [];
  const visit = (mod: string) => {
    if (order.includes(mod)) return;
    for (const d of deps.get(mod) ?? []) visit(d);
    order.push(mod);
  };
  for (const w of wanted) {
    const rel = byName.get(w.replace(/_/g, '-'));
    // A module missing from modules.dep may be built in; the guest reports it if not.
    if (rel) visit(rel);
  }
  return order;
}

function moduleBytes(file: string): Buffer {
  if (file.endsWith('.xz')) return spawnSync('xz', ['-dc', file], { maxBuffer: 64 << 20 }).stdout;
  if (file.endsWith('.zst')) return spawnSync('zstd', ['-dc', file], { maxBuffer: 64 << 20 }).stdout;
  if (file.endsWith('.gz')) return zlib.gunzipSync(fs.readFileSync(file));
  return fs.readFileSync(file);
}

/** Shared libraries `ldd` lists for a binary (real paths, plus the names they are looked up by). */
function sharedLibraries(binary: string): { linkPath: string; realPath: string }[] {
  const r = spawnSync('ldd', [binary], { encoding: 'utf8' });
  const out: { linkPath: string; realPath: string }[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) out.push({ linkPath: m[1], realPath: fs.realpathSync(m[1]) });
  }
  return out;
}

/** Build the initramfs for a scenario script; returns the file written. */
export function buildInitramfs(tools: VmTools, scenario: string, diskCount: number, outFile: string, withLvm = false): string {
  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const dir = (p: string) => {
    const parts = p.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ name: d, mode: 0o040755 });
      }
    }
  };
  const file = (p: string, data: Buffer, mode = 0o100755) => {
    dir(path.dirname(p));
    entries.push({ name: p.replace(/^\//, ''), mode, data });
  };
  ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'tmp', 'run', 'etc', 'modules'].forEach(dir);
  dir('dev');
  entries.push({ name: 'dev/console', mode: 0o020600, rdevMajor: 5, rdevMinor: 1 });
  entries.push({ name: 'dev/null', mode: 0o020666, rdevMajor: 1, rdevMinor: 3 });

  file('/bin/busybox', fs.readFileSync(tools.busybox));
  file('/sbin/dmsetup', fs.readFileSync(tools.dmsetup));
  const libs = new Set(sharedLibraries(tools.dmsetup).map((l) => JSON.stringify(l)));
  if (withLvm) {
    const lvm = requireLvm(tools);
    file('/sbin/lvm', fs.readFileSync(lvm));
    for (const lib of sharedLibraries(lvm)) libs.add(JSON.stringify(lib));
    file('/etc/lvm/lvm.conf', Buffer.from(GUEST_LVM_CONF), 0o100644);
    dir('run/lock/lvm');
    dir('run/lvm');
    const commands = ['pvcreate', 'pvs', 'vgcreate', 'vgchange', 'vgs', 'lvcreate', 'lvconvert', 'lvchange', 'lvs', 'lvremove', 'vgck'];
    for (const c of commands) entries.push({ name: `sbin/${c}`, mode: 0o120777, data: Buffer.from('lvm') });
  }
  for (const l of libs) {
    const lib = JSON.parse(l) as { linkPath: string; realPath: string };
    file(lib.linkPath, fs.readFileSync(lib.realPath));
  }

  const order = moduleLoadOrder(tools.modulesDir);
  const names: string[] = [];
  for (const rel of order) {
    const name = path.basename(rel).replace(/\.(xz|zst|gz)$/, '');
    file(`/modules/${name}`, moduleBytes(path.join(tools.modulesDir, rel)), 0o100644);
    names.push(name);
  }
  file('/modules/order', Buffer.from(names.join('\n') + '\n'), 0o100644);
  file('/disk-count', Buffer.from(`${diskCount}\n`), 0o100644);
  file('/init', fs.readFileSync(path.join(__dirname, 'guest-init.sh')));
  file('/scenario.sh', Buffer.from(scenario));
  // `power-cut`: end the run at once, as a power failure would (no suspend, no sync).
  file('/sbin/power-cut', Buffer.from('#!/bin/sh\necho "@@DMT-END rc=0 power-cut@@"\npoweroff -f\n'));
  fs.writeFileSync(outFile, cpioNewc(entries));
  return outFile;
}

// ---------------------------------------------------------------- running

/** An image file on the host, attached as a virtio disk. */
export interface VmFileDisk {
  file: string;
  /** The guest sees it as /dev/disk/<name> (virtio serial, ≤ 20 characters). */
  name: string;
}

/** An NBD export on a host unix socket, attached as a virtio disk through qemu's nbd block driver. */
export interface VmNbdDisk {
  nbd: { socketPath: string; exportName: string };
  /** The guest sees it as /dev/disk/<name> (virtio serial, ≤ 20 characters). */
  name: string;
  /** Open the export read-only (qemu refuses to open a read-only export otherwise). */
  readOnly?: boolean;
}

export type VmDisk = VmFileDisk | VmNbdDisk;

/** qemu's -blockdev / -drive arguments for a disk; node `id`. */
function blockArgs(d: VmDisk, id: string): string[] {
  if ('file' in d) return ['-drive', `file=${d.file},format=raw,if=none,id=${id},cache=writeback`];
  const { socketPath, exportName } = d.nbd;
  // qemu's option syntax doubles a comma inside a value; nothing here needs one.
  for (const v of [socketPath, exportName])
    if (v.includes(',')) throw new Error(`${v}: a comma cannot be passed to qemu's nbd driver here`);
  const readOnly = d.readOnly ? ',read-only=on' : '';
  return ['-blockdev', `driver=nbd,server.type=unix,server.path=${socketPath},export=${exportName},node-name=${id}${readOnly}`];
}

export interface VmRunOptions {
  disks: VmDisk[];
  /** Shell script run by busybox sh -e in the guest; its stdout is returned. */
  scenario: string;
  /** Work directory for the initramfs and the console log. */
  workDir: string;
  timeoutMs?: number;
  memoryMiB?: number;
  /** Put lvm2 (the `lvm` binary, its libraries and a guest lvm.conf) into the initramfs. */
  withLvm?: boolean;
}

export interface VmResult {
  /** Scenario output lines (between the markers). */
  lines: string[];
  /** Exit code of the scenario script; null if the end marker never came. */
  rc: number | null;
  /** Whole console output. */
  console: string;
  wallMs: number;
  timedOut: boolean;
}

export function runVm(tools: VmTools, opts: VmRunOptions): Promise<VmResult> {
  for (const d of opts.disks) {
    if (!/^[A-Za-z0-9_-]{1,20}$/.test(d.name)) throw new Error(`disk name ${d.name} is not a valid virtio serial`);
  }
  const initrd = buildInitramfs(tools, opts.scenario, opts.disks.length, path.join(opts.workDir, 'initramfs.cpio'), opts.withLvm);
  const accel = process.env.DMTOOL_VM_ACCEL ?? 'tcg';
  const args = [
    '-machine',
    'pc',
    '-accel',
    accel,
    '-m',
    String(opts.memoryMiB ?? 512),
    '-smp',
    '1',
    '-nodefaults',
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    '-no-reboot',
    '-kernel',
    tools.kernel,
    '-initrd',
    initrd,
    '-append',
    'console=ttyS0 quiet loglevel=1 panic=-1',
  ];
  opts.disks.forEach((d, i) => {
    args.push(...blockArgs(d, `disk${i}`));
    args.push('-device', `virtio-blk-pci,drive=disk${i},serial=${d.name}`);
  });
  const timeoutMs = opts.timeoutMs ?? 180_000;
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(tools.qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let timedOut = false;
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', () => {
      clearTimeout(timer);
      const consoleText = out.replace(/\r/g, '');
      fs.writeFileSync(path.join(opts.workDir, 'console.log'), consoleText + (err ? `\n--- qemu stderr ---\n${err}` : ''));
      const all = consoleText.split('\n');
      const begin = all.findIndex((l) => l.includes('@@DMT-BEGIN@@'));
      const endIdx = all.findIndex((l) => /@@DMT-END rc=\d+/.test(l));
      const rcMatch = endIdx >= 0 ? /@@DMT-END rc=(\d+)/.exec(all[endIdx]) : null;
      const lines = begin >= 0 ? all.slice(begin + 1, endIdx >= 0 ? endIdx : undefined) : [];
      resolve({ lines, rc: rcMatch ? Number(rcMatch[1]) : null, console: consoleText + err, wallMs: Date.now() - started, timedOut });
    });
  });
}

/** The value of the first `key: value` line of a scenario's output. */
export function valueOf(result: VmResult, key: string): string {
  const prefix = `${key}: `;
  const line = result.lines.find((l) => l.startsWith(prefix));
  if (line === undefined) throw new Error(`guest printed no "${key}:" line; output:\n${result.lines.join('\n')}`);
  return line.slice(prefix.length).trim();
}

/** Every `key: value` line for the key, in order. */
export function valuesOf(result: VmResult, key: string): string[] {
  const prefix = `${key}: `;
  return result.lines.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length).trim());
}
