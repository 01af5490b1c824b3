// Where the tests find PostgreSQL: PGGCL_TEST_DSN (a database with pggcl installed, e.g. given
// by tests/conformance/test_node.py), else a throwaway server started through the Python
// package (pggcl.testing.TempPostgres) of the repository's venv.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "..", "..", "..", "..");
export const python = process.env.PGGCL_PYTHON ?? resolve(repo, ".venv", "bin", "python");

let server: ChildProcess | null = null;
let dsnPromise: Promise<string> | null = null;

export function testDsn(): Promise<string> {
  if (process.env.PGGCL_TEST_DSN) return Promise.resolve(process.env.PGGCL_TEST_DSN);
  dsnPromise ??= new Promise<string>((ok, fail) => {
    const code = [
      "import sys", "from pggcl import schema", "from pggcl.testing import TempPostgres",
      "with TempPostgres() as pg:", "    schema.upgrade(pg.dsn)", "    print(pg.dsn, flush=True)",
      "    sys.stdin.read()",
    ].join("\n");
    server = spawn(python, ["-c", code], { stdio: ["pipe", "pipe", "inherit"] });
    server.on("error", fail);
    createInterface({ input: server.stdout! }).once("line", (line) => ok(line.trim()));
  });
  return dsnPromise;
}

export function stopServer(): void {
  server?.stdin?.end();
}

/** Lines of a child process, awaited one at a time. */
export class Lines {
  private lines: string[] = [];
  private waiting: ((l: string) => void) | null = null;
  constructor(public child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (l) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = null;
        w(l);
      } else this.lines.push(l);
    });
  }
  next(timeoutMs = 20000): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((ok, fail) => {
      const t = setTimeout(() => fail(new Error("no line from child")), timeoutMs);
      this.waiting = (x) => {
        clearTimeout(t);
        ok(x);
      };
    });
  }
}

export function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((ok) => {
    if (child.exitCode !== null || child.signalCode !== null) ok(child.exitCode);
    else child.once("exit", (code) => ok(code));
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
