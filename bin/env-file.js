/**
 * `.env` in the working folder, read with node's own `process.loadEnvFile`, so that
 * `cp .env.example .env`, a token filled in, and `npm start` just works. A variable already in the
 * environment wins: loadEnvFile never overrides one, so `FAL_KEY=… npm start` beats the file.
 *
 * Node's parser skips what it cannot read without a word, and a line with no `=` even swallows the
 * line after it: a typo such as `DISCORD_TOKEN abc` would leave Discord silently off. So every line is
 * checked first, and a bad one stops start-up naming its number — never its text, which may hold a
 * secret — and loads nothing.
 */
import { existsSync, readFileSync } from 'node:fs';

const ASSIGNMENT = /^(?:export )?[A-Za-z_][A-Za-z0-9_]*\s*=\s*(.*)$/;
const QUOTES = ['"', "'", '`'];

/** The first line that is not blank, a `# comment` or `NAME=value`; undefined when all are fine. */
export function badLine(text) {
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '' || line.startsWith('#')) continue;
    const match = ASSIGNMENT.exec(line);
    if (!match) return i + 1;
    const value = match[1];
    const quote = value[0];
    // A quoted value may run over several lines, up to the next matching quote (as node reads it);
    // with no closing quote anywhere it is just text to the end of its line.
    if (QUOTES.includes(quote) && !value.includes(quote, 1)) {
      const closing = lines.findIndex((next, j) => j > i && next.includes(quote));
      if (closing !== -1) i = closing;
    }
  }
  return undefined;
}

/**
 * Loads `file` into process.env when it exists. Returns the one-line reason it could not (the caller
 * stops), or undefined when it was loaded or there is none.
 */
export function loadEnvFile(file = '.env') {
  if (!existsSync(file)) return undefined;
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    return error.code === 'EISDIR' ? `${file} is a folder; it must be a file of NAME=value lines` : `${file} cannot be read (${error.code ?? error.message})`;
  }
  const line = badLine(text);
  if (line !== undefined) {
    return `${file} line ${line}: expected NAME=value (NAME of letters, digits and _, not starting with a digit), a # comment or a blank line; nothing was loaded from ${file}`;
  }
  if (typeof process.loadEnvFile !== 'function') {
    return `${file} cannot be read by Node ${process.version}: process.loadEnvFile needs Node 20.12 or newer; upgrade Node, or export the variables instead`;
  }
  process.loadEnvFile(file);
  return undefined;
}
