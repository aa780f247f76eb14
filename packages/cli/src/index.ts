export { main } from './main';
export { ExitCode } from './util/exit-codes';
