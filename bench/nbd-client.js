'use strict';
// NBD client benchmark: `dmtool copy` of a local file to nbdkit file exports
// over unix sockets, against nbdcopy doing the same copy in the same run
// (its defaults: multi-conn, 64 requests in flight; --flush, as dmtool
// flushes its destinations before it reports success). One destination,
// then three (one dmtool job against three nbdcopy runs in a row), then a
// mirror resync with one NBD leg against nbdcopy of the same bytes, then
// the one-destination copy again to an nbdkit export requiring TLS
// (certificates made with openssl for the run), then the one-destination
// copy over TCP between two network namespaces joined by a veth pair (made
// and removed by the run; skipped without root and iproute2). Page cache
// dropped before each run; every destination is compared with the source
// afterwards.
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { CLI, benchDir, dmtool, timed, dropCaches, makeRandomFile, makeSparse, table, mbps } = require('./common');

const MIB = Number(process.env.DMTOOL_BENCH_NBD_CLIENT_MIB || 1024);
const BYTES = MIB << 20;
const RUNS = Number(process.env.DMTOOL_BENCH_RUNS || 2);

function have(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A CA and a server certificate in `dir` (ca-cert.pem, server-cert.pem, server-key.pem), as nbdkit and libnbd read them. */
function makeCerts(dir) {
  const openssl = (args) => {
    const r = spawnSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    if (r.status !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr}`);
  };
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem',
    '-subj', '/CN=bench CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']); // prettier-ignore
  fs.writeFileSync(
    path.join(dir, 'server.ext'),
    'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n',
  );
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server-key.pem', '-out', 'server.csr', '-subj', '/CN=localhost']);
  openssl(['x509', '-req', '-in', 'server.csr', '-days', '1', '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-set_serial', '1',
    '-extfile', 'server.ext', '-out', 'server-cert.pem']); // prettier-ignore
  fs.chmodSync(path.join(dir, 'server-key.pem'), 0o600);
}

async function startNbdkit(file, sock, tlsDir) {
  const tls = tlsDir ? ['--tls=require', `--tls-certificates=${tlsDir}`] : [];
  const child = spawn('nbdkit', ['--foreground', '--exit-with-parent', '--unix', sock, ...tls, 'file', file], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const probe = tlsDir ? `nbds+unix:///?socket=${sock}&tls-certificates=${tlsDir}` : `nbd+unix:///?socket=${sock}`;
  const until = Date.now() + 15000;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`nbdkit exited (${child.exitCode}) before listening`);
    if (fs.existsSync(sock) && spawnSync('nbdinfo', ['--size', probe], { stdio: 'ignore' }).status === 0) return child;
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`nbdkit did not listen on ${sock}`);
}

async function stop(child) {
  if (child.exitCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
  await done;
  clearTimeout(timer);
}

/** Two namespaces joined by a veth pair: the client in `local`, the server at `remoteAddress` in `remote`; `remove` undoes it. */
function makeNetnsPair() {
  const id = process.pid.toString(36);
  const local = `dmtool-bl-${id}`;
  const remote = `dmtool-br-${id}`;
  const localIf = `dmb${id}l`;
  const remoteIf = `dmb${id}r`;
  const subnet = 1 + (process.pid % 254);
  const ip = (args) => spawnSync('ip', args, { stdio: 'ignore' }).status === 0;
  const remove = () => {
    ip(['netns', 'del', local]);
    ip(['netns', 'del', remote]);
    if (ip(['link', 'show', localIf])) ip(['link', 'del', localIf]);
  };
  const steps = [
    ['netns', 'add', local],
    ['netns', 'add', remote],
    ['link', 'add', localIf, 'type', 'veth', 'peer', 'name', remoteIf],
    ['link', 'set', localIf, 'netns', local],
    ['link', 'set', remoteIf, 'netns', remote],
    ['-n', local, 'addr', 'add', `10.202.${subnet}.1/30`, 'dev', localIf],
    ['-n', remote, 'addr', 'add', `10.202.${subnet}.2/30`, 'dev', remoteIf],
    ['-n', local, 'link', 'set', localIf, 'up'],
    ['-n', remote, 'link', 'set', remoteIf, 'up'],
    ['-n', local, 'link', 'set', 'lo', 'up'],
    ['-n', remote, 'link', 'set', 'lo', 'up'],
  ];
  for (const step of steps) {
    if (!ip(step)) {
      remove();
      return undefined;
    }
  }
  return { local, remote, remoteAddress: `10.202.${subnet}.2`, remove };
}

async function startNbdkitTcp(ns, address, file) {
  const child = spawn('ip', ['netns', 'exec', ns, 'nbdkit', '--foreground', '--exit-with-parent', '-i', address, 'file', file], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const until = Date.now() + 15000;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`nbdkit exited (${child.exitCode}) before listening`);
    if (spawnSync('ip', ['netns', 'exec', ns, 'nbdinfo', '--size', `nbd://${address}/`], { stdio: 'ignore' }).status === 0) return child;
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`nbdkit did not listen on ${address}`);
}

function sameAs(a, b) {
  const r = spawnSync('cmp', ['-s', a, b]);
  if (r.status !== 0) throw new Error(`${b} differs from ${a}`);
}

function bestOf(fn) {
  let top;
  for (let i = 0; i < RUNS; i++) {
    const s = fn();
    if (top === undefined || s < top) top = s;
  }
  return top;
}

async function main() {
  const missing = ['nbdcopy', 'nbdinfo', 'nbdkit'].filter((c) => !have(c));
  if (missing.length) {
    console.log(`## NBD client: skipped (${missing.join(', ')} not installed; apt-get install libnbd-bin nbdkit)`);
    return;
  }
  const dir = benchDir('nbd-client');
  const servers = [];
  const rows = [];
  try {
    const input = path.join(dir, 'input.img');
    makeRandomFile(input, MIB);
    const dests = [0, 1, 2].map((i) => path.join(dir, `remote-${i}.img`));
    const uris = [];
    for (const [i, d] of dests.entries()) {
      makeSparse(d, BYTES);
      const sock = path.join(dir, `nbd-${i}.sock`);
      servers.push(await startNbdkit(d, sock));
      uris.push(`nbd+unix:///?socket=${sock}`);
    }
    const fresh = (files) => files.forEach((f) => makeSparse(f, BYTES));
    const run = (cmd, args) => {
      dropCaches();
      return timed(cmd, args).seconds;
    };

    fresh(dests.slice(0, 1));
    const nbdcopy1 = bestOf(() => run('nbdcopy', ['--flush', input, uris[0]]));
    sameAs(input, dests[0]);
    fresh(dests.slice(0, 1));
    const dmtool1 = bestOf(() => {
      dropCaches();
      return dmtool(['copy', input, uris[0]]).seconds;
    });
    sameAs(input, dests[0]);
    rows.push(['1 destination', 'nbdcopy --flush', nbdcopy1.toFixed(2), mbps(BYTES, nbdcopy1), '1.00']);
    rows.push(['1 destination', 'dmtool copy', dmtool1.toFixed(2), mbps(BYTES, dmtool1), (nbdcopy1 / dmtool1).toFixed(2)]);

    fresh(dests);
    const nbdcopy3 = bestOf(() => uris.reduce((s, u) => s + run('nbdcopy', ['--flush', input, u]), 0));
    fresh(dests);
    const dmtool3 = bestOf(() => {
      dropCaches();
      return dmtool(['copy', input, ...uris]).seconds;
    });
    dests.forEach((d) => sameAs(input, d));
    rows.push(['3 destinations', '3 × nbdcopy --flush in a row', nbdcopy3.toFixed(2), mbps(3 * BYTES, nbdcopy3), '1.00']);
    rows.push(['3 destinations', 'dmtool copy (one job)', dmtool3.toFixed(2), mbps(3 * BYTES, dmtool3), (nbdcopy3 / dmtool3).toFixed(2)]);

    const log = path.join(dir, 'log.img');
    makeSparse(log, 1 << 20);
    const resync = bestOf(() => {
      fresh(dests.slice(0, 1));
      dmtool(['mirror-create', '--force', '--log', log, input, uris[0]]);
      dropCaches();
      return dmtool(['mirror-resync', '--log', log, input, uris[0]]).seconds;
    });
    sameAs(input, dests[0]);
    rows.push(['mirror resync, 1 NBD leg', 'nbdcopy --flush (same bytes)', nbdcopy1.toFixed(2), mbps(BYTES, nbdcopy1), '1.00']);
    rows.push(['mirror resync, 1 NBD leg', 'dmtool mirror-resync', resync.toFixed(2), mbps(BYTES, resync), (nbdcopy1 / resync).toFixed(2)]);

    const certs = path.join(dir, 'pki');
    makeCerts(certs);
    const tlsDest = dests[1];
    fresh([tlsDest]);
    const tlsSock = path.join(dir, 'nbd-tls.sock');
    servers.push(await startNbdkit(tlsDest, tlsSock, certs));
    const tlsUri = `nbds+unix:///?socket=${tlsSock}&tls-certificates=${certs}`;
    const nbdcopyTls = bestOf(() => run('nbdcopy', ['--flush', input, tlsUri]));
    sameAs(input, tlsDest);
    fresh([tlsDest]);
    const dmtoolTls = bestOf(() => {
      dropCaches();
      return dmtool(['copy', input, tlsUri]).seconds;
    });
    sameAs(input, tlsDest);
    rows.push(['1 destination, TLS', 'nbdcopy --flush', nbdcopyTls.toFixed(2), mbps(BYTES, nbdcopyTls), '1.00']);
    rows.push(['1 destination, TLS', 'dmtool copy', dmtoolTls.toFixed(2), mbps(BYTES, dmtoolTls), (nbdcopyTls / dmtoolTls).toFixed(2)]);

    const pair = process.getuid() === 0 ? makeNetnsPair() : undefined;
    if (pair) {
      let tcpServer;
      try {
        const tcpDest = dests[2];
        fresh([tcpDest]);
        tcpServer = await startNbdkitTcp(pair.remote, pair.remoteAddress, tcpDest);
        const tcpUri = `nbd://${pair.remoteAddress}/`;
        const nbdcopyTcp = bestOf(() => run('ip', ['netns', 'exec', pair.local, 'nbdcopy', '--flush', input, tcpUri]));
        sameAs(input, tcpDest);
        fresh([tcpDest]);
        const dmtoolTcp = bestOf(() => run('ip', ['netns', 'exec', pair.local, process.execPath, CLI, 'copy', input, tcpUri]));
        sameAs(input, tcpDest);
        rows.push(['1 destination, TCP between namespaces', 'nbdcopy --flush', nbdcopyTcp.toFixed(2), mbps(BYTES, nbdcopyTcp), '1.00']);
        rows.push(['1 destination, TCP between namespaces', 'dmtool copy', dmtoolTcp.toFixed(2), mbps(BYTES, dmtoolTcp), (nbdcopyTcp / dmtoolTcp).toFixed(2)]); // prettier-ignore
      } finally {
        if (tcpServer) await stop(tcpServer);
        pair.remove();
      }
    } else {
      console.log('(TCP between namespaces skipped: needs root and iproute2)');
    }
  } finally {
    for (const s of servers) await stop(s);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(
    `## NBD client: ${MIB} MiB local file to nbdkit file exports over unix sockets (and TCP between namespaces), best of ${RUNS}\n`,
  );
  console.log(table(['case', 'tool', 'seconds', 'MB/s written', 'speed vs nbdcopy'], rows));
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
