import { z } from 'zod';
import { defineCommand } from '../util/define-command';
import { EXIT_CODES_HELP } from '../util/exit-codes';
import { flag } from '../util/options';
import { runDemo } from '../demo/run-demo';

export const demoCommand = defineCommand({
  command: 'demo',
  describe: 'Run the whole toolkit on generated images in a temporary folder',
  positionals: {},
  options: {
    keep: { schema: z.string().optional(), type: 'string', describe: 'keep the images in this folder instead of deleting them' },
    size: { schema: z.string(), type: 'string', describe: 'size of each generated image', default: '64M' },
    json: flag('print the steps and figures as JSON'),
  },
  examples: [
    ['$0 demo', 'copy, snapshot + merge, mirror resync on temporary images'],
    ['$0 demo --keep ./demo-images', 'the same, keeping the images'],
  ],
  epilog: EXIT_CODES_HELP,
  run: runDemo,
});
