#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx: no build step between `git clone` and a working bot.
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('../src/cli.ts');
const code = await runCli(process.argv.slice(2));
if (code >= 0) process.exitCode = code;
