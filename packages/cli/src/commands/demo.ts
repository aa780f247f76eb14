import type { Argv, CommandModule } from 'yargs';
import { z } from 'zod';
import { EXIT_CODES_HELP } from '../util/exit-codes';
import { parseOptions } from '../util/options';
import { runCommand } from '../util/run';
import { runDemo } from '../demo/run-demo';

const schema = z.object({
  keep: z.string().optional(),
  size: z.string().default('64M'),
  json: z.boolean().default(false),
});

export const demoCommand: CommandModule<object, any> = {
  command: 'demo',
  describe: 'Run the whole toolkit on generated images in a temporary folder',
  builder: (y: Argv) =>
    y
      .option('keep', { type: 'string', describe: 'keep the images in this folder instead of deleting them' })
      .option('size', { type: 'string', describe: 'size of each generated image', default: '64M' })
      .option('json', { type: 'boolean', describe: 'print the steps and figures as JSON', default: false })
      .example('$0 demo', 'copy, snapshot + merge, mirror resync on temporary images')
      .example('$0 demo --keep ./demo-images', 'the same, keeping the images')
      .epilog(EXIT_CODES_HELP),
  handler: runCommand(async (argv) => {
    const o = parseOptions(schema, argv);
    return runDemo(o);
  }),
};
