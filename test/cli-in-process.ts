/**
 * Runs `art-factory` in this process (runCli), collecting what it writes to stdout and stderr: the
 * CLI tests that share a store with an app built in the test, or need no separate process.
 */
import { vi } from 'vitest';
import { runCli } from '../src/cli.js';

export async function cliInProcess(argv: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  try {
    const code = await runCli(argv, env);
    return { code, stdout, stderr };
  } finally {
    vi.restoreAllMocks();
  }
}
