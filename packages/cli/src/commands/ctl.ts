import { z } from 'zod';
import { askControl, NoControlServer } from '../serve-control/control-client';
import { CONTROL_COMMANDS, ControlRequest } from '../serve-control/protocol';
import { defineCommand } from '../util/define-command';
import { CliError } from '../util/errors';
import { ExitCode, EXIT_CODES_HELP } from '../util/exit-codes';
import { flag, jsonOption } from '../util/options';
import { Output } from '../util/output';

const USAGE = 'status [DEV] | table [DEV] | suspend DEV | resume DEV | message DEV WORDS... | remove DEV';

/** The request the words after SOCKET ask for; refused here, before connecting, when they make none. */
function requestOf(words: string[], force: boolean): ControlRequest {
  const [command, device, ...rest] = words;
  if (!(CONTROL_COMMANDS as readonly string[]).includes(command ?? ''))
    throw new CliError('usage', `unknown control command "${command ?? ''}" (${USAGE})`);
  if (force && command !== 'remove') throw new CliError('usage', '--force applies to remove only');
  const needsDevice = command !== 'status' && command !== 'table';
  if (needsDevice && device === undefined) throw new CliError('usage', `${command} takes a device name (${USAGE})`);
  if (command === 'message') {
    if (rest.length === 0) throw new CliError('usage', 'message takes a device and the message, e.g. message m rate 10M');
    return { command, device: device!, args: rest };
  }
  if (rest.length > 0) throw new CliError('usage', `${command} takes ${needsDevice ? 'one device' : 'at most one device'} (${USAGE})`);
  switch (command) {
    case 'status':
    case 'table':
      return { command, device };
    case 'remove':
      return { command, device: device!, force };
    default:
      return { command: command as 'suspend' | 'resume', device: device! };
  }
}

export const ctlCommand = defineCommand({
  command: 'ctl <socket> <words..>',
  describe: 'Ask a running dmtool serve, through its control socket: status, table, suspend, resume, message, remove',
  positionals: {
    socket: { schema: z.string().min(1), describe: 'the control socket of dmtool serve (its --ctl; default NBD_SOCKET.ctl)' },
    words: { schema: z.array(z.string()).min(1), describe: USAGE, array: true },
  },
  options: {
    force: flag('remove: disconnect the clients of the device first (they get NBD_ESHUTDOWN once their requests are answered)'),
    ...jsonOption,
  },
  examples: [
    ['$0 ctl /run/dmtool/nbd.sock.ctl status', "every device's status line, as dmsetup status prints it"],
    ['$0 ctl /run/dmtool/nbd.sock.ctl table m', 'the table line of device m, as dmsetup table prints it'],
    ['$0 ctl /run/dmtool/nbd.sock.ctl message m rate 10M', "cap mirror m's background resync at 10 MiB/s (0: no cap)"],
    ['$0 ctl /run/dmtool/nbd.sock.ctl suspend data', 'hold new requests to data, finish those in flight, flush; then answer'],
    ['$0 ctl /run/dmtool/nbd.sock.ctl resume data', 'let the held requests through'],
    ['$0 ctl /run/dmtool/nbd.sock.ctl remove data --force', 'disconnect its clients, flush and close data; it leaves the export list'],
  ],
  epilog:
    'The protocol is one JSON object per line each way (docs/serve-ctl.md). A control socket nobody listens on exits 3; ' +
    'an unknown device or message exits 2; removing a device that has clients without --force exits 3.\n' +
    EXIT_CODES_HELP,
  async run(o) {
    const out = new Output(o.json, 'ctl');
    const request = requestOf(o.words, o.force);
    let reply;
    try {
      reply = await askControl(o.socket, request);
    } catch (e) {
      if (e instanceof NoControlServer) throw new CliError('no-server', e.message);
      throw e;
    }
    if (!reply.ok) {
      const reason = reply.error.kind === 'bad-input' ? 'usage' : reply.error.kind === 'device-refused' ? 'ctl-refused' : 'ctl-failed';
      throw new CliError(reason, reply.error.message);
    }
    for (const line of reply.lines) out.line(line);
    out.result({ dryRun: false, request: o.words, lines: reply.lines });
    return ExitCode.OK;
  },
});
